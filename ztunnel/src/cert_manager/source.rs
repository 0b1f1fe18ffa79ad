//! Where certificates come from: the seam between the manager's schedule and the CA protocol.

use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::identity::SpiffeId;
use crate::tls::{TlsError, WorkloadCertificate};

/// Obtains a fresh certificate, with a fresh key, for one workload identity.
///
/// [`super::ControllerCa`] asks the controller's CA; tests plug in fakes driven by channels.
/// The manager calls `fetch` from one task per identity, never twice at once for the same
/// identity, and bounds every call with [`super::REQUEST_TIMEOUT`].
pub trait CertificateSource: Send + Sync + 'static {
    /// Requests a certificate for `identity`.
    fn fetch(
        &self,
        identity: &SpiffeId,
    ) -> impl Future<Output = Result<WorkloadCertificate, FetchError>> + Send;
}

/// Why one certificate request failed. Every request that fails is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The key pair or the CSR could not be generated locally.
    #[error("cannot generate a P-256 key and CSR for the request: {0}")]
    Csr(#[source] rcgen::Error),
    /// The controller could not be reached, or the call broke off.
    #[error(
        "the controller's CA is unreachable ({message}); check the controller address, that it \
         is running, and that its serving certificate chains to the configured roots"
    )]
    Unreachable {
        /// What the transport said.
        message: String,
    },
    /// The controller does not accept the bearer token.
    #[error(
        "the controller's CA does not accept this node's token ({message}); check the token file \
         given to the ztunnel"
    )]
    Unauthenticated {
        /// The controller's reason.
        message: String,
    },
    /// The controller refused this identity to this node.
    #[error(
        "the controller's CA refused the identity ({message}); a node may only obtain identities \
         of workloads placed on it"
    )]
    PermissionDenied {
        /// The controller's reason.
        message: String,
    },
    /// The controller answered with another gRPC error.
    #[error("the controller's CA failed the request with {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The controller's message.
        message: String,
    },
    /// The response held no certificate.
    #[error("the controller's CA answered with an empty certificate chain")]
    EmptyChain,
    /// The response's certificate is unusable with the key we generated, or names another
    /// identity.
    #[error("the certificate from the CA is unusable: {0}")]
    InvalidCertificate(#[source] TlsError),
    /// The certificate had already expired when it arrived: the CA's clock or its own
    /// certificate is wrong.
    #[error(
        "the certificate from the CA expired on arrival (not after {not_after:?}); check the \
         clocks of the controller and of this node, and the CA's own validity"
    )]
    ExpiredOnArrival {
        /// The end of the certificate's validity.
        not_after: SystemTime,
    },
    /// The request took longer than the manager allows.
    #[error("the certificate request got no answer within {after:?}")]
    TimedOut {
        /// The limit that was hit.
        after: Duration,
    },
}

impl FetchError {
    /// The `outcome` label of `certificate_fetches` for this failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            FetchError::Csr(_) => "csr_error",
            FetchError::Unreachable { .. } => "unreachable",
            FetchError::Unauthenticated { .. } => "unauthenticated",
            FetchError::PermissionDenied { .. } => "permission_denied",
            FetchError::Rpc { .. } => "rpc_error",
            FetchError::EmptyChain | FetchError::InvalidCertificate(_) => "invalid_response",
            FetchError::ExpiredOnArrival { .. } => "expired_on_arrival",
            FetchError::TimedOut { .. } => "timeout",
        }
    }

    /// Classifies a gRPC status from the CA.
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::Unavailable => FetchError::Unreachable { message },
            tonic::Code::Unauthenticated => FetchError::Unauthenticated { message },
            tonic::Code::PermissionDenied => FetchError::PermissionDenied { message },
            code => FetchError::Rpc { code, message },
        }
    }
}
