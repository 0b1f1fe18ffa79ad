//! Certificate verifiers for SPIFFE certificates.
//!
//! rustls's stock verifiers check DNS names; mesh certificates carry a URI SAN instead, and the
//! checks that matter are the trust domain (server side) and the expected identities (client
//! side). Chain building is webpki's, with the provider's signature algorithms.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{SignatureScheme, crypto};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::{TlsError, TrustBundle, spiffe_id_of};
use crate::identity::SpiffeId;

/// What both verifiers share: the mesh roots and the provider's signature algorithms, the
/// path check from a leaf to a root, and the handshake signature checks.
#[derive(Debug)]
struct MeshChain {
    bundle: TrustBundle,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshChain {
    /// Builds and checks the path from `end_entity` to a mesh root, then reads its identity.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<SpiffeId, rustls::Error> {
        let cert = EndEntityCert::try_from(end_entity).map_err(certificate_error)?;
        cert.verify_for_usage(
            self.algorithms.all,
            self.bundle.anchors(),
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(certificate_error)?;
        spiffe_id_of(end_entity).map_err(rejected)
    }

    /// Unreachable in practice: the configurations only enable TLS 1.3.
    fn tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies client certificates: chain to the mesh roots, client auth, same trust domain.
#[derive(Debug)]
pub(crate) struct MeshClientVerifier {
    chain: MeshChain,
    hints: Vec<DistinguishedName>,
}

impl MeshClientVerifier {
    pub(crate) fn new(bundle: TrustBundle, algorithms: WebPkiSupportedAlgorithms) -> Self {
        // Hints tell clients which roots we accept; the same shape RootCertStore reports.
        let hints = bundle
            .anchors()
            .iter()
            .map(|anchor| DistinguishedName::in_sequence(anchor.subject.as_ref()))
            .collect();
        Self {
            chain: MeshChain { bundle, algorithms },
            hints,
        }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented =
            self.chain
                .verify(end_entity, intermediates, now, KeyUsage::client_auth())?;
        let bundle = &self.chain.bundle;
        if presented.trust_domain() != bundle.trust_domain() {
            return Err(rejected(TlsError::ForeignTrustDomain {
                presented,
                trust_domain: bundle.trust_domain_arc(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.schemes()
    }
}

/// Verifies server certificates: chain to the mesh roots, server auth, and an identity from
/// the expected set. The server name is ignored: HBONE dials addresses, not names.
#[derive(Debug)]
pub(crate) struct MeshServerVerifier {
    chain: MeshChain,
    expected: Vec<SpiffeId>,
}

impl MeshServerVerifier {
    pub(crate) fn new(
        bundle: TrustBundle,
        expected: Vec<SpiffeId>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            chain: MeshChain { bundle, algorithms },
            expected,
        }
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented =
            self.chain
                .verify(end_entity, intermediates, now, KeyUsage::server_auth())?;
        if !self.expected.contains(&presented) {
            let expected = self
                .expected
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(rejected(TlsError::UnexpectedServerIdentity {
                expected,
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.schemes()
    }
}

/// Wraps one of our own verification failures so that rustls reports it in the alert path.
fn rejected(error: TlsError) -> rustls::Error {
    CertificateError::Other(OtherError(Arc::new(error))).into()
}

/// Maps webpki's verdict to the rustls certificate error that sends the matching TLS alert.
fn certificate_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let mapped = match error {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    mapped.into()
}
