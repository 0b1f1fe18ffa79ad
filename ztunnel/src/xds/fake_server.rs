//! An in-process ADS server for tests, driven by channels: every call is reported to the
//! test, which reads the client's requests and writes the responses itself.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for something the client should do promptly.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// The token the fake accepts.
pub(crate) const GOOD_TOKEN: &str = "good-token";

/// One call the client made.
pub(crate) enum Call {
    /// The token was good: the test drives the stream.
    Accepted(FakeStream),
    /// The token was missing or wrong; the call was refused with UNAUTHENTICATED.
    Refused {
        /// The `authorization` metadata as sent.
        authorization: Option<String>,
    },
}

/// An accepted stream. Dropping `responses` ends the stream from the server's side.
pub(crate) struct FakeStream {
    pub(crate) requests: mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
    pub(crate) responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl FakeStream {
    /// The next request, or a panic naming what was awaited.
    pub(crate) async fn request(&mut self, what: &str) -> DeltaDiscoveryRequest {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .unwrap_or_else(|_| panic!("no request while waiting for {what}"))
            .unwrap_or_else(|| panic!("stream closed while waiting for {what}"))
    }

    /// Sends a response.
    pub(crate) async fn respond(&self, response: DeltaDiscoveryResponse) {
        self.responses
            .send(Ok(response))
            .await
            .expect("client still reading");
    }
}

#[derive(Clone)]
struct FakeService {
    calls: mpsc::UnboundedSender<Call>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeService {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if authorization.as_deref() != Some(&format!("Bearer {GOOD_TOKEN}")) {
            let _ = self.calls.send(Call::Refused { authorization });
            return Err(Status::unauthenticated(
                "the bearer token is not one this controller issued",
            ));
        }
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (responses, responses_rx) = mpsc::channel(16);
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                if requests_tx.send(request).is_err() {
                    break;
                }
            }
        });
        let _ = self.calls.send(Call::Accepted(FakeStream {
            requests,
            responses,
        }));
        Ok(Response::new(Box::pin(ReceiverStream::new(responses_rx))))
    }
}

/// A running fake; stops when dropped.
pub(crate) struct FakeAds {
    pub(crate) addr: SocketAddr,
    calls: mpsc::UnboundedReceiver<Call>,
    server: JoinHandle<()>,
}

impl FakeAds {
    /// Serves plaintext on a free loopback port.
    pub(crate) async fn start() -> Self {
        Self::serve(None).await
    }

    /// Serves TLS with a leaf for `controller` from a fresh root; returns the root's PEM.
    pub(crate) async fn start_tls() -> (Self, String) {
        let (identity, root_pem) = controller_identity();
        (Self::serve(Some(identity)).await, root_pem)
    }

    async fn serve(identity: Option<Identity>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let mut builder = Server::builder();
        if let Some(identity) = identity {
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .expect("server TLS");
        }
        let router = builder.add_service(AggregatedDiscoveryServiceServer::new(FakeService {
            calls: calls_tx,
        }));
        let server = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self {
            addr,
            calls,
            server,
        }
    }

    /// The next call, or a panic naming what was awaited.
    pub(crate) async fn call(&mut self, what: &str) -> Call {
        tokio::time::timeout(PATIENCE, self.calls.recv())
            .await
            .unwrap_or_else(|_| panic!("no call while waiting for {what}"))
            .expect("fake server running")
    }

    /// The next call, which must be accepted.
    pub(crate) async fn accepted(&mut self, what: &str) -> FakeStream {
        match self.call(what).await {
            Call::Accepted(stream) => stream,
            Call::Refused { authorization } => {
                panic!("{what}: call refused, authorization {authorization:?}")
            }
        }
    }
}

impl Drop for FakeAds {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A serving identity for the name `controller`, and the PEM of the root that issued it.
fn controller_identity() -> (Identity, String) {
    let mut root = CertificateParams::default();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root =
        CertifiedIssuer::self_signed(root, KeyPair::generate().expect("root key")).expect("root");
    let leaf_params = CertificateParams::new(vec!["controller".to_string()]).expect("leaf params");
    let key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params.signed_by(&key, &root).expect("leaf");
    (
        Identity::from_pem(leaf.pem(), key.serialize_pem()),
        root.pem(),
    )
}
