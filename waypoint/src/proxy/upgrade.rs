//! HTTP/1.1 Upgrade (WebSocket, SPDY, ...) through the waypoint.
//!
//! An upgrade request is handled like any other until its response: routed, authorized,
//! balanced and forwarded, with `Connection: upgrade` and its `Upgrade` header put back on
//! the way out (`Normalize` strips them as hop-by-hop). It is sent once: no retries and no
//! mirrors, since an upgraded connection cannot be replayed. Timeouts bound the wait for the
//! response only; once the endpoint answers `101 Switching Protocols`, the edge joins the
//! client's connection and the endpoint's and copies bytes both ways until either side
//! closes, holding the request's record (one access-log line and `response_code="101"` when
//! the connection ends, with the bytes copied) and the balancer's in-flight count.
//!
//! The waypoint closes both sides itself in two cases ([`UpgradeSettings`]): when no byte has
//! moved either way for the idle timeout (flag `SI`, as Envoy's stream idle timeout), and
//! when the connection is still open at the drain deadline. Either is counted in
//! `waypoint_upgraded_connections_ended_total{reason}` and named in the access-log line's
//! `error`.
//!
//! Upgrade is an HTTP/1.1 mechanism: HTTP/2 forbids the headers, and the waypoint speaks to
//! the endpoint in the client's version, so an upgrade always goes upstream over HTTP/1.1.
//! HTTP/2's extended CONNECT (RFC 8441) is not offered. `Upgrade: h2c` is not an upgrade
//! here: the headers are dropped and the request is served as a plain one, as Envoy does,
//! since an endpoint switching to HTTP/2 would carry later requests past routing and policy.

#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, debug};

use crate::body::{self, Body};
use crate::inbound::draining;
use crate::telemetry::RequestRecord;
use crate::upstream::HttpVersion;

/// How long an upgraded connection may carry no byte either way before the waypoint closes
/// it.
///
/// An upgraded connection is a byte stream, like a proxied TCP connection, so this is the
/// idle timeout of Envoy's TCP proxy (1 h), which Istio keeps, rather than the 5 min of
/// Envoy's HTTP stream idle timeout: WebSocket applications are often quiet for minutes
/// without sending pings, and a dead peer is what this bounds, not a slow one.
pub const UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How close to its drain deadline a failing upgraded connection counts as closed by the
/// drain: the HBONE server closes the tunnels still open at the same deadline, counted from
/// when it saw the drain start, and which of the two closes first is a matter of scheduling.
const DRAIN_RACE: Duration = Duration::from_millis(250);

/// How upgraded connections end when neither side closes them.
#[derive(Clone, Debug)]
pub struct UpgradeSettings {
    /// See [`UPGRADE_IDLE_TIMEOUT`]; zero turns the idle timeout off.
    pub idle_timeout: Duration,
    /// How long an upgraded connection may run on once the waypoint drains: the waypoint's
    /// drain deadline, the one the HBONE server gives its tunnels.
    pub drain_deadline: Duration,
    /// Becomes `true` when the waypoint starts draining (the inbound side's signal).
    pub drain: watch::Receiver<bool>,
}

impl Default for UpgradeSettings {
    /// The default timeouts, and a drain signal that never comes.
    fn default() -> Self {
        Self {
            idle_timeout: UPGRADE_IDLE_TIMEOUT,
            drain_deadline: ztunnel::proxy::DRAIN_DEADLINE,
            drain: watch::channel(false).1,
        }
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (its `Upgrade` header), when it asks
/// one the waypoint forwards: `Connection` names `upgrade` and the protocol is not `h2c`.
pub(crate) fn requested(request: &Request<Body>, version: HttpVersion) -> Option<HeaderValue> {
    if version != HttpVersion::Http1 {
        return None;
    }
    let headers = request.headers();
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let h2c = protocol
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (asks && !h2c).then(|| protocol.clone())
}

/// Puts back the hop-by-hop headers of an upgrade to `protocol`.
pub(crate) fn insert_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Answers the client with the endpoint's `101` and joins the two connections in a task of
/// their own, under `settings`; `record` and the endpoint's (empty) response body, which
/// holds the balancer's pick, are kept until the joined connection ends.
pub(crate) fn join(
    mut response: Response<Body>,
    downstream: OnUpgrade,
    mut record: RequestRecord,
    settings: UpgradeSettings,
) -> Response<Body> {
    debug_assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    // The endpoint's connection: hyper's client left it in the response's extensions, which
    // every layer keeps (they map the body, never rebuild the response).
    let upstream = hyper::upgrade::on(&mut response);
    let (parts, held) = response.into_parts();
    let span = tracing::debug_span!("upgraded", trace_id = %record.trace_id);
    tokio::spawn(
        async move {
            let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
                Ok(both) => both,
                Err(error) => {
                    debug!(%error, "upgrade not completed");
                    return;
                }
            };
            let relayed = relay(TokioIo::new(downstream), TokioIo::new(upstream), &settings).await;
            // Both connections are closed by now: `relay` owned them.
            record.add_upgraded_bytes(relayed.sent, relayed.received);
            end(&mut record, &relayed.ending, &settings);
            drop((held, record));
        }
        .instrument(span),
    );
    Response::from_parts(parts, body::empty())
}

/// Records why an upgraded connection ended.
fn end(record: &mut RequestRecord, ending: &Ending, settings: &UpgradeSettings) {
    record.metrics().upgrade_ended(ending.reason());
    match ending {
        Ending::Closed => debug!("upgraded connection closed"),
        Ending::Failed(error) => debug!(%error, "upgraded connection ended with an error"),
        Ending::IdleTimeout => {
            let why = format!(
                "no bytes either way for {:?}: closed by the idle timeout",
                settings.idle_timeout
            );
            debug!(%why, "upgraded connection closed");
            record.add_flag("SI");
            record.error = Some((why, "proxy"));
        }
        Ending::Drained => {
            let why = "still open at the drain deadline: closed by the drain";
            debug!(why, "upgraded connection closed");
            record.error = Some((why.to_string(), "proxy"));
        }
    }
}

/// How an upgraded connection ended.
#[derive(Debug)]
pub(crate) enum Ending {
    /// Both directions reached end-of-file: the two sides closed it.
    Closed,
    /// Reading or writing failed on one side.
    Failed(io::Error),
    /// No byte moved either way for the idle timeout; the waypoint closed both sides.
    IdleTimeout,
    /// Still open at the drain deadline; the waypoint closed both sides.
    Drained,
}

impl Ending {
    /// The `reason` label of `waypoint_upgraded_connections_ended_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Failed(_) => "error",
            Self::IdleTimeout => "idle_timeout",
            Self::Drained => "drain",
        }
    }
}

/// What [`relay`] did.
#[derive(Debug)]
pub(crate) struct Relayed {
    /// Why it stopped.
    pub(crate) ending: Ending,
    /// Bytes read from the client (for the endpoint).
    pub(crate) sent: u64,
    /// Bytes read from the endpoint (for the client).
    pub(crate) received: u64,
}

/// Copies bytes both ways between the client's upgraded connection and the endpoint's until
/// both sides have closed, one fails, neither has sent a byte for the idle timeout, or the
/// drain deadline passes; then drops (closes) both.
pub(crate) async fn relay<D, U>(downstream: D, upstream: U, settings: &UpgradeSettings) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut downstream = Watched::new(downstream, &activity);
    let mut upstream = Watched::new(upstream, &activity);
    let mut drain = settings.drain.clone();
    let mut drain_deadline: Option<Instant> = None;
    let ending = {
        let copy = ztunnel::hbone::copy_bidirectional(&mut downstream, &mut upstream);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                // The deadline first: a connection that is at it and failing because the
                // HBONE server closed its tunnel at the same moment was closed by the drain.
                biased;
                () = sleep_until(drain_deadline) => break Ending::Drained,
                () = draining(&mut drain), if drain_deadline.is_none() => {
                    // No graceful end exists for an upgraded protocol: it runs on until the
                    // deadline, like the HBONE server's tunnels.
                    drain_deadline = Some(Instant::now() + settings.drain_deadline);
                }
                () = activity.idle(settings.idle_timeout) => break Ending::IdleTimeout,
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

/// When a byte last moved on a joined connection, either way.
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

/// One side of a joined connection: notes every read that returns bytes in the shared
/// [`Activity`] and counts them (the copy's own counts are lost when the idle timeout or
/// the drain stops it).
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
