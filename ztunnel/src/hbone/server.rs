//! The HBONE server: accepts mutual-TLS connections, runs HTTP/2 on each, and turns every
//! CONNECT into a tunnel to the upstream its [`ConnectHandler`] chooses.
//!
//! One task per connection (span with a connection id, drain-aware), one task per stream in
//! the connection's own `JoinSet`, so that a connection that ends takes its streams with it
//! and a stream that fails or panics takes nothing else down.

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::server::{Connection, SendResponse};
use h2::{Reason, RecvStream};
use http::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, info, info_span, warn};

use super::copy::Plain;
use super::metrics::ServerMetrics;
use super::{
    H2Stream, HANDSHAKE_TIMEOUT, MAX_CONCURRENT_STREAMS, copy_with_tunnel, server_builder,
};
use crate::identity::SpiffeId;
use crate::tls::{TlsError, describe_handshake_error, peer_identity};

/// Picks the TLS configuration for a connection by the local address it arrived on (the
/// destination workload in the in-pod model); `None` refuses the connection.
pub type ServerConfigSelector =
    Arc<dyn Fn(SocketAddr) -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// How long open connections get to finish after shutdown starts before they are closed.
///
/// Shorter than Kubernetes' default 30 s termination grace period, so that the forced close
/// is ours and not a SIGKILL.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Streams a connection must have opened before its early-reset ratio is judged.
///
/// Together with the "more than half" rule this is Envoy's premature-reset heuristic: a
/// client that resets most of its streams before the server answers them is flooding
/// (CVE-2023-44487), while a client that cancels a few requests is not.
pub const EARLY_RESET_MIN_STREAMS: u64 = 100;

/// How long to pause accepting after the listener fails (e.g. out of file descriptors), so
/// that the accept loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Server behaviour that tests and operators may change; the defaults are the constants.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Limit on the TLS and HTTP/2 handshakes of one connection.
    pub handshake_timeout: Duration,
    /// Streams one connection may carry over its life; past it the server sends GOAWAY and
    /// refuses further streams, so that clients move to a fresh connection. `None`: no limit.
    pub max_streams_per_connection: Option<u64>,
    /// See [`DRAIN_DEADLINE`].
    pub drain_deadline: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_streams_per_connection: None,
            drain_deadline: DRAIN_DEADLINE,
        }
    }
}

/// A CONNECT that passed the server's own checks, as the handler sees it.
#[derive(Debug)]
pub struct ConnectRequest {
    /// The target from `:authority`.
    pub authority: SocketAddr,
    /// The verified identity of the client.
    pub peer_identity: SpiffeId,
    /// The client's address.
    pub peer_addr: SocketAddr,
    /// The address the connection arrived on.
    pub local_addr: SocketAddr,
    /// All request headers (`forwarded`, `baggage`, `traceparent` among them).
    pub headers: http::HeaderMap,
}

/// Why a CONNECT is refused; each maps to the status of the wire contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 400: the request itself is malformed.
    BadRequest(Cow<'static, str>),
    /// 401: policy denies the client.
    Denied(Cow<'static, str>),
    /// 503: the target is unknown or cannot be reached.
    Unavailable(Cow<'static, str>),
}

impl Rejection {
    /// The response status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Denied(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reason, for the log line.
    pub fn reason(&self) -> &str {
        match self {
            Self::BadRequest(r) | Self::Denied(r) | Self::Unavailable(r) => r,
        }
    }

    fn metric_label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Denied(_) => "denied",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// The far side of a tunnel: a TCP connection to the app, or anything that moves bytes.
pub trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// A handler's own service for the bytes of an accepted tunnel (see
/// [`ConnectDecision::Serve`]); its result is the outcome `tunnel_closed` sees.
pub type TunnelService = Box<
    dyn FnOnce(Box<dyn Upstream>) -> Pin<Box<dyn Future<Output = io::Result<(u64, u64)>> + Send>>
        + Send,
>;

/// The handler's answer to a CONNECT.
pub enum ConnectDecision {
    /// Answer 200 and copy bytes between the stream and this upstream.
    Accept(Box<dyn Upstream>),
    /// Answer 200 and hand the stream itself to this service, which reads and writes the
    /// tunnel's bytes in place: for a handler that terminates what the tunnel carries (a
    /// waypoint's HTTP server), where a pipe to copy into would cost a copy of every byte
    /// and a task hand-off each way.
    Serve(TunnelService),
    /// Answer with the rejection's status and end the stream.
    Reject(Rejection),
}

/// How a tunnel ended.
#[derive(Debug)]
pub struct TunnelOutcome {
    /// Bytes copied (client to upstream, upstream to client), or the error that ended the
    /// copy; both directions were half-closed in order when this is `Ok`.
    pub result: io::Result<(u64, u64)>,
}

/// Decides where each CONNECT goes: the policy check and the upstream dial live here.
pub trait ConnectHandler: Send + Sync + 'static {
    /// Accepts the request with an upstream, or rejects it.
    fn connect(&self, request: &ConnectRequest) -> impl Future<Output = ConnectDecision> + Send;

    /// Called once for every accepted tunnel when its copy ends (for metrics and access logs).
    /// The request's headers are empty by then: they are released when the tunnel opens, so
    /// that an open tunnel does not hold them.
    fn tunnel_closed(&self, _request: &ConnectRequest, _outcome: &TunnelOutcome) {}
}

/// Why an inbound connection failed; each variant is a log line and a metric label.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No certificate is loaded for the address the connection arrived on.
    #[error(
        "no certificate is loaded for local address {local}; the workload is not served here yet"
    )]
    NoCertificate {
        /// The local address of the connection.
        local: SocketAddr,
    },
    /// The socket could not report its addresses.
    #[error("cannot read the addresses of an accepted socket: {0}")]
    Socket(io::Error),
    /// The TLS handshake failed (untrusted or stale certificate, foreign trust domain, ...).
    #[error("TLS handshake with {peer} failed: {reason}")]
    TlsHandshake {
        /// The client's address.
        peer: SocketAddr,
        /// The verdict, in the words of the check that failed.
        reason: String,
    },
    /// The client did not finish its handshakes in time.
    #[error("handshake with {peer} did not finish within {timeout:?}")]
    HandshakeTimeout {
        /// The client's address.
        peer: SocketAddr,
        /// The limit that passed.
        timeout: Duration,
    },
    /// TLS succeeded but the client's identity cannot be read.
    #[error("client {peer} has no usable identity: {source}")]
    PeerIdentity {
        /// The client's address.
        peer: SocketAddr,
        /// Why its identity is unusable.
        source: TlsError,
    },
    /// The HTTP/2 preface or settings exchange failed.
    #[error("HTTP/2 handshake with {peer} ({identity}) failed: {source}")]
    H2Handshake {
        /// The client's address.
        peer: SocketAddr,
        /// The client's identity.
        identity: SpiffeId,
        /// h2's complaint.
        source: h2::Error,
    },
    /// The client reset most of its streams before they were established (rapid reset).
    #[error(
        "client {peer} ({identity}) reset {early} of its {total} streams before they were established; closed the connection as a rapid-reset flood"
    )]
    EarlyResetFlood {
        /// The client's address.
        peer: SocketAddr,
        /// The client's identity.
        identity: SpiffeId,
        /// Streams reset before their tunnel was established.
        early: u64,
        /// Streams accepted on the connection.
        total: u64,
    },
    /// The HTTP/2 connection failed after the handshake (flood limits, protocol errors, I/O).
    #[error("HTTP/2 connection from {peer} ({identity}) failed: {source}")]
    Connection {
        /// The client's address.
        peer: SocketAddr,
        /// The client's identity.
        identity: SpiffeId,
        /// h2's complaint.
        source: h2::Error,
    },
}

impl ServerError {
    /// The `reason` label of `hbone_server_connection_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoCertificate { .. } => "no_certificate",
            Self::Socket(_) => "socket",
            Self::TlsHandshake { .. } => "tls_handshake",
            Self::HandshakeTimeout { .. } => "handshake_timeout",
            Self::PeerIdentity { .. } => "peer_identity",
            Self::H2Handshake { .. } => "h2_handshake",
            Self::EarlyResetFlood { .. } => "flood",
            Self::Connection { source, .. }
                if source.reason() == Some(Reason::ENHANCE_YOUR_CALM) =>
            {
                "flood"
            }
            Self::Connection { source, .. } if source.is_io() => "io",
            Self::Connection { .. } => "protocol",
        }
    }
}

/// The HBONE server. Build it once, then [`serve`](Self::serve) listeners; clones share the
/// handler, certificates and metrics (one listener per pod network namespace in the in-pod
/// model).
pub struct HboneServer<H> {
    shared: Arc<Shared<H>>,
}

impl<H> Clone for HboneServer<H> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<H> {
    handler: H,
    configs: ServerConfigSelector,
    settings: ServerSettings,
    metrics: ServerMetrics,
}

/// What every stream of one connection shares.
struct ConnectionInfo {
    peer: SocketAddr,
    local: SocketAddr,
    identity: SpiffeId,
    /// Streams the client reset before their tunnel was established.
    early_resets: AtomicU64,
}

type H2Connection = Connection<TlsStream<TcpStream>, Bytes>;

impl<H: ConnectHandler> HboneServer<H> {
    /// A server that sends each CONNECT to `handler` and picks certificates with `configs`.
    pub fn new(
        handler: H,
        configs: ServerConfigSelector,
        settings: ServerSettings,
        metrics: ServerMetrics,
    ) -> Self {
        let shared = Shared {
            handler,
            configs,
            settings,
            metrics,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Accepts connections until `shutdown` resolves, then drains: the listener closes, every
    /// connection gets GOAWAY, and those still open after the drain deadline are closed.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut next_id: u64 = 0;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        next_id += 1;
                        let span = info_span!("hbone_inbound", id = next_id, src.addr = %peer);
                        let task = connection_task(self.shared.clone(), tcp, peer, drain_rx.clone());
                        connections.spawn(task.instrument(span));
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot accept an HBONE connection; pausing");
                        self.shared.metrics.connection_failure("accept");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    log_task_end(done);
                }
            }
        }
        drop(listener);
        let _ = drain_tx.send(true);
        let deadline = self.shared.settings.drain_deadline;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(done) = connections.join_next().await {
                log_task_end(done);
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                open = connections.len(),
                "drain deadline passed; closing connections"
            );
            connections.shutdown().await;
        }
        info!("HBONE server stopped");
    }
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        warn!(error = %e, "an HBONE task panicked; the proxy carries on");
    }
}

/// Decrements a gauge when dropped, so that counts survive early returns and aborts.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn inc(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn connection_task<H: ConnectHandler>(
    shared: Arc<Shared<H>>,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    shared.metrics.connections.inc();
    let _active = GaugeGuard::inc(&shared.metrics.connections_active);
    match serve_connection(&shared, tcp, peer, drain).await {
        Ok(()) => debug!("connection closed"),
        Err(e) => {
            shared.metrics.connection_failure(e.metric_label());
            warn!(error = %e, reason = e.metric_label(), "HBONE connection ended with an error");
        }
    }
}

async fn serve_connection<H: ConnectHandler>(
    shared: &Arc<Shared<H>>,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let local = tcp.local_addr().map_err(ServerError::Socket)?;
    // Tunnels carry interactive traffic; Nagle would delay small frames.
    let _ = tcp.set_nodelay(true);
    let config = (shared.configs)(local).ok_or(ServerError::NoCertificate { local })?;
    let timeout = shared.settings.handshake_timeout;
    let handshakes =
        async {
            let tls = TlsAcceptor::from(config).accept(tcp).await.map_err(|e| {
                ServerError::TlsHandshake {
                    peer,
                    reason: describe_handshake_error(&e),
                }
            })?;
            let identity = peer_identity(tls.get_ref().1)
                .map_err(|source| ServerError::PeerIdentity { peer, source })?;
            let conn = server_builder().handshake(tls).await.map_err(|source| {
                ServerError::H2Handshake {
                    peer,
                    identity: identity.clone(),
                    source,
                }
            })?;
            Ok::<_, ServerError>((conn, identity))
        };
    let (conn, identity) = tokio::time::timeout(timeout, handshakes)
        .await
        .map_err(|_| ServerError::HandshakeTimeout { peer, timeout })??;
    debug!(peer.id = %identity, "HBONE connection established");
    let info = Arc::new(ConnectionInfo {
        peer,
        local,
        identity,
        early_resets: AtomicU64::new(0),
    });
    run_streams(shared, conn, info, drain).await
}

/// What the connection has for us next.
#[expect(
    clippy::large_enum_variant,
    reason = "lives for one loop turn on the stack; the large variant is the common one"
)]
enum Next {
    Stream(Request<RecvStream>, SendResponse<Bytes>),
    Closed(Result<(), h2::Error>),
}

/// The next stream, or, while `accepting` is false, only the connection's end.
///
/// Not accepting still drives the connection (open tunnels keep flowing); new streams wait
/// in h2's queue, where a flood of them being reset trips `MAX_PENDING_ACCEPT_RESETS`.
fn next_stream(conn: &mut H2Connection, accepting: bool) -> impl Future<Output = Next> + '_ {
    std::future::poll_fn(move |cx| {
        if !accepting {
            return conn.poll_closed(cx).map(Next::Closed);
        }
        conn.poll_accept(cx).map(|next| match next {
            Some(Ok((request, respond))) => Next::Stream(request, respond),
            Some(Err(e)) => Next::Closed(Err(e)),
            None => Next::Closed(Ok(())),
        })
    })
}

/// Accepts streams until the connection closes. At most `MAX_CONCURRENT_STREAMS` stream
/// tasks run at once, whatever the peer's resets free up at the HTTP/2 level.
async fn run_streams<H: ConnectHandler>(
    shared: &Arc<Shared<H>>,
    mut conn: H2Connection,
    info: Arc<ConnectionInfo>,
    mut drain: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut streams = JoinSet::new();
    let mut state = StreamAdmission::new(shared.settings.max_streams_per_connection);
    let closed = loop {
        let accepting = streams.len() < MAX_CONCURRENT_STREAMS as usize;
        tokio::select! {
            next = next_stream(&mut conn, accepting) => match next {
                Next::Stream(request, mut respond) => {
                    if !state.admit(&mut conn, &info, &shared.metrics, &mut respond) {
                        continue;
                    }
                    let stream = handle_stream(shared.clone(), info.clone(), request, respond);
                    streams.spawn(stream.instrument(info_span!("stream", n = state.accepted)));
                }
                Next::Closed(result) => break result,
            },
            Some(done) = streams.join_next(), if !streams.is_empty() => log_task_end(done),
            _ = drain.changed(), if !state.draining => {
                conn.graceful_shutdown();
                state.draining = true;
            }
        }
    };
    // The connection is closed; its streams end as h2 fails them. Let them report.
    while let Some(done) = streams.join_next().await {
        log_task_end(done);
    }
    if state.flood {
        return Err(ServerError::EarlyResetFlood {
            peer: info.peer,
            identity: info.identity.clone(),
            early: info.early_resets.load(Ordering::Relaxed),
            total: state.accepted,
        });
    }
    closed.map_err(|source| ServerError::Connection {
        peer: info.peer,
        identity: info.identity.clone(),
        source,
    })
}

/// Per-connection decisions about new streams: lifetime limit and rapid-reset detection.
struct StreamAdmission {
    limit: u64,
    accepted: u64,
    draining: bool,
    flood: bool,
}

impl StreamAdmission {
    fn new(limit: Option<u64>) -> Self {
        Self {
            limit: limit.unwrap_or(u64::MAX),
            accepted: 0,
            draining: false,
            flood: false,
        }
    }

    /// Whether to run this stream; refuses it (and may start GOAWAY) otherwise.
    fn admit(
        &mut self,
        conn: &mut H2Connection,
        info: &ConnectionInfo,
        metrics: &ServerMetrics,
        respond: &mut SendResponse<Bytes>,
    ) -> bool {
        if self.flood || self.accepted >= self.limit {
            // Past our GOAWAY: nothing is processed, so the client may retry elsewhere.
            respond.send_reset(Reason::REFUSED_STREAM);
            metrics.stream("refused");
            return false;
        }
        self.accepted += 1;
        let early = info.early_resets.load(Ordering::Relaxed);
        if self.accepted >= EARLY_RESET_MIN_STREAMS && early * 2 > self.accepted {
            warn!(
                early,
                total = self.accepted,
                "client resets most streams before they start; closing"
            );
            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            self.flood = true;
            respond.send_reset(Reason::REFUSED_STREAM);
            return false;
        }
        if self.accepted == self.limit && !self.draining {
            conn.graceful_shutdown();
            self.draining = true;
        }
        true
    }
}

async fn handle_stream<H: ConnectHandler>(
    shared: Arc<Shared<H>>,
    info: Arc<ConnectionInfo>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    // The request's parts live in this block only, so that they are not part of the task's
    // state for the life of the tunnel.
    let (mut request, body) = {
        let (parts, body) = request.into_parts();
        let authority = match parse_connect(&parts) {
            Ok(authority) => authority,
            Err(rejection) => return reject(&shared.metrics, &mut respond, &rejection),
        };
        let request = ConnectRequest {
            authority,
            peer_identity: info.identity.clone(),
            peer_addr: info.peer,
            local_addr: info.local,
            headers: parts.headers,
        };
        (request, body)
    };
    let authority = request.authority;
    // A client that resets while we dial upstream frees the dial at once; counting those
    // resets is how a rapid-reset flood is recognised. The handler's future is boxed: its
    // state is only needed until the decision, not for the life of the tunnel.
    let decision = tokio::select! {
        decision = Box::pin(shared.handler.connect(&request)) => decision,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => {
            return client_gone(&shared.metrics, &info, "reset during connect");
        }
    };
    let far_side = match decision {
        ConnectDecision::Accept(upstream) => FarSide::Copy(upstream),
        ConnectDecision::Serve(service) => FarSide::Serve(service),
        ConnectDecision::Reject(rejection) => {
            return reject(&shared.metrics, &mut respond, &rejection);
        }
    };
    // The handler has decided: the headers (over half a kilobyte once decoded) would
    // otherwise stay with every open tunnel for its whole life.
    request.headers = http::HeaderMap::new();
    let Ok(send) = respond.send_response(status_only(StatusCode::OK), false) else {
        return client_gone(&shared.metrics, &info, "gone before the 200");
    };
    shared.metrics.stream("established");
    let _active = GaugeGuard::inc(&shared.metrics.streams_active);
    let mut tunnel = H2Stream::new(send, body);
    let result = match far_side {
        FarSide::Copy(mut upstream) => copy_with_tunnel(&mut Plain(&mut upstream), &mut tunnel)
            .await
            .map(|(to_client, from_client)| (from_client, to_client)),
        FarSide::Serve(service) => service(Box::new(tunnel)).await,
    };
    match &result {
        Ok((sent, received)) => debug!(dst.addr = %authority, sent, received, "tunnel closed"),
        Err(e) => debug!(dst.addr = %authority, error = %e, "tunnel ended with an error"),
    }
    let outcome = TunnelOutcome { result };
    shared.handler.tunnel_closed(&request, &outcome);
}

/// Where an accepted tunnel's bytes go.
enum FarSide {
    Copy(Box<dyn Upstream>),
    Serve(TunnelService),
}

fn client_gone(metrics: &ServerMetrics, info: &ConnectionInfo, when: &'static str) {
    debug!(
        when,
        "the client reset the stream before the tunnel was established"
    );
    info.early_resets.fetch_add(1, Ordering::Relaxed);
    metrics.stream("client_gone");
}

/// The server's own checks of a request: CONNECT, and an `ip:port` authority.
fn parse_connect(parts: &http::request::Parts) -> Result<SocketAddr, Rejection> {
    if parts.method != Method::CONNECT {
        let why = format!("method {} is not CONNECT", parts.method);
        return Err(Rejection::BadRequest(why.into()));
    }
    let authority = parts
        .uri
        .authority()
        .ok_or(Rejection::BadRequest("CONNECT without :authority".into()))?;
    authority.as_str().parse().map_err(|_| {
        let why = format!("authority {:?} is not an ip:port", authority.as_str());
        Rejection::BadRequest(why.into())
    })
}

fn reject(metrics: &ServerMetrics, respond: &mut SendResponse<Bytes>, rejection: &Rejection) {
    debug!(status = %rejection.status(), reason = rejection.reason(), "CONNECT rejected");
    metrics.stream(rejection.metric_label());
    if let Err(e) = respond.send_response(status_only(rejection.status()), true) {
        debug!(error = %e, "the client left before the rejection was sent");
    }
}

fn status_only(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}
