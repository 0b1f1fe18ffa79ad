//! What one request carries through the layers: who sent it, where it is bound, the
//! configuration it is handled under, and what the layers have decided so far.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::uri::Authority;
use tokio::time::Instant;
use ztunnel::identity::SpiffeId;
use ztunnel::state::{DiscoverySnapshot, ServiceInfo, WorkloadInfo};

use crate::body::BufferedBody;
use crate::config::ConfigSnapshot;
use crate::routing::RouteChoice;
use crate::telemetry::TraceContext;
use crate::upstream::HttpVersion;

/// The client end of the tunnel the request came through.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The verified mTLS identity of the HBONE client (the source workload).
    pub identity: SpiffeId,
    /// The client's address.
    pub address: SocketAddr,
}

/// Where the client sent the request: the service behind the VIP of the CONNECT authority.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The service.
    pub service: Arc<ServiceInfo>,
    /// The service port.
    pub port: u16,
}

/// The service port a request is forwarded to, as routing chose it.
#[derive(Clone, Debug)]
pub struct BackendTarget {
    /// The service.
    pub service: Arc<ServiceInfo>,
    /// The service port.
    pub port: u16,
}

/// One request's inputs and the decisions of the layers so far.
#[derive(Debug)]
pub struct RequestContext {
    /// Who sent it.
    pub peer: Peer,
    /// Where it is bound.
    pub destination: Destination,
    /// The HTTP version the client spoke, and the one spoken to the endpoint.
    pub version: HttpVersion,
    /// Services and endpoints, as of the request's arrival.
    pub discovery: Arc<DiscoverySnapshot>,
    /// Routes and policies, as of the request's arrival.
    pub config: Arc<ConfigSnapshot>,
    /// When the request arrived.
    pub started: Instant,
    /// Bytes of request body read so far.
    pub request_bytes: Arc<AtomicU64>,
    /// The trace context of this hop (set by the edge).
    pub trace: Option<TraceContext>,
    /// The authority the request is forwarded with (set by `Normalize`, changed by rewrites).
    pub authority: Option<Authority>,
    /// The matched rule (set by the route layer; `None` for the default route).
    pub route: Option<RouteChoice>,
    /// The backend chosen by weight (set by the route layer).
    pub backend: Option<BackendTarget>,
    /// The overall deadline, when the rule has one.
    pub deadline: Option<Instant>,
    /// The request body in memory, when a layer needed to send it more than once.
    pub buffered: Option<BufferedBody>,
    /// Attempts made against endpoints.
    pub attempts: u32,
    /// Endpoints tried, in order.
    pub tried: Vec<SocketAddr>,
    /// The workload of the last endpoint tried.
    pub endpoint: Option<Arc<WorkloadInfo>>,
    /// Envoy-style response flags added on the way (`DI`, `FI`, `URX`).
    pub flags: Vec<&'static str>,
    /// The protocol an HTTP/1.1 upgrade request asks for (set by the edge); such a request
    /// is sent once, without mirrors.
    pub upgrade: Option<http::HeaderValue>,
}

impl RequestContext {
    /// A context for a request that just arrived.
    pub fn new(
        peer: Peer,
        destination: Destination,
        version: HttpVersion,
        discovery: Arc<DiscoverySnapshot>,
        config: Arc<ConfigSnapshot>,
    ) -> Self {
        Self {
            peer,
            destination,
            version,
            discovery,
            config,
            started: Instant::now(),
            request_bytes: Arc::default(),
            trace: None,
            authority: None,
            route: None,
            backend: None,
            deadline: None,
            buffered: None,
            attempts: 0,
            tried: Vec::new(),
            endpoint: None,
            flags: Vec::new(),
            upgrade: None,
        }
    }

    /// A context for a mirrored copy of this request, bound for `backend`.
    pub fn for_mirror(&self, backend: BackendTarget) -> Self {
        let mut copy = Self::new(
            self.peer.clone(),
            self.destination.clone(),
            self.version,
            self.discovery.clone(),
            self.config.clone(),
        );
        copy.trace = self.trace.clone();
        copy.authority = self.authority.clone();
        copy.route = self.route.clone();
        copy.backend = Some(backend);
        copy
    }

    /// The backend: the one routing chose, or the destination itself.
    pub fn backend(&self) -> BackendTarget {
        self.backend.clone().unwrap_or_else(|| BackendTarget {
            service: self.destination.service.clone(),
            port: self.destination.port,
        })
    }
}
