//! `testapp serve`: the HTTP responder (with an echo behind HTTP/1.1 Upgrade) and the TCP
//! echo, with graceful shutdown.

mod echo_server;
mod http_server;
pub mod overrides;
pub mod reply;
mod upgrade_echo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::sampling::Sampler;
use crate::shutdown::Drain;
pub use overrides::MAX_DELAY;
pub use reply::{Faults, Reply, Responder};

/// The HTTP port when `--http` is not given.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// How long shutdown waits for open connections before closing them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// The pod, namespace or version reported when nothing names them.
pub const UNKNOWN: &str = "unknown";

/// Who this instance is, as reported in every reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppIdentity {
    /// The pod name (`$POD_NAME`).
    pub pod: Arc<str>,
    /// The pod's namespace (`$POD_NAMESPACE`).
    pub namespace: Arc<str>,
    /// The version label (`--version` or `$APP_VERSION`).
    pub version: Arc<str>,
}

/// Everything `serve` needs, validated by [`ServeConfig::validate`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the HTTP server listens, if anywhere.
    pub http: Option<SocketAddr>,
    /// Where the TCP echo listens, if anywhere.
    pub tcp_echo: Option<SocketAddr>,
    /// Failure share and delay for every HTTP request.
    pub faults: Faults,
    /// Who this instance is.
    pub identity: AppIdentity,
    /// How long shutdown waits for open connections.
    pub drain_deadline: Duration,
}

/// A configuration `serve` cannot run with; all problems are reported together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid serve configuration: {}", problems.join("; "))]
pub struct ConfigError {
    /// One sentence per problem.
    pub problems: Vec<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind.
    #[error("cannot listen for {what} on {addr}: {source} (is the port taken?)")]
    Bind {
        /// `HTTP` or `TCP echo`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

impl ServeConfig {
    /// Checks the configuration and reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let rate = self.faults.fail_rate;
        if !(0.0..=1.0).contains(&rate) {
            problems.push(format!("--fail-rate {rate} is not a share between 0 and 1"));
        }
        if self.faults.delay > MAX_DELAY {
            let (delay, max) = (self.faults.delay.as_millis(), MAX_DELAY.as_millis());
            problems.push(format!(
                "--delay-ms {delay} is longer than the limit of {max} ms"
            ));
        }
        if self.http.is_none() && self.tcp_echo.is_none() {
            problems.push("nothing to serve: give --http or --tcp-echo".to_owned());
        }
        // Port 0 asks for any free port, so two of them never clash.
        if self.http.is_some_and(|addr| addr.port() != 0) && self.http == self.tcp_echo {
            problems.push("--http and --tcp-echo must use different ports".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// A bound server, ready to [`run`](TestServer::run). Binding first lets tests use port 0 and
/// read the real addresses.
#[derive(Debug)]
pub struct TestServer {
    http: Option<TcpListener>,
    tcp_echo: Option<TcpListener>,
    responder: Arc<Responder>,
    drain_deadline: Duration,
}

impl TestServer {
    /// Validates `config` and binds its listeners.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        config.validate()?;
        let http = bind_optional("HTTP", config.http).await?;
        let tcp_echo = bind_optional("TCP echo", config.tcp_echo).await?;
        let responder = Responder::new(config.identity, config.faults, Sampler::from_entropy());
        Ok(Self {
            http,
            tcp_echo,
            responder: Arc::new(responder),
            drain_deadline: config.drain_deadline,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The bound TCP echo address.
    pub fn tcp_echo_addr(&self) -> Option<SocketAddr> {
        self.tcp_echo
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then drains: listeners close at once, open HTTP
    /// connections finish their requests, echo streams are closed. Returns false when
    /// connections were still open at the drain deadline.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let drain = Drain::new();
        if let Some(listener) = self.http {
            tokio::spawn(http_server::accept_loop(
                listener,
                self.responder,
                drain.watch(),
            ));
        }
        if let Some(listener) = self.tcp_echo {
            tokio::spawn(echo_server::accept_loop(listener, drain.watch()));
        }
        shutdown.await;
        tracing::info!("shutting down: draining connections");
        drain.drain(self.drain_deadline).await
    }
}

async fn bind_optional(
    what: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, ServeError> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })?;
    tracing::info!(listen.addr = %listener.local_addr().unwrap_or(addr), "{what} listening");
    Ok(Some(listener))
}

/// How long an accept loop pauses after an accept error (such as too many open files) so it
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServeConfig {
        ServeConfig {
            http: Some("127.0.0.1:0".parse().unwrap()),
            tcp_echo: None,
            faults: Faults::default(),
            identity: AppIdentity {
                pod: Arc::from(UNKNOWN),
                namespace: Arc::from(UNKNOWN),
                version: Arc::from(UNKNOWN),
            },
            drain_deadline: DRAIN_DEADLINE,
        }
    }

    #[test]
    fn a_plain_config_is_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut bad = config();
        bad.http = None;
        bad.faults = Faults {
            fail_rate: 1.5,
            delay: MAX_DELAY + Duration::from_millis(1),
        };
        let problems = bad.validate().unwrap_err().problems;
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("--fail-rate 1.5"));
        assert!(problems[1].contains("--delay-ms 60001"));
        assert!(problems[2].contains("nothing to serve"));

        let mut nan = config();
        nan.faults.fail_rate = f64::NAN;
        assert!(nan.validate().is_err());
    }
}
