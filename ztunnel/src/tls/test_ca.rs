//! A certificate authority for tests: issues SPIFFE leaf certificates with a chosen identity,
//! validity and root, the way the controller's CA will (ECDSA P-256, client and server auth).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::verifier::MeshServerVerifier;
use super::{ALPN_H2, TrustBundle, WorkloadCertificate, crypto_provider};
use crate::identity::SpiffeId;

/// When a test leaf is valid.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Validity {
    /// From an hour ago to a day from now.
    Current,
    /// Ended an hour ago.
    Expired,
    /// Starts in a day.
    NotYetValid,
}

/// A self-signed root that signs test leaves.
pub(crate) struct TestCa {
    trust_domain: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh root for `trust_domain`, with its own key.
    pub(crate) fn new(trust_domain: &str) -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test root of {trust_domain}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA");
        Self {
            trust_domain: trust_domain.to_string(),
            issuer,
        }
    }

    /// The bundle that trusts this root.
    pub(crate) fn bundle(&self) -> TrustBundle {
        TrustBundle::from_pem(&self.trust_domain, self.issuer.pem().as_bytes())
            .expect("test bundle")
    }

    /// An identity of this CA's trust domain.
    pub(crate) fn id(&self, namespace: &str, service_account: &str) -> SpiffeId {
        SpiffeId::new(&self.trust_domain, namespace, service_account).expect("test identity")
    }

    /// A currently valid leaf for `identity`.
    pub(crate) fn leaf(&self, identity: &SpiffeId) -> WorkloadCertificate {
        self.leaf_with(identity, Validity::Current)
    }

    /// A leaf for `identity` with the chosen validity, loaded through the PEM path.
    pub(crate) fn leaf_with(&self, identity: &SpiffeId, validity: Validity) -> WorkloadCertificate {
        let (chain_pem, key_pem) = self.leaf_pem(identity, validity);
        WorkloadCertificate::from_pem(identity, chain_pem.as_bytes(), key_pem.as_bytes())
            .expect("load test leaf")
    }

    /// A leaf for `identity` as PEM chain and PEM key.
    pub(crate) fn leaf_pem(&self, identity: &SpiffeId, validity: Validity) -> (String, String) {
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        let (not_before, not_after) = match validity {
            Validity::Current => (now - hour, now + 24 * hour),
            Validity::Expired => (now - 48 * hour, now - hour),
            Validity::NotYetValid => (now + 24 * hour, now + 48 * hour),
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            identity.to_string().try_into().expect("URI SAN"),
        )];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// A client configuration like `client_config`'s, with the mesh's server checks but no
/// client certificate: the "no client certificate" case of the identity matrix.
pub(crate) fn client_config_without_certificate(
    bundle: &TrustBundle,
    expected: SpiffeId,
) -> Arc<rustls::ClientConfig> {
    let provider = crypto_provider();
    let algorithms = provider.signature_verification_algorithms;
    let verifier = MeshServerVerifier::new(bundle.clone(), vec![expected], algorithms);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    Arc::new(config)
}
