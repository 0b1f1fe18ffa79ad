//! The HTTP server over real loopback sockets, driven by the crate's own client.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use mesh_testapp::client::{HttpConnection, Protocol, UpgradeConfig, load, upgrade};
use mesh_testapp::server::Reply;
use mesh_testapp::target::HttpTarget;
use support::{RunningServer, bounded};

async fn one_reply(
    server: &RunningServer,
    protocol: Protocol,
) -> (http::StatusCode, http::HeaderMap, Reply) {
    let mut connection = HttpConnection::open(server.http, protocol).await.unwrap();
    let request = match protocol {
        Protocol::Http1 => Request::get("/orders?id=1").header("host", "cart.shop:8080"),
        Protocol::Http2 => Request::get("http://cart.shop:8080/orders?id=1"),
    };
    let request = request
        .header("x-user", "tester")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = connection.send(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&body).unwrap(),
    )
}

#[tokio::test]
async fn http1_and_h2c_get_the_reply_with_headers_and_peer() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        for (protocol, name) in [(Protocol::Http1, "HTTP/1.1"), (Protocol::Http2, "HTTP/2.0")] {
            let (status, headers, reply) = one_reply(&server, protocol).await;
            assert_eq!(status, 200, "{name}");
            assert_eq!(headers["x-testapp-pod"], "pod-a");
            assert_eq!(reply.protocol, name);
            assert_eq!(
                (
                    reply.pod.as_str(),
                    reply.namespace.as_str(),
                    reply.version.as_str()
                ),
                ("pod-a", "shop", "v1")
            );
            assert_eq!(
                (reply.method.as_str(), reply.path.as_str()),
                ("GET", "/orders")
            );
            assert_eq!(reply.headers["x-user"], "tester", "{name}");
            assert_eq!(reply.host, "cart.shop:8080", "{name}");
            let peer: std::net::SocketAddr = reply.peer.parse().unwrap();
            assert!(
                peer.ip().is_loopback() && peer.port() != 0,
                "{name}: {peer}"
            );
        }
        assert!(server.stop().await);
    })
    .await;
}

#[tokio::test]
async fn fail_rate_one_fails_everything_and_zero_nothing() {
    bounded(async {
        let failing = RunningServer::start(1.0, 0).await;
        let healthy = RunningServer::start(0.0, 0).await;
        for protocol in [Protocol::Http1, Protocol::Http2] {
            let summary = load::run(failing.load("/", 40, protocol).await, |_| {}).await;
            assert_eq!((summary.requests, summary.ok, summary.errors), (40, 0, 0));
            assert_eq!(summary.status.get("503"), Some(&40));
            assert_eq!(
                summary.by_pod.get("pod-a"),
                Some(&40),
                "503s still name the pod"
            );

            let summary = load::run(healthy.load("/", 40, protocol).await, |_| {}).await;
            assert_eq!((summary.ok, summary.errors), (40, 0));
            assert_eq!(summary.status.get("200"), Some(&40));
            assert_eq!(summary.by_version.get("v1"), Some(&40));
        }
        let summary = load::run(failing.load("/healthz", 5, Protocol::Http1).await, |_| {}).await;
        assert_eq!(summary.ok, 5, "/healthz ignores the fail rate");
        failing.stop().await;
        healthy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_partial_fail_rate_mixes_statuses_and_the_summary_counts_them() {
    bounded(async {
        let server = RunningServer::start(0.5, 0).await;
        let mut lines = 0;
        let summary = load::run(server.load("/", 200, Protocol::Http1).await, |_| lines += 1).await;
        assert_eq!(lines, 200);
        let (ok, failed) = (summary.status["200"], summary.status["503"]);
        assert_eq!(ok + failed, 200);
        assert!(
            (40..=160).contains(&failed),
            "503s: {failed} of 200 at fail rate 0.5"
        );
        assert_eq!(summary.ok, ok);
        assert!(summary.p50_ms.unwrap() <= summary.p99_ms.unwrap());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn query_overrides_status_and_delay() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let summary = load::run(
            server.load("/?status=418", 3, Protocol::Http2).await,
            |_| {},
        )
        .await;
        assert_eq!(summary.status.get("418"), Some(&3));
        assert_eq!(summary.ok, 0);

        let start = Instant::now();
        let summary = load::run(
            server.load("/?delay_ms=150", 1, Protocol::Http1).await,
            |_| {},
        )
        .await;
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(summary.p50_ms.unwrap() >= 150.0);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn configured_delay_is_honoured() {
    bounded(async {
        let server = RunningServer::start(0.0, 200).await;
        let mut config = server.load("/", 4, Protocol::Http1).await;
        config.concurrency = 4;
        let start = Instant::now();
        let summary = load::run(config, |outcome| {
            assert!(outcome.latency_ms >= 200.0, "{outcome:?}")
        })
        .await;
        let elapsed = start.elapsed();
        assert_eq!(summary.ok, 4);
        // Generous: four concurrent 200 ms delays, on a loaded machine.
        assert!(
            elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn grpc_calls_are_answered_per_call() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let mut config = server.load("/", 10, Protocol::Http2).await;
        config.grpc = true;
        let mut outcomes = Vec::new();
        let summary = load::run(config, |outcome| outcomes.push(outcome.clone())).await;
        assert_eq!((summary.ok, summary.errors), (10, 0));
        assert_eq!(summary.grpc_status.get("0"), Some(&10));
        assert!(
            outcomes
                .iter()
                .all(|o| o.grpc_status == Some(0) && o.pod.as_deref() == Some("pod-a"))
        );
        server.stop().await;

        let failing = RunningServer::start(1.0, 0).await;
        let mut config = failing.load("/", 5, Protocol::Http2).await;
        config.grpc = true;
        let summary = load::run(config, |_| {}).await;
        assert_eq!((summary.ok, summary.errors), (0, 0));
        assert_eq!(summary.status.get("200"), Some(&5));
        assert_eq!(summary.grpc_status.get("14"), Some(&5));
        assert_eq!(
            summary.by_pod.get("pod-a"),
            Some(&5),
            "from the x-testapp-pod header"
        );
        failing.stop().await;
    })
    .await;
}

#[tokio::test]
async fn client_errors_and_timeouts_are_counted_not_fatal() {
    bounded(async {
        let slow = RunningServer::start(0.0, 3_000).await;
        let mut config = slow.load("/", 2, Protocol::Http1).await;
        config.timeout = Duration::from_millis(100);
        let summary = load::run(config, |_| {}).await;
        assert_eq!((summary.requests, summary.errors), (2, 2));
        assert!(
            summary
                .first_error
                .unwrap()
                .contains("no answer within 100 ms")
        );
        assert_eq!((summary.p50_ms, summary.p99_ms), (None, None));

        let gone = RunningServer::start(0.0, 0).await;
        let config = gone.load("/", 3, Protocol::Http2).await;
        gone.stop().await;
        let summary = load::run(config, |_| {}).await;
        assert_eq!((summary.requests, summary.errors), (3, 3));
        assert!(summary.first_error.unwrap().contains("connecting to"));
        slow.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connection_per_request_opens_fresh_connections() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let mut config = server.load("/", 3, Protocol::Http1).await;
        config.concurrency = 1;
        config.connection_per_request = true;
        assert_eq!(load::run(config, |_| {}).await.ok, 3);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    bounded(async {
        let server = RunningServer::start(0.0, 300).await;
        let config = server.load("/", 1, Protocol::Http1).await;
        let client = tokio::spawn(load::run(config, |_| {}));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let http = server.http;
        assert!(server.stop().await, "drained before the deadline");
        assert_eq!(client.await.unwrap().ok, 1);
        assert!(
            tokio::net::TcpStream::connect(http).await.is_err(),
            "listener closed"
        );
    })
    .await;
}

#[tokio::test]
async fn a_grpc_call_ends_with_the_status_its_query_asks_for() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let path = "/testapp.TestApp/Echo?grpc_status=5";
        let mut config = server.load(path, 2, Protocol::Http2).await;
        config.grpc = true;
        let summary = load::run(config, |_| {}).await;
        assert_eq!((summary.ok, summary.errors), (0, 0), "{summary:?}");
        assert_eq!(summary.status.get("200"), Some(&2), "{summary:?}");
        assert_eq!(summary.grpc_status.get("5"), Some(&2), "{summary:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_switches_echoes_and_closes_and_the_server_drains() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let config = UpgradeConfig {
            target: HttpTarget::resolve(&server.url("/chat")).await.unwrap(),
            protocol: HeaderValue::from_static("websocket"),
            message: b"hello over the upgrade".to_vec(),
            timeout: Duration::from_secs(5),
        };
        let report = upgrade::run(&config).await;
        assert!(report.ok, "{report:?}");
        assert_eq!(report.status, Some(101));
        assert_eq!(report.pod.as_deref(), Some("pod-a"));
        assert_eq!(report.echoed_bytes, config.message.len());
        assert!(report.closed);

        // An upgraded echo left open does not hold shutdown past the drain deadline.
        let stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection.with_upgrades());
        let request = Request::get("/chat")
            .header("host", "ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 101);
        let _held = hyper::upgrade::on(response).await.unwrap();
        assert!(
            server.stop().await,
            "the held upgrade kept the server from draining"
        );

        let refused = UpgradeConfig {
            target: HttpTarget::resolve(&format!("http://{}/", server_free_addr().await))
                .await
                .unwrap(),
            ..config
        };
        assert!(!upgrade::run(&refused).await.ok);
    })
    .await;
}

/// An address on loopback where nothing listens.
async fn server_free_addr() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_plain_request_is_not_switched() {
    bounded(async {
        let server = RunningServer::start(0.0, 0).await;
        let config = UpgradeConfig {
            target: HttpTarget::resolve(&server.url("/")).await.unwrap(),
            protocol: HeaderValue::from_static("h2c"),
            message: b"x".to_vec(),
            timeout: Duration::from_secs(5),
        };
        let report = upgrade::run(&config).await;
        assert_eq!(report.status, Some(200), "{report:?}");
        assert!(!report.ok);
        assert!(report.error.unwrap().contains("not 101"));
        server.stop().await;
    })
    .await;
}
