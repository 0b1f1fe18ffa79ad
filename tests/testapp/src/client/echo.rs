//! `testapp echo`: writes a marker to a TCP echo and checks it comes back, optionally again
//! every [`ROUND_INTERVAL`] while holding the stream open (for long-lived stream tests).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::{self, TargetError};

/// How often a held stream sends the message again.
pub const ROUND_INTERVAL: Duration = Duration::from_millis(100);
/// The per-round deadline (connecting, writing and reading back) when none is given.
pub const DEFAULT_ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a stream may be held.
pub const MAX_HOLD: Duration = Duration::from_secs(3600);
/// The longest message.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What an echo run does.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// `HOST:PORT` of the echo.
    pub target: String,
    /// The marker sent every round.
    pub message: Vec<u8>,
    /// How long to keep the stream open after the first round; zero for one round.
    pub hold: Duration,
    /// The deadline of each round.
    pub round_timeout: Duration,
}

/// The JSON line `testapp echo` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReport {
    /// Every round came back intact.
    pub ok: bool,
    /// Rounds that came back intact.
    pub rounds: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The address connected to.
    pub peer: Option<String>,
    /// From connecting to the end of the last round.
    pub elapsed_ms: u64,
}

/// Why an echo run failed.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// The options are out of bounds.
    #[error("invalid echo options: {0}")]
    Invalid(String),
    /// The target was refused or did not resolve.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// TCP connect failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The target address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading failed (a reset, say).
    #[error("round {round}: {source}")]
    Io {
        /// The round, from 1.
        round: u64,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the stream before echoing the whole message.
    #[error("round {round}: the stream closed before the message came back")]
    Closed {
        /// The round, from 1.
        round: u64,
    },
    /// Different bytes came back.
    #[error("round {round}: sent {sent:?} but got {got:?} back")]
    Mismatch {
        /// The round, from 1.
        round: u64,
        /// What was sent (lossy UTF-8).
        sent: String,
        /// What came back (lossy UTF-8).
        got: String,
    },
    /// The round did not finish in time.
    #[error("round {round}: no echo within {} ms", timeout.as_millis())]
    Timeout {
        /// The round, from 1 (0 is connecting).
        round: u64,
        /// The deadline that passed.
        timeout: Duration,
    },
}

impl EchoConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), EchoError> {
        if self.message.is_empty() || self.message.len() > MAX_MESSAGE {
            return Err(EchoError::Invalid(format!(
                "--message must have 1 to {MAX_MESSAGE} bytes"
            )));
        }
        if self.hold > MAX_HOLD {
            return Err(EchoError::Invalid(format!(
                "--hold-ms is longer than {} ms",
                MAX_HOLD.as_millis()
            )));
        }
        if self.round_timeout.is_zero() {
            return Err(EchoError::Invalid(
                "--timeout-ms must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Runs the echo and reports what happened; never panics on network trouble.
pub async fn run(config: &EchoConfig) -> EchoReport {
    let start = Instant::now();
    let mut report = EchoReport::default();
    let result = exchange(config, &mut report).await;
    report.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(()) => report.ok = true,
        Err(error) => report.error = Some(error.to_string()),
    }
    report
}

async fn exchange(config: &EchoConfig, report: &mut EchoReport) -> Result<(), EchoError> {
    config.validate()?;
    let (host, port) = target::split_host_port(&config.target)?;
    let addr = target::resolve_lab(host, port).await?;
    report.peer = Some(addr.to_string());
    let timeout = config.round_timeout;
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| EchoError::Timeout { round: 0, timeout })?
        .map_err(|source| EchoError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let hold_until = tokio::time::Instant::now() + config.hold;
    let mut ticks = tokio::time::interval(ROUND_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buffer = vec![0; config.message.len()];
    loop {
        ticks.tick().await;
        let round = report.rounds + 1;
        tokio::time::timeout(
            timeout,
            round_trip(&mut stream, &config.message, &mut buffer, round),
        )
        .await
        .map_err(|_| EchoError::Timeout { round, timeout })??;
        report.rounds = round;
        if tokio::time::Instant::now() >= hold_until {
            break;
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

async fn round_trip(
    stream: &mut TcpStream,
    message: &[u8],
    buffer: &mut [u8],
    round: u64,
) -> Result<(), EchoError> {
    let io = |source| EchoError::Io { round, source };
    stream.write_all(message).await.map_err(io)?;
    match stream.read_exact(buffer).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(EchoError::Closed { round });
        }
        Err(error) => return Err(io(error)),
    }
    if buffer != message {
        return Err(EchoError::Mismatch {
            round,
            sent: String::from_utf8_lossy(message).into_owned(),
            got: String::from_utf8_lossy(buffer).into_owned(),
        });
    }
    Ok(())
}
