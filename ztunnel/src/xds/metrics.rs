//! What the ADS client counts. The registry is passed in, never global.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label naming the resource type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    type_url: String,
}

/// A label naming why a stream ended; values come from `XdsError::metric_label`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Connection state and update counters of the ADS client.
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    connected: Gauge,
    updates: Family<TypeLabel, Counter>,
    rejected: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    reconnects: Family<ReasonLabel, Counter>,
}

impl XdsMetrics {
    /// Creates the metrics and registers them under `xds_`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("xds");
        registry.register(
            "connected",
            "1 while the ADS stream to the controller is open, 0 otherwise",
            metrics.connected.clone(),
        );
        registry.register(
            "updates_applied",
            "ADS responses applied, by type",
            metrics.updates.clone(),
        );
        registry.register(
            "resources_rejected",
            "Resources the proxy could not use, by type",
            metrics.rejected.clone(),
        );
        registry.register(
            "nacks_sent",
            "ADS responses NACKed, by type",
            metrics.nacks.clone(),
        );
        registry.register(
            "reconnects",
            "ADS streams that ended or could not be opened, by reason",
            metrics.reconnects.clone(),
        );
        metrics
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub(crate) fn applied(&self, type_url: &str, rejected: usize) {
        let label = TypeLabel {
            type_url: type_url.to_string(),
        };
        self.updates.get_or_create(&label).inc();
        if rejected > 0 {
            self.rejected.get_or_create(&label).inc_by(rejected as u64);
            self.nacks.get_or_create(&label).inc();
        }
    }

    pub(crate) fn reconnect(&self, reason: &'static str) {
        self.reconnects.get_or_create(&ReasonLabel { reason }).inc();
    }
}
