//! The pool: sharing, limits, shared dials, idle release, keep-alive and GOAWAY.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::super::metrics::ReasonLabel;
use super::super::test_mesh::{TestMesh, exchange};
use super::*;
use crate::hbone::ServerSettings;

#[tokio::test]
async fn many_streams_share_one_connection() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, metrics) = mesh.client(ClientSettings::default());
    for i in 0..10u8 {
        let mut stream = client.connect(mesh.request(mesh.echo)).await.unwrap();
        assert_eq!(exchange(&mut stream, &[i; 100]).await, [i; 100]);
    }
    let open: Vec<_> =
        futures_util::future::join_all((0..20).map(|_| client.connect(mesh.request(mesh.echo))))
            .await;
    assert!(open.iter().all(Result::is_ok));
    assert_eq!(mesh.server_connections(), 1);
    assert_eq!(metrics.connections.get(), 1);
}

#[tokio::test]
async fn past_the_stream_limit_a_second_connection_opens() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let settings = ClientSettings {
        max_streams_per_connection: 2,
        ..ClientSettings::default()
    };
    let (client, _) = mesh.client(settings);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(client.connect(mesh.request(mesh.echo)).await.unwrap());
    }
    assert_eq!(mesh.server_connections(), 1);
    held.push(client.connect(mesh.request(mesh.echo)).await.unwrap());
    assert_eq!(mesh.server_connections(), 2);
    // A freed slot is reused rather than dialing again.
    held.remove(0);
    let mut again = client.connect(mesh.request(mesh.echo)).await.unwrap();
    assert_eq!(exchange(&mut again, b"reuse").await, b"reuse");
    assert_eq!(mesh.server_connections(), 2);
}

#[tokio::test]
async fn concurrent_first_dials_share_one_handshake() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, metrics) = mesh.client(ClientSettings::default());
    let streams =
        futures_util::future::join_all((0..50).map(|_| client.connect(mesh.request(mesh.echo))))
            .await;
    assert!(streams.iter().all(Result::is_ok));
    assert_eq!(mesh.server_connections(), 1);
    assert_eq!(metrics.connections.get(), 1);
}

#[tokio::test]
async fn a_failed_dial_answers_every_waiter_once() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, metrics) = mesh.client(ClientSettings::default());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let results = futures_util::future::join_all((0..10).map(|_| {
        let mut request = mesh.request(mesh.echo);
        request.destination = nowhere;
        client.connect(request)
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(HboneError::TcpConnect { .. })))
    );
    let failures = metrics
        .connection_failures
        .get_or_create(&reason("tcp_connect"));
    assert_eq!(failures.get(), 1, "waiters should share the failed dial");
}

#[tokio::test]
async fn different_keys_do_not_share_connections() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let (client, _) = mesh.client(ClientSettings::default());
    let _a = client.connect(mesh.request(mesh.echo)).await.unwrap();
    let mut other_source = mesh.request(mesh.echo);
    other_source.source = mesh.ca.leaf(&mesh.ca.id("shop", "checkout"));
    let _b = client.connect(other_source).await.unwrap();
    assert_eq!(mesh.server_connections(), 2);
}

#[tokio::test]
async fn goaway_moves_new_streams_to_a_fresh_connection() {
    // The server sends GOAWAY after each connection's first stream.
    let settings = ServerSettings {
        max_streams_per_connection: Some(1),
        ..ServerSettings::default()
    };
    let mesh = TestMesh::start(settings).await;
    let (client, metrics) = mesh.client(ClientSettings::default());
    let mut first = client.connect(mesh.request(mesh.echo)).await.unwrap();
    first.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    first.read_exact(&mut buf).await.unwrap();

    // The first tunnel is still open on the draining connection; new ones must not fail.
    for round in 0..3u8 {
        let mut next = client.connect(mesh.request(mesh.echo)).await.unwrap();
        assert_eq!(exchange(&mut next, &[round; 8]).await, [round; 8]);
    }
    assert_eq!(mesh.server_connections(), 4);
    // The draining connection still carries its tunnel to the end.
    first.shutdown().await.unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(
        metrics.streams.get_or_create(&reason("established")).get(),
        4
    );
    assert!(
        metrics.stream_retries.get() >= 1,
        "GOAWAY never made a stream retry"
    );
}

#[tokio::test]
async fn idle_connections_are_released() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let settings = ClientSettings {
        idle_timeout: Duration::from_millis(100),
        ..ClientSettings::default()
    };
    let (client, metrics) = mesh.client(settings);
    let mut stream = client.connect(mesh.request(mesh.echo)).await.unwrap();
    assert_eq!(exchange(&mut stream, b"x").await, b"x");
    // An open stream keeps its connection, however long.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.connections_active.get(), 1);
    drop(stream);
    wait_until(|| metrics.connections_active.get() == 0).await;
    assert!(mesh.server_metrics.connections_active.get() <= 1);
    let _fresh = client.connect(mesh.request(mesh.echo)).await.unwrap();
    assert_eq!(mesh.server_connections(), 2);
}

#[tokio::test]
async fn keepalive_closes_a_connection_whose_peer_went_silent() {
    let mesh = TestMesh::start(ServerSettings::default()).await;
    let relay = Relay::start(mesh.addr).await;
    let settings = ClientSettings {
        keepalive_interval: Duration::from_millis(50),
        keepalive_timeout: Duration::from_millis(200),
        ..ClientSettings::default()
    };
    let (client, metrics) = mesh.client(settings);
    let mut request = mesh.request(mesh.echo);
    request.destination = relay.addr;
    let stream = client.connect(request.clone()).await.unwrap();
    // Answered PINGs keep the connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.connections_active.get(), 1);
    // A peer that stops answering is declared dead and leaves the pool.
    relay.freeze.send_replace(true);
    wait_until(|| metrics.connections_active.get() == 0).await;
    let failures = metrics
        .connection_failures
        .get_or_create(&reason("keepalive"));
    assert_eq!(failures.get(), 1);
    drop(stream);
    relay.freeze.send_replace(false);
    let mut fresh = client.connect(request).await.unwrap();
    assert_eq!(exchange(&mut fresh, b"alive").await, b"alive");
    assert_eq!(metrics.connections.get(), 2);
}

fn reason(reason: &'static str) -> ReasonLabel {
    ReasonLabel { reason }
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

/// A TCP relay that can stop forwarding, to play a peer that vanished without a FIN.
struct Relay {
    addr: SocketAddr,
    freeze: Arc<watch::Sender<bool>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let freeze = Arc::new(watch::Sender::new(false));
        let frozen = freeze.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let outbound = TcpStream::connect(target).await.unwrap();
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(forward(in_read, out_write, frozen.subscribe()));
                tokio::spawn(forward(out_read, in_write, frozen.subscribe()));
            }
        });
        Self { addr, freeze }
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // While frozen, bytes are swallowed, as by a dead route.
        if *frozen.borrow_and_update() {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
