//! The production connector: HBONE to `endpoint:15008` with authority `endpoint_ip:port`,
//! under the waypoint's own identity, through ztunnel's pooled [`HboneClient`].

use std::net::SocketAddr;
use std::sync::Arc;

use ztunnel::hbone::{HBONE_PORT, HboneClient, TunnelRequest};
use ztunnel::state::Tunnel;
use ztunnel::tls::{TrustBundle, WorkloadCertificate};

use super::{BoxedIo, ConnectError, Connector, TcpConnector, UpstreamTarget};

/// Returns the waypoint's current certificate (e.g. `CertificateManager::current`).
pub type CertificateFn = Arc<dyn Fn() -> Option<Arc<WorkloadCertificate>> + Send + Sync>;

/// Opens HBONE tunnels to mesh endpoints, and plain TCP to endpoints outside the mesh.
#[derive(Clone)]
pub struct HboneConnector {
    client: HboneClient,
    trust: TrustBundle,
    certificate: CertificateFn,
    hbone_port: u16,
}

impl HboneConnector {
    /// A connector that dials with `client`, checks servers against `trust`, and presents
    /// the certificate `certificate` returns at the time of each dial.
    pub fn new(client: HboneClient, trust: TrustBundle, certificate: CertificateFn) -> Self {
        Self {
            client,
            trust,
            certificate,
            hbone_port: HBONE_PORT,
        }
    }

    /// Dials endpoints' HBONE servers on `port` instead of 15008 (tests on loopback).
    pub fn with_hbone_port(mut self, port: u16) -> Self {
        self.hbone_port = port;
        self
    }
}

impl Connector for HboneConnector {
    async fn connect(&self, target: &UpstreamTarget) -> Result<BoxedIo, ConnectError> {
        if target.workload.tunnel == Tunnel::None {
            return TcpConnector.connect(target).await;
        }
        let source = (self.certificate)().ok_or(ConnectError::NoCertificate {
            address: target.address,
        })?;
        let request = TunnelRequest {
            source: (*source).clone(),
            trust: self.trust.clone(),
            destination: SocketAddr::new(target.address.ip(), self.hbone_port),
            expected_identities: target.expected_identities(),
            authority: target.address,
            headers: http::HeaderMap::new(),
        };
        let stream = self.client.connect(request).await?;
        Ok(Box::new(stream))
    }
}
