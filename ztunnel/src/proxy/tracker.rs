//! Open inbound connections and the facts they were admitted with, so that a discovery change
//! re-evaluates them and closes the ones it would not admit now (DESIGN.md, security
//! invariants): a policy that now denies them, or a waypoint that now serves their destination
//! when they did not come through it (bypass protection).

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::info;

use super::admission::{Refusal, admit};
use super::bypass;
use crate::inpod::PodUid;
use crate::rbac::Connection;
use crate::state::DiscoverySnapshot;

/// The failure direction of tunnelled (HBONE) inbound connections.
const INBOUND: &str = "inbound";
/// The failure direction of plaintext inbound connections.
const INBOUND_PLAINTEXT: &str = "inbound_plaintext";

/// An open connection that a re-evaluation closed, as the failure counter labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// `inbound` (HBONE) or `inbound_plaintext`.
    pub direction: &'static str,
    /// `bypassed_waypoint`, `policy_denied` or `unknown_target`.
    pub reason: &'static str,
}

struct Tracked {
    pod: PodUid,
    connection: Connection,
    cancel: CancellationToken,
}

/// Every open inbound connection of the node. The lock is held only to insert, remove or
/// scan; never across an await.
#[derive(Clone, Default)]
pub struct ConnectionTracker {
    inner: Arc<Mutex<HashMap<u64, Tracked>>>,
    next: Arc<AtomicU64>,
}

/// Removes its connection from the tracker when dropped.
pub struct TrackedConnection {
    id: u64,
    tracker: ConnectionTracker,
    /// Cancelled when policy or enrollment revokes the connection.
    pub cancel: CancellationToken,
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        self.tracker.lock().remove(&self.id);
    }
}

impl ConnectionTracker {
    /// Tracks a connection admitted to `pod` with these facts. Its token is a child of
    /// `parent` (the pod's): releasing the pod cancels it too.
    pub fn track(
        &self,
        pod: PodUid,
        connection: Connection,
        parent: &CancellationToken,
    ) -> TrackedConnection {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = parent.child_token();
        self.lock().insert(
            id,
            Tracked {
                pod,
                connection,
                cancel: cancel.clone(),
            },
        );
        TrackedConnection {
            id,
            tracker: self.clone(),
            cancel,
        }
    }

    /// Re-evaluates every open connection against `snapshot` and closes those it would not
    /// admit now: the workload is gone, bypass protection refuses it (a waypoint now serves
    /// the workload and the connection did not come from it; only with `bypass_protection`),
    /// or the policies deny it. Returns what was closed, one entry per connection.
    pub fn reevaluate(
        &self,
        snapshot: &DiscoverySnapshot,
        bypass_protection: bool,
    ) -> Vec<Revoked> {
        let mut revoked = Vec::new();
        for tracked in self.lock().values() {
            if tracked.cancel.is_cancelled() {
                continue;
            }
            let admitted = admit(
                snapshot,
                tracked.pod.as_str(),
                &tracked.connection,
                bypass_protection,
            );
            let Err(Refusal { reason, detail }) = admitted else {
                continue;
            };
            let connection = &tracked.connection;
            let direction = if connection.src_identity.is_some() {
                INBOUND
            } else {
                INBOUND_PLAINTEXT
            };
            if reason == bypass::BYPASS_REASON {
                info!(pod = %tracked.pod, src.addr = %connection.src_ip, dst.port = connection.dst_port, reason = %detail, "closing an open connection: it did not come through the waypoint that now serves its destination");
            } else {
                info!(pod = %tracked.pod, src.addr = %connection.src_ip, dst.port = connection.dst_port, reason = %detail, "closing an open connection: policy now denies it");
            }
            tracked.cancel.cancel();
            revoked.push(Revoked { direction, reason });
        }
        revoked
    }

    /// Closes every open connection of a pod (it left the mesh).
    pub fn close_pod(&self, pod: &PodUid) {
        for tracked in self.lock().values().filter(|t| &t.pod == pod) {
            tracked.cancel.cancel();
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        // Entries are inserted and removed whole, so a panic elsewhere cannot leave one torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A byte stream that fails with `ConnectionAborted` once its token is cancelled, so a copy
/// loop using it ends and both sides are closed.
pub struct Revocable<S> {
    inner: S,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Revocable<S> {
    /// Wraps `inner`; cancelling `token` revokes it.
    pub fn new(inner: S, token: CancellationToken) -> Self {
        Self {
            inner,
            cancelled: Box::pin(token.cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cancelled.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection revoked by policy",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for Revocable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revocable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
