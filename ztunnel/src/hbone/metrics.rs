//! Counters of the HBONE client and server. Registries are passed in, never global.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label naming why something failed or how it ended; values come from the error types'
/// `metric_label` methods so that each error is classified once.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// What the HBONE server counts.
#[derive(Clone, Debug, Default)]
pub struct ServerMetrics {
    pub(crate) connections: Counter,
    pub(crate) connections_active: Gauge,
    pub(crate) connection_failures: Family<ReasonLabel, Counter>,
    pub(crate) streams: Family<ReasonLabel, Counter>,
    pub(crate) streams_active: Gauge,
}

impl ServerMetrics {
    /// Creates the metrics and registers them under `hbone_server_`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("hbone_server");
        registry.register(
            "connections",
            "TCP connections accepted on the HBONE port",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_active",
            "HBONE connections currently open",
            metrics.connections_active.clone(),
        );
        registry.register(
            "connection_failures",
            "HBONE connections that failed or were closed for cause, by reason",
            metrics.connection_failures.clone(),
        );
        registry.register(
            "streams",
            "CONNECT streams by outcome (established, bad_request, denied, unavailable, refused)",
            metrics.streams.clone(),
        );
        registry.register(
            "streams_active",
            "CONNECT tunnels currently open",
            metrics.streams_active.clone(),
        );
        metrics
    }

    pub(crate) fn connection_failure(&self, reason: &'static str) {
        self.connection_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn stream(&self, reason: &'static str) {
        self.streams.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// What the HBONE client and its pool count.
#[derive(Clone, Debug, Default)]
pub struct ClientMetrics {
    pub(crate) connections: Counter,
    pub(crate) connections_active: Gauge,
    pub(crate) connection_failures: Family<ReasonLabel, Counter>,
    pub(crate) streams: Family<ReasonLabel, Counter>,
    pub(crate) stream_retries: Counter,
}

impl ClientMetrics {
    /// Creates the metrics and registers them under `hbone_client_`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("hbone_client");
        registry.register(
            "connections",
            "HBONE connections dialed (TCP, TLS and HTTP/2 handshakes done)",
            metrics.connections.clone(),
        );
        registry.register(
            "connections_active",
            "HBONE connections currently in the pool",
            metrics.connections_active.clone(),
        );
        registry.register(
            "connection_failures",
            "HBONE dials that failed, by reason",
            metrics.connection_failures.clone(),
        );
        registry.register(
            "streams",
            "CONNECT streams by outcome",
            metrics.streams.clone(),
        );
        registry.register(
            "stream_retries",
            "CONNECT streams retried on a fresh connection after GOAWAY or a refusal",
            metrics.stream_retries.clone(),
        );
        metrics
    }

    pub(crate) fn connection_failure(&self, reason: &'static str) {
        self.connection_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn stream(&self, reason: &'static str) {
        self.streams.get_or_create(&ReasonLabel { reason }).inc();
    }
}
