//! The controller's one gRPC port: delta ADS and the CA, behind TLS.

use std::time::Duration;

use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use mesh_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::ca::CertificateService;
use crate::xds::AdsService;

/// How often an idle stream is pinged, so dead proxies are noticed and NATs keep the flow.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message the server accepts from a proxy (requests are small; NACK messages may
/// name many resources).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The PEM certificate chain and key the controller serves with.
#[derive(Clone)]
pub struct ServingIdentity {
    /// Leaf first.
    pub cert_chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

/// Serves ADS and the CA on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    identity: ServingIdentity,
    ads: AdsService,
    ca: CertificateService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(
        identity.cert_chain_pem,
        identity.key_pem,
    ));
    Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(
            AggregatedDiscoveryServiceServer::new(ads).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            IstioCertificateServiceServer::new(ca).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
