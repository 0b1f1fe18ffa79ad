//! Counters of the certificate authority, registered into a registry the caller owns.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why a certificate request was refused; the `reason` label of
/// `mesh_ca_certificate_requests_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// No bearer token, or one this controller did not issue.
    Unauthenticated,
    /// The `ImpersonatedIdentity` metadata is not a mesh identity.
    InvalidIdentity,
    /// The identity belongs to another trust domain.
    WrongTrustDomain,
    /// The caller's node runs no workload with the identity.
    NotOnNode,
    /// The CSR does not parse, does not verify, has a refused key or names another identity.
    InvalidCsr,
    /// The CA could not sign (expired CA certificate, random source or signing failure).
    CaFailure,
}

impl RefusalReason {
    /// The label value, also used in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Unauthenticated => "unauthenticated",
            RefusalReason::InvalidIdentity => "invalid_identity",
            RefusalReason::WrongTrustDomain => "wrong_trust_domain",
            RefusalReason::NotOnNode => "not_on_node",
            RefusalReason::InvalidCsr => "invalid_csr",
            RefusalReason::CaFailure => "ca_failure",
        }
    }
}

impl EncodeLabelValue for RefusalReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: RefusalReason,
}

/// Issued and refused certificate counts. Cheap to clone: clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct CaMetrics {
    issued: Counter,
    refused: Family<RefusalLabels, Counter>,
}

impl CaMetrics {
    /// Creates the counters and registers them as `mesh_ca_certificates_issued_total` and
    /// `mesh_ca_certificate_requests_refused_total{reason}`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "mesh_ca_certificates_issued",
            "Workload certificates signed by the mesh CA",
            metrics.issued.clone(),
        );
        registry.register(
            "mesh_ca_certificate_requests_refused",
            "Certificate requests the mesh CA refused, by reason",
            metrics.refused.clone(),
        );
        metrics
    }

    /// Counts one issued certificate.
    pub fn record_issued(&self) {
        self.issued.inc();
    }

    /// Counts one refused request.
    pub fn record_refused(&self, reason: RefusalReason) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Certificates issued so far.
    pub fn issued(&self) -> u64 {
        self.issued.get()
    }

    /// Requests refused so far for `reason`.
    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.refused
            .get(&RefusalLabels { reason })
            .map_or(0, |counter| counter.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_under_their_documented_names() {
        let mut registry = Registry::default();
        let metrics = CaMetrics::register(&mut registry);
        metrics.record_issued();
        metrics.record_refused(RefusalReason::NotOnNode);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("mesh_ca_certificates_issued_total 1"),
            "{text}"
        );
        assert!(
            text.contains("mesh_ca_certificate_requests_refused_total{reason=\"not_on_node\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.issued(), 1);
        assert_eq!(metrics.refused(RefusalReason::NotOnNode), 1);
    }
}
