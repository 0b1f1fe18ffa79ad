//! Settings of the ADS client, built in code (tests) or from the command line (the binary).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::XdsError;
use super::backoff::BackoffConfig;

/// The name the controller's serving certificate is checked against by default; the
/// controller's certificate carries it whatever address it is reached at.
pub const DEFAULT_SERVER_NAME: &str = "controller";

/// How long a TCP connect plus TLS handshake to the controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle connection to the controller is pinged, so a controller that vanished
/// without closing is noticed and the backoff loop takes over.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a ping may go unanswered before the connection counts as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response accepted. The controller splits responses at 1 MiB, but a single
/// resource may be larger; gRPC's 4 MiB default would turn a large mesh into a reconnect loop.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The longest NACK message sent; past it the remaining rejections are only counted.
pub const MAX_NACK_MESSAGE_BYTES: usize = 4096;

/// The DNS domain part of a proxy id.
pub const PROXY_DNS_DOMAIN: &str = "svc.cluster.local";

/// Builds a proxy id in Istio's four-part form, `role~ip~name~domain`, e.g.
/// `ztunnel~10.0.0.1~node-1~svc.cluster.local`.
pub fn proxy_id(role: &str, ip: IpAddr, name: &str) -> String {
    format!("{role}~{ip}~{name}~{PROXY_DNS_DOMAIN}")
}

/// How the controller is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerTls {
    /// The trust bundle (PEM): the controller's `<state>/root-cert.pem`.
    pub roots_pem: String,
    /// The name the controller's certificate must carry.
    pub server_name: String,
}

impl ControllerTls {
    /// Reads the trust bundle from a file; the server name is [`DEFAULT_SERVER_NAME`].
    pub fn from_file(path: &Path) -> Result<Self, XdsError> {
        let roots_pem = std::fs::read_to_string(path).map_err(|source| XdsError::TrustBundle {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            roots_pem,
            server_name: DEFAULT_SERVER_NAME.to_string(),
        })
    }
}

/// Everything the ADS client needs.
#[derive(Clone, Debug)]
pub struct XdsConfig {
    /// The controller, as `https://host:port` (`http://` only without TLS).
    pub address: String,
    /// How the controller is verified; `None` speaks plaintext and is meant for tests.
    pub tls: Option<ControllerTls>,
    /// The file holding the bearer token. It is read again for every connection, so a
    /// rotated token is picked up without a restart. `None` sends no token.
    pub token_file: Option<PathBuf>,
    /// The id the proxy gives in `node.id` (see [`proxy_id`]).
    pub proxy_id: String,
    /// The node the proxy runs on, sent as `NODE_NAME` metadata.
    pub node_name: Arc<str>,
    /// Reconnect pacing.
    pub backoff: BackoffConfig,
}

impl XdsConfig {
    /// A configuration with default TLS off, no token and default backoff; callers set the
    /// rest field by field.
    pub fn new(address: impl Into<String>, proxy_id: impl Into<String>, node_name: &str) -> Self {
        Self {
            address: address.into(),
            tls: None,
            token_file: None,
            proxy_id: proxy_id.into(),
            node_name: node_name.into(),
            backoff: BackoffConfig::default(),
        }
    }
}
