//! Open inbound connections and the policy facts they were admitted with, so that a policy
//! change re-evaluates them and closes the ones now denied (DESIGN.md, security invariants).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::info;

use crate::inpod::PodUid;
use crate::rbac::{self, Connection};
use crate::state::DiscoverySnapshot;

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

    /// Re-evaluates every open connection against the policies of `snapshot` and closes
    /// those now denied (or whose pod left the mesh). Returns how many were closed.
    pub fn reevaluate(&self, snapshot: &DiscoverySnapshot) -> usize {
        let mut closed = 0;
        for tracked in self.lock().values() {
            if tracked.cancel.is_cancelled() {
                continue;
            }
            let verdict = match snapshot.workload_by_uid(tracked.pod.as_str()) {
                Some(workload) => {
                    let decision =
                        rbac::evaluate(snapshot.policies_for(&workload), &tracked.connection);
                    decision
                        .allowed
                        .then_some(())
                        .ok_or_else(|| decision.reason.to_string())
                }
                None => Err("the destination workload is gone".to_string()),
            };
            if let Err(reason) = verdict {
                info!(
                    pod = %tracked.pod,
                    src.addr = %tracked.connection.src_ip,
                    dst.port = tracked.connection.dst_port,
                    reason,
                    "closing an open connection: policy now denies it"
                );
                tracked.cancel.cancel();
                closed += 1;
            }
        }
        closed
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
