//! One client connection, HTTP/1.1 or HTTP/2 prior knowledge (h2c), driven by its own task.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// The HTTP version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 without TLS, by prior knowledge (h2c).
    Http2,
}

/// Why a connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// TCP connect failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The target address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP handshake or the request failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// An open client connection; dropping it closes the connection.
pub struct HttpConnection {
    sender: Sender,
}

impl std::fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = match self.sender {
            Sender::Http1(_) => Protocol::Http1,
            Sender::Http2(_) => Protocol::Http2,
        };
        f.debug_struct("HttpConnection")
            .field("protocol", &protocol)
            .finish()
    }
}

impl HttpConnection {
    /// Connects to `addr` and performs the handshake for `protocol`.
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Result<Self, ConnectionError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectionError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let sender = match protocol {
            Protocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await?;
                tokio::spawn(async move { drive("HTTP/1.1", connection.await) });
                Sender::Http1(sender)
            }
            Protocol::Http2 => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(async move { drive("HTTP/2", connection.await) });
                Sender::Http2(sender)
            }
        };
        Ok(Self { sender })
    }

    /// True while the connection can take another request.
    pub fn is_open(&self) -> bool {
        match &self.sender {
            Sender::Http1(sender) => !sender.is_closed(),
            Sender::Http2(sender) => !sender.is_closed(),
        }
    }

    /// Sends one request and returns the response head with its streaming body.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ConnectionError> {
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        Ok(response)
    }
}

fn drive(protocol: &str, result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "{protocol} client connection ended with an error");
    }
}
