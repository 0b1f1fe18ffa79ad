//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: the CA on the wire, as Istio's
//! proxies call it. A caller is authenticated by its bearer token, which names its node; it
//! obtains an identity only when a workload with that identity is placed on its node.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_proto::istio::v1::auth::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use mesh_proto::istio::v1::auth::{IstioCertificateRequest, IstioCertificateResponse};
use prost_types::value::Kind;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use ztunnel::identity::{IdentityError, SpiffeId};

use super::authority::{CaError, CertificateAuthority, IssuedCertificate};
use super::csr::{CsrError, SigningRequest};
use super::metrics::{CaMetrics, RefusalReason};
use crate::auth::{AuthError, Caller, ProxyKind, Tokens};

/// The request metadata field in which a node proxy names the workload identity it asks for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Answers whether a caller may hold an identity. The store implements it from the placement
/// of pods on nodes.
pub trait IdentityPlacement: Send + Sync + 'static {
    /// Whether `caller` may obtain certificates for `identity`: for a ztunnel, whether any pod
    /// running with the identity's namespace and service account is placed on `caller.node`;
    /// for a waypoint, whether such a pod is a waypoint on that node.
    fn may_hold(&self, caller: &Caller, identity: &SpiffeId) -> bool;
}

/// Why a certificate request was refused, classified once into a gRPC status, a metric label
/// and a log line.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The bearer token is missing or unknown.
    #[error("caller not authenticated: {0}")]
    Unauthenticated(#[from] AuthError),
    /// `ImpersonatedIdentity` is present but not a string.
    #[error("the {IMPERSONATED_IDENTITY} metadata must be a string SPIFFE id")]
    IdentityNotAString,
    /// `ImpersonatedIdentity` is not a SPIFFE id of the mesh's shape.
    #[error("the {IMPERSONATED_IDENTITY} metadata is not a mesh identity: {0}")]
    BadIdentity(IdentityError),
    /// The caller's node runs no workload with the identity.
    #[error(
        "the {kind} on node {node} may not obtain {identity}: no workload with that identity \
         is placed on node {node}"
    )]
    NotOnNode {
        /// The kind of the calling proxy.
        kind: ProxyKind,
        /// The caller's node.
        node: Arc<str>,
        /// The identity it asked for.
        identity: SpiffeId,
    },
    /// The CA refused the request or could not sign it.
    #[error(transparent)]
    Ca(#[from] CaError),
}

impl From<CsrError> for RequestError {
    fn from(e: CsrError) -> Self {
        RequestError::Ca(CaError::Csr(e))
    }
}

impl RequestError {
    /// The metric label and log reason of the refusal.
    pub fn reason(&self) -> RefusalReason {
        match self {
            RequestError::Unauthenticated(_) => RefusalReason::Unauthenticated,
            RequestError::IdentityNotAString | RequestError::BadIdentity(_) => {
                RefusalReason::InvalidIdentity
            }
            RequestError::NotOnNode { .. } => RefusalReason::NotOnNode,
            RequestError::Ca(CaError::Csr(_)) => RefusalReason::InvalidCsr,
            RequestError::Ca(CaError::WrongTrustDomain { .. }) => RefusalReason::WrongTrustDomain,
            RequestError::Ca(_) => RefusalReason::CaFailure,
        }
    }

    /// The gRPC status the caller receives; its message is the error's.
    pub fn status(&self) -> Status {
        let code = match self.reason() {
            RefusalReason::Unauthenticated => Code::Unauthenticated,
            RefusalReason::InvalidIdentity
            | RefusalReason::InvalidCsr
            | RefusalReason::WrongTrustDomain => Code::InvalidArgument,
            RefusalReason::NotOnNode => Code::PermissionDenied,
            RefusalReason::CaFailure => Code::Internal,
        };
        Status::new(code, self.to_string())
    }
}

/// The gRPC certificate service.
#[derive(Clone)]
pub struct CertificateService {
    ca: Arc<CertificateAuthority>,
    tokens: watch::Receiver<Arc<Tokens>>,
    placement: Arc<dyn IdentityPlacement>,
    metrics: CaMetrics,
}

impl CertificateService {
    /// Creates the service. `tokens` is the current token table; the controller sends a new
    /// one when it issues tokens, and each call uses the latest.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        tokens: watch::Receiver<Arc<Tokens>>,
        placement: Arc<dyn IdentityPlacement>,
        metrics: CaMetrics,
    ) -> Self {
        Self {
            ca,
            tokens,
            placement,
            metrics,
        }
    }

    /// Wraps the service for a tonic router.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    /// Handles one request and records its outcome: a log line and a counter.
    pub fn create(
        &self,
        metadata: &MetadataMap,
        request: &IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, RequestError> {
        let mut facts = RequestFacts::default();
        match self.issue(metadata, request, &mut facts) {
            Ok(issued) => {
                self.metrics.record_issued();
                let valid_for = issued
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tracing::info!(
                    node = facts.node(),
                    kind = facts.kind(),
                    identity = facts.identity(),
                    serial = %issued.serial,
                    valid_for_s = valid_for.as_secs(),
                    "certificate issued"
                );
                Ok(IstioCertificateResponse {
                    cert_chain: issued.chain,
                })
            }
            Err(error) => {
                let reason = error.reason();
                self.metrics.record_refused(reason);
                tracing::warn!(
                    node = facts.node(),
                    kind = facts.kind(),
                    identity = facts.identity(),
                    reason = reason.as_str(),
                    %error,
                    "certificate refused"
                );
                Err(error)
            }
        }
    }

    fn issue(
        &self,
        metadata: &MetadataMap,
        request: &IstioCertificateRequest,
        facts: &mut RequestFacts,
    ) -> Result<IssuedCertificate, RequestError> {
        let tokens = Arc::clone(&self.tokens.borrow());
        let caller = tokens.authenticate(metadata)?;
        facts.caller = Some(caller.clone());

        let (identity, csr) = match impersonated_identity(request)? {
            Some(identity) => (identity, None),
            None => {
                let csr = SigningRequest::from_pem(&request.csr)?;
                (csr.identity()?, Some(csr))
            }
        };
        facts.identity = Some(identity.clone());

        // Cheap checks first: an unauthorised caller costs no signature verification.
        self.ca.check_trust_domain(&identity)?;
        if !self.placement.may_hold(&caller, &identity) {
            return Err(RequestError::NotOnNode {
                kind: caller.kind,
                node: caller.node,
                identity,
            });
        }
        let csr = match csr {
            Some(csr) => csr,
            None => SigningRequest::from_pem(&request.csr)?,
        };
        let requested_ttl = u64::try_from(request.validity_duration)
            .ok()
            .map(Duration::from_secs);
        Ok(self.ca.sign_request(&csr, &identity, requested_ttl)?)
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CertificateService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.create(request.metadata(), request.get_ref())
            .map(Response::new)
            .map_err(|e| e.status())
    }
}

/// What is known about a request so far, for its log line.
#[derive(Default)]
struct RequestFacts {
    caller: Option<Caller>,
    identity: Option<SpiffeId>,
}

impl RequestFacts {
    fn node(&self) -> &str {
        self.caller.as_ref().map_or("-", |c| &c.node)
    }

    fn kind(&self) -> &'static str {
        match self.caller.as_ref().map(|c| c.kind) {
            Some(ProxyKind::Ztunnel) => "ztunnel",
            Some(ProxyKind::Waypoint) => "waypoint",
            None => "-",
        }
    }

    fn identity(&self) -> String {
        self.identity
            .as_ref()
            .map_or_else(|| "-".to_string(), ToString::to_string)
    }
}

/// The identity named by the `ImpersonatedIdentity` metadata; absent or empty means none.
fn impersonated_identity(
    request: &IstioCertificateRequest,
) -> Result<Option<SpiffeId>, RequestError> {
    let Some(value) = request
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
    else {
        return Ok(None);
    };
    match &value.kind {
        Some(Kind::StringValue(s)) if s.is_empty() => Ok(None),
        Some(Kind::StringValue(s)) => s.parse().map(Some).map_err(RequestError::BadIdentity),
        Some(Kind::NullValue(_)) | None => Ok(None),
        Some(_) => Err(RequestError::IdentityNotAString),
    }
}

#[cfg(test)]
mod tests;
