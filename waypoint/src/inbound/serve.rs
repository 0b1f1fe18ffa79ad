//! One tunnel: detect the protocol, then serve HTTP with hyper (every request through the
//! layer stack) or proxy TCP. Drain-aware: when the waypoint drains, HTTP connections are
//! shut down gracefully (GOAWAY, `Connection: close`) and finish their requests in flight.

use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use super::sniff::{Protocol, Rewind, sniff};
use super::{InboundMetrics, InboundParts, MAX_CONCURRENT_STREAMS, MAX_HEADERS, draining};
use crate::body::{self, Body};
use crate::proxy::{Destination, Peer, RequestContext};
use crate::upstream::{Connector, HttpVersion, Io};

pub(super) async fn serve_tunnel<C: Connector, T: Io>(
    shared: Arc<InboundParts<C>>,
    mut io: T,
    peer: Peer,
    vip: SocketAddr,
    destination: Destination,
) {
    let (protocol, prefix) = match sniff(&mut io, shared.settings.sniff_timeout).await {
        Ok(detected) => detected,
        Err(error) => {
            debug!(%error, "tunnel failed before its protocol was known");
            return;
        }
    };
    let io = Rewind::new(prefix, io);
    let tunnel = Arc::new(Tunnel {
        peer,
        vip,
        destination,
    });
    match protocol {
        Protocol::Http1 => {
            shared.metrics.tunnel("http1");
            serve_http(shared, tunnel, io, HttpVersion::Http1).await;
        }
        Protocol::Http2 => {
            shared.metrics.tunnel("http2");
            serve_http(shared, tunnel, io, HttpVersion::Http2).await;
        }
        Protocol::Opaque => {
            shared.metrics.tunnel("tcp");
            super::tcp::proxy_tcp(&shared, &tunnel, io).await;
        }
    }
}

/// What every request of one tunnel shares.
pub(super) struct Tunnel {
    pub(super) peer: Peer,
    pub(super) vip: SocketAddr,
    pub(super) destination: Destination,
}

/// Waits for a hyper connection to end; when the waypoint drains first, shuts it down
/// gracefully and waits for its requests in flight.
macro_rules! drive {
    ($connection:expr, $drain:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => result,
            () = draining(&mut $drain) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    }};
}

async fn serve_http<C: Connector, T: Io>(
    shared: Arc<InboundParts<C>>,
    tunnel: Arc<Tunnel>,
    io: T,
    version: HttpVersion,
) {
    let service = {
        let shared = shared.clone();
        service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let tunnel = tunnel.clone();
            async move { Ok::<_, Infallible>(handle(&shared, &tunnel, version, request).await) }
        })
    };
    let settings = &shared.settings;
    let io = TokioIo::new(io);
    let mut drain = shared.drain.clone();
    let result = match version {
        HttpVersion::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout)
                .max_buf_size(settings.max_header_bytes.max(8192))
                .max_headers(MAX_HEADERS);
            // With upgrades: the edge joins a `101`'s connection to the endpoint's.
            drive!(builder.serve_connection(io, service).with_upgrades(), drain)
        }
        HttpVersion::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .max_pending_accept_reset_streams(ztunnel::hbone::MAX_PENDING_ACCEPT_RESETS)
                .max_local_error_reset_streams(ztunnel::hbone::MAX_LOCAL_ERROR_RESETS)
                .max_header_list_size(settings.max_header_bytes as u32)
                .initial_stream_window_size(ztunnel::hbone::STREAM_WINDOW)
                .initial_connection_window_size(ztunnel::hbone::CONNECTION_WINDOW)
                .keep_alive_interval(ztunnel::hbone::client::KEEPALIVE_INTERVAL)
                .keep_alive_timeout(ztunnel::hbone::client::KEEPALIVE_TIMEOUT);
            drive!(builder.serve_connection(io, service), drain)
        }
    };
    if let Err(error) = result {
        record_error(&shared.metrics, &error);
    }
}

async fn handle<C: Connector>(
    shared: &InboundParts<C>,
    tunnel: &Tunnel,
    version: HttpVersion,
    request: Request<Incoming>,
) -> Response<Body> {
    let discovery = shared.discovery.borrow().clone();
    let config = shared.config.borrow().clone();
    // The service may have changed since the tunnel opened; a removed one keeps serving the
    // tunnel's requests as it was.
    let destination = match discovery.service_by_vip(tunnel.vip.ip()) {
        Some(service) => Destination {
            service,
            port: tunnel.destination.port,
        },
        None => tunnel.destination.clone(),
    };
    let mut cx = RequestContext::new(tunnel.peer.clone(), destination, version, discovery, config);
    let request = request.map(body::boxed);
    // Boxed: the stack's future is several kilobytes, and hyper moves the service's future
    // into a task (HTTP/2) or its dispatcher; a pointer moves cheaper than the state.
    Box::pin(shared.stack.serve(request, &mut cx)).await
}

/// Counts why a downstream connection failed; the reason is the label.
fn record_error(metrics: &InboundMetrics, error: &hyper::Error) {
    let reason = if error.is_parse_too_large() {
        "header_too_large"
    } else if error.is_parse() || error.is_parse_status() {
        "bad_request"
    } else if error.is_timeout() {
        "header_timeout"
    } else if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        "client_gone"
    } else if let Some(h2) = error.source().and_then(|s| s.downcast_ref::<h2::Error>()) {
        if h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
            "h2_flood"
        } else if h2.is_io() {
            "io"
        } else {
            "h2_protocol"
        }
    } else {
        "io"
    };
    metrics.connection_error(reason);
    debug!(%error, reason, "downstream HTTP connection failed");
}
