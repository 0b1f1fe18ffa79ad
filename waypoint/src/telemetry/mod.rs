//! Request telemetry with Istio's metric names and labels (`reporter="waypoint"`), the W3C
//! trace context, and the access log: a [`RequestRecord`] per request records the metrics
//! and its access-log line when the response body is done, also when it is dropped (a
//! client that went away is still counted, with response code 0 if it got nothing). The
//! line is written off the request path by an [`AccessLog`] writer when the metrics have
//! one (the binary's), else at once.
//!
//! Recording is on every request's path, so the four series of a label set are looked up
//! once and remembered ([`SeriesCache`]) under a key that compares the discovery records by
//! identity: Istio's 25 labels are built, formatted and hashed only the first time a
//! combination is seen.

mod access_log;
mod body;
mod trace;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use ztunnel::identity::SpiffeId;
use ztunnel::state::{ServiceInfo, WorkloadInfo};

pub use access_log::{
    ACCESS_LOG_QUEUE, AccessEntry, AccessLog, AccessLogSettings, AccessLogWriter,
};
pub use body::RecordingBody;
pub use trace::TraceContext;

/// The `grpc-status` of a response's headers (trailers-only) or trailers.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<Arc<str>> {
    let value = headers.get("grpc-status")?.to_str().ok()?.trim();
    // The codes are small numbers; anything else is not a status and not a label value.
    (!value.is_empty() && value.len() <= 3 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.into())
}

/// The gRPC status a client reports for an HTTP status without `grpc-status` (gRPC's
/// "HTTP to gRPC status code mapping", as Envoy applies it): a response the waypoint or a
/// non-gRPC hop answered.
fn grpc_status_of_http(status: u16) -> &'static str {
    match status {
        400 => "13",
        401 => "16",
        403 => "7",
        404 => "12",
        429 | 502 | 503 | 504 => "14",
        _ => "2",
    }
}

/// Istio's buckets of `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets of the request and response size histograms (1 B to 100 MB, x10).
pub const SIZE_BUCKETS_BYTES: [f64; 9] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

/// Istio's standard labels of the HTTP metrics; each field is the label of the same name.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub source_app: Arc<str>,
    pub source_version: Arc<str>,
    pub source_canonical_service: Arc<str>,
    pub source_canonical_revision: Arc<str>,
    pub source_cluster: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    pub destination_app: Arc<str>,
    pub destination_version: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub destination_canonical_service: Arc<str>,
    pub destination_canonical_revision: Arc<str>,
    pub destination_cluster: Arc<str>,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: Arc<str>,
    pub response_flags: Arc<str>,
    pub connection_security_policy: &'static str,
}

/// Label sets whose series [`RequestMetrics`] remembers; past this many the memory is
/// cleared and fills again, so stale discovery records are not kept for long.
pub const SERIES_CACHE_LIMIT: usize = 4096;

/// The value of a label that has none, shared rather than allocated per request.
static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));

/// The value of a label whose workload is not known.
static UNKNOWN: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("unknown"));

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
    pub caused_by: &'static str,
}

/// Labels of the upgraded-connection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpgradeLabels {
    reason: &'static str,
}

/// The waypoint's request metrics. Cheap to clone; clones share the series.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    request_bytes: Family<RequestLabels, Histogram>,
    response_bytes: Family<RequestLabels, Histogram>,
    series: SeriesCache,
    failures: Family<FailureLabels, Counter>,
    upgrades_ended: Family<UpgradeLabels, Counter>,
    /// Requests that dry-run policies would have denied.
    pub dry_run_denials: Counter,
    /// Where access-log lines go; `None`: written by the request's thread.
    access_log: Option<AccessLog>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS_BYTES)
}

impl RequestMetrics {
    /// Creates the series and registers them under Istio's names in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
            series: SeriesCache::default(),
            failures: Family::default(),
            upgrades_ended: Family::default(),
            dry_run_denials: Counter::default(),
            access_log: None,
        };
        registry.register(
            "istio_requests",
            "Requests handled",
            metrics.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from request arrival to the end of the response",
            metrics.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            metrics.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            metrics.response_bytes.clone(),
        );
        registry.register(
            "waypoint_request_failures",
            "Requests the waypoint answered itself, by reason and by who caused it",
            metrics.failures.clone(),
        );
        registry.register(
            "waypoint_upgraded_connections_ended",
            "Upgraded (WebSocket) connections that ended, by why: closed, error, idle_timeout, drain",
            metrics.upgrades_ended.clone(),
        );
        registry.register(
            "waypoint_authorization_dry_run_denials",
            "Requests that dry-run L7 policies would have denied",
            metrics.dry_run_denials.clone(),
        );
        metrics
    }

    /// The same metrics, with access-log lines queued for `log`'s writer.
    pub fn with_access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Requests counted with `labels` (for tests and the admin dump).
    pub fn requests(&self, labels: &RequestLabels) -> u64 {
        self.requests.get_or_create(labels).get()
    }

    /// Failures counted for `reason` (any cause).
    pub fn failures(&self, reason: &'static str) -> u64 {
        ["downstream", "upstream", "proxy"]
            .into_iter()
            .map(|caused_by| {
                self.failures
                    .get_or_create(&FailureLabels { reason, caused_by })
                    .get()
            })
            .sum()
    }

    /// Counts a request the waypoint answered itself.
    pub fn failure(&self, reason: &'static str, caused_by: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { reason, caused_by })
            .inc();
    }

    /// Counts an upgraded connection that ended for `reason`.
    pub fn upgrade_ended(&self, reason: &'static str) {
        self.upgrades_ended
            .get_or_create(&UpgradeLabels { reason })
            .inc();
    }

    /// Upgraded connections counted as ended for `reason`.
    pub fn upgrades_ended(&self, reason: &'static str) -> u64 {
        self.upgrades_ended
            .get_or_create(&UpgradeLabels { reason })
            .get()
    }

    /// The series of the requests described by `key`.
    fn series(&self, key: SeriesKey) -> Series {
        let cache = &self.series.0;
        if let Some(series) = cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return series.clone();
        }
        let labels = key.labels();
        let series = Series {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
        };
        let mut cache = cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= SERIES_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, series.clone());
        series
    }
}

/// The four series of one label set (clones share the values with the families).
#[derive(Clone)]
struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// The series already looked up, by [`SeriesKey`]. Shared by the clones of the metrics.
#[derive(Clone, Default)]
struct SeriesCache(Arc<RwLock<HashMap<SeriesKey, Series>>>);

impl fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.read().map_or(0, |cache| cache.len());
        f.debug_struct("SeriesCache").field("len", &len).finish()
    }
}

/// Everything a request's labels are made of. Discovery records compare by identity (the
/// key holds them, so an address cannot be reused while it is cached): a record replaced
/// by a push makes a new key, whose labels then find the same series if nothing changed.
struct SeriesKey {
    source_principal: SpiffeId,
    source: Option<Arc<WorkloadInfo>>,
    service: Arc<ServiceInfo>,
    endpoint: Option<Arc<WorkloadInfo>>,
    protocol: &'static str,
    status: u16,
    grpc_status: Option<Arc<str>>,
    flags: String,
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn address<T>(record: &Option<Arc<T>>) -> usize {
    record.as_ref().map_or(0, |r| Arc::as_ptr(r) as usize)
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.service, &other.service)
            && same(&self.endpoint, &other.endpoint)
            && same(&self.source, &other.source)
            && self.status == other.status
            && self.flags == other.flags
            && self.protocol == other.protocol
            && self.grpc_status == other.grpc_status
            && self.source_principal == other.source_principal
    }
}

impl Eq for SeriesKey {}

impl Hash for SeriesKey {
    // A subset of what `eq` compares, so equal keys hash alike; the principal is left out
    // (it mostly follows the source workload) to keep the hash to a few words.
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.service) as *const u8 as usize).hash(state);
        address(&self.endpoint).hash(state);
        address(&self.source).hash(state);
        self.status.hash(state);
        self.flags.hash(state);
    }
}

impl SeriesKey {
    fn labels(&self) -> RequestLabels {
        let workload = |w: &Option<Arc<WorkloadInfo>>, f: fn(&WorkloadInfo) -> &Arc<str>| {
            w.as_deref()
                .map_or_else(|| UNKNOWN.clone(), |w| f(w).clone())
        };
        RequestLabels {
            reporter: "waypoint",
            source_workload: workload(&self.source, |w| &w.workload_name),
            source_workload_namespace: self.source_principal.namespace().into(),
            source_principal: self.source_principal.to_string().into(),
            source_app: workload(&self.source, |w| &w.canonical_name),
            source_version: workload(&self.source, |w| &w.canonical_revision),
            source_canonical_service: workload(&self.source, |w| &w.canonical_name),
            source_canonical_revision: workload(&self.source, |w| &w.canonical_revision),
            source_cluster: workload(&self.source, |w| &w.cluster_id),
            destination_workload: workload(&self.endpoint, |w| &w.workload_name),
            destination_workload_namespace: workload(&self.endpoint, |w| &w.namespace),
            destination_principal: self
                .endpoint
                .as_ref()
                .map_or_else(|| UNKNOWN.clone(), |w| w.identity.to_string().into()),
            destination_app: workload(&self.endpoint, |w| &w.canonical_name),
            destination_version: workload(&self.endpoint, |w| &w.canonical_revision),
            destination_service: self.service.hostname.clone(),
            destination_service_name: self.service.name.clone(),
            destination_service_namespace: self.service.namespace.clone(),
            destination_canonical_service: workload(&self.endpoint, |w| &w.canonical_name),
            destination_canonical_revision: workload(&self.endpoint, |w| &w.canonical_revision),
            destination_cluster: workload(&self.endpoint, |w| &w.cluster_id),
            request_protocol: self.protocol,
            response_code: self.status,
            grpc_response_status: self.grpc_status.clone().unwrap_or_else(|| EMPTY.clone()),
            response_flags: self.flags.as_str().into(),
            connection_security_policy: "mutual_tls",
        }
    }
}

/// One request, recorded when dropped: metrics with Istio's labels and one access-log line.
pub struct RequestRecord {
    metrics: RequestMetrics,
    started: Instant,
    /// The client's identity.
    pub source_principal: SpiffeId,
    /// The client's workload, when discovery knows it.
    pub source: Option<Arc<WorkloadInfo>>,
    /// The service the request was routed to (the destination until routing decides).
    pub service: Arc<ServiceInfo>,
    /// The workload that answered, if one did.
    pub endpoint: Option<Arc<WorkloadInfo>>,
    /// The request method.
    pub method: Method,
    /// The request path as received (for the log).
    pub path: String,
    /// The request authority as received (for the log).
    pub authority: String,
    /// "HTTP/1.1" or "HTTP/2".
    pub version: &'static str,
    /// "http" or "grpc".
    pub protocol: &'static str,
    /// The response status; 0 while there is none.
    pub status: u16,
    /// The `grpc-status` of a gRPC response: its trailers', or its headers' when it is
    /// trailers-only. `None` for other requests.
    pub grpc_status: Option<Arc<str>>,
    /// Envoy-style response flags, "-" for none.
    pub flags: String,
    /// The route and rule that matched.
    pub route: Option<(Arc<str>, Arc<str>)>,
    /// Attempts made.
    pub attempts: u32,
    /// The trace id.
    pub trace_id: String,
    /// The error that ended the request, with who caused it.
    pub error: Option<(String, &'static str)>,
    /// Request body bytes read.
    pub request_bytes: Arc<AtomicU64>,
    /// Response body bytes sent.
    pub response_bytes: Arc<AtomicU64>,
}

impl RequestRecord {
    /// Starts recording a request.
    pub fn start(
        metrics: RequestMetrics,
        started: Instant,
        source_principal: SpiffeId,
        service: Arc<ServiceInfo>,
    ) -> Self {
        Self {
            metrics,
            started,
            source_principal,
            source: None,
            service,
            endpoint: None,
            method: Method::GET,
            path: String::new(),
            authority: String::new(),
            version: "",
            protocol: "http",
            status: 0,
            grpc_status: None,
            flags: "DC".to_string(),
            route: None,
            attempts: 0,
            trace_id: String::new(),
            error: None,
            request_bytes: Arc::default(),
            response_bytes: Arc::default(),
        }
    }
}

impl RequestRecord {
    /// Adds the bytes an upgraded connection carried (client to endpoint, and back).
    pub fn add_upgraded_bytes(&self, sent: u64, received: u64) {
        self.request_bytes.fetch_add(sent, Ordering::Relaxed);
        self.response_bytes.fetch_add(received, Ordering::Relaxed);
    }

    /// Adds an Envoy-style response flag to the ones already set.
    pub fn add_flag(&mut self, flag: &str) {
        if self.flags.is_empty() || self.flags == "-" {
            self.flags = flag.to_string();
        } else {
            self.flags.push(',');
            self.flags.push_str(flag);
        }
    }

    /// The metrics the request is recorded in.
    pub fn metrics(&self) -> &RequestMetrics {
        &self.metrics
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if self.protocol == "grpc" && self.grpc_status.is_none() && !matches!(self.status, 0 | 200)
        {
            self.grpc_status = Some(grpc_status_of_http(self.status).into());
        }
        let elapsed = self.started.elapsed();
        let request_bytes = self.request_bytes.load(Ordering::Relaxed);
        let response_bytes = self.response_bytes.load(Ordering::Relaxed);
        if tracing::enabled!(target: "access", tracing::Level::INFO) {
            let entry = self.access_entry(elapsed, request_bytes, response_bytes);
            match &self.metrics.access_log {
                Some(log) => log.send(entry),
                None => entry.emit(),
            }
        }
        let series = self.metrics.series(SeriesKey {
            source_principal: self.source_principal.clone(),
            source: self.source.clone(),
            service: self.service.clone(),
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            status: self.status,
            grpc_status: self.grpc_status.clone(),
            flags: std::mem::take(&mut self.flags),
        });
        series.requests.inc();
        series.duration.observe(elapsed.as_secs_f64() * 1000.0);
        series.request_bytes.observe(request_bytes as f64);
        series.response_bytes.observe(response_bytes as f64);
    }
}

impl RequestRecord {
    /// The access-log line's fields. Called as the record is dropped: what only the line
    /// needs is moved out, the rest is shared.
    fn access_entry(
        &mut self,
        elapsed: std::time::Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) -> AccessEntry {
        AccessEntry {
            method: self.method.clone(),
            source_addr: self
                .source
                .as_ref()
                .and_then(|w| w.addresses.first().copied()),
            source_principal: self.source_principal.clone(),
            service: self.service.hostname.clone(),
            endpoint: self.endpoint.as_ref().map(|w| w.uid.clone()),
            path: std::mem::take(&mut self.path),
            authority: std::mem::take(&mut self.authority),
            version: self.version,
            status: self.status,
            grpc_status: self.grpc_status.clone(),
            flags: self.flags.clone(),
            route: self.route.take(),
            attempts: self.attempts,
            duration_ms: elapsed.as_millis() as u64,
            bytes_received: request_bytes,
            bytes_sent: response_bytes,
            trace_id: std::mem::take(&mut self.trace_id),
            error: self.error.take(),
        }
    }
}
