//! The client against the in-process fake ADS server: subscription, (N)ACKs, reconnects,
//! authentication and TLS.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_proto::istio::security::{Authorization, Scope};
use mesh_proto::istio::workload::{self as wl, address};
use prometheus_client::registry::Registry;
use prost::Message;
use tempfile::NamedTempFile;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::fake_server::{Call, FakeAds, FakeStream, GOOD_TOKEN, PATIENCE};
use super::*;
use crate::state::{DiscoverySnapshot, DiscoveryStore, MeshDefaults};

const ADDRESS: &str = mesh_proto::ADDRESS_TYPE_URL;
const AUTHORIZATION: &str = mesh_proto::AUTHORIZATION_TYPE_URL;
const PROXY_ID: &str = "ztunnel~10.0.0.1~node-1~svc.cluster.local";

/// Fast enough that tests do not wait, slow enough that a loop would show.
const TEST_BACKOFF: BackoffConfig = BackoffConfig {
    initial: Duration::from_millis(20),
    max: Duration::from_millis(100),
};

/// A client running against a fake, with everything a test looks at.
struct Harness {
    snapshots: watch::Receiver<Arc<DiscoverySnapshot>>,
    status: watch::Receiver<XdsStatus>,
    registry: Registry,
    token: NamedTempFile,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Harness {
    fn start(address: String, tls: Option<ControllerTls>, token: &str) -> Self {
        let token_file = NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), format!("{token}\n")).unwrap();
        let mut config = XdsConfig::new(address, PROXY_ID, "node-1");
        config.tls = tls;
        config.token_file = Some(token_file.path().to_path_buf());
        config.backoff = TEST_BACKOFF;
        Self::with_config(config, token_file)
    }

    fn with_config(config: XdsConfig, token: NamedTempFile) -> Self {
        let mut registry = Registry::default();
        let store = DiscoveryStore::new(MeshDefaults::default());
        let snapshots = store.subscribe();
        let client =
            AdsClient::new(config, Box::new(store), XdsMetrics::new(&mut registry)).unwrap();
        let status = client.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(client.run(async {
            let _ = stopped.await;
        }));
        Self {
            snapshots,
            status,
            registry,
            token,
            stop: Some(stop),
            task,
        }
    }

    fn snapshot(&self) -> Arc<DiscoverySnapshot> {
        self.snapshots.borrow().clone()
    }

    fn metric(&self, line_start: &str) -> Option<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .map(str::to_string)
    }

    async fn wait_for(&mut self, what: &str, done: impl FnMut(&XdsStatus) -> bool) -> XdsStatus {
        let waited = tokio::time::timeout(PATIENCE, self.status.wait_for(done))
            .await
            .map(|status| status.unwrap().clone());
        waited.unwrap_or_else(|_| panic!("status never became {what}: {:?}", *self.status.borrow()))
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("client stops on shutdown")
            .unwrap();
    }
}

fn ip_bytes(ip: &str) -> Vec<u8> {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn workload(name: &str, ip: &[u8]) -> wl::Workload {
    wl::Workload {
        uid: format!("Kubernetes//Pod/shop/{name}"),
        name: name.into(),
        namespace: "shop".into(),
        addresses: vec![ip.to_vec()],
        tunnel_protocol: wl::TunnelProtocol::Hbone.into(),
        service_account: "echo".into(),
        ..Default::default()
    }
}

fn resource(type_url: &str, name: &str, version: &str, body: Vec<u8>) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(prost_types::Any {
            type_url: type_url.into(),
            value: body,
        }),
        ..Default::default()
    }
}

fn workload_resource(w: wl::Workload, version: &str) -> Resource {
    let name = w.uid.clone();
    let body = wl::Address {
        r#type: Some(address::Type::Workload(w)),
    }
    .encode_to_vec();
    resource(ADDRESS, &name, version, body)
}

fn service_resource(name: &str, vip: &str, version: &str) -> Resource {
    let service = wl::Service {
        name: name.into(),
        namespace: "shop".into(),
        hostname: format!("{name}.shop.svc.cluster.local"),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: ip_bytes(vip),
        }],
        ports: vec![wl::Port {
            service_port: 80,
            target_port: 8080,
        }],
        ..Default::default()
    };
    let key = format!("shop/{}", service.hostname);
    let body = wl::Address {
        r#type: Some(address::Type::Service(service)),
    }
    .encode_to_vec();
    resource(ADDRESS, &key, version, body)
}

fn policy_resource(name: &str) -> Resource {
    let policy = Authorization {
        name: name.into(),
        namespace: "shop".into(),
        scope: Scope::Namespace.into(),
        ..Default::default()
    };
    resource(
        AUTHORIZATION,
        &format!("shop/{name}"),
        "1",
        policy.encode_to_vec(),
    )
}

fn response(
    type_url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Reads the two initial subscriptions and checks their shape.
async fn subscriptions(stream: &mut FakeStream) -> (DeltaDiscoveryRequest, DeltaDiscoveryRequest) {
    let first = stream.request("the Address subscription").await;
    let second = stream.request("the Authorization subscription").await;
    assert_eq!(
        (first.type_url.as_str(), second.type_url.as_str()),
        (ADDRESS, AUTHORIZATION)
    );
    for request in [&first, &second] {
        assert!(
            request.resource_names_subscribe.is_empty(),
            "wildcard subscription is the empty list"
        );
        assert!(request.response_nonce.is_empty());
    }
    (first, second)
}

/// Sends a response and returns the client's answer to it.
async fn exchange(
    stream: &mut FakeStream,
    response: DeltaDiscoveryResponse,
) -> DeltaDiscoveryRequest {
    let nonce = response.nonce.clone();
    stream.respond(response).await;
    let reply = stream.request("an (N)ACK").await;
    assert_eq!(
        reply.response_nonce, nonce,
        "the reply answers the response just sent"
    );
    reply
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn subscribes_applies_and_acknowledges() {
    let mut fake = FakeAds::start().await;
    let mut client = Harness::start(format!("http://{}", fake.addr), None, GOOD_TOKEN);
    let mut stream = fake.accepted("the first stream").await;
    let (first, second) = subscriptions(&mut stream).await;
    let node = first.node.expect("node on the first request");
    assert_eq!(node.id, PROXY_ID);
    assert!(node.metadata.unwrap().fields.contains_key("NODE_NAME"));
    assert!(second.node.is_none());
    assert!(first.initial_resource_versions.is_empty());

    let update = vec![
        workload_resource(workload("echo-0", &ip_bytes("10.1.0.1")), "w1"),
        service_resource("echo", "10.96.0.10", "s1"),
    ];
    let ack = exchange(&mut stream, response(ADDRESS, "a1", update, &[])).await;
    assert_eq!(ack.type_url, ADDRESS);
    assert!(ack.error_detail.is_none(), "{:?}", ack.error_detail);
    assert!(client.snapshot().workload_by_ip(ip("10.1.0.1")).is_some());
    assert!(client.snapshot().service_by_vip(ip("10.96.0.10")).is_some());
    assert!(
        !client.status.borrow().synced,
        "Authorization has not answered yet"
    );

    let ack = exchange(
        &mut stream,
        response(AUTHORIZATION, "p1", vec![policy_resource("allow")], &[]),
    )
    .await;
    assert!(ack.error_detail.is_none());
    client
        .wait_for("synced", |s| {
            s.synced && s.connection == ConnectionState::Connected
        })
        .await;
    assert!(client.snapshot().policy("shop/allow").is_some());

    let removal = response(ADDRESS, "a2", Vec::new(), &["Kubernetes//Pod/shop/echo-0"]);
    assert!(exchange(&mut stream, removal).await.error_detail.is_none());
    assert!(client.snapshot().workload_by_ip(ip("10.1.0.1")).is_none());
    assert!(client.snapshot().service_by_vip(ip("10.96.0.10")).is_some());

    let applied = client.metric(
        "xds_updates_applied_total{type_url=\"type.googleapis.com/istio.workload.Address\"}",
    );
    assert!(applied.unwrap().ends_with(" 2"));
    assert_eq!(
        client.metric("xds_connected ").as_deref(),
        Some("xds_connected 1")
    );
    client.stop().await;
}

#[tokio::test]
async fn bad_resources_are_nacked_and_the_rest_applies() {
    let mut fake = FakeAds::start().await;
    let client = Harness::start(format!("http://{}", fake.addr), None, GOOD_TOKEN);
    let mut stream = fake.accepted("the first stream").await;
    subscriptions(&mut stream).await;
    let update = vec![
        workload_resource(workload("good", &ip_bytes("10.1.0.1")), "1"),
        workload_resource(workload("bad", &[10, 1, 0, 2, 9]), "1"),
    ];
    let nack = exchange(&mut stream, response(ADDRESS, "a1", update, &[])).await;
    let status = nack.error_detail.expect("a NACK");
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(
        status.message.contains("Kubernetes//Pod/shop/bad"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("5-byte address"),
        "{}",
        status.message
    );
    assert!(!status.message.contains("shop/good"), "{}", status.message);
    assert!(
        client.snapshot().workload_by_ip(ip("10.1.0.1")).is_some(),
        "the good workload applied"
    );

    let nacks = client
        .metric("xds_nacks_sent_total{type_url=\"type.googleapis.com/istio.workload.Address\"}");
    assert!(nacks.unwrap().ends_with(" 1"));
    let rejected = client.metric(
        "xds_resources_rejected_total{type_url=\"type.googleapis.com/istio.workload.Address\"}",
    );
    assert!(rejected.unwrap().ends_with(" 1"));
    client.stop().await;
}

#[tokio::test]
async fn reconnects_declaring_what_it_holds_and_keeps_serving_meanwhile() {
    let mut fake = FakeAds::start().await;
    let mut client = Harness::start(format!("http://{}", fake.addr), None, GOOD_TOKEN);
    let mut stream = fake.accepted("the first stream").await;
    subscriptions(&mut stream).await;
    let update = vec![
        workload_resource(workload("echo-0", &ip_bytes("10.1.0.1")), "w1"),
        service_resource("echo", "10.96.0.10", "s7"),
    ];
    exchange(&mut stream, response(ADDRESS, "a1", update, &[])).await;
    exchange(&mut stream, response(AUTHORIZATION, "p1", Vec::new(), &[])).await;
    client.wait_for("synced", |s| s.synced).await;

    drop(stream);
    let status = client
        .wait_for("disconnected", |s| {
            s.connection == ConnectionState::Disconnected
        })
        .await;
    assert!(
        matches!(status.last_error.as_deref(), Some(XdsError::StreamClosed)),
        "{:?}",
        status.last_error
    );
    assert!(status.synced, "readiness survives a controller restart");
    assert!(
        client.snapshot().workload_by_ip(ip("10.1.0.1")).is_some(),
        "the last known state keeps serving"
    );

    let mut stream = fake.accepted("the second stream").await;
    let (first, second) = subscriptions(&mut stream).await;
    let expected = [
        ("Kubernetes//Pod/shop/echo-0".to_string(), "w1".to_string()),
        (
            "shop/echo.shop.svc.cluster.local".to_string(),
            "s7".to_string(),
        ),
    ];
    assert_eq!(first.initial_resource_versions, expected.into());
    assert!(second.initial_resource_versions.is_empty());
    assert!(first.node.is_some(), "every stream starts with the node");

    let reconnects = client.metric("xds_reconnects_total{reason=\"stream_closed\"}");
    assert_eq!(
        reconnects.as_deref(),
        Some("xds_reconnects_total{reason=\"stream_closed\"} 1")
    );
    client.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_reported_and_retried_with_backoff() {
    let mut fake = FakeAds::start().await;
    let mut client = Harness::start(format!("http://{}", fake.addr), None, "stale-token");
    for attempt in 0..3 {
        match fake.call("a refused attempt").await {
            Call::Refused { authorization } => {
                assert_eq!(authorization.as_deref(), Some("Bearer stale-token"))
            }
            Call::Accepted(_) => panic!("attempt {attempt} was accepted"),
        }
    }
    let status = client.wait_for("refused", |s| s.last_error.is_some()).await;
    let error = status.last_error.unwrap();
    assert!(
        matches!(*error, XdsError::Unauthenticated { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("refused the bearer token")
            && text.contains("not one this controller issued"),
        "{text}"
    );
    assert_eq!(error.metric_label(), "unauthenticated");
    assert!(
        client
            .metric("xds_reconnects_total{reason=\"unauthenticated\"}")
            .is_some()
    );

    // The token is read again for every connection: fixing the file is enough.
    std::fs::write(client.token.path(), GOOD_TOKEN).unwrap();
    let mut stream = loop {
        match fake.call("an attempt with the new token").await {
            Call::Accepted(stream) => break stream,
            Call::Refused { .. } => continue,
        }
    };
    subscriptions(&mut stream).await;
    client
        .wait_for("connected", |s| s.connection == ConnectionState::Connected)
        .await;
    client.stop().await;
}

#[tokio::test]
async fn verifies_the_controller_over_tls() {
    let (mut fake, root_pem) = FakeAds::start_tls().await;
    let tls = ControllerTls {
        roots_pem: root_pem.clone(),
        server_name: DEFAULT_SERVER_NAME.into(),
    };
    let client = Harness::start(format!("https://{}", fake.addr), Some(tls), GOOD_TOKEN);
    let mut stream = fake.accepted("a TLS stream").await;
    subscriptions(&mut stream).await;
    client.stop().await;

    let wrong_name = ControllerTls {
        roots_pem: root_pem,
        server_name: "not-the-controller".into(),
    };
    let mut client = Harness::start(
        format!("https://{}", fake.addr),
        Some(wrong_name),
        GOOD_TOKEN,
    );
    let status = client.wait_for("failed", |s| s.last_error.is_some()).await;
    let error = status.last_error.unwrap();
    assert!(matches!(*error, XdsError::Connect { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("certificate not valid for name \"not-the-controller\""),
        "{error}"
    );
    client.stop().await;
}

#[tokio::test]
async fn unusable_configuration_is_refused_up_front() {
    let store = || Box::new(DiscoveryStore::new(MeshDefaults::default()));
    let metrics = || XdsMetrics::new(&mut Registry::default());
    let https_without_tls = XdsConfig::new("https://127.0.0.1:15012", PROXY_ID, "node-1");
    let error = AdsClient::new(https_without_tls, store(), metrics())
        .err()
        .unwrap();
    assert!(matches!(error, XdsError::Address { .. }), "{error:?}");
    let not_a_uri = XdsConfig::new("not a uri", PROXY_ID, "node-1");
    assert!(matches!(
        AdsClient::new(not_a_uri, store(), metrics()).err().unwrap(),
        XdsError::Address { .. }
    ));
    let missing =
        ControllerTls::from_file(std::path::Path::new("/nonexistent/root-cert.pem")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/root-cert.pem"),
        "{missing}"
    );
}

/// Without a network: the token file is missing, so every attempt fails at once and only the
/// backoff paces the loop. Paused time makes the pacing exact.
#[tokio::test(start_paused = true)]
async fn attempts_are_paced_by_jittered_exponential_backoff() {
    let token = NamedTempFile::new().unwrap();
    let mut config = XdsConfig::new("http://127.0.0.1:9", PROXY_ID, "node-1");
    config.token_file = Some(token.path().with_extension("missing"));
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
    };
    let mut client = Harness::with_config(config, token);
    let mut failures = Vec::new();
    while failures.len() < 6 {
        client.status.changed().await.unwrap();
        let failed = client.status.borrow_and_update().connection == ConnectionState::Disconnected;
        if failed {
            failures.push(tokio::time::Instant::now());
        }
    }
    let ceilings = [100, 200, 400, 400, 400];
    for (gap, ceiling) in failures.windows(2).map(|w| w[1] - w[0]).zip(ceilings) {
        let ceiling = Duration::from_millis(ceiling);
        assert!(
            gap >= ceiling / 2 && gap <= ceiling,
            "gap {gap:?} outside [{:?}, {ceiling:?}]",
            ceiling / 2
        );
    }
    let error = client.status.borrow().last_error.clone().unwrap();
    assert!(matches!(*error, XdsError::Token { .. }), "{error:?}");
    assert!(error.to_string().contains("bearer token file"), "{error}");
    assert!(
        client
            .metric("xds_reconnects_total{reason=\"token\"} 6")
            .is_some()
    );
    client.stop().await;
}
