//! A server on loopback port 0 for the in-process tests, and a bound for every test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_testapp::client::{LoadConfig, Protocol, load};
use mesh_testapp::server::{AppIdentity, Faults, ServeConfig, TestServer};
use mesh_testapp::target::HttpTarget;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any one test may take.
pub const TEST_BOUND: Duration = Duration::from_secs(20);

/// Runs `test`, failing loudly if it takes longer than [`TEST_BOUND`].
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, test)
        .await
        .expect("test exceeded its time bound")
}

/// A running server; stop it with [`RunningServer::stop`].
pub struct RunningServer {
    pub http: SocketAddr,
    pub echo: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<bool>,
}

impl RunningServer {
    /// Starts a server named `pod`/`shop`, version `v1`, with the given faults.
    pub async fn start(fail_rate: f64, delay_ms: u64) -> Self {
        let config = ServeConfig {
            http: Some("127.0.0.1:0".parse().unwrap()),
            tcp_echo: Some("127.0.0.1:0".parse().unwrap()),
            faults: Faults {
                fail_rate,
                delay: Duration::from_millis(delay_ms),
            },
            identity: AppIdentity {
                pod: Arc::from("pod-a"),
                namespace: Arc::from("shop"),
                version: Arc::from("v1"),
            },
            drain_deadline: Duration::from_secs(5),
        };
        let server = TestServer::bind(config).await.expect("bind on loopback");
        let http = server.http_addr().unwrap();
        let echo = server.tcp_echo_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            http,
            echo,
            stop,
            task,
        }
    }

    /// Stops the server and returns whether it drained in time.
    pub async fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }

    /// The base URL of the HTTP server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// A load configuration against `path` on this server.
    pub async fn load(&self, path: &str, count: u64, protocol: Protocol) -> LoadConfig {
        LoadConfig {
            target: HttpTarget::resolve(&self.url(path)).await.unwrap(),
            count,
            concurrency: 4,
            protocol,
            grpc: false,
            method: http::Method::GET,
            headers: http::HeaderMap::new(),
            timeout: load::DEFAULT_TIMEOUT,
            connection_per_request: false,
        }
    }
}
