//! Why a request failed, classified once at the edge into a status code, a metric label, a
//! response flag (Envoy's short codes, as Istio's metrics carry them) and who caused it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::policy::Denial;
use crate::routing::PathError;
use crate::upstream::ForwardError;

/// Who caused a failure, for the failure counter and the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The client: a bad or forbidden request.
    Downstream,
    /// The backends: unreachable, failing or slow.
    Upstream,
    /// The waypoint's own configuration.
    Proxy,
}

impl Blame {
    /// The `caused_by` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
            Self::Proxy => "proxy",
        }
    }
}

/// Why the waypoint answered a request itself instead of relaying a backend's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The path cannot be normalized.
    #[error("bad request path: {0}")]
    BadPath(#[from] PathError),
    /// The request names no usable authority.
    #[error("the request has no valid Host or :authority")]
    BadAuthority,
    /// L7 authorization denied the request.
    #[error("denied: {0}")]
    Denied(Denial),
    /// Routes apply to the destination, but none matches the request.
    #[error("no route of {service} port {port} matches the request")]
    NoRoute {
        /// The destination service.
        service: Arc<str>,
        /// The destination port.
        port: u16,
    },
    /// The matched rule has no backend with a non-zero weight.
    #[error("rule {rule} of route {route} has no backend with a non-zero weight")]
    NoBackend {
        /// The route.
        route: Arc<str>,
        /// The rule.
        rule: Arc<str>,
    },
    /// A backend names a service the address feed does not know, or a port it lacks.
    #[error("backend {hostname}:{port} is not a known service port")]
    UnknownBackend {
        /// The backend hostname.
        hostname: Arc<str>,
        /// The backend port.
        port: u16,
    },
    /// The backend service has no endpoint that may take traffic.
    #[error("service {service} has no healthy endpoint for port {port}")]
    NoHealthyEndpoint {
        /// The backend service.
        service: Arc<str>,
        /// The backend port.
        port: u16,
    },
    /// The last attempt failed to reach the endpoint or lost the connection.
    #[error(transparent)]
    Upstream(#[from] ForwardError),
    /// The last attempt's deadline passed.
    #[error("{endpoint} did not respond within the per-attempt timeout of {timeout:?}")]
    AttemptTimeout {
        /// The endpoint.
        endpoint: SocketAddr,
        /// The deadline.
        timeout: Duration,
    },
    /// The request's overall deadline passed.
    #[error("no response within the request timeout of {timeout:?}")]
    RequestTimeout {
        /// The deadline.
        timeout: Duration,
    },
    /// The client's request body failed while it was being read.
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
}

impl ProxyError {
    /// The status answered to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadPath(_) | Self::BadAuthority | Self::RequestBody(_) => StatusCode::BAD_REQUEST,
            Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::NoBackend { .. } | Self::UnknownBackend { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::NoHealthyEndpoint { .. } | Self::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::AttemptTimeout { .. } | Self::RequestTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The `reason` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::BadPath(_) => "bad_path",
            Self::BadAuthority => "bad_authority",
            Self::Denied(_) => "denied",
            Self::NoRoute { .. } => "no_route",
            Self::NoBackend { .. } => "no_backend",
            Self::UnknownBackend { .. } => "unknown_backend",
            Self::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            Self::Upstream(e) if e.is_connect_failure() => "connect_failed",
            Self::Upstream(_) => "upstream_reset",
            Self::AttemptTimeout { .. } => "upstream_timeout",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::RequestBody(_) => "request_body",
        }
    }

    /// Who caused it.
    pub fn blame(&self) -> Blame {
        match self {
            Self::BadPath(_)
            | Self::BadAuthority
            | Self::Denied(_)
            | Self::NoRoute { .. }
            | Self::RequestBody(_) => Blame::Downstream,
            Self::NoBackend { .. } | Self::UnknownBackend { .. } => Blame::Proxy,
            Self::NoHealthyEndpoint { .. }
            | Self::Upstream(_)
            | Self::AttemptTimeout { .. }
            | Self::RequestTimeout { .. } => Blame::Upstream,
        }
    }

    /// Envoy's response flag for it, as Istio's `response_flags` label carries it.
    pub fn response_flag(&self) -> &'static str {
        match self {
            Self::BadPath(_) | Self::BadAuthority | Self::RequestBody(_) => "DPE",
            Self::Denied(_) => "RBAC",
            Self::NoRoute { .. } => "NR",
            Self::NoBackend { .. } | Self::UnknownBackend { .. } => "NC",
            Self::NoHealthyEndpoint { .. } => "UH",
            Self::Upstream(e) if e.is_connect_failure() => "UF",
            Self::Upstream(_) => "UC",
            Self::AttemptTimeout { .. } | Self::RequestTimeout { .. } => "UT",
        }
    }

    /// The body answered to the client: what happened, without internal addresses.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::BadPath(_) => "bad request path\n",
            Self::BadAuthority => "missing or invalid host\n",
            Self::Denied(_) => "RBAC: access denied\n",
            Self::NoRoute { .. } => "no route matched\n",
            Self::NoBackend { .. } | Self::UnknownBackend { .. } => "route has no usable backend\n",
            Self::NoHealthyEndpoint { .. } => "no healthy upstream\n",
            Self::Upstream(e) if e.is_connect_failure() => "upstream connect error\n",
            Self::Upstream(_) => "upstream reset before response\n",
            Self::AttemptTimeout { .. } | Self::RequestTimeout { .. } => {
                "upstream request timeout\n"
            }
            Self::RequestBody(_) => "request body error\n",
        }
    }
}
