//! What the certificate manager counts. Registries are passed in, never global.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `outcome` label of a certificate request: `issued`, or a
/// [`super::FetchError::metric_label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

/// Certificate requests by outcome, certificates held, and failed renewals. Cheap to clone:
/// clones share the metrics.
#[derive(Clone, Debug, Default)]
pub struct CertificateMetrics {
    pub(crate) fetches: Family<OutcomeLabel, Counter>,
    pub(crate) certificates: Gauge,
    pub(crate) renewal_failures: Counter,
}

impl CertificateMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "certificate_fetches",
            "Certificate requests to the CA by outcome (issued, or the failure reason)",
            metrics.fetches.clone(),
        );
        registry.register(
            "certificates",
            "Served identities for which a certificate is held (possibly expired while renewal fails)",
            metrics.certificates.clone(),
        );
        registry.register(
            "certificate_renewal_failures",
            "Failed requests to renew a certificate that was already held",
            metrics.renewal_failures.clone(),
        );
        metrics
    }

    pub(crate) fn fetch(&self, outcome: &'static str) {
        self.fetches.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
