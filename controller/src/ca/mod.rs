//! The mesh's certificate authority and its gRPC face.
//!
//! - [`CertificateAuthority`] holds the signing key: Istio's plug-in CA files when the operator
//!   provides them, otherwise a self-signed root that it creates once and keeps.
//! - [`SigningRequest`] is a CSR whose signature and key were checked; the CA takes only its
//!   public key and decides every other field itself.
//! - [`CertificateService`] serves `istio.v1.auth.IstioCertificateService/CreateCertificate`:
//!   bearer-token authentication, `ImpersonatedIdentity` metadata, and the rule that a proxy
//!   only obtains identities of workloads placed on its own node ([`IdentityPlacement`]).

mod authority;
mod csr;
mod layout;
mod metrics;
mod private_key;
mod service;

pub use authority::{
    CLOCK_SKEW, CaError, CaOptions, CertificateAuthority, DEFAULT_CERTIFICATE_TTL,
    DEFAULT_MAX_CERTIFICATE_TTL, IssuedCertificate, ServingCertificate,
};
pub use csr::{CsrError, MIN_RSA_BITS, SigningRequest};
pub use layout::{
    CaSource, LayoutError, PLUGIN_CA_CERT, PLUGIN_CA_KEY, PLUGIN_CERT_CHAIN, PLUGIN_ROOT_CERT,
    SELF_SIGNED_CERT, SELF_SIGNED_KEY, SELF_SIGNED_ROOT_VALIDITY,
};
pub use metrics::{CaMetrics, RefusalReason};
pub use private_key::PrivateKeyError;
pub use service::{CertificateService, IMPERSONATED_IDENTITY, IdentityPlacement, RequestError};

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
