//! End-to-end HBONE: round trips with half-close both ways, header pass-through, typed
//! statuses, and the identity matrix through the real client and server.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::test_mesh::{DENY_PORT, TestMesh, UNKNOWN_PORT, exchange};
use super::*;
use crate::tls::server_config;
use crate::tls::test_ca::{TestCa, Validity, client_config_without_certificate};

fn settings() -> ClientSettings {
    ClientSettings::default()
}

#[tokio::test]
async fn round_trip_echoes_and_propagates_client_half_close() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, metrics) = mesh.client(settings());
    let mut request = mesh.request(mesh.echo);
    request
        .headers
        .insert(FORWARDED, "for=10.0.0.1".parse().unwrap());
    request.headers.insert(BAGGAGE, "k=v".parse().unwrap());
    request.headers.insert(
        TRACEPARENT,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    let mut stream = client.connect(request).await.unwrap();
    assert_eq!(stream.peer_identity(), &mesh.server_id);
    assert_eq!(exchange(&mut stream, b"ping").await, b"ping");
    drop(stream);

    let seen = wait_for_close(&mesh, 1).await;
    let (authority, peer, headers) = &seen.requests[0];
    assert_eq!(*authority, mesh.echo);
    assert_eq!(peer, mesh.client_cert.identity());
    assert_eq!(headers[FORWARDED], "for=10.0.0.1");
    assert_eq!(headers[BAGGAGE], "k=v");
    assert!(headers.contains_key(TRACEPARENT));
    assert_eq!(seen.closed[0], Ok((4, 4)));
    assert_eq!(
        metrics.streams.get_or_create(&label("established")).get(),
        1
    );
}

#[tokio::test]
async fn upstream_half_close_reaches_client_while_client_keeps_writing() {
    let mut mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, _) = mesh.client(settings());
    let mut stream = client.connect(mesh.request(mesh.greeter)).await.unwrap();
    let mut greeting = Vec::new();
    // EOF arrives (END_STREAM from the server) while our direction is still open.
    stream.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(greeting, b"bye");
    stream.write_all(b"still here").await.unwrap();
    stream.shutdown().await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), mesh.greeter_heard.recv()).await;
    assert_eq!(heard.unwrap().unwrap(), b"still here");
}

#[tokio::test]
async fn large_transfer_respects_flow_control() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, _) = mesh.client(settings());
    let stream = client.connect(mesh.request(mesh.echo)).await.unwrap();
    // Well past the stream and connection windows, so credit must flow back.
    let payload: Vec<u8> = (0..40 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = tokio::io::split(stream);
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(payload.len());
    read.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert!(back == payload, "echoed bytes differ");
}

#[tokio::test]
async fn statuses_surface_as_typed_errors() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, metrics) = mesh.client(settings());
    let denied = client.connect(mesh.request(at_port(DENY_PORT))).await;
    assert!(
        matches!(denied, Err(HboneError::Denied { .. })),
        "{denied:?}"
    );
    let unknown = client.connect(mesh.request(at_port(UNKNOWN_PORT))).await;
    assert!(
        matches!(unknown, Err(HboneError::Unavailable { .. })),
        "{unknown:?}"
    );
    // A target that refuses connections is unreachable: 503 as well.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = closed.local_addr().unwrap();
    drop(closed);
    let refused = client.connect(mesh.request(unreachable)).await;
    assert!(
        matches!(refused, Err(HboneError::Unavailable { .. })),
        "{refused:?}"
    );

    assert_eq!(metrics.streams.get_or_create(&label("denied")).get(), 1);
    assert_eq!(
        metrics.streams.get_or_create(&label("unavailable")).get(),
        2
    );
    assert_eq!(
        mesh.server_metrics
            .streams
            .get_or_create(&label("denied"))
            .get(),
        1
    );
    // Rejections are streams, not connection failures: one connection served all three.
    assert_eq!(mesh.server_connections(), 1);
}

#[tokio::test]
async fn client_refuses_unexpected_server_identity() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, metrics) = mesh.client(settings());
    let mut request = mesh.request(mesh.echo);
    request.expected_identities = vec![mesh.ca.id("shop", "other")];
    let err = client.connect(request).await.unwrap_err();
    let HboneError::TlsHandshake { reason, .. } = &err else {
        panic!("expected a TLS handshake error, got {err:?}");
    };
    assert!(
        reason.contains("presented spiffe://cluster.local/ns/shop/sa/db"),
        "{reason}"
    );
    assert!(
        reason.contains("spiffe://cluster.local/ns/shop/sa/other"),
        "{reason}"
    );
    let failures = metrics
        .connection_failures
        .get_or_create(&label("tls_handshake"));
    assert_eq!(failures.get(), 1);
}

#[tokio::test]
async fn server_refuses_clients_outside_the_mesh() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let rogue = TestCa::new("cluster.local");
    let cases = [
        ("untrusted root", rogue.leaf(&mesh.ca.id("shop", "cart"))),
        (
            "other trust domain",
            mesh.ca
                .leaf(&"spiffe://evil.example/ns/shop/sa/cart".parse().unwrap()),
        ),
        (
            "expired",
            mesh.ca
                .leaf_with(&mesh.ca.id("shop", "cart"), Validity::Expired),
        ),
    ];
    for (n, (case, certificate)) in cases.into_iter().enumerate() {
        let (client, _) = mesh.client(settings());
        let mut request = mesh.request(mesh.echo);
        request.source = certificate;
        let result = client.connect(request).await;
        let Err(HboneError::TlsHandshake { reason, .. }) = result else {
            panic!("{case}: expected a TLS refusal, got {result:?}");
        };
        assert!(
            reason.contains("refused the certificate of spiffe://"),
            "{case}: {reason}"
        );
        let failures = mesh
            .server_metrics
            .connection_failures
            .get_or_create(&label("tls_handshake"));
        assert_eq!(failures.get(), n as u64 + 1, "{case}: refusal not counted");
    }
    assert!(
        mesh.seen.lock().unwrap().requests.is_empty(),
        "a refused client reached the handler"
    );
}

#[tokio::test]
async fn server_refuses_clients_without_a_certificate() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let config = client_config_without_certificate(&mesh.ca.bundle(), mesh.server_id.clone());
    let tcp = tokio::net::TcpStream::connect(mesh.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    // TLS 1.3: our side of the handshake completes; the refusal comes on the first read.
    let refused = async {
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (mut send, conn) = h2::client::handshake(tls)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let connect = http::Request::builder()
            .method("CONNECT")
            .uri(mesh.echo.to_string());
        let (response, _) = send
            .send_request(connect.body(()).unwrap(), false)
            .map_err(std::io::Error::other)?;
        response.await.map_err(std::io::Error::other)
    };
    assert!(
        refused.await.is_err(),
        "a client without a certificate got a stream"
    );
    let failures = mesh
        .server_metrics
        .connection_failures
        .get_or_create(&label("tls_handshake"));
    assert_eq!(failures.get(), 1);
    assert!(mesh.seen.lock().unwrap().requests.is_empty());
}

#[tokio::test]
async fn client_refuses_expired_or_untrusted_servers() {
    let ca = TestCa::new("cluster.local");
    let server_id = ca.id("shop", "db");
    let expired = ca.leaf_with(&server_id, Validity::Expired);
    let config = server_config(&expired, &ca.bundle()).unwrap();
    let mesh = TestMesh::start_with(ca, server_id, Some(config), ServerSettings::default()).await;
    let (client, _) = mesh.client(settings());
    let err = client.connect(mesh.request(mesh.echo)).await.unwrap_err();
    assert!(
        matches!(&err, HboneError::TlsHandshake { reason, .. } if reason.contains("expired")),
        "{err:?}"
    );

    let rogue = TestCa::new("cluster.local");
    let mut request = mesh.request(mesh.echo);
    request.trust = rogue.bundle();
    let err = client.connect(request).await.unwrap_err();
    assert!(matches!(err, HboneError::TlsHandshake { .. }), "{err:?}");
}

fn at_port(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

fn label(reason: &'static str) -> metrics::ReasonLabel {
    metrics::ReasonLabel { reason }
}

/// Waits until the handler has seen `n` tunnels close, and returns what it saw.
#[tokio::test]
async fn a_handler_can_serve_the_stream_itself() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, _metrics) = mesh.client(settings());
    let authority = at_port(test_mesh::SERVE_PORT);
    let mut stream = client.connect(mesh.request(authority)).await.unwrap();
    assert_eq!(exchange(&mut stream, b"ping").await, b"PING");
    drop(stream);
    let seen = wait_for_close(&mesh, 1).await;
    assert_eq!(seen.closed, [Ok((4, 4))], "what the service returned");
}

async fn wait_for_close(mesh: &TestMesh, n: usize) -> test_mesh::Seen {
    for _ in 0..500 {
        {
            let mut seen = mesh.seen.lock().unwrap();
            if seen.closed.len() >= n {
                return std::mem::take(&mut *seen);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the handler never saw {n} tunnels close");
}
