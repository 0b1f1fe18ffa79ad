//! Connections a captured pod opens (port 15001): read the original destination, route it,
//! then carry it through an HBONE tunnel or pass it through as plain TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::metrics::{ConnectionGuard, Peers, Reporter};
use super::pods::PodCapture;
use super::route::{HboneRoute, Route, route};
use super::{ProxyContext, copy_both};
use crate::hbone::{FORWARDED, TunnelRequest, copy_with_tunnel};
use crate::inpod::{PROXY_MARK, connect, original_destination};

const DIRECTION: &str = "outbound";

/// Accepts the pod's outbound connections until `stop`.
pub async fn serve(
    ctx: Arc<ProxyContext>,
    pod: Arc<PodCapture>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) {
    let open = ctx.accepted.clone();
    super::accept_loop(listener, stop, DIRECTION, &open, move |stream, peer| {
        handle(ctx.clone(), pod.clone(), stream, peer)
    })
    .await;
}

async fn handle(
    ctx: Arc<ProxyContext>,
    pod: Arc<PodCapture>,
    mut downstream: TcpStream,
    peer: SocketAddr,
) {
    let _ = downstream.set_nodelay(true);
    let dst = match original_destination(&downstream) {
        Ok(dst) => dst,
        Err(error) => {
            ctx.metrics.failure(DIRECTION, "no_original_destination");
            warn!(%error, "cannot read the original destination; closing");
            return;
        }
    };
    let snapshot = ctx.snapshot();
    let Some(source) = snapshot.workload_by_uid(pod.uid.as_str()) else {
        ctx.metrics.failure(DIRECTION, "unknown_source");
        warn!(dst.addr = %dst, "the pod's workload is not known; closing");
        return;
    };
    let route = match route(&snapshot, &source, dst) {
        Ok(route) => route,
        Err(error) => {
            ctx.metrics.failure(DIRECTION, error.metric_label());
            warn!(dst.addr = %dst, %error, "connection refused");
            return;
        }
    };
    drop(snapshot);
    let released = pod.released.clone();
    let work = async {
        match route {
            Route::Hbone(hbone) => tunnel(&ctx, &pod, source, &mut downstream, peer, hbone).await,
            Route::Passthrough {
                dst,
                workload,
                service,
            } => {
                let peers = Peers {
                    source: Some(source),
                    source_principal: Some(pod.identity.to_string()),
                    destination: workload,
                    service,
                    mutual_tls: false,
                };
                passthrough(&ctx, &pod, &mut downstream, peer, dst, peers).await;
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = released.cancelled() => debug!("pod released; connection closed"),
    }
}

/// Carries the connection through an HBONE tunnel.
async fn tunnel(
    ctx: &ProxyContext,
    pod: &PodCapture,
    source: Arc<crate::state::WorkloadInfo>,
    downstream: &mut TcpStream,
    peer: SocketAddr,
    route: HboneRoute,
) {
    let peers = Peers {
        source: Some(source),
        source_principal: Some(pod.identity.to_string()),
        destination: Some(route.workload.clone()),
        service: route.service.clone(),
        mutual_tls: true,
    };
    let mut guard = ConnectionGuard::open(
        &ctx.metrics,
        Reporter::Source,
        &peers,
        peer.to_string(),
        route.authority.to_string(),
    );
    let cert = match ctx.certs.fetch_or_wait(&pod.identity).await {
        Ok(cert) => cert,
        Err(error) => {
            ctx.metrics.failure(DIRECTION, "no_certificate");
            guard.fail("UF", &error);
            return;
        }
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("for={}", forwarded_ip(peer))) {
        headers.insert(FORWARDED, value);
    }
    let request = TunnelRequest {
        source: (*cert).clone(),
        trust: ctx.trust.clone(),
        destination: route.server,
        expected_identities: route.expected,
        authority: route.authority,
        headers,
    };
    // Boxed: the dial's state (about a kilobyte) is only needed until the tunnel is open;
    // inline, it would be part of every connection's task for as long as it lives.
    let mut upstream = match Box::pin(pod.hbone.connect(request)).await {
        Ok(stream) => stream,
        Err(error) => {
            ctx.metrics.failure(DIRECTION, error.metric_label());
            guard.fail("UF", &error);
            warn!(dst.addr = %route.authority, %error, "tunnel refused");
            return;
        }
    };
    match copy_with_tunnel(downstream, &mut upstream).await {
        Ok((sent, received)) => guard.finish(sent, received),
        Err(error) => guard.fail("UC", &error),
    }
}

/// Connects straight to a destination outside the mesh, from the pod's namespace.
async fn passthrough(
    ctx: &ProxyContext,
    pod: &PodCapture,
    downstream: &mut TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    peers: Peers,
) {
    let mut guard = ConnectionGuard::open(
        &ctx.metrics,
        Reporter::Source,
        &peers,
        peer.to_string(),
        dst.to_string(),
    );
    let mut upstream = match connect(&pod.netns, dst, Some(PROXY_MARK)).await {
        Ok(stream) => stream,
        Err(error) => {
            ctx.metrics.failure(DIRECTION, "connect_failed");
            guard.fail("UF", &error);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    match copy_both(downstream, &mut upstream).await {
        Ok((sent, received)) => guard.finish(sent, received),
        Err(error) => guard.fail("UC", &error),
    }
}

/// The client address as RFC 7239 writes it (IPv6 in brackets and quotes).
fn forwarded_ip(peer: SocketAddr) -> String {
    match peer {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("\"[{}]\"", v6.ip()),
    }
}
