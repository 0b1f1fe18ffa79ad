//! The HBONE client: opens CONNECT tunnels over pooled mutual-TLS HTTP/2 connections.
//!
//! Connections are pooled by (source identity, expected destination identities, destination
//! address). A connection carries up to `max_streams_per_connection` tunnels; past that a new
//! one is dialed, and callers that need a connection at the same moment share one dial. A
//! connection that received GOAWAY, or refused a stream, leaves the pool, and the tunnel is
//! retried on a fresh connection without the caller seeing an error.

#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::metrics::ClientMetrics;
use super::pool::{Dialer, Pool, PoolKey, StreamLease};
use super::{H2Stream, HANDSHAKE_TIMEOUT, MAX_CONCURRENT_STREAMS, WriteLast};
use crate::identity::SpiffeId;
use crate::tls::{TlsError, TrustBundle, WorkloadCertificate};

/// How long a pooled connection with no open tunnel is kept before it is closed.
///
/// Re-dialing costs one handshake (about a millisecond in a cluster); an idle connection
/// costs TLS and HTTP/2 buffers on both ends and a slot on the server. A minute keeps bursts
/// of traffic on one connection without hoarding connections to peers we stopped talking to.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a pooled connection is probed with an HTTP/2 PING.
///
/// Detects a peer that vanished without a FIN or RST (a node that died, a dropped route), so
/// that its tunnels fail instead of hanging and new ones dial a fresh connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a PING may go unanswered before the connection is declared dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How many times one tunnel is moved to a fresh connection after GOAWAY or a refusal.
///
/// One retry covers a graceful GOAWAY; a second covers the race in which the fresh
/// connection is itself drained. More would only hide a peer that refuses everything.
const MAX_STREAM_RETRIES: usize = 2;

/// Client behaviour that tests and operators may change; the defaults are the constants.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Tunnels one pooled connection carries at once before another is dialed.
    pub max_streams_per_connection: usize,
    /// See [`POOL_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`KEEPALIVE_INTERVAL`].
    pub keepalive_interval: Duration,
    /// See [`KEEPALIVE_TIMEOUT`].
    pub keepalive_timeout: Duration,
    /// Limit on one dial (TCP, TLS, HTTP/2) and on waiting for a CONNECT's response.
    pub connect_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            max_streams_per_connection: MAX_CONCURRENT_STREAMS as usize,
            idle_timeout: POOL_IDLE_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            connect_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// One tunnel to open.
#[derive(Clone, Debug)]
pub struct TunnelRequest {
    /// The certificate of the workload the tunnel speaks for.
    pub source: WorkloadCertificate,
    /// The roots the server's certificate must chain to.
    pub trust: TrustBundle,
    /// The HBONE server to dial, usually `endpoint_ip:15008` or a waypoint's.
    pub destination: SocketAddr,
    /// The identities allowed to serve `destination`; the server must present one of them.
    pub expected_identities: Vec<SpiffeId>,
    /// The CONNECT target, `ip:port`.
    pub authority: SocketAddr,
    /// Headers for the CONNECT (`forwarded`, `baggage`, `traceparent`).
    pub headers: HeaderMap,
}

/// Why a tunnel could not be opened. Cheap to clone: one failed dial answers every caller
/// that was waiting for it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HboneError {
    /// The TLS configuration cannot be built from the request's certificate and identities.
    #[error("cannot build the TLS client configuration for {dst}: {source}")]
    TlsConfig {
        /// The HBONE server being dialed.
        dst: SocketAddr,
        /// What is wrong with the inputs.
        source: Arc<TlsError>,
    },
    /// The TCP connection to the HBONE server failed.
    #[error("TCP connect to HBONE server {dst} failed: {source}")]
    TcpConnect {
        /// The HBONE server being dialed.
        dst: SocketAddr,
        /// The socket error.
        source: Arc<io::Error>,
    },
    /// The TLS handshake failed: untrusted or stale certificate, or an unexpected identity.
    #[error("TLS handshake with HBONE server {dst} failed: {reason}")]
    TlsHandshake {
        /// The HBONE server being dialed.
        dst: SocketAddr,
        /// The verdict, in the words of the check that failed.
        reason: String,
    },
    /// The server's certificate passed verification but its identity cannot be read.
    #[error("HBONE server {dst} has no usable identity: {source}")]
    PeerIdentity {
        /// The HBONE server being dialed.
        dst: SocketAddr,
        /// Why the identity is unusable.
        source: Arc<TlsError>,
    },
    /// The HTTP/2 preface or settings exchange failed.
    #[error("HTTP/2 handshake with HBONE server {dst} failed: {source}")]
    H2Handshake {
        /// The HBONE server being dialed.
        dst: SocketAddr,
        /// h2's complaint.
        source: Arc<h2::Error>,
    },
    /// Dialing took longer than the connect timeout.
    #[error("dialing HBONE server {dst} did not finish within {timeout:?}")]
    ConnectTimeout {
        /// The HBONE server being dialed.
        dst: SocketAddr,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The task dialing for us ended without an answer (the runtime is shutting down).
    #[error("the dial to HBONE server {dst} was abandoned before it finished")]
    DialAbandoned {
        /// The HBONE server being dialed.
        dst: SocketAddr,
    },
    /// Every connection dialed for this tunnel closed before it could carry it.
    #[error("connections to HBONE server {dst} keep closing right after the handshake")]
    ConnectionLost {
        /// The HBONE server being dialed.
        dst: SocketAddr,
    },
    /// The CONNECT stream failed: reset, connection lost, or refused on every retry.
    #[error("CONNECT {authority} via {dst} failed: {source}")]
    Stream {
        /// The HBONE server.
        dst: SocketAddr,
        /// The tunnel target.
        authority: SocketAddr,
        /// h2's complaint.
        source: Arc<h2::Error>,
    },
    /// No response to the CONNECT within the connect timeout.
    #[error("CONNECT {authority} via {dst} got no response within {timeout:?}")]
    ResponseTimeout {
        /// The HBONE server.
        dst: SocketAddr,
        /// The tunnel target.
        authority: SocketAddr,
        /// The limit that passed.
        timeout: Duration,
    },
    /// 400: the server found the CONNECT malformed.
    #[error("HBONE server {dst} rejected CONNECT {authority} as malformed (400)")]
    BadRequest {
        /// The HBONE server.
        dst: SocketAddr,
        /// The tunnel target.
        authority: SocketAddr,
    },
    /// 401: policy at the destination denies this source.
    #[error("HBONE server {dst} denied CONNECT {authority} by policy (401)")]
    Denied {
        /// The HBONE server.
        dst: SocketAddr,
        /// The tunnel target.
        authority: SocketAddr,
    },
    /// 503: the destination does not know or cannot reach the target.
    #[error("HBONE server {dst} cannot reach {authority} (503)")]
    Unavailable {
        /// The HBONE server.
        dst: SocketAddr,
        /// The tunnel target.
        authority: SocketAddr,
    },
    /// Any other status.
    #[error("HBONE server {dst} answered CONNECT {authority} with unexpected status {status}")]
    UnexpectedStatus {
        /// The HBONE server.
        dst: SocketAddr,
        /// The tunnel target.
        authority: SocketAddr,
        /// The status it sent.
        status: StatusCode,
    },
}

impl HboneError {
    /// The `reason` label for metrics; the one place this error is classified.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::TlsConfig { .. } => "tls_config",
            Self::TcpConnect { .. } => "tcp_connect",
            Self::TlsHandshake { .. } => "tls_handshake",
            Self::PeerIdentity { .. } => "peer_identity",
            Self::H2Handshake { .. } => "h2_handshake",
            Self::ConnectTimeout { .. } => "connect_timeout",
            Self::DialAbandoned { .. } => "dial_abandoned",
            Self::ConnectionLost { .. } => "connection_lost",
            Self::Stream { .. } => "stream_error",
            Self::ResponseTimeout { .. } => "response_timeout",
            Self::BadRequest { .. } => "bad_request",
            Self::Denied { .. } => "denied",
            Self::Unavailable { .. } => "unavailable",
            Self::UnexpectedStatus { .. } => "unexpected_status",
        }
    }

    fn from_status(status: StatusCode, dst: SocketAddr, authority: SocketAddr) -> Self {
        match status {
            StatusCode::BAD_REQUEST => Self::BadRequest { dst, authority },
            StatusCode::UNAUTHORIZED => Self::Denied { dst, authority },
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable { dst, authority },
            status => Self::UnexpectedStatus {
                dst,
                authority,
                status,
            },
        }
    }
}

/// The HBONE client and its connection pool. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct HboneClient {
    pool: Arc<Pool>,
}

impl HboneClient {
    /// A client with an empty pool.
    pub fn new(settings: ClientSettings, metrics: ClientMetrics) -> Self {
        Self::with_dialer(settings, metrics, super::pool::direct_dialer())
    }

    /// A client whose connections are opened by `dialer` (e.g. inside a pod's namespace).
    pub fn with_dialer(settings: ClientSettings, metrics: ClientMetrics, dialer: Dialer) -> Self {
        Self {
            pool: Pool::new(settings, metrics, dialer),
        }
    }

    /// A client with default settings whose metrics are registered in `registry`.
    pub fn with_registry(registry: &mut Registry) -> Self {
        Self::new(ClientSettings::default(), ClientMetrics::new(registry))
    }

    /// Opens a tunnel: reuses or dials a pooled connection, sends CONNECT, waits for 200.
    pub async fn connect(&self, request: TunnelRequest) -> Result<HboneStream, HboneError> {
        let key = PoolKey::new(&request);
        let mut retries = 0;
        loop {
            let lease = self.pool.checkout(&key, &request).await?;
            match open_stream(&lease, &request, self.pool.settings().connect_timeout).await {
                Ok((send, recv)) => {
                    self.pool.metrics().stream("established");
                    let peer_identity = lease.peer_identity().clone();
                    return Ok(HboneStream {
                        tunnel: H2Stream::new(send, recv),
                        peer_identity,
                        _lease: lease,
                    });
                }
                Err(Attempt::Retry(error)) if retries < MAX_STREAM_RETRIES => {
                    tracing::debug!(%error, "connection is going away; retrying on a fresh one");
                    lease.retire();
                    retries += 1;
                    self.pool.metrics().stream_retries.inc();
                }
                Err(Attempt::Retry(error) | Attempt::Fail(error)) => {
                    self.pool.metrics().stream(error.metric_label());
                    return Err(error);
                }
            }
        }
    }
}

/// The outcome of one try at opening a stream.
enum Attempt {
    /// The connection is going away and nothing was processed: try a fresh one.
    Retry(HboneError),
    /// A final answer.
    Fail(HboneError),
}

async fn open_stream(
    lease: &StreamLease,
    request: &TunnelRequest,
    timeout: Duration,
) -> Result<(SendStream<Bytes>, RecvStream), Attempt> {
    let (dst, authority) = (request.destination, request.authority);
    let stream_error = |e| classify_stream_error(e, lease, request);
    let mut sender = lease.sender().ready().await.map_err(stream_error)?;
    let (response, send) = sender
        .send_request(connect_request(request), false)
        .map_err(stream_error)?;
    let response = tokio::time::timeout(timeout, response)
        .await
        .map_err(|_| {
            Attempt::Fail(HboneError::ResponseTimeout {
                dst,
                authority,
                timeout,
            })
        })?
        .map_err(stream_error)?;
    lease.mark_served();
    match response.status() {
        StatusCode::OK => Ok((send, response.into_body())),
        status => Err(Attempt::Fail(HboneError::from_status(
            status, dst, authority,
        ))),
    }
}

/// Decides whether a failed stream may move to a fresh connection, and names the failure.
fn classify_stream_error(e: h2::Error, lease: &StreamLease, request: &TunnelRequest) -> Attempt {
    let (dst, authority) = (request.destination, request.authority);
    // In TLS 1.3 the server judges our certificate after our side of the handshake is done,
    // so its refusal arrives as an alert on the first read of a fresh connection. rustls
    // reports alerts as InvalidData; h2 keeps only the kind and the text.
    let refused = e
        .get_io()
        .filter(|io| io.kind() == io::ErrorKind::InvalidData && !lease.served_before());
    if let Some(alert) = refused {
        let source = request.source.identity();
        let reason = format!("the server refused the certificate of {source}: {alert}");
        return Attempt::Fail(HboneError::TlsHandshake { dst, reason });
    }
    // GOAWAY and REFUSED_STREAM promise the stream was not processed. An I/O error on a
    // connection that already served tunnels means it went stale while pooled.
    let retry = e.is_go_away()
        || e.reason() == Some(Reason::REFUSED_STREAM)
        || (e.is_io() && lease.served_before());
    let error = HboneError::Stream {
        dst,
        authority,
        source: Arc::new(e),
    };
    if retry {
        Attempt::Retry(error)
    } else {
        Attempt::Fail(error)
    }
}

fn connect_request(request: &TunnelRequest) -> Request<()> {
    let mut connect = Request::new(());
    *connect.method_mut() = Method::CONNECT;
    *connect.version_mut() = Version::HTTP_2;
    let authority = http::uri::Authority::try_from(request.authority.to_string())
        .expect("a socket address always prints as a valid authority");
    *connect.uri_mut() = http::Uri::from(authority);
    *connect.headers_mut() = request.headers.clone();
    connect
}

/// An open tunnel: bytes written go to the target, `shutdown` half-closes (END_STREAM), and
/// reading returns end-of-file when the far side half-closes. Dropping it releases its slot
/// on the pooled connection.
pub struct HboneStream {
    tunnel: H2Stream,
    peer_identity: SpiffeId,
    // Declared last so that the stream is reset (if unfinished) before the slot is released.
    _lease: StreamLease,
}

impl HboneStream {
    /// The verified identity of the HBONE server at the other end.
    pub fn peer_identity(&self) -> &SpiffeId {
        &self.peer_identity
    }
}

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream")
            .field("peer_identity", &self.peer_identity.to_string())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tunnel).poll_read(cx, buf)
    }
}

impl WriteLast for HboneStream {
    fn poll_write_last(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tunnel).poll_write_last(cx, buf)
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tunnel).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tunnel).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tunnel).poll_shutdown(cx)
    }
}
