//! Connection telemetry with Istio's metric names and labels, and the access log: a guard per
//! connection records both when the connection ends, also when its task is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::info;

use crate::state::{ServiceInfo, WorkloadInfo};

/// Which proxy reports: the client side's tunnel or the server side's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// The tunnel of the pod that opened the connection.
    Source,
    /// The tunnel of the pod that accepted it.
    Destination,
}

/// Istio's labels of the TCP metrics.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: &'static str,
    pub source_workload: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub source_app: Arc<str>,
    pub source_version: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    pub destination_app: Arc<str>,
    pub destination_version: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub request_protocol: &'static str,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub direction: &'static str,
    pub reason: &'static str,
}

/// The connection counters of the tunnel.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
}

impl ConnectionMetrics {
    /// Creates the counters and registers them under Istio's names.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            m.opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            m.closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the destination on TCP connections",
            m.sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the destination on TCP connections",
            m.received.clone(),
        );
        registry.register(
            "ztunnel_connection_failures",
            "Connections refused or failed, by direction and reason",
            m.failures.clone(),
        );
        m
    }

    /// Counts a connection that failed or was refused before any byte flowed.
    pub fn failure(&self, direction: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { direction, reason })
            .inc();
    }

    /// How many failures of this kind were counted (for tests and the demo).
    pub fn failures(&self, direction: &'static str, reason: &'static str) -> u64 {
        self.failures
            .get_or_create(&FailureLabels { direction, reason })
            .get()
    }
}

/// What is known about one connection's two ends.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    pub source: Option<Arc<WorkloadInfo>>,
    /// The source identity as verified by mTLS (inbound) or our own (outbound).
    pub source_principal: Option<String>,
    pub destination: Option<Arc<WorkloadInfo>>,
    pub service: Option<Arc<ServiceInfo>>,
    pub mutual_tls: bool,
}

/// Records one connection: opened now; closed, with its bytes, when dropped.
pub struct ConnectionGuard {
    metrics: ConnectionMetrics,
    labels: TcpLabels,
    started: Instant,
    src: String,
    dst: String,
    /// Bytes from the source to the destination.
    pub sent: Arc<AtomicU64>,
    /// Bytes from the destination to the source.
    pub received: Arc<AtomicU64>,
    error: Option<String>,
}

impl ConnectionGuard {
    /// Counts the connection as opened.
    pub fn open(
        metrics: &ConnectionMetrics,
        reporter: Reporter,
        peers: &Peers,
        src: String,
        dst: String,
    ) -> Self {
        let labels = labels(reporter, peers);
        metrics.opened.get_or_create(&labels).inc();
        Self {
            metrics: metrics.clone(),
            labels,
            started: Instant::now(),
            src,
            dst,
            sent: Arc::default(),
            received: Arc::default(),
            error: None,
        }
    }

    /// Records the byte counts of a finished copy.
    pub fn finish(&mut self, sent: u64, received: u64) {
        self.sent.store(sent, Ordering::Relaxed);
        self.received.store(received, Ordering::Relaxed);
    }

    /// Records why the connection ended abnormally.
    pub fn fail(&mut self, flags: &'static str, error: impl std::fmt::Display) {
        self.labels.response_flags = flags;
        self.error = Some(error.to_string());
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let sent = self.sent.load(Ordering::Relaxed);
        let received = self.received.load(Ordering::Relaxed);
        self.metrics.closed.get_or_create(&self.labels).inc();
        self.metrics.sent.get_or_create(&self.labels).inc_by(sent);
        self.metrics
            .received
            .get_or_create(&self.labels)
            .inc_by(received);
        let l = &self.labels;
        info!(
            target: "access",
            reporter = l.reporter,
            src.addr = %self.src,
            src.workload = %l.source_workload,
            src.namespace = %l.source_workload_namespace,
            src.identity = %l.source_principal,
            dst.addr = %self.dst,
            dst.workload = %l.destination_workload,
            dst.namespace = %l.destination_workload_namespace,
            dst.identity = %l.destination_principal,
            dst.service = %l.destination_service,
            security = l.connection_security_policy,
            flags = l.response_flags,
            bytes_sent = sent,
            bytes_recv = received,
            duration_ms = self.started.elapsed().as_millis() as u64,
            error = self.error.as_deref().unwrap_or(""),
            "connection complete"
        );
    }
}

/// Istio's "unknown" for a label with no value.
fn unknown(value: Option<&Arc<str>>) -> Arc<str> {
    value.cloned().unwrap_or_else(|| Arc::from("unknown"))
}

fn labels(reporter: Reporter, peers: &Peers) -> TcpLabels {
    let src = peers.source.as_deref();
    let dst = peers.destination.as_deref();
    let svc = peers.service.as_deref();
    TcpLabels {
        reporter: match reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        },
        source_workload: unknown(src.map(|w| &w.workload_name)),
        source_workload_namespace: unknown(src.map(|w| &w.namespace)),
        source_principal: peers
            .source_principal
            .as_deref()
            .map_or_else(|| Arc::from("unknown"), Arc::from),
        source_app: unknown(src.map(|w| &w.canonical_name)),
        source_version: unknown(src.map(|w| &w.canonical_revision)),
        destination_workload: unknown(dst.map(|w| &w.workload_name)),
        destination_workload_namespace: unknown(dst.map(|w| &w.namespace)),
        destination_principal: dst.map_or_else(
            || Arc::from("unknown"),
            |w| Arc::from(w.identity.to_string()),
        ),
        destination_app: unknown(dst.map(|w| &w.canonical_name)),
        destination_version: unknown(dst.map(|w| &w.canonical_revision)),
        destination_service: unknown(svc.map(|s| &s.hostname)),
        destination_service_name: unknown(svc.map(|s| &s.name)),
        destination_service_namespace: unknown(svc.map(|s| &s.namespace)),
        request_protocol: "tcp",
        response_flags: "-",
        connection_security_policy: if peers.mutual_tls {
            "mutual_tls"
        } else {
            "unknown"
        },
    }
}
