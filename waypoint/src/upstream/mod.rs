//! Connections to endpoints: a [`Connector`] opens a byte stream to one endpoint (HBONE in
//! production, [`HboneConnector`]; plain TCP in tests and for endpoints outside the mesh,
//! [`TcpConnector`]), and [`HttpClient`] speaks HTTP/1.1 or HTTP/2 over those streams with
//! a connection pool per endpoint.

mod client;
mod hbone;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use ztunnel::hbone::HboneError;
use ztunnel::identity::SpiffeId;
use ztunnel::state::{ServiceInfo, WorkloadInfo};

pub use client::{ClientSettings, ForwardError, HttpClient, IDLE_TIMEOUT, MAX_IDLE_PER_ENDPOINT};
pub use hbone::{CertificateFn, HboneConnector};

/// A byte stream to an endpoint.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed stream, whatever carries it.
pub type BoxedIo = Box<dyn Io>;

/// The HTTP version spoken to an endpoint: the one the downstream side spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 (prior knowledge), one multiplexed connection per endpoint.
    Http2,
}

impl HttpVersion {
    /// The `request_protocol`-style name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// The endpoint a connection goes to.
#[derive(Clone, Debug)]
pub struct UpstreamTarget {
    /// `endpoint_ip:target_port`.
    pub address: SocketAddr,
    /// The workload there.
    pub workload: Arc<WorkloadInfo>,
    /// The service the request was routed to.
    pub service: Arc<ServiceInfo>,
}

impl UpstreamTarget {
    /// The identities the endpoint may present: the service's SANs when it has any,
    /// otherwise the workload's own identity.
    pub fn expected_identities(&self) -> Vec<SpiffeId> {
        let sans: Vec<SpiffeId> = self
            .service
            .subject_alt_names
            .iter()
            .filter_map(|san| san.parse().ok())
            .collect();
        if sans.is_empty() {
            vec![self.workload.identity.clone()]
        } else {
            sans
        }
    }
}

/// Why no stream to an endpoint could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection failed.
    #[error("TCP connect to {address} failed: {source}")]
    Tcp {
        /// The endpoint.
        address: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The HBONE tunnel could not be opened.
    #[error(transparent)]
    Hbone(#[from] HboneError),
    /// The waypoint holds no valid certificate for its own identity yet.
    #[error("the waypoint has no valid certificate yet; it cannot open HBONE to {address}")]
    NoCertificate {
        /// The endpoint.
        address: SocketAddr,
    },
    /// Connecting took too long.
    #[error("connecting to {address} did not finish within {timeout:?}")]
    Timeout {
        /// The endpoint.
        address: SocketAddr,
        /// The limit that passed.
        timeout: Duration,
    },
}

/// Opens byte streams to endpoints.
pub trait Connector: Send + Sync + 'static {
    /// A new stream to `target`.
    fn connect(
        &self,
        target: &UpstreamTarget,
    ) -> impl Future<Output = Result<BoxedIo, ConnectError>> + Send;
}

/// Plain TCP to the endpoint's address: for tests, and for endpoints outside the mesh.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    async fn connect(&self, target: &UpstreamTarget) -> Result<BoxedIo, ConnectError> {
        let stream = tokio::net::TcpStream::connect(target.address)
            .await
            .map_err(|source| ConnectError::Tcp {
                address: target.address,
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}
