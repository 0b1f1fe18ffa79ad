//! rustls configurations for the two ends of an HBONE connection.

use std::io;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::NoServerSessionStorage;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, CommonState, ServerConfig};

use super::verifier::{MeshClientVerifier, MeshServerVerifier};
use super::{ALPN_H2, TlsError, TrustBundle, WorkloadCertificate, crypto_provider, spiffe_id_of};
use crate::identity::SpiffeId;

/// The configuration of an HBONE server (port 15008, or a waypoint) for one local identity.
///
/// TLS 1.3 only, ALPN `h2`, a client certificate is required and must chain to `bundle`,
/// allow client auth and name an identity of the bundle's trust domain. Session resumption
/// is off: a resumed session would skip the client check against the current roots, and
/// pooled HTTP/2 connections make full handshakes rare anyway.
pub fn server_config(
    certificate: &WorkloadCertificate,
    bundle: &TrustBundle,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let verifier =
        MeshClientVerifier::new(bundle.clone(), provider.signature_verification_algorithms);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            certificate.certified_key(),
        )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration of an HBONE client dialing a destination that `expected` may serve.
///
/// TLS 1.3 only, ALPN `h2`, SNI off (HBONE dials an address with a fixed server name), the
/// client certificate presented, the server chain verified to `bundle` for server auth
/// without any DNS name check, and the server's identity required to be in `expected`.
pub fn client_config(
    certificate: &WorkloadCertificate,
    bundle: &TrustBundle,
    expected: Vec<SpiffeId>,
) -> Result<Arc<ClientConfig>, TlsError> {
    if expected.is_empty() {
        return Err(TlsError::NoExpectedIdentity);
    }
    let provider = crypto_provider();
    let verifier = MeshServerVerifier::new(
        bundle.clone(),
        expected,
        provider.signature_verification_algorithms,
    );
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            certificate.certified_key(),
        )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    // Resumption would let a later connection skip the expected-identity check.
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The identity of the peer of an established connection, read from its leaf certificate.
///
/// Takes a `ServerConnection` or a `ClientConnection` (both dereference to `CommonState`).
/// The verifiers have already checked the chain; this only names who was verified.
pub fn peer_identity(connection: &CommonState) -> Result<SpiffeId, TlsError> {
    let leaf = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    spiffe_id_of(leaf)
}

/// A one-line reason for a failed handshake, for logs and errors an operator reads.
///
/// When the failure is one of the mesh's own checks (trust domain, expected identity), this
/// is that check's message rather than rustls's debug rendering of it.
pub fn describe_handshake_error(error: &io::Error) -> String {
    match verification_failure(error) {
        Some(ours) => ours.to_string(),
        None => match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(tls) => tls.to_string(),
            None => error.to_string(),
        },
    }
}

/// The mesh check that failed a handshake, if a mesh check is what failed it.
pub fn verification_failure(error: &io::Error) -> Option<&TlsError> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<TlsError>()
        }
        _ => None,
    }
}
