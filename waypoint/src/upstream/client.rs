//! The HTTP client of the waypoint: HTTP/1.1 keep-alive connections (a pool of idle ones per
//! endpoint) and one shared HTTP/2 connection per endpoint, over any [`Connector`].
//!
//! A request that fails on a pooled connection before it was written (the endpoint closed
//! the idle connection at the same moment) is sent again on a fresh one, once; every other
//! failure goes back to the caller, classified for the retry layer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;
use tracing::debug;

use super::{ConnectError, Connector, HttpVersion, UpstreamTarget};
use crate::body::Body;

/// How long an idle HTTP/1.1 connection is kept for reuse.
///
/// Apps commonly close idle keep-alive connections after 60-75 s (nginx 75 s, Node 5 s,
/// Go 90 s); reusing one they are closing costs a failed write and a redial, so we give up
/// on ours first for the common servers and redial otherwise.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when they become idle.
///
/// Enough for bursts of concurrent requests to one pod without keeping hundreds of sockets
/// (and tunnels) open per endpoint.
pub const MAX_IDLE_PER_ENDPOINT: usize = 32;

/// Client behaviour that tests and operators may change; the defaults are the constants.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`MAX_IDLE_PER_ENDPOINT`].
    pub max_idle_per_endpoint: usize,
    /// Limit on opening one connection (stream and HTTP handshake).
    pub connect_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            idle_timeout: IDLE_TIMEOUT,
            max_idle_per_endpoint: MAX_IDLE_PER_ENDPOINT,
            connect_timeout: ztunnel::hbone::HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why a request got no response from an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection was made but the HTTP handshake failed.
    #[error("HTTP handshake with {address} failed: {source}")]
    Handshake {
        /// The endpoint.
        address: SocketAddr,
        /// hyper's complaint.
        source: hyper::Error,
    },
    /// The request was sent but the connection failed or was reset before a response.
    #[error("{address} reset or closed the connection before responding: {source}")]
    Reset {
        /// The endpoint.
        address: SocketAddr,
        /// hyper's complaint.
        source: hyper::Error,
    },
}

impl ForwardError {
    /// Whether no connection was made (retried under "connect failure").
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Handshake { .. })
    }
}

/// A pooled HTTP client over connector `C`. Cheap to clone; clones share the pool.
pub struct HttpClient<C> {
    inner: Arc<Shared<C>>,
}

impl<C> Clone for HttpClient<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Shared<C> {
    connector: C,
    settings: ClientSettings,
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    h2: Mutex<HashMap<SocketAddr, H2Slot>>,
}

/// The shared HTTP/2 connection of one endpoint, if one is open.
type H2Slot = Arc<tokio::sync::Mutex<Option<http2::SendRequest<Body>>>>;

/// Sends on an HTTP/2 connection; on failure, the request back when it was not sent.
async fn try_h2(
    sender: &mut http2::SendRequest<Body>,
    request: Request<Body>,
) -> Result<Response<Incoming>, (Option<Request<Body>>, hyper::Error)> {
    if let Err(error) = sender.ready().await {
        return Err((Some(request), error));
    }
    sender
        .try_send_request(request)
        .await
        .map_err(|mut e| (e.take_message(), e.into_error()))
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl<C: Connector> HttpClient<C> {
    /// A client with an empty pool.
    pub fn new(connector: C, settings: ClientSettings) -> Self {
        Self {
            inner: Arc::new(Shared {
                connector,
                settings,
                idle: Mutex::new(HashMap::new()),
                h2: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The connector, for callers that need a raw stream (TCP proxying).
    pub fn connector(&self) -> &C {
        &self.inner.connector
    }

    /// Sends `request` to `target` in `version`. The request's URI may be in origin or
    /// absolute form; it is put in the form the version needs, with `authority` as host.
    pub async fn send(
        &self,
        target: &UpstreamTarget,
        version: HttpVersion,
        authority: &Authority,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let request = prepare(request, version, authority);
        match version {
            HttpVersion::Http1 => self.send_h1(target, request).await,
            HttpVersion::Http2 => self.send_h2(target, request).await,
        }
    }

    async fn send_h1(
        &self,
        target: &UpstreamTarget,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let address = target.address;
        loop {
            let (mut sender, reused) = match self.checkout_h1(address) {
                Some(sender) => (sender, true),
                None => (self.dial_h1(target).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.release_h1(address, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        debug!(%address, "pooled connection closed before the request was written; redialing");
                        request = unsent;
                    }
                    _ => {
                        return Err(ForwardError::Reset {
                            address,
                            source: error.into_error(),
                        });
                    }
                },
            }
        }
    }

    fn checkout_h1(&self, address: SocketAddr) -> Option<http1::SendRequest<Body>> {
        let mut idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&address)?;
        let now = Instant::now();
        while let Some(entry) = list.pop() {
            if entry.sender.is_ready()
                && now.duration_since(entry.since) < self.inner.settings.idle_timeout
            {
                return Some(entry.sender);
            }
        }
        idle.remove(&address);
        None
    }

    /// Returns the connection to the pool once its response is fully read.
    fn release_h1(&self, address: SocketAddr, mut sender: http1::SendRequest<Body>) {
        let shared = self.inner.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let list = idle.entry(address).or_default();
            if list.len() < shared.settings.max_idle_per_endpoint {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }

    async fn dial_h1(
        &self,
        target: &UpstreamTarget,
    ) -> Result<http1::SendRequest<Body>, ForwardError> {
        let address = target.address;
        let timeout = self.inner.settings.connect_timeout;
        let dial = async {
            let io = self.inner.connector.connect(target).await?;
            http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|source| ForwardError::Handshake { address, source })
        };
        let (sender, connection) = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| ConnectError::Timeout { address, timeout })??;
        // With upgrades: after a `101` the connection is handed to the response's
        // `OnUpgrade` (and never returns to the pool).
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(%address, %error, "HTTP/1.1 connection to endpoint ended with an error");
            }
        });
        Ok(sender)
    }

    async fn send_h2(
        &self,
        target: &UpstreamTarget,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let address = target.address;
        let slot = {
            let mut h2 = self.inner.h2.lock().unwrap_or_else(PoisonError::into_inner);
            h2.entry(address).or_default().clone()
        };
        let (mut sender, fresh) = self.h2_sender(target, &slot).await?;
        let request = match try_h2(&mut sender, request).await {
            Ok(response) => return Ok(response),
            Err((Some(unsent), error)) if !fresh => {
                debug!(%address, %error, "pooled HTTP/2 connection is unusable; redialing");
                *slot.lock().await = None;
                unsent
            }
            Err((_, source)) => return Err(ForwardError::Reset { address, source }),
        };
        let (mut sender, _) = self.h2_sender(target, &slot).await?;
        try_h2(&mut sender, request)
            .await
            .map_err(|(_, source)| ForwardError::Reset { address, source })
    }

    /// The endpoint's shared connection, dialed when there is none or it closed. Callers
    /// that need one at the same moment share one dial; `true` when this call dialed.
    async fn h2_sender(
        &self,
        target: &UpstreamTarget,
        slot: &H2Slot,
    ) -> Result<(http2::SendRequest<Body>, bool), ForwardError> {
        let mut current = slot.lock().await;
        if let Some(sender) = current.as_ref().filter(|s| !s.is_closed()) {
            return Ok((sender.clone(), false));
        }
        let sender = self.dial_h2(target).await?;
        *current = Some(sender.clone());
        Ok((sender, true))
    }

    async fn dial_h2(
        &self,
        target: &UpstreamTarget,
    ) -> Result<http2::SendRequest<Body>, ForwardError> {
        let address = target.address;
        let timeout = self.inner.settings.connect_timeout;
        let dial = async {
            let io = self.inner.connector.connect(target).await?;
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(ztunnel::hbone::STREAM_WINDOW)
                .initial_connection_window_size(ztunnel::hbone::CONNECTION_WINDOW)
                .max_header_list_size(crate::inbound::MAX_HEADER_BYTES as u32)
                .keep_alive_interval(ztunnel::hbone::client::KEEPALIVE_INTERVAL)
                .keep_alive_timeout(ztunnel::hbone::client::KEEPALIVE_TIMEOUT)
                .handshake(TokioIo::new(io))
                .await
                .map_err(|source| ForwardError::Handshake { address, source })
        };
        let (sender, connection) = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| ConnectError::Timeout { address, timeout })??;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%address, %error, "HTTP/2 connection to endpoint ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Puts the request in the shape `version` needs: origin form and a Host header for
/// HTTP/1.1; absolute form (`:scheme`, `:authority`) and no Host header for HTTP/2.
fn prepare(
    mut request: Request<Body>,
    version: HttpVersion,
    authority: &Authority,
) -> Request<Body> {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match version {
        HttpVersion::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            *request.uri_mut() = Uri::from(path);
            if let Ok(host) = header::HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        HttpVersion::Http2 => {
            *request.version_mut() = Version::HTTP_2;
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority.clone());
            parts.path_and_query = Some(path);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
            request.headers_mut().remove(header::HOST);
        }
    }
    request
}
