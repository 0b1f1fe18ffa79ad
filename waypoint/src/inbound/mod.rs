//! The waypoint's inbound side: the HBONE [`ConnectHandler`] that accepts tunnels for the
//! services bound to this waypoint and serves what they carry.
//!
//! A CONNECT's authority must be `VIP:port` of a known service that is bound to this
//! waypoint and has that port; anything else is refused with 503 (the target is not one
//! this waypoint serves) and counted by reason. An accepted tunnel is sniffed
//! ([`sniff`]): HTTP/1.1 and HTTP/2 are served with hyper and every request goes through
//! the layer stack ([`crate::proxy`]); anything else is proxied as TCP to one endpoint of
//! the service, chosen by the same balancer, as a byte relay ([`crate::relay`]) that idles out
//! and is closed at the drain deadline like an upgraded connection.
//!
//! Bad input is bounded here: hyper answers a malformed HTTP/1 request with 400 and an
//! oversized header block with 431 ([`MAX_HEADER_BYTES`]); HTTP/2 runs with a stream limit
//! and h2's rapid-reset and local-error-reset limits, and every connection error is
//! counted by reason in `waypoint_http_connection_errors_total`.

mod serve;
mod sniff;
mod tcp;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{Instrument, debug};
use ztunnel::hbone::{ConnectDecision, ConnectHandler, ConnectRequest, Rejection};
use ztunnel::state::{DiscoverySnapshot, GatewayDestination, GatewayRef, ServiceInfo};

use crate::balance::Balancer;
use crate::config::ConfigSnapshot;
use crate::proxy::{Destination, Peer, Stack};
use crate::relay::RelaySettings;
use crate::upstream::{Connector, HttpClient};

pub use sniff::{H2_PREFACE, Protocol, Rewind, classify, sniff};

/// The largest request header block accepted, HTTP/1 and HTTP/2 alike; past it the
/// request is answered 431.
///
/// Envoy's default limit is 60 KiB; 64 KiB admits the same requests (large cookies, JWTs,
/// W3C baggage) and bounds what one request can make us buffer.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The most header fields in one HTTP/1 request (hyper's default of 100 is too few for
/// some browsers' and gateways' requests).
pub const MAX_HEADERS: usize = 200;

/// How long an HTTP/1 client may take to send a request's headers (slowloris bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fresh tunnel may stay silent before it is treated as opaque TCP.
///
/// HTTP clients speak first and at once; a second is ample for them, and it is all a
/// server-first protocol (MySQL, SMTP) waits for its greeting on a port not declared.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(1);

/// Concurrent HTTP/2 streams per downstream connection.
///
/// gRPC clients multiplex heavily on one connection; 1000 lets them, while bounding the
/// tasks one connection can make us run.
pub const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// Inbound behaviour that tests and operators may change; the defaults are the constants.
#[derive(Clone, Debug)]
pub struct InboundSettings {
    /// See [`SNIFF_TIMEOUT`].
    pub sniff_timeout: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// How connections proxied as opaque TCP end when neither side closes them; give the
    /// stack's edge the same for upgraded connections ([`crate::proxy::Edge::with_upgrades`]).
    pub relays: RelaySettings,
}

impl Default for InboundSettings {
    fn default() -> Self {
        Self {
            sniff_timeout: SNIFF_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            relays: RelaySettings::default(),
        }
    }
}

/// How services name this waypoint in their `waypoint` field.
#[derive(Clone, Debug, Default)]
pub struct WaypointBinding {
    /// This waypoint's own service, as (namespace, hostname).
    pub service: Option<(Arc<str>, Arc<str>)>,
    /// This waypoint's own addresses (its pods' IPs).
    pub addresses: Vec<IpAddr>,
}

impl WaypointBinding {
    /// Whether `service` sends its traffic through this waypoint.
    pub fn binds(&self, service: &ServiceInfo, snapshot: &DiscoverySnapshot) -> bool {
        service
            .waypoint
            .as_ref()
            .is_some_and(|w| self.is_us(w, snapshot))
    }

    fn is_us(&self, waypoint: &GatewayRef, snapshot: &DiscoverySnapshot) -> bool {
        let ours = |namespace: &str, hostname: &str| {
            self.service
                .as_ref()
                .is_some_and(|(ns, host)| &**ns == namespace && &**host == hostname)
        };
        match &waypoint.destination {
            GatewayDestination::Service {
                namespace,
                hostname,
            } => ours(namespace, hostname),
            GatewayDestination::Address(address) => {
                self.addresses.contains(&address.ip)
                    || snapshot
                        .service_by_network_vip(&address.network, address.ip)
                        .is_some_and(|s| ours(&s.namespace, &s.hostname))
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

/// Counters of the inbound side. Cheap to clone; clones share the series.
#[derive(Clone, Debug, Default)]
pub struct InboundMetrics {
    tunnels: Family<ProtocolLabels, Counter>,
    rejections: Family<ReasonLabels, Counter>,
    connection_errors: Family<ReasonLabels, Counter>,
    tcp_ended: Family<ReasonLabels, Counter>,
}

impl InboundMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "waypoint_inbound_tunnels",
            "Tunnels accepted, by detected protocol",
            metrics.tunnels.clone(),
        );
        registry.register(
            "waypoint_inbound_rejections",
            "CONNECTs refused, by reason",
            metrics.rejections.clone(),
        );
        registry.register(
            "waypoint_http_connection_errors",
            "Downstream HTTP connections that ended in an error, by reason",
            metrics.connection_errors.clone(),
        );
        registry.register(
            "waypoint_tcp_connections_ended",
            "Connections proxied as opaque TCP that ended, by why: closed, error, idle_timeout, drain",
            metrics.tcp_ended.clone(),
        );
        metrics
    }

    /// Tunnels accepted that carried `protocol` ("http1", "http2", "tcp").
    pub fn tunnels(&self, protocol: &'static str) -> u64 {
        self.tunnels
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    /// CONNECTs refused for `reason`.
    pub fn rejections(&self, reason: &'static str) -> u64 {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// Connection errors counted for `reason`.
    pub fn connection_errors(&self, reason: &'static str) -> u64 {
        self.connection_errors
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// Connections proxied as opaque TCP counted as ended for `reason`.
    pub fn tcp_connections_ended(&self, reason: &'static str) -> u64 {
        self.tcp_ended.get_or_create(&ReasonLabels { reason }).get()
    }

    fn tunnel(&self, protocol: &'static str) {
        self.tunnels
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    fn reject(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn tcp_connection_ended(&self, reason: &'static str) {
        self.tcp_ended.get_or_create(&ReasonLabels { reason }).inc();
    }

    fn connection_error(&self, reason: &'static str) {
        self.connection_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// Completes when the waypoint starts draining; never, when nobody can start a drain.
///
/// Byte relays ([`crate::relay`]) wait on the same signal as the HTTP connections.
pub(crate) async fn draining(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|draining| *draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What the inbound side needs, shared by every tunnel.
pub struct InboundParts<C: Connector> {
    /// How services name this waypoint.
    pub binding: WaypointBinding,
    /// Services and endpoints.
    pub discovery: watch::Receiver<Arc<DiscoverySnapshot>>,
    /// Routes and policies.
    pub config: watch::Receiver<Arc<ConfigSnapshot>>,
    /// The request layers.
    pub stack: Stack<C>,
    /// The client (its connector opens TCP-proxied connections).
    pub client: HttpClient<C>,
    /// Endpoint choice for TCP-proxied connections.
    pub balancer: Arc<Balancer>,
    /// Counters.
    pub metrics: InboundMetrics,
    /// Limits and timeouts.
    pub settings: InboundSettings,
    /// Becomes `true` when the waypoint starts draining.
    pub drain: watch::Receiver<bool>,
}

/// The waypoint's HBONE handler. Cheap to clone.
pub struct Inbound<C: Connector> {
    shared: Arc<InboundParts<C>>,
}

impl<C: Connector> Clone for Inbound<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Connector> Inbound<C> {
    /// A handler over `parts`.
    pub fn new(parts: InboundParts<C>) -> Self {
        Self {
            shared: Arc::new(parts),
        }
    }

    /// Checks a CONNECT target: a VIP of a service bound to us, on one of its ports.
    pub fn admit(&self, authority: SocketAddr) -> Result<Destination, Rejection> {
        let snapshot = self.shared.discovery.borrow().clone();
        let Some(service) = snapshot.service_by_vip(authority.ip()) else {
            self.shared.metrics.reject("unknown_service");
            let why = format!("{} is not the VIP of a known service", authority.ip());
            return Err(Rejection::Unavailable(why.into()));
        };
        if !self.shared.binding.binds(&service, &snapshot) {
            self.shared.metrics.reject("not_bound");
            let why = format!("service {} is not bound to this waypoint", service.hostname);
            return Err(Rejection::Unavailable(why.into()));
        }
        if !service.ports.contains_key(&authority.port()) {
            self.shared.metrics.reject("unknown_port");
            let why = format!(
                "service {} has no port {}",
                service.hostname,
                authority.port()
            );
            return Err(Rejection::Unavailable(why.into()));
        }
        Ok(Destination {
            service,
            port: authority.port(),
        })
    }

    /// Serves one accepted tunnel's bytes (the far side of what the HBONE server copies).
    pub async fn serve_tunnel<T: crate::upstream::Io>(
        &self,
        io: T,
        peer: Peer,
        vip: SocketAddr,
        destination: Destination,
    ) {
        serve::serve_tunnel(self.shared.clone(), io, peer, vip, destination).await;
    }
}

impl<C: Connector> ConnectHandler for Inbound<C> {
    async fn connect(&self, request: &ConnectRequest) -> ConnectDecision {
        let destination = match self.admit(request.authority) {
            Ok(destination) => destination,
            Err(rejection) => {
                debug!(dst.addr = %request.authority, reason = rejection.reason(), "CONNECT refused");
                return ConnectDecision::Reject(rejection);
            }
        };
        let peer = Peer {
            identity: request.peer_identity.clone(),
            address: request.peer_addr,
        };
        // The HBONE server hands us the tunnel's stream itself: HTTP is parsed from (and
        // written to) the HTTP/2 stream's buffers, with no pipe and no copy task between.
        let span = tracing::info_span!(
            "tunnel",
            src.addr = %request.peer_addr,
            dst.addr = %request.authority,
            dst.service = %destination.service.hostname,
        );
        let inbound = self.clone();
        let vip = request.authority;
        ConnectDecision::Serve(Box::new(move |stream| {
            Box::pin(
                async move {
                    inbound.serve_tunnel(stream, peer, vip, destination).await;
                    // Bytes are counted per request (`istio_request_bytes`, ...).
                    Ok((0, 0))
                }
                .instrument(span),
            )
        }))
    }
}
