//! HBONE tunnels to a captured pod (port 15008): the TLS layer has verified the client's
//! identity; here the target is checked, a waypoint that serves the pod must be the client
//! ([`super::bypass`]), policy decides, and the app is dialed from inside the pod's namespace.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{info, warn};

use super::ProxyContext;
use super::admission::{UNKNOWN_TARGET, admit};
use super::metrics::{ConnectionGuard, Peers, Reporter};
use super::pods::PodCapture;
use super::tracker::{Revocable, TrackedConnection};
use crate::hbone::{ConnectDecision, ConnectHandler, ConnectRequest, Rejection};
use crate::inpod::{PROXY_MARK, connect};
use crate::rbac::Connection;

const DIRECTION: &str = "inbound";

/// Decides every CONNECT to one pod.
pub struct InboundHandler {
    ctx: Arc<ProxyContext>,
    pod: Arc<PodCapture>,
}

impl InboundHandler {
    /// A handler for the tunnels of `pod`.
    pub fn new(ctx: Arc<ProxyContext>, pod: Arc<PodCapture>) -> Self {
        Self { ctx, pod }
    }

    fn refuse(&self, reason: &'static str, rejection: Rejection) -> ConnectDecision {
        self.ctx.metrics.failure(DIRECTION, reason);
        ConnectDecision::Reject(rejection)
    }
}

impl ConnectHandler for InboundHandler {
    async fn connect(&self, request: &ConnectRequest) -> ConnectDecision {
        let target = request.authority;
        if target.ip() != self.pod.ip {
            return self.refuse(
                "unknown_target",
                Rejection::Unavailable(format!("{target} is not served here").into()),
            );
        }
        let snapshot = self.ctx.snapshot();
        let connection = Connection {
            src_identity: Some(request.peer_identity.clone()),
            src_ip: request.peer_addr.ip(),
            dst_ip: target.ip(),
            dst_port: target.port(),
        };
        let bypass_protection = self.ctx.settings.bypass_protection;
        let workload = match admit(
            &snapshot,
            self.pod.uid.as_str(),
            &connection,
            bypass_protection,
        ) {
            Ok(admitted) => {
                for dry in admitted.decision.dry_run_changes() {
                    info!(policy = %dry.policy, would = %dry.would, src.identity = %request.peer_identity, "dry-run policy would change the decision");
                }
                admitted.workload
            }
            Err(refusal) => {
                info!(src.identity = %request.peer_identity, src.addr = %request.peer_addr, dst.addr = %target, reason = %refusal.detail, "connection {}", refusal.summary());
                let rejection = if refusal.reason == UNKNOWN_TARGET {
                    Rejection::Unavailable(refusal.detail.into())
                } else {
                    Rejection::Denied(refusal.detail.into())
                };
                return self.refuse(refusal.reason, rejection);
            }
        };
        let tracked = self
            .ctx
            .tracker
            .track(self.pod.uid.clone(), connection, &self.pod.released);
        let app = match connect(&self.pod.netns, target, Some(PROXY_MARK)).await {
            Ok(app) => app,
            Err(error) => {
                warn!(dst.addr = %target, %error, "cannot reach the app");
                return self.refuse(
                    "app_unreachable",
                    Rejection::Unavailable(format!("cannot reach {target}").into()),
                );
            }
        };
        let _ = app.set_nodelay(true);
        let peers = Peers {
            source: snapshot.workload_by_ip(request.peer_addr.ip()),
            source_principal: Some(request.peer_identity.to_string()),
            destination: Some(workload),
            service: None,
            mutual_tls: true,
        };
        let guard = ConnectionGuard::open(
            &self.ctx.metrics,
            Reporter::Destination,
            &peers,
            request.peer_addr.to_string(),
            target.to_string(),
        );
        // Either a policy change or the pod leaving the mesh (the parent token) ends it.
        let token = tracked.cancel.clone();
        ConnectDecision::Accept(Box::new(AppConnection {
            inner: Revocable::new(app, token),
            guard,
            _tracked: tracked,
            sent: 0,
            received: 0,
        }))
    }
}

/// The app side of an admitted tunnel: counts bytes, stays revocable, and records the
/// connection (metrics, access log, tracker) when the tunnel drops it.
pub(super) struct AppConnection<S> {
    pub(super) inner: Revocable<S>,
    pub(super) guard: ConnectionGuard,
    pub(super) _tracked: TrackedConnection,
    /// Bytes written to the app (from the client).
    pub(super) sent: u64,
    /// Bytes read from the app (to the client).
    pub(super) received: u64,
}

impl<S> Drop for AppConnection<S> {
    fn drop(&mut self) {
        self.guard.finish(self.sent, self.received);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AppConnection<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.received += (buf.filled().len() - before) as u64;
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AppConnection<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result {
            self.sent += n as u64;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
