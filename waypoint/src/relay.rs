//! Byte relays: connections the waypoint only copies bytes for once they are established.
//!
//! There are two kinds, and they end the same way: an HTTP/1.1 upgraded connection
//! (WebSocket, SPDY; `proxy/upgrade.rs`) once the endpoint answered `101`, and a tunnel
//! proxied as opaque TCP (`inbound/tcp.rs`) once its endpoint is dialed. `relay()` copies
//! both ways with the tunnel's copy (no buffer held by an idle connection) until both sides
//! have closed or one fails, and closes both sides itself in two cases ([`RelaySettings`]):
//! when no byte has moved either way for the idle timeout, and when the relay is still open
//! at the drain deadline. A byte stream has no graceful end the waypoint could ask for, so a
//! drain lets it run on until the deadline, like the HBONE server's tunnels.
//!
//! The caller counts the `Ending` under its own metric (`Ending::reason` is the label)
//! and has `Relayed::log` say how the relay ended: at info, naming why, when the waypoint
//! closed it.

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::inbound::draining;

/// How long a byte relay may carry no byte either way before the waypoint closes it.
///
/// The idle timeout of Envoy's TCP proxy (1 h), which Istio keeps. It is also the right one
/// for an upgraded connection, which is a byte stream too, rather than the 5 min of Envoy's
/// HTTP stream idle timeout: WebSocket applications are often quiet for minutes without
/// sending pings, and a dead peer is what this bounds, not a slow one.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How close to its drain deadline a failing relay counts as closed by the drain: the HBONE
/// server closes the tunnels still open at the same deadline, counted from when it saw the
/// drain start, and which of the two closes first is a matter of scheduling.
const DRAIN_RACE: Duration = Duration::from_millis(250);

/// How byte relays end when neither side closes them. One value serves both kinds: the
/// inbound side's opaque TCP ([`crate::inbound::InboundSettings`]) and upgraded connections
/// ([`crate::proxy::Edge::with_upgrades`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelaySettings {
    /// See [`TCP_IDLE_TIMEOUT`]; zero turns the idle timeout off.
    pub idle_timeout: Duration,
    /// How long a relay may run on once the waypoint drains: the waypoint's drain deadline,
    /// the one the HBONE server gives its tunnels.
    pub drain_deadline: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            idle_timeout: TCP_IDLE_TIMEOUT,
            drain_deadline: ztunnel::proxy::DRAIN_DEADLINE,
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum Ending {
    /// Both directions reached end-of-file: the two sides closed it.
    Closed,
    /// Reading or writing failed on one side.
    Failed(io::Error),
    /// No byte moved either way for this idle timeout; the waypoint closed both sides.
    IdleTimeout(Duration),
    /// Still open at the drain deadline; the waypoint closed both sides.
    Drained,
}

impl Ending {
    /// The `reason` label of the counters of relay endings
    /// (`waypoint_upgraded_connections_ended_total`, `waypoint_tcp_connections_ended_total`).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Failed(_) => "error",
            Self::IdleTimeout(_) => "idle_timeout",
            Self::Drained => "drain",
        }
    }

    /// Whether the waypoint closed the relay itself rather than one of its sides.
    pub(crate) fn by_waypoint(&self) -> bool {
        matches!(self, Self::IdleTimeout(_) | Self::Drained)
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("closed by both sides"),
            Self::Failed(error) => write!(f, "ended with an error: {error}"),
            Self::IdleTimeout(timeout) => write!(
                f,
                "no bytes either way for {timeout:?}: closed by the idle timeout"
            ),
            Self::Drained => f.write_str("still open at the drain deadline: closed by the drain"),
        }
    }
}

/// What [`relay`] did.
#[derive(Debug)]
pub(crate) struct Relayed {
    /// Why it stopped.
    pub(crate) ending: Ending,
    /// Bytes read from the downstream side (for the endpoint).
    pub(crate) sent: u64,
    /// Bytes read from the endpoint (for the downstream side).
    pub(crate) received: u64,
}

impl Relayed {
    /// Says how a relay of `kind` ("TCP connection", "upgraded connection") ended: at info
    /// when the waypoint closed it, since an operator asking why a long-lived connection went
    /// needs that line; at debug when its sides did.
    pub(crate) fn log(&self, kind: &str) {
        let (ending, sent, received) = (&self.ending, self.sent, self.received);
        if ending.by_waypoint() {
            info!(
                reason = ending.reason(),
                sent, received, "{kind} closed: {ending}"
            );
        } else {
            debug!(reason = ending.reason(), sent, received, "{kind} {ending}");
        }
    }
}

/// Copies bytes both ways between `downstream` and `upstream` until both sides have closed,
/// one fails, neither has sent a byte for the idle timeout, or the drain deadline passes
/// (counted from when `drain` turns `true`); then drops (closes) both.
pub(crate) async fn relay<D, U>(
    downstream: D,
    upstream: U,
    settings: RelaySettings,
    mut drain: watch::Receiver<bool>,
) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut downstream = Watched::new(downstream, &activity);
    let mut upstream = Watched::new(upstream, &activity);
    let mut drain_deadline: Option<Instant> = None;
    let ending = {
        let copy = ztunnel::hbone::copy_bidirectional(&mut downstream, &mut upstream);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                // The deadline first: a relay that is at it and failing because the HBONE
                // server closed its tunnel at the same moment was closed by the drain.
                biased;
                () = sleep_until(drain_deadline) => break Ending::Drained,
                () = draining(&mut drain), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + settings.drain_deadline);
                }
                () = activity.idle(settings.idle_timeout) => {
                    break Ending::IdleTimeout(settings.idle_timeout);
                }
                copied = &mut copy => break match copied {
                    Ok(_) => Ending::Closed,
                    Err(_) if drain_deadline.is_some_and(|at| Instant::now() + DRAIN_RACE >= at) => {
                        Ending::Drained
                    }
                    Err(error) => Ending::Failed(error),
                },
            }
        }
    };
    Relayed {
        ending,
        sent: downstream.read,
        received: upstream.read,
    }
}

/// Completes at `at`; never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When a byte last moved through a relay, either way.
///
/// An atomic rather than a `Cell` only so that the relay's future stays `Send`: both sides
/// and the timer live in one task.
struct Activity {
    start: Instant,
    /// Nanoseconds from `start` to the last read that returned bytes.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let since_start = self.start.elapsed().as_nanos();
        self.last.store(
            u64::try_from(since_start).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Completes once no byte has moved for `timeout`; never when `timeout` is zero.
    async fn idle(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed));
            let at = last + timeout;
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

/// One side of a relay: notes every read that returns bytes in the shared [`Activity`] and
/// counts them (the copy's own counts are lost when the idle timeout or the drain stops it).
struct Watched<'a, T> {
    io: T,
    activity: &'a Activity,
    read: u64,
}

impl<'a, T> Watched<'a, T> {
    fn new(io: T, activity: &'a Activity) -> Self {
        Self {
            io,
            activity,
            read: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        if read > 0 {
            self.read += read as u64;
            self.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
