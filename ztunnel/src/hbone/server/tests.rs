//! The server against clients that misbehave: malformed CONNECTs, oversized headers, reset
//! floods, handler panics; and its certificate selection and drain.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::super::metrics::ReasonLabel;
use super::super::test_mesh::{PANIC_PORT, SLOW_PORT, TestMesh, UNKNOWN_PORT, exchange};
use super::*;
use crate::hbone::{ClientSettings, HboneError};
use crate::tls::client_config;

/// A bare HTTP/2 client over a mesh TLS connection, free to send what HboneClient never would.
async fn raw_client(mesh: &TestMesh) -> SendRequest<Bytes> {
    let expected = vec![mesh.server_id.clone()];
    let config = client_config(&mesh.client_cert, &mesh.ca.bundle(), expected).unwrap();
    let tcp = TcpStream::connect(mesh.addr).await.unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn status_of(send: &SendRequest<Bytes>, request: Request<()>) -> StatusCode {
    let mut send = send.clone().ready().await.unwrap();
    let (response, _body) = send.send_request(request, false).unwrap();
    response.await.unwrap().status()
}

fn connect_to(authority: &str) -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(authority)
        .body(())
        .unwrap()
}

fn reason(reason: &'static str) -> ReasonLabel {
    ReasonLabel { reason }
}

fn at_port(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn malformed_connects_get_400_and_unknown_targets_503() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let send = raw_client(&mesh).await;
    let get = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{}/", mesh.echo))
        .body(())
        .unwrap();
    assert_eq!(status_of(&send, get).await, StatusCode::BAD_REQUEST);
    let by_name = connect_to("example.com:80");
    assert_eq!(status_of(&send, by_name).await, StatusCode::BAD_REQUEST);
    let no_port = connect_to("10.0.0.1");
    assert_eq!(status_of(&send, no_port).await, StatusCode::BAD_REQUEST);
    let unknown = connect_to(&at_port(UNKNOWN_PORT).to_string());
    assert_eq!(
        status_of(&send, unknown).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The same connection still serves a good tunnel.
    let good = connect_to(&mesh.echo.to_string());
    assert_eq!(status_of(&send, good).await, StatusCode::OK);

    let streams = &mesh.server_metrics.streams;
    assert_eq!(streams.get_or_create(&reason("bad_request")).get(), 3);
    assert_eq!(streams.get_or_create(&reason("unavailable")).get(), 1);
    assert_eq!(mesh.server_connections(), 1);
    assert!(
        mesh.seen.lock().unwrap().requests.len() == 2,
        "malformed requests reached the handler"
    );
}

#[tokio::test]
async fn oversized_headers_are_refused_without_harm() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let send = raw_client(&mesh).await;
    let mut huge = connect_to(&mesh.echo.to_string());
    let value = "x".repeat(2 * crate::hbone::MAX_HEADER_LIST_SIZE as usize);
    huge.headers_mut().insert("baggage", value.parse().unwrap());
    let mut sender = send.clone().ready().await.unwrap();
    let outcome = match sender.send_request(huge, false) {
        Ok((response, _)) => response.await.map(|r| r.status()),
        Err(e) => Err(e),
    };
    assert!(
        !matches!(outcome, Ok(StatusCode::OK)),
        "an oversized header block opened a tunnel"
    );
    // Nothing reached the handler, and the server serves the next client.
    assert!(mesh.seen.lock().unwrap().requests.is_empty());
    let (client, _) = mesh.client(ClientSettings::default());
    let mut stream = client.connect(mesh.request(mesh.echo)).await.unwrap();
    assert_eq!(exchange(&mut stream, b"fine").await, b"fine");
}

#[tokio::test]
async fn a_reset_flood_closes_the_connection_and_is_counted() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let send = raw_client(&mesh).await;
    let target = at_port(SLOW_PORT).to_string();
    let mut sent = 0;
    for _ in 0..2_000 {
        let Ok(mut sender) = send.clone().ready().await else {
            break;
        };
        let Ok((_response, mut stream)) = sender.send_request(connect_to(&target), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let flood = mesh
        .server_metrics
        .connection_failures
        .get_or_create(&reason("flood"));
    for _ in 0..500 {
        if flood.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        flood.get(),
        1,
        "the flood was not detected after {sent} resets"
    );
    // The flooding connection is gone: it takes no more streams.
    let after = tokio::time::timeout(Duration::from_secs(5), async {
        let mut sender = send.clone().ready().await?;
        let (response, _) = sender.send_request(connect_to(&target), false)?;
        response.await.map(|r| r.status())
    });
    assert!(
        after.await.unwrap().is_err(),
        "the flooding connection was never closed"
    );
    // Bounded: the handler never ran more than one connection's worth of streams at once.
    let handled = mesh.seen.lock().unwrap().requests.len();
    assert!(
        handled <= 2 * MAX_CONCURRENT_STREAMS as usize,
        "{handled} streams reached the handler"
    );
    let (client, _) = mesh.client(ClientSettings::default());
    let mut stream = client.connect(mesh.request(mesh.echo)).await.unwrap();
    assert_eq!(exchange(&mut stream, b"still up").await, b"still up");
}

#[tokio::test]
async fn resetting_most_streams_after_they_start_is_a_flood_too() {
    // Slower than h2's pending-accept limit can see: every stream reaches the handler first.
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let send = raw_client(&mesh).await;
    let target = at_port(SLOW_PORT).to_string();
    let flood = mesh
        .server_metrics
        .connection_failures
        .get_or_create(&reason("flood"));
    for _ in 0..EARLY_RESET_MIN_STREAMS + 50 {
        let Ok(mut sender) = send.clone().ready().await else {
            break;
        };
        let Ok((_response, mut stream)) = sender.send_request(connect_to(&target), false) else {
            break;
        };
        tokio::time::sleep(Duration::from_millis(2)).await;
        stream.send_reset(h2::Reason::CANCEL);
        if flood.get() > 0 {
            break;
        }
    }
    for _ in 0..500 {
        if flood.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(flood.get(), 1);
    let handled = mesh.seen.lock().unwrap().requests.len() as u64;
    // Most streams reached the handler before their reset (a few lose the race to it).
    assert!(
        handled >= EARLY_RESET_MIN_STREAMS / 2,
        "only {handled} streams were started"
    );
    let gone = mesh
        .server_metrics
        .streams
        .get_or_create(&reason("client_gone"));
    assert!(gone.get() * 2 >= handled, "early resets were not counted");
}

#[tokio::test]
async fn a_panicking_handler_fails_one_stream_only() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, _) = mesh.client(ClientSettings::default());
    let failed = client.connect(mesh.request(at_port(PANIC_PORT))).await;
    assert!(
        matches!(failed, Err(HboneError::Stream { .. })),
        "{failed:?}"
    );
    let mut stream = client.connect(mesh.request(mesh.echo)).await.unwrap();
    assert_eq!(exchange(&mut stream, b"after").await, b"after");
    assert_eq!(mesh.server_connections(), 1);
}

#[tokio::test]
async fn connections_to_an_unserved_address_are_refused_and_counted() {
    let ca = crate::tls::test_ca::TestCa::new("cluster.local");
    let server_id = ca.id("shop", "db");
    let mesh = TestMesh::start_with(ca, server_id, None, ServerSettings::default()).await;
    let (client, _) = mesh.client(ClientSettings::default());
    assert!(client.connect(mesh.request(mesh.echo)).await.is_err());
    let failures = &mesh.server_metrics.connection_failures;
    assert_eq!(failures.get_or_create(&reason("no_certificate")).get(), 1);
}

#[tokio::test]
async fn drain_lets_open_tunnels_finish_and_refuses_new_connections() {
    let mut mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, _) = mesh.client(ClientSettings::default());
    let mut open = client.connect(mesh.request(mesh.echo)).await.unwrap();
    let server = mesh.begin_shutdown();
    open.write_all(b"during drain").await.unwrap();
    let mut buf = [0u8; 12];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"during drain");
    // A new tunnel cannot use the draining connection nor reach the closed listener.
    assert!(client.connect(mesh.request(mesh.echo)).await.is_err());
    assert!(!server.is_finished());
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn drain_closes_stragglers_at_the_deadline() {
    let settings = ServerSettings {
        drain_deadline: Duration::from_millis(200),
        ..ServerSettings::default()
    };
    let mut mesh = TestMesh::start(settings).await;
    let (client, _) = mesh.client(ClientSettings::default());
    let mut open = client.connect(mesh.request(mesh.echo)).await.unwrap();
    let server = mesh.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Err(_)) | Ok(Ok(0))),
        "the straggler survived: {read:?}"
    );
}
