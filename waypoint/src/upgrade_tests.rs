//! HTTP/1.1 Upgrade through the waypoint's whole request path: a tunnel served by the
//! inbound side, the layer stack, and a real upstream server that answers `101` and echoes
//! the upgraded connection's bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_proto::mesh::waypoint::v1 as wp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::body;
use crate::relay::{RelaySettings, TCP_IDLE_TIMEOUT};
use crate::testing::*;

const FRONT_VIP: [u8; 4] = [10, 96, 0, 1];

/// What the upgraded server writes first, before echoing.
const GREETING: &[u8] = b"ready\n";

/// An HTTP/1.1 server that answers every request `101 Switching Protocols` to WebSocket,
/// writes [`GREETING`] on the upgraded connection, then echoes it until the client closes.
struct UpgradeServer {
    addr: std::net::SocketAddr,
    /// TCP connections accepted.
    connections: Arc<AtomicU64>,
    /// The heads of the requests received.
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
    /// Bytes echoed by each upgraded connection, sent when the client closed it.
    echoed: mpsc::UnboundedReceiver<u64>,
    task: JoinHandle<()>,
}

impl Drop for UpgradeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UpgradeServer {
    async fn start(ip: std::net::IpAddr) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (echoed_tx, echoed) = mpsc::unbounded_channel();
        let (task_connections, task_seen) = (connections.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                task_connections.fetch_add(1, Ordering::SeqCst);
                let (seen, echoed_tx) = (task_seen.clone(), echoed_tx.clone());
                let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    let on_upgrade = hyper::upgrade::on(&mut request);
                    seen.lock().unwrap().push(request.into_parts().0);
                    let echoed_tx = echoed_tx.clone();
                    tokio::spawn(async move {
                        let upgraded = on_upgrade.await.expect("the client's upgrade");
                        let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                        write.write_all(GREETING).await.unwrap();
                        let echoed = tokio::io::copy(&mut read, &mut write).await.unwrap();
                        write.shutdown().await.unwrap();
                        let _ = echoed_tx.send(echoed);
                    });
                    async {
                        let response = Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header(CONNECTION, "upgrade")
                            .header(UPGRADE, "websocket")
                            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                            .body(http_body_util::Empty::<bytes::Bytes>::new())
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades(),
                );
            }
        });
        Self {
            addr,
            connections,
            seen,
            echoed,
            task,
        }
    }
}

/// Service `front` (bound, port 80, no endpoints of its own) whose route sends `/chat` to
/// service `ws`, backed by an [`UpgradeServer`]; the rule has a 100 ms request timeout and
/// retries on 503.
async fn world() -> (World, UpgradeServer) {
    let mut world = World::new();
    world.service("front", FRONT_VIP, &[80], true);
    world.service("ws", [10, 96, 1, 1], &[80], false);
    let server = UpgradeServer::start(world.next_ip()).await;
    world.workload("ws-0", "ws", 80, server.addr, true);
    let mut chat = rule(
        vec![path(wp::path_match::Kind::Prefix("/chat".into()))],
        vec![to("ws", 80, 1)],
    );
    chat.timeouts = Some(wp::Timeouts {
        request: Some(millis(100)),
        backend_request: Some(millis(100)),
    });
    chat.retry = Some(wp::RetryPolicy {
        attempts: 3,
        codes: vec![503],
        ..Default::default()
    });
    let rejected = world.route(route("chat", "front", vec![chat]));
    assert!(rejected.is_empty(), "{rejected:?}");
    (world, server)
}

/// A WebSocket handshake request for `path`.
fn websocket(path: &str) -> Request<body::Body> {
    Request::get(path)
        .header(HOST, "front.shop.svc.cluster.local")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(body::empty())
        .unwrap()
}

/// An HTTP/1.1 client connection (with upgrades) over a fresh tunnel to `front:80`.
async fn client(
    proxy: &TestProxy,
) -> (
    hyper::client::conn::http1::SendRequest<body::Body>,
    watch::Sender<bool>,
) {
    client_with(proxy, TCP_IDLE_TIMEOUT, Duration::from_secs(20)).await
}

/// [`client`], with upgraded connections' idle timeout and drain deadline.
async fn client_with(
    proxy: &TestProxy,
    idle_timeout: Duration,
    drain_deadline: Duration,
) -> (
    hyper::client::conn::http1::SendRequest<body::Body>,
    watch::Sender<bool>,
) {
    let (drain_tx, drain) = watch::channel(false);
    let relays = RelaySettings {
        idle_timeout,
        drain_deadline,
    };
    let (inbound, _) = proxy.inbound_with(relays, drain);
    let io = open_tunnel(&inbound, FRONT_VIP, 80).await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection.with_upgrades());
    (sender, drain_tx)
}

async fn read_exactly(io: &mut (impl AsyncReadExt + Unpin), len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .unwrap();
    buf
}

#[tokio::test]
async fn a_websocket_upgrade_is_routed_joined_both_ways_and_recorded_once_closed() {
    let (world, mut server) = world().await;
    let proxy = world.proxy();
    let (mut sender, _drain) = client(&proxy).await;

    let response = sender.send_request(websocket("/chat")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()[UPGRADE], "websocket");
    assert_eq!(response.headers()[CONNECTION], "upgrade");
    assert_eq!(
        response.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    {
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one request upstream, no retries");
        let head = &seen[0];
        assert_eq!(head.uri.path(), "/chat");
        assert_eq!(head.headers[UPGRADE], "websocket");
        assert_eq!(head.headers[CONNECTION], "upgrade");
        assert_eq!(
            head.headers["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert_eq!(head.headers["sec-websocket-version"], "13");
    }
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());

    // Endpoint to client before the client says anything.
    assert_eq!(read_exactly(&mut io, GREETING.len()).await, GREETING);
    // The rule's 100 ms timeouts bound the wait for the 101, not the upgraded connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    io.write_all(b"ping").await.unwrap();
    assert_eq!(read_exactly(&mut io, 4).await, b"ping");
    let large: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let (mut read, mut write) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        write.write_all(&large).await.unwrap();
        write.shutdown().await.unwrap();
        large
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut back))
        .await
        .expect("the endpoint closes after the client")
        .unwrap();
    let large = writer.await.unwrap();
    assert_eq!(back, large, "echoed intact, then closed");

    let echoed = tokio::time::timeout(Duration::from_secs(5), server.echoed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, 4 + large.len() as u64);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let code = ["response_code=\"101\"", "destination_service=\"ws.shop"];
    assert_eq!(
        wait_for_metric(&proxy, "istio_requests_total", &code, 1.0).await,
        1.0,
        "recorded once the connection closed"
    );
    let text = proxy.metrics_text();
    assert_eq!(metric_sum(&text, "istio_requests_total", &[]), 1.0);
    assert_eq!(
        metric_sum(&text, "istio_request_bytes_sum", &code),
        echoed as f64
    );
    assert_eq!(
        metric_sum(&text, "istio_response_bytes_sum", &code),
        (GREETING.len() as u64 + echoed) as f64
    );
}

#[tokio::test]
async fn an_upgrade_denied_by_l7_policy_gets_403_and_no_upstream_connection() {
    let (mut world, server) = world().await;
    let deny_chat = wp::L7Policy {
        name: format!("{NS}/deny-chat"),
        namespace: NS.into(),
        target: Some(wp::PolicyTarget {
            kind: Some(wp::policy_target::Kind::Service(host("front"))),
        }),
        action: wp::l7_policy::Action::Deny as i32,
        rules: vec![wp::PolicyRule {
            to: vec![wp::Operation {
                paths: vec![wp::Pattern {
                    kind: Some(wp::pattern::Kind::Prefix("/chat".into())),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        dry_run: false,
    };
    let rejected = world.policy(deny_chat);
    assert!(rejected.is_empty(), "{rejected:?}");
    let proxy = world.proxy();
    let (mut sender, _drain) = client(&proxy).await;

    let response = sender.send_request(websocket("/chat")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(!response.headers().contains_key(UPGRADE));
    assert!(
        hyper::upgrade::on(response).await.is_err(),
        "the client's connection is not upgraded"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    assert!(server.seen.lock().unwrap().is_empty());
    assert_eq!(proxy.metrics.failures("denied"), 1);
    let code = ["response_code=\"403\""];
    assert_eq!(
        wait_for_metric(&proxy, "istio_requests_total", &code, 1.0).await,
        1.0
    );
}

/// Upgrades `sender`'s connection to `/chat` and checks it carries bytes both ways.
async fn upgraded(
    sender: &mut hyper::client::conn::http1::SendRequest<body::Body>,
) -> TokioIo<hyper::upgrade::Upgraded> {
    let response = sender.send_request(websocket("/chat")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    assert_eq!(read_exactly(&mut io, GREETING.len()).await, GREETING);
    io.write_all(b"ping").await.unwrap();
    assert_eq!(read_exactly(&mut io, 4).await, b"ping");
    io
}

/// Waits until the waypoint closes the client's side of `io`; returns how long it took.
async fn until_closed(io: &mut TokioIo<hyper::upgrade::Upgraded>) -> Duration {
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    // End-of-file or a reset: either way the waypoint let go of it.
    let ended = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the waypoint closes the client's side");
    assert!(rest.is_empty(), "{rest:?}");
    started.elapsed()
}

#[tokio::test]
async fn a_quiet_upgraded_connection_is_closed_by_the_idle_timeout_and_recorded_with_flag_si() {
    let (world, mut server) = world().await;
    let proxy = world.proxy();
    let idle = Duration::from_millis(300);
    let (mut sender, _drain) = client_with(&proxy, idle, Duration::from_secs(20)).await;
    let mut io = upgraded(&mut sender).await;

    let quiet = until_closed(&mut io).await;
    assert!(quiet >= idle - Duration::from_millis(20), "{quiet:?}");
    let echoed = tokio::time::timeout(Duration::from_secs(5), server.echoed.recv())
        .await
        .expect("the endpoint's side is closed too")
        .unwrap();
    assert_eq!(echoed, 4);
    let labels = ["response_code=\"101\"", "response_flags=\"SI\""];
    assert_eq!(
        wait_for_metric(&proxy, "istio_requests_total", &labels, 1.0).await,
        1.0,
        "{}",
        proxy.metrics_text()
    );
    assert_eq!(proxy.metrics.upgrades_ended("idle_timeout"), 1);
}

#[tokio::test]
async fn a_drain_closes_an_upgraded_connection_at_the_drain_deadline() {
    let (world, mut server) = world().await;
    let proxy = world.proxy();
    let deadline = Duration::from_millis(400);
    let (mut sender, drain) = client_with(&proxy, TCP_IDLE_TIMEOUT, deadline).await;
    let mut io = upgraded(&mut sender).await;

    drain.send_replace(true);
    let drain_started = tokio::time::Instant::now();
    // Bytes flow on while the drain runs.
    io.write_all(b"more").await.unwrap();
    assert_eq!(read_exactly(&mut io, 4).await, b"more");
    until_closed(&mut io).await;
    let closed = drain_started.elapsed();
    assert!(
        closed >= deadline - Duration::from_millis(20),
        "closed at the deadline, not at the signal: {closed:?}"
    );
    let echoed = tokio::time::timeout(Duration::from_secs(5), server.echoed.recv())
        .await
        .expect("the endpoint's side is closed too")
        .unwrap();
    assert_eq!(echoed, 8);
    let labels = ["response_code=\"101\"", "response_flags=\"-\""];
    assert_eq!(
        wait_for_metric(&proxy, "istio_requests_total", &labels, 1.0).await,
        1.0
    );
    assert_eq!(proxy.metrics.upgrades_ended("drain"), 1);
    assert_eq!(proxy.metrics.upgrades_ended("idle_timeout"), 0);
}
