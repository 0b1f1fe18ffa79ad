//! Plaintext connections to a captured pod from outside the mesh (port 15006): no identity,
//! so only policies that do not require one can admit them, and never to a pod a waypoint
//! serves ([`super::bypass`]); a refused connection is reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

use super::admission::admit;
use super::inbound::AppConnection;
use super::metrics::{ConnectionGuard, Peers, Reporter};
use super::pods::PodCapture;
use super::tracker::Revocable;
use super::{ProxyContext, copy_both};
use crate::inpod::{PROXY_MARK, connect, original_destination};
use crate::rbac::Connection;

const DIRECTION: &str = "inbound_plaintext";

/// Accepts the pod's plaintext inbound connections until `stop`.
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
    let dst = match original_destination(&downstream) {
        Ok(dst) => dst,
        Err(error) => {
            ctx.metrics.failure(DIRECTION, "no_original_destination");
            warn!(%error, "cannot read the original destination; closing");
            return reset(downstream);
        }
    };
    let snapshot = ctx.snapshot();
    let connection = Connection {
        src_identity: None,
        src_ip: peer.ip(),
        dst_ip: dst.ip(),
        dst_port: dst.port(),
    };
    let bypass_protection = ctx.settings.bypass_protection;
    let workload = match admit(&snapshot, pod.uid.as_str(), &connection, bypass_protection) {
        Ok(admitted) => {
            for dry in admitted.decision.dry_run_changes() {
                info!(policy = %dry.policy, would = %dry.would, src.addr = %peer, "dry-run policy would change the decision");
            }
            admitted.workload
        }
        Err(refusal) => {
            ctx.metrics.failure(DIRECTION, refusal.reason);
            info!(src.addr = %peer, dst.addr = %dst, reason = %refusal.detail, "plaintext connection {}; reset", refusal.summary());
            return reset(downstream);
        }
    };
    let tracked = ctx
        .tracker
        .track(pod.uid.clone(), connection, &pod.released);
    let app = match connect(&pod.netns, dst, Some(PROXY_MARK)).await {
        Ok(app) => app,
        Err(error) => {
            ctx.metrics.failure(DIRECTION, "app_unreachable");
            warn!(dst.addr = %dst, %error, "cannot reach the app");
            return reset(downstream);
        }
    };
    let peers = Peers {
        source: snapshot.workload_by_ip(peer.ip()),
        source_principal: None,
        destination: Some(workload),
        service: None,
        mutual_tls: false,
    };
    drop(snapshot);
    let guard = ConnectionGuard::open(
        &ctx.metrics,
        Reporter::Destination,
        &peers,
        peer.to_string(),
        dst.to_string(),
    );
    let token = tracked.cancel.clone();
    let mut app = AppConnection {
        inner: Revocable::new(app, token),
        guard,
        _tracked: tracked,
        sent: 0,
        received: 0,
    };
    if let Err(error) = copy_both(&mut downstream, &mut app).await {
        app.guard.fail("UC", &error);
    }
}

/// Closes with a TCP reset rather than a FIN, so the client sees a refusal, not an answer.
fn reset(stream: TcpStream) {
    // A zero linger never blocks: the kernel sends RST and frees the socket at once.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}
