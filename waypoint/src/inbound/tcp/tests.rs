//! Opaque TCP through the inbound side on paused time: a tunnel served as the HBONE server
//! would, sniffed as opaque, and relayed to an endpoint that is an in-memory pipe
//! ([`PipeConnector`]). A quiet connection is closed on both sides after the idle timeout, a
//! busy one is not, zero turns the timeout off, and a drain closes it at the deadline.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use crate::inbound::InboundMetrics;
use crate::relay::RelaySettings;
use crate::testing::*;

const DB_VIP: [u8; 4] = [10, 96, 0, 1];
const PORT: u16 = 9000;
const IDLE: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(20);

/// The first bytes of a client-first binary protocol: sniffed as opaque at once.
const HELLO: &[u8] = b"\x00\x01hello";

/// Every `reason` of `waypoint_tcp_connections_ended_total`.
const REASONS: [&str; 4] = ["closed", "error", "idle_timeout", "drain"];

/// A TCP connection through the waypoint: the client's end of the tunnel and the endpoint's
/// end of the waypoint's upstream connection, with `HELLO` already carried once.
struct Proxied {
    client: DuplexStream,
    endpoint: DuplexStream,
    metrics: InboundMetrics,
    drain: watch::Sender<bool>,
}

async fn proxied(idle_timeout: Duration) -> Proxied {
    let mut world = World::new();
    world.service("db", DB_VIP, &[PORT], true);
    let endpoint_addr = SocketAddr::from((world.next_ip(), PORT));
    world.workload("db-0", "db", PORT, endpoint_addr, true);
    let (connector, mut dialed) = PipeConnector::new();
    let (drain, drain_rx) = watch::channel(false);
    let relays = RelaySettings {
        idle_timeout,
        drain_deadline: DRAIN,
    };
    let (inbound, metrics) = world.proxy().inbound_over(connector, relays, drain_rx);
    let mut client = open_tunnel(&inbound, DB_VIP, PORT).await;
    client.write_all(HELLO).await.unwrap();
    let (dialed_addr, mut endpoint) = dialed.recv().await.expect("the endpoint is dialed");
    assert_eq!(dialed_addr, endpoint_addr);
    let mut got = vec![0; HELLO.len()];
    endpoint.read_exact(&mut got).await.unwrap();
    assert_eq!(got, HELLO, "the sniffed bytes reach the endpoint");
    assert_eq!(metrics.tunnels("tcp"), 1);
    Proxied {
        client,
        endpoint,
        metrics,
        drain,
    }
}

/// Writes `bytes` at `from` and reads them at `to`.
async fn pass(from: &mut DuplexStream, to: &mut DuplexStream, bytes: &[u8]) {
    from.write_all(bytes).await.unwrap();
    let mut got = vec![0; bytes.len()];
    to.read_exact(&mut got).await.unwrap();
    assert_eq!(got, bytes);
}

/// Waits until the waypoint lets go of its side of `io`'s pipe, reading nothing more;
/// returns how long it took. One that is never closed fails the test rather than hanging it
/// (paused time runs ahead to the limit).
async fn until_closed(io: &mut DuplexStream) -> Duration {
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(24 * 3600), io.read_to_end(&mut rest))
        .await
        .expect("the waypoint closes its side");
    // End-of-file or a reset: either way the waypoint let go of it.
    if read.is_ok() {
        assert!(rest.is_empty(), "{rest:?}");
    }
    started.elapsed()
}

/// Waits for the connection's ending to be counted (just after the relay closed both
/// sides); returns every reason's count.
async fn ended(metrics: &InboundMetrics) -> [u64; 4] {
    for _ in 0..100 {
        if REASONS
            .iter()
            .any(|reason| metrics.tcp_connections_ended(reason) > 0)
        {
            break;
        }
        sleep(Duration::from_millis(1)).await;
    }
    REASONS.map(|reason| metrics.tcp_connections_ended(reason))
}

#[tokio::test(start_paused = true)]
async fn an_idle_tcp_connection_is_closed_on_both_sides_after_the_idle_timeout() {
    let mut proxied = proxied(IDLE).await;
    pass(&mut proxied.endpoint, &mut proxied.client, b"hi").await;
    let quiet_since = Instant::now();

    until_closed(&mut proxied.client).await;
    let quiet = quiet_since.elapsed();
    assert!(
        IDLE <= quiet && quiet < IDLE + Duration::from_secs(1),
        "{quiet:?}"
    );
    assert_eq!(
        until_closed(&mut proxied.endpoint).await,
        Duration::ZERO,
        "the endpoint's side was closed with the client's"
    );
    assert_eq!(ended(&proxied.metrics).await, [0, 0, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn bytes_either_way_keep_a_tcp_connection_open_past_the_idle_timeout() {
    let mut proxied = proxied(IDLE).await;
    // Ten idle timeouts, with bytes one way or the other every two thirds of one.
    for tick in 0..15 {
        sleep(IDLE * 2 / 3).await;
        if tick % 2 == 0 {
            pass(&mut proxied.endpoint, &mut proxied.client, b"tick").await;
        } else {
            pass(&mut proxied.client, &mut proxied.endpoint, b"tock").await;
        }
    }
    assert_eq!(
        REASONS.map(|r| proxied.metrics.tcp_connections_ended(r)),
        [0; 4]
    );

    // Then both sides close it: the half-closes travel on and it ends as closed.
    proxied.client.shutdown().await.unwrap();
    until_closed(&mut proxied.endpoint).await;
    proxied.endpoint.shutdown().await.unwrap();
    until_closed(&mut proxied.client).await;
    assert_eq!(ended(&proxied.metrics).await, [1, 0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_zero_idle_timeout_never_closes_a_quiet_tcp_connection() {
    let mut proxied = proxied(Duration::ZERO).await;
    sleep(Duration::from_secs(10 * 3600)).await;
    pass(&mut proxied.endpoint, &mut proxied.client, b"still here").await;
    pass(&mut proxied.client, &mut proxied.endpoint, b"me too").await;
    assert_eq!(
        REASONS.map(|r| proxied.metrics.tcp_connections_ended(r)),
        [0; 4]
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_a_tcp_connection_at_the_deadline_not_before() {
    let mut proxied = proxied(IDLE).await;
    sleep(Duration::from_secs(5)).await;
    proxied.drain.send_replace(true);
    let drain_started = Instant::now();

    // It carries bytes as before while the drain runs.
    sleep(DRAIN - Duration::from_secs(1)).await;
    pass(&mut proxied.client, &mut proxied.endpoint, b"more").await;
    pass(&mut proxied.endpoint, &mut proxied.client, b"ok").await;

    until_closed(&mut proxied.client).await;
    let drained = drain_started.elapsed();
    assert!(
        DRAIN <= drained && drained < DRAIN + Duration::from_secs(1),
        "closed at the deadline, not at the signal: {drained:?}"
    );
    assert_eq!(
        until_closed(&mut proxied.endpoint).await,
        Duration::ZERO,
        "the endpoint's side was closed with the client's"
    );
    assert_eq!(ended(&proxied.metrics).await, [0, 0, 0, 1]);
}

#[test]
fn tcp_endings_are_exported_by_reason() {
    let mut registry = Registry::default();
    let metrics = InboundMetrics::new(&mut registry);
    metrics.tcp_connection_ended("idle_timeout");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("waypoint_tcp_connections_ended_total{reason=\"idle_timeout\"} 1"),
        "{text}"
    );
}
