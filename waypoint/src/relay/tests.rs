//! The byte relay on in-memory pipes, with paused time: the idle timeout closes a quiet relay
//! and spares a busy one, and a drain closes it at the deadline. Its two users are tested
//! through their whole paths: upgrades in `src/upgrade_tests.rs`, proxied TCP in
//! `src/inbound/tcp/tests.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

use super::*;

const IDLE: Duration = Duration::from_secs(60);
const DRAIN: Duration = Duration::from_secs(20);

/// A relay between a client and an endpoint, each holding its end of a pipe.
struct Joined {
    client: DuplexStream,
    endpoint: DuplexStream,
    relay: JoinHandle<Relayed>,
    drain: watch::Sender<bool>,
}

fn joined(idle_timeout: Duration) -> Joined {
    let (drain_tx, drain) = watch::channel(false);
    let settings = RelaySettings {
        idle_timeout,
        drain_deadline: DRAIN,
    };
    let (client, downstream) = duplex(1024);
    let (upstream, endpoint) = duplex(1024);
    let relay = tokio::spawn(relay(downstream, upstream, settings, drain));
    Joined {
        client,
        endpoint,
        relay,
        drain: drain_tx,
    }
}

/// Writes `bytes` at `from` and reads them at `to`.
async fn pass(from: &mut DuplexStream, to: &mut DuplexStream, bytes: &[u8]) {
    from.write_all(bytes).await.unwrap();
    let mut got = vec![0; bytes.len()];
    to.read_exact(&mut got).await.unwrap();
    assert_eq!(got, bytes);
}

/// What the relay did, once it ends; a relay that never ends fails the test rather than
/// hanging it (paused time runs ahead to the timeout).
async fn ended(relay: JoinHandle<Relayed>) -> Relayed {
    tokio::time::timeout(Duration::from_secs(24 * 3600), relay)
        .await
        .expect("the relay ends")
        .unwrap()
}

/// Whether the relay closed its side of `io`'s pipe.
async fn closed(io: &mut DuplexStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(io.read(&mut buf).await, Ok(0) | Err(_))
}

/// The relay closed both the client's and the endpoint's side.
async fn assert_both_sides_closed(client: &mut DuplexStream, endpoint: &mut DuplexStream) {
    assert!(closed(client).await, "the client's side is closed");
    assert!(closed(endpoint).await, "the endpoint's side is closed");
}

#[tokio::test(start_paused = true)]
async fn an_idle_relay_is_closed_on_both_sides_after_the_idle_timeout() {
    let mut joined = joined(IDLE);
    pass(&mut joined.client, &mut joined.endpoint, b"hello").await;
    pass(&mut joined.endpoint, &mut joined.client, b"hi").await;
    let quiet_since = Instant::now();

    let relayed = ended(joined.relay).await;
    let quiet = quiet_since.elapsed();
    assert!(
        matches!(relayed.ending, Ending::IdleTimeout(IDLE)),
        "{:?}",
        relayed.ending
    );
    assert!(
        IDLE <= quiet && quiet < IDLE + Duration::from_secs(1),
        "{quiet:?}"
    );
    assert_eq!((relayed.sent, relayed.received), (5, 2));
    assert_both_sides_closed(&mut joined.client, &mut joined.endpoint).await;
}

#[tokio::test(start_paused = true)]
async fn bytes_either_way_keep_a_relay_open_past_the_idle_timeout() {
    let mut joined = joined(IDLE);
    // The endpoint pushes and the client never answers, for ten idle timeouts.
    for _ in 0..15 {
        sleep(IDLE * 2 / 3).await;
        pass(&mut joined.endpoint, &mut joined.client, b"tick").await;
    }
    assert!(!joined.relay.is_finished(), "still open");

    // Then both sides close it: the half-closes travel on and the relay ends as closed.
    joined.client.shutdown().await.unwrap();
    assert!(closed(&mut joined.endpoint).await);
    joined.endpoint.shutdown().await.unwrap();
    assert!(closed(&mut joined.client).await);
    let relayed = ended(joined.relay).await;
    assert!(
        matches!(relayed.ending, Ending::Closed),
        "{:?}",
        relayed.ending
    );
    assert_eq!((relayed.sent, relayed.received), (0, 15 * 4));
}

#[tokio::test(start_paused = true)]
async fn a_zero_idle_timeout_never_closes_a_quiet_relay() {
    let mut joined = joined(Duration::ZERO);
    pass(&mut joined.client, &mut joined.endpoint, b"hello").await;
    sleep(Duration::from_secs(10 * 3600)).await;
    assert!(
        !joined.relay.is_finished(),
        "still open after 10 h of silence"
    );
    pass(&mut joined.endpoint, &mut joined.client, b"still here").await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_a_relay_at_the_deadline_not_before() {
    let mut joined = joined(IDLE);
    pass(&mut joined.client, &mut joined.endpoint, b"hello").await;
    sleep(Duration::from_secs(5)).await;
    joined.drain.send_replace(true);
    let drain_started = Instant::now();

    // It carries bytes as before while the drain runs.
    sleep(DRAIN - Duration::from_secs(1)).await;
    pass(&mut joined.client, &mut joined.endpoint, b"more").await;
    pass(&mut joined.endpoint, &mut joined.client, b"ok").await;
    assert!(!joined.relay.is_finished(), "open until the deadline");

    let relayed = ended(joined.relay).await;
    let drained = drain_started.elapsed();
    assert!(
        matches!(relayed.ending, Ending::Drained),
        "{:?}",
        relayed.ending
    );
    assert!(
        DRAIN <= drained && drained < DRAIN + Duration::from_secs(1),
        "{drained:?}"
    );
    assert_eq!((relayed.sent, relayed.received), (9, 2));
    assert_both_sides_closed(&mut joined.client, &mut joined.endpoint).await;
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_the_drain_deadline_counts_as_the_drain_and_one_before_it_does_not() {
    for (before_deadline, drained) in [(DRAIN_RACE / 2, true), (DRAIN / 2, false)] {
        let mut joined = joined(IDLE);
        joined.drain.send_replace(true);
        sleep(DRAIN - before_deadline).await;
        // The endpoint's tunnel goes (as when the HBONE server closes the tunnels still
        // open at its deadline); the next write towards it fails.
        drop(joined.endpoint);
        let _ = joined.client.write_all(b"lost").await;
        let relayed = ended(joined.relay).await;
        assert_eq!(
            matches!(relayed.ending, Ending::Drained),
            drained,
            "{before_deadline:?} before the deadline: {:?}",
            relayed.ending
        );
        if !drained {
            assert!(matches!(relayed.ending, Ending::Failed(_)));
        }
    }
}

#[test]
fn the_endings_the_waypoint_causes_say_why() {
    let idle = Ending::IdleTimeout(IDLE);
    assert!(idle.by_waypoint());
    assert_eq!(
        idle.to_string(),
        "no bytes either way for 60s: closed by the idle timeout"
    );
    assert!(Ending::Drained.by_waypoint());
    assert_eq!(
        Ending::Drained.to_string(),
        "still open at the drain deadline: closed by the drain"
    );
    assert!(!Ending::Closed.by_waypoint());
    assert!(!Ending::Failed(std::io::ErrorKind::BrokenPipe.into()).by_waypoint());
}
