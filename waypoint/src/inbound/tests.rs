//! The inbound side without TLS: CONNECT decisions from the handler, and the bytes of an
//! accepted tunnel driven directly (raw HTTP/1.1, an HTTP/2 client, opaque TCP).

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use ztunnel::hbone::{ConnectDecision, ConnectHandler, ConnectRequest, Rejection, Upstream};

use crate::body;
use crate::testing::*;

const FRONT_VIP: [u8; 4] = [10, 96, 0, 1];

fn connect_request(vip: [u8; 4], port: u16) -> ConnectRequest {
    ConnectRequest {
        authority: SocketAddr::from((vip, port)),
        peer_identity: client_identity(),
        peer_addr: "127.0.0.2:40000".parse().unwrap(),
        local_addr: "127.0.0.3:15008".parse().unwrap(),
        headers: http::HeaderMap::new(),
    }
}

async fn world() -> (World, Backend) {
    let mut world = World::new();
    world.service("front", FRONT_VIP, &[80, 9000], true);
    world.service("elsewhere", [10, 96, 0, 2], &[80], false);
    let backend = Backend::start(world.next_ip(), "front", ok()).await;
    world.workload("front-0", "front", 80, backend.addr, true);
    (world, backend)
}

/// Accepts a tunnel to `FRONT_VIP:port` and serves it as the HBONE server would; the
/// returned end plays the client's side of the tunnel.
async fn accept(inbound: &impl ConnectHandler, port: u16) -> Box<dyn Upstream> {
    match inbound.connect(&connect_request(FRONT_VIP, port)).await {
        ConnectDecision::Serve(service) => {
            let (client, tunnel) = tokio::io::duplex(64 * 1024);
            tokio::spawn(service(Box::new(tunnel)));
            Box::new(client)
        }
        ConnectDecision::Accept(_) => panic!("the waypoint serves its tunnels itself"),
        ConnectDecision::Reject(rejection) => panic!("rejected: {rejection:?}"),
    }
}

/// Writes `request` and reads until the server closes or `Connection: close` is honoured.
/// A server that answers early (400, 431) may close before the whole request is written.
async fn exchange(io: &mut Box<dyn Upstream>, request: &[u8]) -> String {
    let _ = io.write_all(request).await;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), io.read(&mut chunk)).await;
        match read {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => response.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn refuses_services_not_bound_to_the_waypoint_and_unknown_targets() {
    let (world, _backend) = world().await;
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, metrics) = world.proxy().inbound(drain);
    let cases = [
        ([10, 96, 0, 2], 80, "not_bound"),
        ([10, 96, 9, 9], 80, "unknown_service"),
        (FRONT_VIP, 81, "unknown_port"),
    ];
    for (vip, port, reason) in cases {
        match inbound.connect(&connect_request(vip, port)).await {
            ConnectDecision::Reject(rejection @ Rejection::Unavailable(_)) => {
                assert_eq!(rejection.status(), StatusCode::SERVICE_UNAVAILABLE);
            }
            ConnectDecision::Reject(other) => panic!("{reason}: unexpected {other:?}"),
            ConnectDecision::Accept(_) | ConnectDecision::Serve(_) => {
                panic!("{reason}: accepted")
            }
        }
        assert_eq!(metrics.rejections(reason), 1, "{reason}");
    }
}

#[tokio::test]
async fn serves_http1_over_the_tunnel() {
    let (world, backend) = world().await;
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, metrics) = world.proxy().inbound(drain);
    let mut io = accept(&inbound, 80).await;
    let response = exchange(
        &mut io,
        b"GET /x HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("x-served-by: front"), "{response}");
    assert_eq!(backend.hits(), 1);
    assert_eq!(metrics.tunnels("http1"), 1);
}

#[tokio::test]
async fn malformed_http_gets_400() {
    let (world, backend) = world().await;
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, metrics) = world.proxy().inbound(drain);
    let mut io = accept(&inbound, 80).await;
    let response = exchange(
        &mut io,
        b"GET / HTTP/1.1\r\nHost: front\r\nBroken header line\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
    assert_eq!(backend.hits(), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.connection_errors("bad_request"), 1);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (world, backend) = world().await;
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, metrics) = world.proxy().inbound(drain);
    let mut io = accept(&inbound, 80).await;
    let big = "a".repeat(crate::inbound::MAX_HEADER_BYTES + 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: front\r\nx-big: {big}\r\n\r\n");
    let response = exchange(&mut io, request.as_bytes()).await;
    assert!(
        response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{response}"
    );
    assert_eq!(backend.hits(), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.connection_errors("header_too_large"), 1);
}

#[tokio::test]
async fn no_route_gets_404_over_the_tunnel() {
    let (mut world, _backend) = world().await;
    use mesh_proto::mesh::waypoint::v1::path_match::Kind;
    world.route(route(
        "only-api",
        "front",
        vec![rule(
            vec![path(Kind::Prefix("/api".into()))],
            vec![to("front", 80, 1)],
        )],
    ));
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, _) = world.proxy().inbound(drain);
    let mut io = accept(&inbound, 80).await;
    let response = exchange(
        &mut io,
        b"GET /other HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{response}"
    );
}

#[tokio::test]
async fn serves_http2_over_the_tunnel_and_speaks_it_upstream() {
    let (world, backend) = world().await;
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, metrics) = world.proxy().inbound(drain);
    let io = accept(&inbound, 80).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = Request::get("http://front.shop.svc.cluster.local/grpc.Service/Method")
            .header("content-type", "application/grpc")
            .body(body::full("ping"))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"front:4");
    }
    assert_eq!(metrics.tunnels("http2"), 1);
    let seen = backend.seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|head| head.version == http::Version::HTTP_2)
    );
    assert_eq!(
        seen[0].uri.authority().unwrap().as_str(),
        "front.shop.svc.cluster.local"
    );
}

#[tokio::test]
async fn other_protocols_are_proxied_as_tcp() {
    let mut world = World::new();
    world.service("db", FRONT_VIP, &[9000], true);
    let ip = world.next_ip();
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    world.workload("db-0", "db", 9000, addr, true);
    let (_drain_tx, drain) = watch::channel(false);
    let (inbound, metrics) = world.proxy().inbound(drain);
    let mut io = accept(&inbound, 9000).await;
    io.write_all(b"\x00\x01binary protocol").await.unwrap();
    let mut back = [0u8; 17];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"\x00\x01binary protocol");
    assert_eq!(metrics.tunnels("tcp"), 1);
}

#[tokio::test]
async fn draining_closes_idle_keep_alive_connections() {
    let (world, _backend) = world().await;
    let (drain_tx, drain) = watch::channel(false);
    let (inbound, _) = world.proxy().inbound(drain);
    let mut io = accept(&inbound, 80).await;
    io.write_all(b"GET / HTTP/1.1\r\nHost: front\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    io.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    drain_tx.send_replace(true);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection closes once drained");
}
