//! The task that keeps one identity's certificate fresh: request, hold, renew at half life,
//! and on failure keep what is held and retry with backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{info, warn};

use super::metrics::CertificateMetrics;
use super::source::{CertificateSource, FetchError};
use super::{
    INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, MIN_RENEWAL_DELAY, RENEWAL_FRACTION, REQUEST_TIMEOUT,
    RETRY_JITTER,
};
use crate::identity::SpiffeId;
use crate::tls::WorkloadCertificate;

/// A certificate in hand and when, on the runtime's clock, it stops being valid.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) certificate: Arc<WorkloadCertificate>,
    pub(super) expires_at: Instant,
    pub(super) serial: Arc<str>,
}

/// What the worker is doing.
#[derive(Clone)]
pub(super) enum Phase {
    /// A request is in flight.
    Requesting,
    /// The last request succeeded; the next one is a renewal.
    Ready,
    /// The last request failed; the next one is a retry.
    Failed(Arc<FetchError>),
}

/// The shared state of one identity, published by its worker.
#[derive(Clone)]
pub(super) struct Slot {
    pub(super) held: Option<Held>,
    pub(super) phase: Phase,
    /// When the next request starts; `None` while one is in flight.
    pub(super) next_attempt: Option<Instant>,
}

impl Slot {
    pub(super) fn new() -> Self {
        Self {
            held: None,
            phase: Phase::Requesting,
            next_attempt: None,
        }
    }
}

/// When a freshly obtained certificate is renewed and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Schedule {
    pub(super) renew_at: Instant,
    pub(super) expires_at: Instant,
}

/// The schedule of `certificate`, obtained at `now` (runtime clock) and `wall_now` (wall
/// clock), or `None` when it has already expired.
///
/// The certificate's validity is wall-clock time; the timers run on the runtime's clock. The
/// remaining durations are measured once, at arrival, and carried over to the runtime's clock,
/// so that a paused clock in tests and a stepped wall clock in production both behave.
pub(super) fn schedule(
    certificate: &WorkloadCertificate,
    now: Instant,
    wall_now: SystemTime,
) -> Option<Schedule> {
    let (not_before, not_after) = (certificate.not_before(), certificate.not_after());
    let remaining = not_after
        .duration_since(wall_now)
        .ok()
        .filter(|d| !d.is_zero())?;
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let renewal_point = not_before + lifetime.mul_f64(RENEWAL_FRACTION);
    let until_renewal = renewal_point
        .duration_since(wall_now)
        .unwrap_or_default()
        .max(MIN_RENEWAL_DELAY)
        .min(remaining);
    Some(Schedule {
        renew_at: now + until_renewal,
        expires_at: now + remaining,
    })
}

/// Exponential backoff with jitter between failed requests.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: INITIAL_RETRY_DELAY,
        }
    }
}

impl Backoff {
    /// The delay before the next retry: the current step shortened by up to [`RETRY_JITTER`]
    /// (never lengthened, so [`MAX_RETRY_DELAY`] is a true bound); the step then doubles.
    pub(super) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(MAX_RETRY_DELAY);
        let cut = rand::rng().random_range(0.0..=RETRY_JITTER);
        step.mul_f64(1.0 - cut)
    }

    /// Back to the first step, after a success.
    pub(super) fn reset(&mut self) {
        self.next = INITIAL_RETRY_DELAY;
    }
}

/// Counts the identity in the `certificates` gauge from its first certificate until the
/// worker ends, however it ends (forget aborts it).
struct HeldGauge {
    gauge: Gauge,
    counted: bool,
}

impl HeldGauge {
    fn hold(&mut self) {
        if !self.counted {
            self.gauge.inc();
            self.counted = true;
        }
    }
}

impl Drop for HeldGauge {
    fn drop(&mut self) {
        if self.counted {
            self.gauge.dec();
        }
    }
}

/// The certificate task of one identity. Runs until aborted.
pub(super) struct Worker<S> {
    pub(super) identity: SpiffeId,
    pub(super) source: Arc<S>,
    pub(super) metrics: CertificateMetrics,
    pub(super) slot: watch::Sender<Slot>,
    pub(super) rotations: broadcast::Sender<SpiffeId>,
}

impl<S: CertificateSource> Worker<S> {
    pub(super) async fn run(self) {
        let mut backoff = Backoff::default();
        let mut gauge = HeldGauge {
            gauge: self.metrics.certificates.clone(),
            counted: false,
        };
        loop {
            self.slot.send_modify(|slot| {
                slot.phase = Phase::Requesting;
                slot.next_attempt = None;
            });
            let wake_at = match self.attempt().await {
                Ok(renew_at) => {
                    gauge.hold();
                    backoff.reset();
                    renew_at
                }
                Err(error) => self.failed(error, backoff.next_delay()),
            };
            sleep_until(wake_at).await;
        }
    }

    /// One request; on success the certificate is installed and its renewal time returned.
    async fn attempt(&self) -> Result<Instant, FetchError> {
        let renewing = self.slot.borrow().held.is_some();
        let fetched = match timeout(REQUEST_TIMEOUT, self.source.fetch(&self.identity)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::TimedOut {
                after: REQUEST_TIMEOUT,
            }),
        };
        let installed = fetched.and_then(|certificate| self.install(certificate));
        match &installed {
            Ok(_) => self.metrics.fetch("issued"),
            Err(error) => {
                self.metrics.fetch(error.metric_label());
                if renewing {
                    self.metrics.renewal_failures.inc();
                }
            }
        }
        installed
    }

    fn install(&self, certificate: WorkloadCertificate) -> Result<Instant, FetchError> {
        let not_after = certificate.not_after();
        let now = Instant::now();
        let schedule = schedule(&certificate, now, SystemTime::now())
            .ok_or(FetchError::ExpiredOnArrival { not_after })?;
        let serial = serial_of(&certificate);
        info!(
            identity = %self.identity,
            serial = %serial,
            valid_for_s = (schedule.expires_at - now).as_secs(),
            renew_in_s = (schedule.renew_at - now).as_secs(),
            "certificate installed"
        );
        let held = Held {
            certificate: Arc::new(certificate),
            expires_at: schedule.expires_at,
            serial,
        };
        self.slot.send_modify(|slot| {
            slot.held = Some(held);
            slot.phase = Phase::Ready;
            slot.next_attempt = Some(schedule.renew_at);
        });
        // Nobody listening is fine: subscribers come and go.
        let _ = self.rotations.send(self.identity.clone());
        Ok(schedule.renew_at)
    }

    /// Publishes a failure; returns when to retry.
    fn failed(&self, error: FetchError, delay: Duration) -> Instant {
        let now = Instant::now();
        let retry_at = now + delay;
        let valid_for = self
            .slot
            .borrow()
            .held
            .as_ref()
            .map(|held| held.expires_at.saturating_duration_since(now));
        warn!(
            identity = %self.identity,
            %error,
            reason = error.metric_label(),
            retry_in_ms = delay.as_millis() as u64,
            held_valid_for_s = valid_for.map(|d| d.as_secs()),
            "certificate request failed; a held certificate stays in use until it expires"
        );
        self.slot.send_modify(|slot| {
            slot.phase = Phase::Failed(Arc::new(error));
            slot.next_attempt = Some(retry_at);
        });
        retry_at
    }
}

/// The leaf's serial number in hex, for the admin view and logs.
fn serial_of(certificate: &WorkloadCertificate) -> Arc<str> {
    certificate
        .chain()
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .map(|(_, parsed)| parsed.tbs_certificate.raw_serial_as_string())
        .unwrap_or_default()
        .into()
}
