//! Per-request load balancing over a service's endpoints: least-request with two random
//! choices (P2C), and outlier detection.
//!
//! - Candidates are the endpoints serving the service port that the service's health policy
//!   admits (healthy ones, unless it allows all).
//! - Ejected endpoints are skipped, and so are endpoints this request already tried (a
//!   retry goes elsewhere when it can). When that leaves nothing, the exclusions are dropped
//!   in that order: a request is better sent to an ejected endpoint than refused while
//!   endpoints exist ("panic" routing, as Envoy's).
//! - Of the remaining candidates two are drawn at random and the one with fewer requests in
//!   flight wins; with one candidate it wins alone.
//! - Outlier detection: [`OutlierSettings::consecutive_failures`] 5xx answers or connect
//!   failures in a row eject an endpoint for [`OutlierSettings::base_ejection`], doubled for
//!   every ejection since its last success, up to [`OutlierSettings::max_ejection`]. When
//!   the time is up it takes traffic again; one success resets its record.
//!
//! State is kept per workload uid, shared by every service the workload backs, in a map
//! that only takes its write lock to add an endpoint seen for the first time.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::time::Instant;
use tracing::info;
use ztunnel::state::{DiscoverySnapshot, HealthPolicy, ServiceInfo, WorkloadInfo};

/// Failures in a row that eject an endpoint (Envoy's `consecutive_5xx` default).
pub const CONSECUTIVE_FAILURES: u32 = 5;

/// How long a first ejection lasts (Envoy's `base_ejection_time` default).
pub const BASE_EJECTION: Duration = Duration::from_secs(30);

/// The longest an ejection lasts, however often the endpoint failed (Envoy's default).
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Outlier detection parameters; the defaults are the constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierSettings {
    /// See [`CONSECUTIVE_FAILURES`].
    pub consecutive_failures: u32,
    /// See [`BASE_EJECTION`].
    pub base_ejection: Duration,
    /// See [`MAX_EJECTION`].
    pub max_ejection: Duration,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: CONSECUTIVE_FAILURES,
            base_ejection: BASE_EJECTION,
            max_ejection: MAX_EJECTION,
        }
    }
}

/// One endpoint a request may go to.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The workload.
    pub workload: Arc<WorkloadInfo>,
    /// Its address and the target port for the service port.
    pub address: SocketAddr,
}

/// The endpoints of `service` that serve `port` and that its health policy admits.
pub fn candidates(
    snapshot: &DiscoverySnapshot,
    service: &ServiceInfo,
    port: u16,
) -> Vec<Candidate> {
    let all = service.health_policy() == HealthPolicy::AllowAll;
    snapshot
        .endpoints_on_port(service, port)
        .filter(|(workload, _)| all || workload.healthy)
        .filter_map(|(workload, target)| {
            let ip = *workload.addresses.first()?;
            Some(Candidate {
                workload: workload.clone(),
                address: SocketAddr::new(ip, target),
            })
        })
        .collect()
}

/// How an attempt against an endpoint ended, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// A 5xx response, a failed connection, or a reset.
    Failure,
    /// Nothing learned (the request was cancelled, or timed out on our side).
    Unknown,
}

/// The balancer's counters.
#[derive(Clone, Debug, Default)]
pub struct BalancerMetrics {
    /// Endpoints ejected by outlier detection.
    pub ejections: Counter,
    /// Picks that had to use an ejected endpoint because no other was left.
    pub panic_picks: Counter,
}

impl BalancerMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "waypoint_outlier_ejections",
            "Endpoints ejected by outlier detection",
            metrics.ejections.clone(),
        );
        registry.register(
            "waypoint_panic_picks",
            "Requests sent to an ejected endpoint because every candidate was ejected",
            metrics.panic_picks.clone(),
        );
        metrics
    }
}

/// Load-balancing state of every endpoint seen. Cheap to share behind an `Arc`.
pub struct Balancer {
    settings: OutlierSettings,
    metrics: BalancerMetrics,
    endpoints: RwLock<HashMap<Arc<str>, Arc<EndpointState>>>,
}

/// One endpoint's requests in flight and failure record.
#[derive(Debug, Default)]
pub struct EndpointState {
    active: AtomicU32,
    record: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    consecutive_failures: u32,
    /// Ejections since the last success; each doubles the next one.
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl EndpointState {
    /// Requests in flight.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the endpoint is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.record().ejected_until.is_some_and(|until| now < until)
    }
}

/// A chosen endpoint; counts as a request in flight until dropped.
#[derive(Debug)]
pub struct Picked {
    /// Where to send the request.
    pub candidate: Candidate,
    state: Arc<EndpointState>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// An empty balancer.
    pub fn new(settings: OutlierSettings, metrics: BalancerMetrics) -> Self {
        Self {
            settings,
            metrics,
            endpoints: RwLock::new(HashMap::new()),
        }
    }

    /// The state of the endpoint with workload `uid`, created on first sight.
    pub fn state(&self, uid: &Arc<str>) -> Arc<EndpointState> {
        if let Some(state) = self
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
        {
            return state.clone();
        }
        let mut endpoints = self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if endpoints.len() >= PRUNE_AT && endpoints.len().is_power_of_two() {
            // Forget endpoints nobody uses and that carry no ejection: they are gone from
            // discovery or will start from a clean record anyway.
            endpoints.retain(|_, s| Arc::strong_count(s) > 1 || s.record().ejections > 0);
        }
        endpoints.entry(uid.clone()).or_default().clone()
    }

    /// Picks an endpoint among `candidates`, avoiding those whose address is in `tried`.
    pub fn pick(
        &self,
        candidates: &[Candidate],
        tried: &[SocketAddr],
        rng: &mut impl Rng,
    ) -> Option<Picked> {
        if candidates.is_empty() {
            return None;
        }
        let now = Instant::now();
        let states: Vec<Arc<EndpointState>> = candidates
            .iter()
            .map(|c| self.state(&c.workload.uid))
            .collect();
        let live: Vec<usize> = (0..candidates.len())
            .filter(|&i| !states[i].is_ejected(now))
            .collect();
        let fresh: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| !tried.contains(&candidates[i].address))
            .collect();
        let pool = if !fresh.is_empty() {
            fresh
        } else if !live.is_empty() {
            live
        } else {
            self.metrics.panic_picks.inc();
            (0..candidates.len()).collect()
        };
        let chosen = match pool.len() {
            1 => pool[0],
            n => {
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (pool[a], pool[b]);
                if states[b].active() < states[a].active() {
                    b
                } else {
                    a
                }
            }
        };
        let state = states[chosen].clone();
        state.active.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            candidate: candidates[chosen].clone(),
            state,
        })
    }

    /// Records how an attempt against `picked` ended.
    pub fn report(&self, picked: &Picked, outcome: Outcome) {
        let mut record = picked.state.record();
        match outcome {
            Outcome::Success => {
                record.consecutive_failures = 0;
                record.ejections = 0;
            }
            Outcome::Failure => {
                record.consecutive_failures += 1;
                let now = Instant::now();
                let ejected = record.ejected_until.is_some_and(|until| now < until);
                if record.consecutive_failures >= self.settings.consecutive_failures && !ejected {
                    let factor = 1u32 << record.ejections.min(16);
                    let duration =
                        (self.settings.base_ejection * factor).min(self.settings.max_ejection);
                    record.ejected_until = Some(now + duration);
                    record.ejections += 1;
                    record.consecutive_failures = 0;
                    self.metrics.ejections.inc();
                    info!(
                        endpoint = %picked.candidate.address,
                        workload = %picked.candidate.workload.uid,
                        ejected_for = ?duration,
                        "endpoint ejected after consecutive failures"
                    );
                }
            }
            Outcome::Unknown => {}
        }
    }
}

/// The endpoint count from which unused entries are pruned (at each power of two).
const PRUNE_AT: usize = 1024;
