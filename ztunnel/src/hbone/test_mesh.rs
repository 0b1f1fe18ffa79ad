//! An in-process mesh for HBONE tests: a test CA, an HBONE server on 127.0.0.1:0 with a
//! scripted handler, TCP upstreams (echo, and one that half-closes first), and a client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::identity::SpiffeId;
use crate::tls::test_ca::TestCa;
use crate::tls::{WorkloadCertificate, server_config};

/// Authorities with this port are denied by policy (401).
pub(crate) const DENY_PORT: u16 = 1;
/// Authorities with this port are unknown targets (503).
pub(crate) const UNKNOWN_PORT: u16 = 2;
/// Authorities with this port make the handler panic.
pub(crate) const PANIC_PORT: u16 = 3;

/// Authorities with this port make the handler take ten seconds, like a slow upstream.
pub(crate) const SLOW_PORT: u16 = 4;
/// Authorities with this port are served by the handler itself: it reads the tunnel to its
/// end, then writes back what it read in upper case.
pub(crate) const SERVE_PORT: u16 = 5;

/// What the scripted handler saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) requests: Vec<(SocketAddr, SpiffeId, http::HeaderMap)>,
    pub(crate) closed: Vec<Result<(u64, u64), String>>,
}

/// Routes by port: deny, unknown and panic ports as above, any other is dialed over TCP.
pub(crate) struct ScriptedHandler {
    pub(crate) seen: Arc<Mutex<Seen>>,
}

impl ConnectHandler for ScriptedHandler {
    async fn connect(&self, request: &ConnectRequest) -> ConnectDecision {
        self.seen.lock().unwrap().requests.push((
            request.authority,
            request.peer_identity.clone(),
            request.headers.clone(),
        ));
        match request.authority.port() {
            DENY_PORT => ConnectDecision::Reject(Rejection::Denied("test policy".into())),
            UNKNOWN_PORT => ConnectDecision::Reject(Rejection::Unavailable("unknown".into())),
            PANIC_PORT => panic!("scripted handler panic"),
            SLOW_PORT => {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                ConnectDecision::Reject(Rejection::Unavailable("slow".into()))
            }
            SERVE_PORT => ConnectDecision::Serve(Box::new(|mut stream| {
                Box::pin(async move {
                    let mut heard = Vec::new();
                    stream.read_to_end(&mut heard).await?;
                    stream.write_all(&heard.to_ascii_uppercase()).await?;
                    stream.shutdown().await?;
                    Ok((heard.len() as u64, heard.len() as u64))
                })
            })),
            _ => match TcpStream::connect(request.authority).await {
                Ok(upstream) => ConnectDecision::Accept(Box::new(upstream)),
                Err(e) => ConnectDecision::Reject(Rejection::Unavailable(e.to_string().into())),
            },
        }
    }

    fn tunnel_closed(&self, _request: &ConnectRequest, outcome: &TunnelOutcome) {
        let result = outcome
            .result
            .as_ref()
            .map(|r| *r)
            .map_err(|e| e.to_string());
        self.seen.lock().unwrap().closed.push(result);
    }
}

/// A running test mesh. Dropping it stops the server and upstreams.
pub(crate) struct TestMesh {
    pub(crate) ca: TestCa,
    pub(crate) server_id: SpiffeId,
    pub(crate) client_cert: WorkloadCertificate,
    /// The HBONE server.
    pub(crate) addr: SocketAddr,
    /// A TCP server that echoes until EOF, then half-closes.
    pub(crate) echo: SocketAddr,
    /// A TCP server that writes "bye", half-closes, then reports what it reads until EOF.
    pub(crate) greeter: SocketAddr,
    pub(crate) greeter_heard: mpsc::UnboundedReceiver<Vec<u8>>,
    pub(crate) server_metrics: ServerMetrics,
    pub(crate) seen: Arc<Mutex<Seen>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    upstreams: Vec<JoinHandle<()>>,
}

impl TestMesh {
    /// Starts a mesh whose server uses `settings`.
    pub(crate) async fn start(settings: ServerSettings) -> Self {
        let ca = TestCa::new("cluster.local");
        let server_id = ca.id("shop", "db");
        let server_cert = ca.leaf(&server_id);
        let config = server_config(&server_cert, &ca.bundle()).unwrap();
        Self::start_with(ca, server_id, Some(config), settings).await
    }

    /// Starts a mesh whose server answers every connection with `config` (or refuses all).
    pub(crate) async fn start_with(
        ca: TestCa,
        server_id: SpiffeId,
        config: Option<Arc<rustls::ServerConfig>>,
        settings: ServerSettings,
    ) -> Self {
        let client_cert = ca.leaf(&ca.id("shop", "cart"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let handler = ScriptedHandler { seen: seen.clone() };
        let server_metrics = ServerMetrics::new(&mut Registry::default());
        let selector: ServerConfigSelector = Arc::new(move |_local| config.clone());
        let server = HboneServer::new(handler, selector, settings, server_metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(server.serve(listener, async {
            let _ = stop.await;
        }));
        let (echo, echo_task) = echo_server().await;
        let (tx, greeter_heard) = mpsc::unbounded_channel();
        let (greeter, greeter_task) = greeter_server(tx).await;
        Self {
            ca,
            server_id,
            client_cert,
            addr,
            echo,
            greeter,
            greeter_heard,
            server_metrics,
            seen,
            shutdown: Some(shutdown),
            server: Some(server),
            upstreams: vec![echo_task, greeter_task],
        }
    }

    /// A client with its own metrics.
    pub(crate) fn client(&self, settings: ClientSettings) -> (HboneClient, ClientMetrics) {
        let metrics = ClientMetrics::new(&mut Registry::default());
        (HboneClient::new(settings, metrics.clone()), metrics)
    }

    /// A tunnel request from the test client to `authority` through the mesh's server.
    pub(crate) fn request(&self, authority: SocketAddr) -> TunnelRequest {
        TunnelRequest {
            source: self.client_cert.clone(),
            trust: self.ca.bundle(),
            destination: self.addr,
            expected_identities: vec![self.server_id.clone()],
            authority,
            headers: http::HeaderMap::new(),
        }
    }

    /// How many TCP connections the HBONE server has accepted.
    pub(crate) fn server_connections(&self) -> u64 {
        self.server_metrics.connections.get()
    }

    /// Starts the server's drain and returns its task, to await or time.
    pub(crate) fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("server already shut down")
    }
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
        for task in &self.upstreams {
            task.abort();
        }
    }
}

/// Writes `payload`, half-closes, and reads until the far side half-closes.
pub(crate) async fn exchange(stream: &mut HboneStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    back
}

async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    (addr, task)
}

async fn greeter_server(heard: mpsc::UnboundedSender<Vec<u8>>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let heard = heard.clone();
            tokio::spawn(async move {
                let _ = tcp.write_all(b"bye").await;
                let _ = tcp.shutdown().await;
                let mut got = Vec::new();
                let _ = tcp.read_to_end(&mut got).await;
                let _ = heard.send(got);
            });
        }
    });
    (addr, task)
}
