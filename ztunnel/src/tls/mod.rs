//! Mutual TLS for HBONE: workload certificates, the mesh trust bundle, and the rustls
//! configurations that enforce the wire contract.
//!
//! This is the one home of TLS for the project; the waypoint uses these functions too.
//! The rules it enforces (DESIGN.md, "Wire contract" and "Security invariants"):
//!
//! - TLS 1.3 only, ALPN `h2`, no SNI, no session resumption.
//! - The server requires a client certificate that chains to the mesh roots, is valid now,
//!   allows client auth, and names a SPIFFE identity of the mesh's own trust domain.
//! - The client checks the server chain the same way (server auth), ignores DNS names, and
//!   requires the server's SPIFFE identity to be one of those expected for the destination.
//!
//! The ring crypto provider is always passed explicitly; nothing here depends on a
//! process-wide default provider.

mod certificate;
mod config;
mod verifier;

#[cfg(test)]
pub(crate) mod test_ca;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::identity::{IdentityError, SpiffeId};

pub use certificate::{TrustBundle, WorkloadCertificate, spiffe_id_of};
pub use config::{
    client_config, describe_handshake_error, peer_identity, server_config, verification_failure,
};

/// The only application protocol HBONE speaks over TLS.
pub const ALPN_H2: &[u8] = b"h2";

/// Why a certificate, a trust bundle, a TLS configuration or a peer is not acceptable.
///
/// Verification failures raised during a handshake reach rustls wrapped in
/// `rustls::CertificateError::Other`, so their messages show up in the handshake error.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input could not be decoded.
    #[error("cannot decode the {what} PEM: {source}")]
    Pem {
        /// Which input was being decoded (certificate chain, private key, trust bundle).
        what: &'static str,
        /// The decoder's complaint.
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate chain contained no certificate at all.
    #[error(
        "the certificate chain for {identity} is empty; it must start with the leaf certificate"
    )]
    EmptyChain {
        /// The identity the chain was loaded for.
        identity: SpiffeId,
    },
    /// A certificate is not parseable X.509 DER.
    #[error("the certificate is not valid X.509 DER: {detail}")]
    BadCertificate {
        /// The parser's complaint.
        detail: String,
    },
    /// The leaf certificate has no `spiffe://` URI SAN.
    #[error(
        "the leaf certificate has no spiffe:// URI SAN; mesh certificates must carry exactly one"
    )]
    MissingSpiffeId,
    /// The leaf certificate has more than one `spiffe://` URI SAN, which SPIFFE forbids.
    #[error(
        "the leaf certificate carries {count} spiffe:// URI SANs; mesh certificates must carry exactly one"
    )]
    MultipleSpiffeIds {
        /// How many SPIFFE URIs were found.
        count: usize,
    },
    /// The leaf's URI SAN starts with `spiffe://` but is not a mesh identity.
    #[error("the leaf certificate's URI SAN {uri:?} is not a mesh identity: {source}")]
    BadSpiffeId {
        /// The URI as presented.
        uri: String,
        /// Why it is not an identity.
        source: IdentityError,
    },
    /// The leaf certificate names another identity than the one it was loaded for.
    #[error(
        "the leaf certificate is for {presented}, but it was loaded as the certificate of {expected}"
    )]
    IdentityMismatch {
        /// The identity the caller asked for.
        expected: SpiffeId,
        /// The identity in the certificate.
        presented: SpiffeId,
    },
    /// The private key cannot be loaded by the crypto provider.
    #[error(
        "the private key of {identity} cannot be used for signing (use PKCS#8 ECDSA P-256): {source}"
    )]
    UnusableKey {
        /// The identity the key was loaded for.
        identity: SpiffeId,
        /// The provider's complaint.
        source: rustls::Error,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("the private key does not match the public key of the leaf certificate of {identity}")]
    KeyMismatch {
        /// The identity the key was loaded for.
        identity: SpiffeId,
    },
    /// The trust domain of a bundle is not a valid trust domain.
    #[error("{trust_domain:?} is not a valid trust domain: {source}")]
    BadTrustDomain {
        /// The trust domain as given.
        trust_domain: String,
        /// Why it is not valid.
        source: IdentityError,
    },
    /// A trust bundle contained no root certificate.
    #[error("the trust bundle of {trust_domain} contains no root certificate")]
    EmptyBundle {
        /// The bundle's trust domain.
        trust_domain: String,
    },
    /// A root certificate cannot serve as a trust anchor.
    #[error(
        "root certificate #{index} of the trust bundle cannot be used as a trust anchor: {source}"
    )]
    BadRoot {
        /// The position of the root in the bundle, from 0.
        index: usize,
        /// Why webpki refused it.
        source: webpki::Error,
    },
    /// A client configuration was requested without any acceptable server identity.
    #[error(
        "no expected server identity given; every HBONE dial must name the identities that may answer"
    )]
    NoExpectedIdentity,
    /// rustls refused to build a configuration from our inputs.
    #[error("cannot build the rustls configuration: {0}")]
    Config(rustls::Error),
    /// The peer finished the handshake without a certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's identity belongs to another trust domain.
    #[error(
        "the peer is {presented}, but this mesh only accepts identities of trust domain {trust_domain}"
    )]
    ForeignTrustDomain {
        /// The identity the peer presented.
        presented: SpiffeId,
        /// The mesh's own trust domain.
        trust_domain: Arc<str>,
    },
    /// The server is not one of the identities allowed to serve the destination.
    #[error(
        "the server presented {presented}, but this destination may only be served by [{expected}]"
    )]
    UnexpectedServerIdentity {
        /// The allowed identities, comma separated.
        expected: String,
        /// The identity the server presented.
        presented: SpiffeId,
    },
}

/// The crypto provider used for every TLS configuration of the mesh.
///
/// Built explicitly so that no code path depends on `CryptoProvider::install_default`.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
