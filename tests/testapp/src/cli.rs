//! The command line: `testapp serve | get | echo | upgrade`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::client::{EchoConfig, LoadConfig, Protocol, UpgradeConfig};
use crate::client::{echo, load, upgrade};
use crate::server::{AppIdentity, DEFAULT_HTTP_PORT, DRAIN_DEADLINE, Faults, ServeConfig, UNKNOWN};
use crate::target::HttpTarget;

/// The mesh's test application: a server to run in lab pods and bounded clients for tests.
#[derive(Debug, Parser)]
#[command(name = "testapp")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer HTTP/1.1, h2c and gRPC requests with who answered, and echo TCP.
    Serve(ServeArgs),
    /// Send a bounded number of HTTP requests and print a JSON summary.
    Get(GetArgs),
    /// Send a marker to a TCP echo and check it comes back.
    Echo(EchoArgs),
    /// Upgrade an HTTP/1.1 connection (as WebSocket does), send a marker on it, check it comes
    /// back and that the close does, and print a JSON report.
    Upgrade(UpgradeArgs),
}

/// Options of `testapp serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The HTTP port (HTTP/1.1, HTTP/2 prior knowledge and gRPC on one port).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_HTTP_PORT)]
    pub http: u16,
    /// The TCP echo port; no echo without it.
    #[arg(long, value_name = "PORT")]
    pub tcp_echo: Option<u16>,
    /// The share of requests (0 to 1) answered with 503, chosen at random.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Delay every response by this many milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub delay_ms: u64,
    /// The version label reported in replies.
    #[arg(long, value_name = "V", env = "APP_VERSION", default_value = UNKNOWN)]
    pub version: String,
    /// The pod name reported in replies.
    #[arg(long, env = "POD_NAME", default_value = UNKNOWN)]
    pub pod: String,
    /// The namespace reported in replies.
    #[arg(long, env = "POD_NAMESPACE", default_value = UNKNOWN)]
    pub namespace: String,
    /// The address to listen on.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
}

/// Options of `testapp get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The URL, http://HOST[:PORT][/PATH]; HOST must be loopback or a lab address.
    pub url: String,
    /// How many requests to send.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u64,
    /// How many connections send at once.
    #[arg(long, value_name = "C", default_value_t = 1)]
    pub concurrency: usize,
    /// Speak HTTP/2 by prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    pub h2: bool,
    /// Send gRPC calls (implies --h2); a URL without a path calls /testapp.TestApp/Echo.
    #[arg(long)]
    pub grpc: bool,
    /// An extra request header, NAME:VALUE; repeat for more.
    #[arg(long = "header", value_name = "K:V", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request method.
    #[arg(long, default_value = "GET")]
    pub method: Method,
    /// The deadline of each request, connecting included.
    #[arg(long, value_name = "T", default_value_t = millis(load::DEFAULT_TIMEOUT))]
    pub timeout_ms: u64,
    /// Print a JSON line per request even for large counts.
    #[arg(long)]
    pub each: bool,
    /// Open a new connection for every request (per-connection balancing tests).
    #[arg(long)]
    pub connection_per_request: bool,
}

/// Options of `testapp echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// HOST:PORT of the echo; HOST must be loopback or a lab address.
    pub target: String,
    /// The marker to send.
    #[arg(long, value_name = "M")]
    pub message: String,
    /// Keep the stream open this long, sending the marker every 100 ms.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub hold_ms: u64,
    /// The deadline of each round.
    #[arg(long, value_name = "T", default_value_t = millis(echo::DEFAULT_ROUND_TIMEOUT))]
    pub timeout_ms: u64,
}

/// Options of `testapp upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The URL, http://HOST[:PORT][/PATH]; HOST must be loopback or a lab address.
    pub url: String,
    /// The marker to send on the upgraded connection.
    #[arg(long, value_name = "M")]
    pub message: String,
    /// The protocol to upgrade to (the `Upgrade` header).
    #[arg(long, value_name = "P", default_value = upgrade::DEFAULT_PROTOCOL)]
    pub protocol: HeaderValue,
    /// The deadline of the whole run, connecting included.
    #[arg(long, value_name = "T", default_value_t = millis(load::DEFAULT_TIMEOUT))]
    pub timeout_ms: u64,
}

impl ServeArgs {
    /// The server configuration these options describe (validated when the server binds).
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            http: Some(SocketAddr::new(self.bind, self.http)),
            tcp_echo: self.tcp_echo.map(|port| SocketAddr::new(self.bind, port)),
            faults: Faults {
                fail_rate: self.fail_rate,
                delay: Duration::from_millis(self.delay_ms),
            },
            identity: AppIdentity {
                pod: Arc::from(self.pod.as_str()),
                namespace: Arc::from(self.namespace.as_str()),
                version: Arc::from(self.version.as_str()),
            },
            drain_deadline: DRAIN_DEADLINE,
        }
    }
}

impl GetArgs {
    /// The load configuration for the resolved `target`.
    pub fn config(&self, target: HttpTarget) -> LoadConfig {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        LoadConfig {
            target,
            count: self.count,
            concurrency: self.concurrency,
            protocol: if self.h2 || self.grpc {
                Protocol::Http2
            } else {
                Protocol::Http1
            },
            grpc: self.grpc,
            method: self.method.clone(),
            headers,
            timeout: Duration::from_millis(self.timeout_ms),
            connection_per_request: self.connection_per_request,
        }
    }

    /// Whether to print a line per request.
    pub fn prints_each(&self) -> bool {
        self.each || self.count <= load::EACH_LINE_MAX_REQUESTS
    }
}

impl EchoArgs {
    /// The echo configuration these options describe.
    pub fn config(&self) -> EchoConfig {
        EchoConfig {
            target: self.target.clone(),
            message: self.message.as_bytes().to_vec(),
            hold: Duration::from_millis(self.hold_ms),
            round_timeout: Duration::from_millis(self.timeout_ms),
        }
    }
}

impl UpgradeArgs {
    /// The upgrade configuration for the resolved `target`.
    pub fn config(&self, target: HttpTarget) -> UpgradeConfig {
        UpgradeConfig {
            target,
            protocol: self.protocol.clone(),
            message: self.message.as_bytes().to_vec(),
            timeout: Duration::from_millis(self.timeout_ms),
        }
    }
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:VALUE"))?;
    let name =
        HeaderName::try_from(name.trim()).map_err(|e| format!("header name {name:?}: {e}"))?;
    let value =
        HeaderValue::try_from(value.trim()).map_err(|e| format!("header value {value:?}: {e}"))?;
    Ok((name, value))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("testapp").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn serve_options_become_a_config() {
        let Command::Serve(args) = parse(&[
            "serve",
            "--http",
            "9080",
            "--tcp-echo",
            "9000",
            "--fail-rate",
            "0.3",
            "--delay-ms",
            "20",
            "--version",
            "v2",
            "--pod",
            "p",
            "--namespace",
            "ns",
        ]) else {
            panic!("not serve")
        };
        let config = args.config();
        assert_eq!(config.http, Some("0.0.0.0:9080".parse().unwrap()));
        assert_eq!(config.tcp_echo, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(
            config.faults,
            Faults {
                fail_rate: 0.3,
                delay: Duration::from_millis(20)
            }
        );
        assert_eq!(&*config.identity.version, "v2");
        assert_eq!(
            (&*config.identity.pod, &*config.identity.namespace),
            ("p", "ns")
        );
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn get_options_and_headers_parse() {
        let Command::Get(args) = parse(&[
            "get",
            "http://cart:8080/",
            "--count",
            "50",
            "--grpc",
            "--header",
            "x-user: tester",
            "--header",
            "x-a:1",
        ]) else {
            panic!("not get")
        };
        assert_eq!(args.count, 50);
        assert!(!args.prints_each());
        assert_eq!(args.headers.len(), 2);
        assert_eq!(args.headers[0].0, "x-user");
        assert_eq!(args.headers[0].1, "tester");
        assert_eq!(args.timeout_ms, 5_000);
    }

    #[test]
    fn get_has_no_default_target_and_refuses_bad_headers() {
        let missing = Cli::try_parse_from(["testapp", "get"]).unwrap_err();
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(
            Cli::try_parse_from(["testapp", "get", "http://a/", "--header", "novalue"]).is_err()
        );
    }

    #[test]
    fn echo_options_parse() {
        let Command::Echo(args) =
            parse(&["echo", "echo:9000", "--message", "hi", "--hold-ms", "500"])
        else {
            panic!("not echo")
        };
        let config = args.config();
        assert_eq!(config.message, b"hi");
        assert_eq!(config.hold, Duration::from_millis(500));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn upgrade_options_parse() {
        let Command::Upgrade(args) = parse(&["upgrade", "http://ws/chat", "--message", "hi"])
        else {
            panic!("not upgrade")
        };
        assert_eq!(
            (args.url.as_str(), args.message.as_str()),
            ("http://ws/chat", "hi")
        );
        assert_eq!(args.protocol, "websocket");
        assert_eq!(args.timeout_ms, 5_000);
    }
}
