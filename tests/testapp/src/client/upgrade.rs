//! `testapp upgrade`: an HTTP/1.1 Upgrade (WebSocket-style) request, then a round of raw bytes
//! on the upgraded connection and a clean close, reported as one JSON line. Paired with the
//! server's upgrade echo, it proves a proxy's Upgrade path: the `101` comes back, bytes flow
//! both ways, and a half-close travels to the server and back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::echo::MAX_MESSAGE;
use crate::server::reply::POD_HEADER;
use crate::target::HttpTarget;

/// The protocol asked for when none is given.
pub const DEFAULT_PROTOCOL: &str = "websocket";

/// What an upgrade run does.
#[derive(Debug, Clone)]
pub struct UpgradeConfig {
    /// Where the upgrade request goes.
    pub target: HttpTarget,
    /// The `Upgrade` header.
    pub protocol: HeaderValue,
    /// The bytes sent on the upgraded connection, expected back.
    pub message: Vec<u8>,
    /// The deadline of the whole run, connecting included.
    pub timeout: Duration,
}

/// The JSON line `testapp upgrade` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// Switched, echoed intact, and closed cleanly.
    pub ok: bool,
    /// The status of the answer to the upgrade request.
    pub status: Option<u16>,
    /// The pod that answered, from the `x-testapp-pod` header.
    pub pod: Option<String>,
    /// Bytes that came back on the upgraded connection.
    pub echoed_bytes: usize,
    /// After the client half-closed, the server's close came back with nothing else.
    pub closed: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// From connecting to the close.
    pub elapsed_ms: u64,
}

/// Why an upgrade run failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The options are out of bounds.
    #[error("invalid upgrade options: {0}")]
    Invalid(String),
    /// TCP connect failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The target address.
        addr: std::net::SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The handshake, the request or the switch failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("building the request: {0}")]
    Build(#[from] http::Error),
    /// The answer was not `101 Switching Protocols`.
    #[error("the upgrade was answered {status}, not 101 Switching Protocols")]
    NotSwitched {
        /// The status received.
        status: StatusCode,
    },
    /// Writing or reading the upgraded connection failed.
    #[error("upgraded connection: {0}")]
    Io(#[from] std::io::Error),
    /// Different bytes came back.
    #[error("sent {sent:?} but got {got:?} back")]
    Mismatch {
        /// What was sent (lossy UTF-8).
        sent: String,
        /// What came back (lossy UTF-8).
        got: String,
    },
    /// Bytes arrived after the echo instead of the close.
    #[error("{extra} unexpected bytes arrived after the echo instead of the close")]
    NotClosed {
        /// How many.
        extra: usize,
    },
    /// The run did not finish in time.
    #[error("no switch, echo and close within {} ms", timeout.as_millis())]
    Timeout {
        /// The deadline that passed.
        timeout: Duration,
    },
}

impl UpgradeConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), UpgradeError> {
        if self.message.is_empty() || self.message.len() > MAX_MESSAGE {
            return Err(UpgradeError::Invalid(format!(
                "--message must have 1 to {MAX_MESSAGE} bytes"
            )));
        }
        if self.timeout.is_zero() {
            let message = "--timeout-ms must be positive".to_owned();
            return Err(UpgradeError::Invalid(message));
        }
        Ok(())
    }
}

/// Runs the upgrade and reports what happened; never panics on network trouble.
pub async fn run(config: &UpgradeConfig) -> UpgradeReport {
    let start = Instant::now();
    let mut report = UpgradeReport::default();
    let result = match config.validate() {
        Ok(()) => tokio::time::timeout(config.timeout, exchange(config, &mut report))
            .await
            .unwrap_or(Err(UpgradeError::Timeout {
                timeout: config.timeout,
            })),
        Err(error) => Err(error),
    };
    report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(()) => report.ok = true,
        Err(error) => report.error = Some(error.to_string()),
    }
    report
}

async fn exchange(config: &UpgradeConfig, report: &mut UpgradeReport) -> Result<(), UpgradeError> {
    let addr = config.target.addr;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| UpgradeError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upgrade client connection ended with an error");
        }
    });
    let request = Request::get(&config.target.path_and_query)
        .header(HOST, &config.target.authority)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, config.protocol.clone())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    report.status = Some(response.status().as_u16());
    report.pod = response
        .headers()
        .get(POD_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(UpgradeError::NotSwitched {
            status: response.status(),
        });
    }
    let mut upgraded = TokioIo::new(hyper::upgrade::on(response).await?);
    upgraded.write_all(&config.message).await?;
    let mut echoed = vec![0; config.message.len()];
    upgraded.read_exact(&mut echoed).await?;
    report.echoed_bytes = echoed.len();
    if echoed != config.message {
        return Err(UpgradeError::Mismatch {
            sent: String::from_utf8_lossy(&config.message).into_owned(),
            got: String::from_utf8_lossy(&echoed).into_owned(),
        });
    }
    // The close: half-close, and the server's echo half-closes back once it has seen it.
    upgraded.shutdown().await?;
    let mut rest = Vec::new();
    upgraded.read_to_end(&mut rest).await?;
    if !rest.is_empty() {
        return Err(UpgradeError::NotClosed { extra: rest.len() });
    }
    report.closed = true;
    Ok(())
}
