//! The certificates of the identities a proxy serves (DESIGN.md, "Identity").
//!
//! One [`CertificateManager`] per proxy. For every identity it serves, one task:
//!
//! - requests a certificate from a [`CertificateSource`] (the controller's CA,
//!   [`ControllerCa`], in production) as soon as the identity is [`CertificateManager::ensure`]d
//!   (a workload with it appeared) or first asked for;
//! - renews it at [`RENEWAL_FRACTION`] of its lifetime (`not_before` to `not_after`);
//! - when a request fails, keeps the certificate it holds (while it is still valid) and retries
//!   after [`INITIAL_RETRY_DELAY`], doubling up to [`MAX_RETRY_DELAY`], each delay shortened by
//!   up to [`RETRY_JITTER`] so that the ztunnels of many nodes do not retry in step;
//! - never serves a certificate past its `not_after`: from then on
//!   [`CertificateManager::fetch_or_wait`] fails with [`CertError::Expired`] while the retries
//!   go on;
//! - stops when the identity is [`CertificateManager::forget`]ten (its last workload left).
//!
//! How the proxies use it: the data path calls `fetch_or_wait` for every new connection and
//! builds its rustls configuration from the certificate it gets (a lookup and an `Arc` clone
//! when a certificate is held), so a rotated certificate is used from the next connection on
//! and open connections keep the one they were made with. [`CertificateManager::subscribe`]
//! announces rotations for whoever caches something derived from a certificate.

mod controller_ca;
mod metrics;
mod source;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

pub use controller_ca::{
    CONNECT_TIMEOUT, ControllerCa, ControllerCaConfig, ControllerCaError, DEFAULT_CA_DOMAIN_NAME,
    DEFAULT_CERTIFICATE_VALIDITY, IMPERSONATED_IDENTITY,
};
pub use metrics::CertificateMetrics;
pub use source::{CertificateSource, FetchError};

use crate::identity::SpiffeId;
use crate::tls::WorkloadCertificate;
use worker::{Phase, Slot, Worker};

/// The fraction of a certificate's lifetime after which it is renewed: half life, as Istio.
pub const RENEWAL_FRACTION: f64 = 0.5;

/// The shortest wait before renewing a certificate just obtained, so that a CA handing out
/// nearly-spent certificates is not asked again in a tight loop.
pub const MIN_RENEWAL_DELAY: Duration = Duration::from_secs(1);

/// The wait before the first retry of a failed request.
pub const INITIAL_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The longest wait between retries; the delay doubles from [`INITIAL_RETRY_DELAY`] up to it.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Each retry delay is shortened by a random fraction of itself up to this one.
pub const RETRY_JITTER: f64 = 0.2;

/// The longest a certificate request may take before it counts as failed; it also bounds how
/// long [`CertificateManager::fetch_or_wait`] waits for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many rotations a slow [`CertificateManager::subscribe`]r may fall behind before it is
/// told it lagged.
pub const ROTATION_CHANNEL_CAPACITY: usize = 64;

/// Why no certificate can be served for an identity right now.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// No certificate has been obtained yet and the last request failed.
    #[error("no certificate for {identity} yet: {source}; retrying in the background")]
    Unavailable {
        /// The identity asked for.
        identity: SpiffeId,
        /// Why the last request failed.
        source: Arc<FetchError>,
    },
    /// The certificate expired and no renewal has succeeded since.
    #[error(
        "the certificate of {identity} expired at {} and could not be renewed: {source}; \
         retrying in the background",
        utc(*.not_after)
    )]
    Expired {
        /// The identity asked for.
        identity: SpiffeId,
        /// When the held certificate expired.
        not_after: SystemTime,
        /// Why the last renewal failed.
        source: Arc<FetchError>,
    },
    /// The identity was forgotten while the caller waited for its certificate.
    #[error(
        "{identity} is no longer served by this proxy (its last workload left), so no \
         certificate is kept for it"
    )]
    Forgotten {
        /// The identity asked for.
        identity: SpiffeId,
    },
}

impl CertError {
    /// The label under which the data path counts a connection that failed for this reason.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CertError::Unavailable { .. } => "certificate_unavailable",
            CertError::Expired { .. } => "certificate_expired",
            CertError::Forgotten { .. } => "identity_not_served",
        }
    }
}

/// What the admin API shows of one identity's certificate (never the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateStatus {
    /// The served identity.
    pub identity: SpiffeId,
    /// Where its certificate stands.
    pub state: CertificateState,
    /// The start of the held certificate's validity.
    pub not_before: Option<SystemTime>,
    /// The end of the held certificate's validity.
    pub not_after: Option<SystemTime>,
    /// The held leaf's serial number, colon-separated hex.
    pub serial: Option<String>,
    /// When the next request (renewal or retry) starts; `None` while one is in flight.
    pub next_renewal: Option<SystemTime>,
}

/// Where one identity's certificate stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateState {
    /// The first certificate is being requested.
    Pending,
    /// A valid certificate is held and the last request succeeded.
    Ready,
    /// The last request failed (the message says why); a still-valid certificate, if one is
    /// held, is served meanwhile.
    Failed(String),
    /// The held certificate has expired and is no longer served; the message is the last
    /// failure.
    Expired(String),
}

/// The certificates of every served identity. Cheap to clone: clones share the state.
///
/// Must be used inside a tokio runtime: each identity gets its own task.
pub struct CertificateManager<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for CertificateManager<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    source: Arc<S>,
    metrics: CertificateMetrics,
    entries: Mutex<HashMap<SpiffeId, Entry>>,
    rotations: broadcast::Sender<SpiffeId>,
}

/// One served identity: the state its task publishes and the handle that stops the task.
struct Entry {
    slot: watch::Receiver<Slot>,
    worker: AbortHandle,
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        for entry in self
            .entries
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            entry.worker.abort();
        }
    }
}

impl<S: CertificateSource> CertificateManager<S> {
    /// A manager that obtains certificates from `source`.
    pub fn new(source: S, metrics: CertificateMetrics) -> Self {
        let (rotations, _) = broadcast::channel(ROTATION_CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                source: Arc::new(source),
                metrics,
                entries: Mutex::new(HashMap::new()),
                rotations,
            }),
        }
    }

    /// Starts obtaining and renewing a certificate for `identity`, unless that is already
    /// happening. Call it when a workload with this identity appears on the node.
    pub fn ensure(&self, identity: &SpiffeId) {
        self.slot(identity);
    }

    /// Stops renewing `identity`'s certificate and drops it. Call it when the last workload
    /// with this identity leaves the node. Returns whether the identity was served.
    ///
    /// Callers waiting in [`Self::fetch_or_wait`] get [`CertError::Forgotten`]; connections
    /// already made with the certificate are not affected.
    pub fn forget(&self, identity: &SpiffeId) -> bool {
        let Some(entry) = self.entries().remove(identity) else {
            return false;
        };
        entry.worker.abort();
        tracing::info!(%identity, "certificate forgotten: no workload with this identity left");
        true
    }

    /// The certificate of `identity`: at once when a valid one is held; otherwise after the
    /// request in flight (bounded by [`REQUEST_TIMEOUT`]). Concurrent callers share one
    /// request. An identity not yet served is [`Self::ensure`]d first, so the caller should
    /// [`Self::forget`] it when done.
    pub async fn fetch_or_wait(
        &self,
        identity: &SpiffeId,
    ) -> Result<Arc<WorkloadCertificate>, CertError> {
        let mut slot = self.slot(identity);
        loop {
            if let Some(outcome) = outcome(identity, &slot.borrow_and_update(), Instant::now()) {
                return outcome;
            }
            if slot.changed().await.is_err() {
                return Err(CertError::Forgotten {
                    identity: identity.clone(),
                });
            }
        }
    }

    /// The valid certificate held for `identity`, if any, without waiting or starting a
    /// request.
    pub fn current(&self, identity: &SpiffeId) -> Option<Arc<WorkloadCertificate>> {
        let slot = self.entries().get(identity)?.slot.clone();
        let slot = slot.borrow();
        let held = slot.held.as_ref()?;
        (Instant::now() < held.expires_at).then(|| held.certificate.clone())
    }

    /// Announces every certificate installed (first or renewed) by its identity. A receiver
    /// that lags behind by more than [`ROTATION_CHANNEL_CAPACITY`] should treat every identity
    /// as rotated.
    pub fn subscribe(&self) -> broadcast::Receiver<SpiffeId> {
        self.inner.rotations.subscribe()
    }

    /// Whether every served identity holds a valid certificate (for readiness).
    pub fn all_ready(&self) -> bool {
        let now = Instant::now();
        self.entries().values().all(|entry| {
            entry
                .slot
                .borrow()
                .held
                .as_ref()
                .is_some_and(|held| now < held.expires_at)
        })
    }

    /// The state of every served identity, sorted by identity, for the admin API.
    pub fn certificates(&self) -> Vec<CertificateStatus> {
        let slots: Vec<(SpiffeId, watch::Receiver<Slot>)> = self
            .entries()
            .iter()
            .map(|(identity, entry)| (identity.clone(), entry.slot.clone()))
            .collect();
        let now = Instant::now();
        let mut statuses: Vec<CertificateStatus> = slots
            .into_iter()
            .map(|(identity, slot)| status(identity, &slot.borrow(), now))
            .collect();
        statuses.sort_by(|a, b| a.identity.cmp(&b.identity));
        statuses
    }

    /// The state of `identity`, starting its task if there is none.
    fn slot(&self, identity: &SpiffeId) -> watch::Receiver<Slot> {
        let mut entries = self.entries();
        // A finished worker can only have panicked (forget removes the entry): start anew.
        if let Some(entry) = entries.get(identity).filter(|e| !e.worker.is_finished()) {
            return entry.slot.clone();
        }
        let (sender, receiver) = watch::channel(Slot::new());
        let worker = Worker {
            identity: identity.clone(),
            source: self.inner.source.clone(),
            metrics: self.inner.metrics.clone(),
            slot: sender,
            rotations: self.inner.rotations.clone(),
        };
        let span = tracing::info_span!("certificate", identity = %identity);
        let task = tokio::spawn(worker.run().instrument(span));
        entries.insert(
            identity.clone(),
            Entry {
                slot: receiver.clone(),
                worker: task.abort_handle(),
            },
        );
        receiver
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<SpiffeId, Entry>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What `fetch_or_wait` answers from the current state, or `None` to wait for the next.
fn outcome(
    identity: &SpiffeId,
    slot: &Slot,
    now: Instant,
) -> Option<Result<Arc<WorkloadCertificate>, CertError>> {
    let valid = slot.held.as_ref().filter(|held| now < held.expires_at);
    if let Some(held) = valid {
        return Some(Ok(held.certificate.clone()));
    }
    let Phase::Failed(source) = &slot.phase else {
        // A request is in flight, or the renewal timer of an expiring certificate is due.
        return None;
    };
    let source = source.clone();
    Some(Err(match &slot.held {
        Some(held) => CertError::Expired {
            identity: identity.clone(),
            not_after: held.certificate.not_after(),
            source,
        },
        None => CertError::Unavailable {
            identity: identity.clone(),
            source,
        },
    }))
}

fn status(identity: SpiffeId, slot: &Slot, now: Instant) -> CertificateStatus {
    let held = slot.held.as_ref();
    let expired = held.is_some_and(|held| now >= held.expires_at);
    let state = match (&slot.phase, held) {
        (Phase::Failed(error), _) if expired => CertificateState::Expired(error.to_string()),
        (_, _) if expired => CertificateState::Expired("renewal in progress".to_string()),
        (Phase::Failed(error), _) => CertificateState::Failed(error.to_string()),
        (_, Some(_)) => CertificateState::Ready,
        (_, None) => CertificateState::Pending,
    };
    CertificateStatus {
        identity,
        state,
        not_before: held.map(|held| held.certificate.not_before()),
        not_after: held.map(|held| held.certificate.not_after()),
        serial: held.map(|held| held.serial.to_string()),
        next_renewal: slot
            .next_attempt
            .map(|at| SystemTime::now() + at.saturating_duration_since(now)),
    }
}

/// A wall-clock time as an operator reads it, e.g. `Mar  4 10:00:00 2025 +00:00`.
fn utc(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    };
    x509_parser::time::ASN1Time::from_timestamp(secs).map_or_else(
        |_| format!("{secs} s after the Unix epoch"),
        |t| t.to_string(),
    )
}
