//! The manager against an in-process fake CA that the test answers request by request, on a
//! paused clock. Certificates are real (rcgen, a test root) with chosen lifetimes; their
//! validity is wall-clock time, which barely moves while the paused runtime clock jumps, and
//! X.509 truncates times to whole seconds, so schedules are checked to within a second.

use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep};

use super::worker::{Backoff, schedule};
use super::*;

const HOUR: Duration = Duration::from_secs(3600);

/// One request the manager made to the fake CA, waiting for the test's answer.
struct Request {
    identity: SpiffeId,
    at: Instant,
    reply: oneshot::Sender<Result<WorkloadCertificate, FetchError>>,
}

impl Request {
    fn answer(self, result: Result<WorkloadCertificate, FetchError>) {
        // The manager may have given up on the request (forget, timeout); that is its right.
        let _ = self.reply.send(result);
    }
}

/// A CA that hands every request to the test.
struct FakeCa {
    requests: mpsc::UnboundedSender<Request>,
}

impl CertificateSource for FakeCa {
    async fn fetch(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, FetchError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            identity: identity.clone(),
            at: Instant::now(),
            reply,
        };
        self.requests.send(request).expect("the test listens");
        answer.await.unwrap_or_else(|_| {
            Err(FetchError::Unreachable {
                message: "the test dropped the request".into(),
            })
        })
    }
}

/// A test root that issues leaves valid from now (wall clock) for a chosen time.
struct Issuer(CertifiedIssuer<'static, KeyPair>);

impl Issuer {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().expect("CA key");
        Self(CertifiedIssuer::self_signed(params, key).expect("self-signed root"))
    }

    fn issue(&self, identity: &SpiffeId, lifetime: Duration) -> WorkloadCertificate {
        let now = SystemTime::now();
        self.issue_between(identity, now, now + lifetime)
    }

    fn issue_between(
        &self,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> WorkloadCertificate {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().unwrap())];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.0).expect("sign leaf");
        let chain = format!("{}{}", cert.pem(), self.0.pem());
        WorkloadCertificate::from_pem(identity, chain.as_bytes(), key.serialize_pem().as_bytes())
            .expect("load leaf")
    }
}

struct Harness {
    manager: CertificateManager<FakeCa>,
    requests: mpsc::UnboundedReceiver<Request>,
    issuer: Issuer,
    registry: Registry,
}

impl Harness {
    fn new() -> Self {
        let (sender, requests) = mpsc::unbounded_channel();
        let mut registry = Registry::default();
        let metrics = CertificateMetrics::new(&mut registry);
        Self {
            manager: CertificateManager::new(FakeCa { requests: sender }, metrics),
            requests,
            issuer: Issuer::new(),
            registry,
        }
    }

    /// The next request, however far the paused clock has to run for it.
    async fn next_request(&mut self) -> Request {
        tokio::time::timeout(24 * HOUR, self.requests.recv())
            .await
            .expect("a request within a day")
            .expect("the manager is alive")
    }

    /// Lets every woken task run, without moving the clock.
    async fn settle(&self) {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    fn assert_no_request(&mut self, when: &str) {
        self.requests
            .try_recv()
            .map(|r| panic!("unexpected request for {} {when}", r.identity))
            .ok();
    }

    /// Ensures `identity` and answers its first request with a certificate valid for
    /// `lifetime`; returns the certificate as the manager serves it.
    async fn served(
        &mut self,
        identity: &SpiffeId,
        lifetime: Duration,
    ) -> Arc<WorkloadCertificate> {
        self.manager.ensure(identity);
        let request = self.next_request().await;
        assert_eq!(&request.identity, identity);
        request.answer(Ok(self.issuer.issue(identity, lifetime)));
        self.manager
            .fetch_or_wait(identity)
            .await
            .expect("first certificate")
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    fn status(&self, identity: &SpiffeId) -> CertificateStatus {
        self.manager
            .certificates()
            .into_iter()
            .find(|s| &s.identity == identity)
            .expect("the identity is served")
    }
}

fn id(service_account: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", service_account).unwrap()
}

fn unreachable() -> FetchError {
    FetchError::Unreachable {
        message: "connection refused".into(),
    }
}

fn assert_between(what: &str, value: Duration, low: Duration, high: Duration) {
    assert!(
        low <= value && value <= high,
        "{what}: {value:?} is not within [{low:?}, {high:?}]"
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_certificate_is_requested_on_ensure_and_then_served_at_once() {
    let mut h = Harness::new();
    let cart = id("cart");
    let first = h.served(&cart, HOUR).await;
    assert_eq!(first.identity(), &cart);

    let again = h.manager.fetch_or_wait(&cart).await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "a held certificate is served as is"
    );
    h.settle().await;
    h.assert_no_request("while a valid certificate is held");

    let status = h.status(&cart);
    assert_eq!(status.state, CertificateState::Ready);
    assert_eq!(status.not_after, Some(first.not_after()));
    assert!(status.serial.is_some_and(|s| !s.is_empty()));
    let renew_in = status
        .next_renewal
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert_between(
        "renewal",
        renew_in,
        HOUR / 2 - Duration::from_secs(2),
        HOUR / 2,
    );
    assert!(h.manager.all_ready());
    let metrics = h.metrics();
    assert!(
        metrics.contains("certificate_fetches_total{outcome=\"issued\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("\ncertificates 1\n"), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_request() {
    let mut h = Harness::new();
    let cart = id("cart");
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let manager = h.manager.clone();
            let cart = cart.clone();
            tokio::spawn(async move { manager.fetch_or_wait(&cart).await })
        })
        .collect();
    let request = h.next_request().await;
    h.settle().await;
    h.assert_no_request("while the first is in flight");
    assert_eq!(h.status(&cart).state, CertificateState::Pending);

    request.answer(Ok(h.issuer.issue(&cart, HOUR)));
    let mut served = Vec::new();
    for caller in callers {
        served.push(
            caller
                .await
                .unwrap()
                .expect("every caller gets the certificate"),
        );
    }
    assert!(served.iter().all(|c| Arc::ptr_eq(c, &served[0])));
    h.assert_no_request("after the answer");
}

#[tokio::test(start_paused = true)]
async fn the_certificate_is_renewed_at_half_life_and_the_new_one_served() {
    let mut h = Harness::new();
    let cart = id("cart");
    let first = h.served(&cart, Duration::from_secs(100)).await;
    let installed = Instant::now();
    let mut rotations = h.manager.subscribe();

    sleep(Duration::from_secs(48)).await;
    h.assert_no_request("before half life");
    let renewal = h.next_request().await;
    assert_between(
        "renewal after",
        renewal.at - installed,
        Duration::from_secs(49),
        Duration::from_secs(50),
    );
    // The old certificate is served while the renewal is in flight.
    let during = h.manager.fetch_or_wait(&cart).await.unwrap();
    assert!(Arc::ptr_eq(&first, &during));

    renewal.answer(Ok(h.issuer.issue(&cart, Duration::from_secs(100))));
    assert_eq!(rotations.recv().await.unwrap(), cart);
    let second = h.manager.fetch_or_wait(&cart).await.unwrap();
    assert!(
        !Arc::ptr_eq(&first, &second),
        "callers see the new certificate"
    );
    assert!(second.not_after() >= first.not_after());
    assert_eq!(h.status(&cart).state, CertificateState::Ready);
    assert!(
        h.metrics()
            .contains("certificate_fetches_total{outcome=\"issued\"} 2")
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_keeps_the_old_certificate_and_retries_with_backoff() {
    let mut h = Harness::new();
    let cart = id("cart");
    let first = h.served(&cart, Duration::from_secs(1000)).await;

    // Ten failures in a row: renewal at half life, then retries 1, 2, 4 ... 60, 60 s apart.
    let mut attempts = Vec::new();
    for _ in 0..10 {
        let request = h.next_request().await;
        attempts.push(request.at);
        request.answer(Err(unreachable()));
        h.settle().await;
        let served = h.manager.fetch_or_wait(&cart).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &served),
            "the old certificate stays in use"
        );
    }
    for (i, pair) in attempts.windows(2).enumerate() {
        let step = (INITIAL_RETRY_DELAY * 2u32.pow(i as u32)).min(MAX_RETRY_DELAY);
        assert_between(
            &format!("retry {}", i + 1),
            pair[1] - pair[0],
            step.mul_f64(1.0 - RETRY_JITTER),
            step,
        );
    }
    let CertificateState::Failed(reason) = h.status(&cart).state else {
        panic!("a failing renewal shows as failed: {:?}", h.status(&cart));
    };
    assert!(reason.contains("connection refused"), "{reason}");
    assert!(
        h.manager.all_ready(),
        "a held valid certificate keeps the proxy ready"
    );
    let metrics = h.metrics();
    assert!(
        metrics.contains("certificate_renewal_failures_total 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("certificate_fetches_total{outcome=\"unreachable\"} 10"),
        "{metrics}"
    );

    // A success resets the backoff: the next failure is retried after about a second.
    let request = h.next_request().await;
    request.answer(Ok(h.issuer.issue(&cart, Duration::from_secs(1000))));
    let failed = h.next_request().await;
    let failed_at = failed.at;
    failed.answer(Err(unreachable()));
    let retry = h.next_request().await;
    assert!(retry.at - failed_at <= INITIAL_RETRY_DELAY);
}

#[tokio::test(start_paused = true)]
async fn an_expired_certificate_is_refused_and_retries_go_on() {
    let mut h = Harness::new();
    let cart = id("cart");
    let lifetime = Duration::from_secs(20);
    h.served(&cart, lifetime).await;
    let expiry = Instant::now() + lifetime;

    loop {
        let request = h.next_request().await;
        request.answer(Err(unreachable()));
        if Instant::now() >= expiry {
            break;
        }
    }
    h.settle().await;
    let error = h.manager.fetch_or_wait(&cart).await.unwrap_err();
    assert!(matches!(error, CertError::Expired { .. }), "{error:?}");
    let message = error.to_string();
    for part in [
        cart.to_string().as_str(),
        "expired at",
        "connection refused",
        "retrying",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert!(matches!(
        h.status(&cart).state,
        CertificateState::Expired(_)
    ));
    assert!(h.manager.current(&cart).is_none());
    assert!(!h.manager.all_ready());

    let request = h.next_request().await;
    request.answer(Ok(h.issuer.issue(&cart, lifetime)));
    let renewed = h
        .manager
        .fetch_or_wait(&cart)
        .await
        .expect("served again after a renewal");
    assert!(renewed.not_after() > SystemTime::now());
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_request_is_reported_and_retried() {
    let mut h = Harness::new();
    let cart = id("cart");
    h.manager.ensure(&cart);
    let request = h.next_request().await;
    let refused_at = request.at;
    request.answer(Err(FetchError::PermissionDenied {
        message: "no workload with that identity is placed on node-1".into(),
    }));
    h.settle().await;
    let error = h.manager.fetch_or_wait(&cart).await.unwrap_err();
    assert!(matches!(error, CertError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("placed on node-1"), "{error}");
    assert!(matches!(h.status(&cart).state, CertificateState::Failed(_)));
    assert!(!h.manager.all_ready());

    let retry = h.next_request().await;
    assert!(retry.at - refused_at <= INITIAL_RETRY_DELAY);
    retry.answer(Ok(h.issuer.issue(&cart, HOUR)));
    h.manager
        .fetch_or_wait(&cart)
        .await
        .expect("the retry succeeded");
    let metrics = h.metrics();
    assert!(
        metrics.contains("outcome=\"permission_denied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("certificate_renewal_failures_total 0"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_without_answer_times_out_for_waiting_callers() {
    let mut h = Harness::new();
    let cart = id("cart");
    let started = Instant::now();
    let waiter = {
        let manager = h.manager.clone();
        let cart = cart.clone();
        tokio::spawn(async move { manager.fetch_or_wait(&cart).await })
    };
    let _unanswered = h.next_request().await;
    let error = waiter.await.unwrap().unwrap_err();
    assert_eq!(Instant::now() - started, REQUEST_TIMEOUT);
    let CertError::Unavailable { source, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        matches!(**source, FetchError::TimedOut { .. }),
        "{source:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_certificate_expired_on_arrival_counts_as_a_failure() {
    let mut h = Harness::new();
    let cart = id("cart");
    h.manager.ensure(&cart);
    let now = SystemTime::now();
    let stale = h.issuer.issue_between(&cart, now - 2 * HOUR, now - HOUR);
    h.next_request().await.answer(Ok(stale));
    h.settle().await;
    let error = h.manager.fetch_or_wait(&cart).await.unwrap_err();
    assert!(error.to_string().contains("expired on arrival"), "{error}");
    assert!(h.metrics().contains("outcome=\"expired_on_arrival\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn forget_stops_renewals_and_releases_waiters() {
    let mut h = Harness::new();
    let (cart, web) = (id("cart"), id("web"));
    assert!(!h.manager.forget(&cart), "nothing to forget yet");

    // A caller waiting for a first certificate is told the identity went away.
    let waiter = {
        let manager = h.manager.clone();
        let web = web.clone();
        tokio::spawn(async move { manager.fetch_or_wait(&web).await })
    };
    let pending = h.next_request().await;
    assert!(h.manager.forget(&web));
    let error = waiter.await.unwrap().unwrap_err();
    assert!(matches!(error, CertError::Forgotten { .. }), "{error:?}");
    pending.answer(Ok(h.issuer.issue(&web, HOUR)));

    // A held certificate is dropped and never renewed.
    h.served(&cart, Duration::from_secs(100)).await;
    assert!(h.metrics().contains("\ncertificates 1\n"));
    assert!(h.manager.forget(&cart));
    sleep(10 * HOUR).await;
    h.assert_no_request("after forget");
    assert!(h.manager.certificates().is_empty());
    assert!(h.manager.current(&cart).is_none());
    assert!(
        h.metrics().contains("\ncertificates 0\n"),
        "{}",
        h.metrics()
    );
}

#[test]
fn the_schedule_renews_at_half_life_and_never_before_the_floor() {
    let issuer = Issuer::new();
    let cart = id("cart");
    let now = Instant::now();
    let wall = SystemTime::now();

    let fresh = issuer.issue_between(&cart, wall, wall + 2 * HOUR);
    let s = schedule(&fresh, now, wall).unwrap();
    assert_between(
        "renew",
        s.renew_at - now,
        HOUR - Duration::from_secs(1),
        HOUR,
    );
    assert_between(
        "expire",
        s.expires_at - now,
        2 * HOUR - Duration::from_secs(1),
        2 * HOUR,
    );

    // Past half life already (e.g. issued with a backdated start): renew soon, not at once.
    let spent = issuer.issue_between(&cart, wall - 3 * HOUR, wall + HOUR);
    let s = schedule(&spent, now, wall).unwrap();
    assert_eq!(s.renew_at - now, MIN_RENEWAL_DELAY);

    let expired = issuer.issue_between(&cart, wall - 2 * HOUR, wall - HOUR);
    assert_eq!(schedule(&expired, now, wall), None);
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter_that_only_shortens() {
    let mut backoff = Backoff::default();
    let mut step = INITIAL_RETRY_DELAY;
    for _ in 0..12 {
        let delay = backoff.next_delay();
        assert_between("delay", delay, step.mul_f64(1.0 - RETRY_JITTER), step);
        step = (step * 2).min(MAX_RETRY_DELAY);
    }
    backoff.reset();
    assert!(backoff.next_delay() <= INITIAL_RETRY_DELAY);
}

#[test]
fn the_request_carries_a_csr_naming_only_the_identity() {
    let cart = id("cart");
    let (request, key_pem) = controller_ca::certificate_request(&cart, 3600).unwrap();
    assert_eq!(request.validity_duration, 3600);
    let impersonated = request.metadata.as_ref().unwrap().fields[IMPERSONATED_IDENTITY].clone();
    assert_eq!(
        impersonated.kind,
        Some(prost_types::value::Kind::StringValue(cart.to_string()))
    );
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&request.csr).expect("signed CSR");
    assert_eq!(
        csr.params.subject_alt_names,
        vec![SanType::URI(cart.to_string().try_into().unwrap())]
    );
    let key = KeyPair::from_pem(&key_pem).expect("PKCS#8 key");
    assert!(key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
    assert_eq!(key.public_key_raw(), csr.public_key.der_bytes());
}

#[tokio::test]
async fn a_controller_ca_needs_https_a_sendable_token_and_a_validity() {
    let config = |address: &str, token: &str, validity: Duration| ControllerCaConfig {
        validity,
        ..ControllerCaConfig::new(address, "", token)
    };
    let day = DEFAULT_CERTIFICATE_VALIDITY;
    let cases = [
        (
            config("http://127.0.0.1:15012", "t", day),
            "must start with https://",
        ),
        (
            config("https://127.0.0.1:15012", "a\nb", day),
            "bearer token",
        ),
        (
            config("https://127.0.0.1:15012", "t", Duration::ZERO),
            "at least one second",
        ),
    ];
    for (config, expected) in cases {
        let error = ControllerCa::new(&config).err().expect("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
    let debug = format!("{:?}", config("https://x:1", "secret-token", day));
    assert!(
        !debug.contains("secret-token"),
        "the token is never printed: {debug}"
    );
}
