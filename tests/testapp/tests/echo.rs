//! The TCP echo and its client over real loopback sockets.

mod support;

use std::time::Duration;

use mesh_testapp::client::{EchoConfig, echo};
use support::{RunningServer, bounded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(target: String, hold_ms: u64) -> EchoConfig {
    EchoConfig {
        target,
        message: b"marker-42".to_vec(),
        hold: Duration::from_millis(hold_ms),
        round_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn echo_sends_nothing_first_and_returns_every_byte() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let mut stream = tokio::net::TcpStream::connect(server.echo).await.unwrap();
        let mut first = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut first)).await;
        assert!(early.is_err(), "the echo spoke first");
        stream.write_all(b"hello").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello", "echoed, then half-closed back");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn echo_client_round_trip_and_hold() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let report = echo::run(&config(server.echo.to_string(), 0)).await;
        assert!(report.ok, "{report:?}");
        assert_eq!(report.rounds, 1);
        assert_eq!(report.peer, Some(server.echo.to_string()));

        let report = echo::run(&config(format!("localhost:{}", server.echo.port()), 450)).await;
        assert!(report.ok, "{report:?}");
        assert!((4..=7).contains(&report.rounds), "{report:?}");
        assert!(report.elapsed_ms >= 400, "{report:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn echo_client_reports_failures() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let echo_addr = server.echo;
        server.stop().await;
        let report = echo::run(&config(echo_addr.to_string(), 0)).await;
        assert!(!report.ok);
        assert_eq!(report.rounds, 0);
        assert!(report.error.unwrap().contains("connecting to"));

        let report = echo::run(&config("8.8.8.8:9000".into(), 0)).await;
        assert!(
            report
                .error
                .unwrap()
                .contains("neither loopback nor a private lab address")
        );
        let report = echo::run(&config("no-port".into(), 0)).await;
        assert!(report.error.unwrap().contains("is not HOST:PORT"));
    })
    .await;
}

#[tokio::test]
async fn a_held_stream_is_closed_by_server_shutdown() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let held = tokio::spawn({
            let target = server.echo.to_string();
            async move { echo::run(&config(target, 10_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            server.stop().await,
            "echo streams close at once on shutdown"
        );
        let report = held.await.unwrap();
        assert!(!report.ok && report.rounds >= 1, "{report:?}");
    })
    .await;
}
