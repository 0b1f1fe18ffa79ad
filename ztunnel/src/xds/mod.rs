//! The delta ADS client: one gRPC stream to the controller carrying every resource type the
//! proxy needs (`envoy.service.discovery.v3.AggregatedDiscoveryService/
//! DeltaAggregatedResources`).
//!
//! The protocol, from the client's side (the controller's `xds::connection` is the server's):
//!
//! - On every stream, the first request per type subscribes with the wildcard (empty
//!   `resource_names_subscribe`) and lists in `initial_resource_versions` the name and
//!   version of every resource still held, so a reconnect only transfers what changed.
//! - Each response is applied through a [`ResourceHandler`] (upserts by name, then
//!   `removed_resources`) and answered with an ACK (its nonce) or, when some resources could
//!   not be used, a NACK (`error_detail` with code 3 INVALID_ARGUMENT and a message naming
//!   them). The resources that could be used are applied either way; a rejected one keeps
//!   its previous version.
//! - When the stream ends the client reconnects with bounded, jittered exponential backoff
//!   ([`BackoffConfig`]); meanwhile the handler's state is untouched, so the last known
//!   configuration keeps serving.
//!
//! The client is generic over the handler so the waypoint can reuse it with its own types;
//! the tunnel uses [`crate::state::DiscoveryStore`].

mod backoff;
mod client;
mod config;
mod metrics;
mod subscriptions;

#[cfg(test)]
mod fake_server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

pub use backoff::{BackoffConfig, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF};
pub use client::{AdsClient, ConnectionState, XdsStatus};
pub use config::{
    CONNECT_TIMEOUT, ControllerTls, DEFAULT_SERVER_NAME, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    MAX_NACK_MESSAGE_BYTES, MAX_RESPONSE_BYTES, PROXY_DNS_DOMAIN, XdsConfig, proxy_id,
};
pub use metrics::XdsMetrics;

/// The gRPC status code of a NACK: the response had arguments the client cannot use.
pub const NACK_CODE: i32 = tonic::Code::InvalidArgument as i32;

/// Applies the resources of the types it subscribes to. Called on the client's task, one
/// response at a time, so implementations need no locking.
pub trait ResourceHandler: Send {
    /// The type URLs to subscribe to (each with the wildcard).
    fn type_urls(&self) -> Vec<&'static str>;

    /// Applies one response's upserts and removals for `type_url`, and returns the
    /// resources it could not use. Everything else must be applied.
    fn apply(&mut self, type_url: &str, update: ResourceUpdate) -> Vec<Rejection>;
}

/// One resource to add or replace.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedResource {
    /// The resource name.
    pub name: String,
    /// The encoded message (the `value` of the `Any`, whose type the client already checked).
    pub body: Vec<u8>,
}

/// The changes one response carries for one type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceUpdate {
    /// Resources added or changed.
    pub resources: Vec<NamedResource>,
    /// Names of resources to drop.
    pub removed: Vec<String>,
}

impl ResourceUpdate {
    /// Applies the upserts with `upsert`, then the removals with `remove` (which says whether
    /// the name was held); a rejected upsert leaves the previous version of that resource in
    /// place. Returns the rejections and whether anything changed, so that a store publishes
    /// a new snapshot only when it must.
    pub fn apply_to<S, E: fmt::Display>(
        &self,
        store: &mut S,
        upsert: impl Fn(&mut S, &NamedResource) -> Result<(), E>,
        remove: impl Fn(&mut S, &str) -> bool,
    ) -> (Vec<Rejection>, bool) {
        let mut rejections = Vec::new();
        let mut changed = false;
        for resource in &self.resources {
            match upsert(store, resource) {
                Ok(()) => changed = true,
                Err(error) => rejections.push(Rejection::new(&resource.name, error)),
            }
        }
        for name in &self.removed {
            changed |= remove(store, name);
        }
        (rejections, changed)
    }

    /// Rejects every resource of the update for one reason (e.g. a type the handler does not
    /// take).
    pub fn reject_all(&self, reason: impl fmt::Display) -> Vec<Rejection> {
        let reason = reason.to_string();
        self.resources
            .iter()
            .map(|r| Rejection::new(&r.name, &reason))
            .collect()
    }
}

/// A resource the client could not use, and why; becomes part of a NACK message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The resource name.
    pub name: String,
    /// Why it was rejected, for the operator.
    pub reason: String,
}

impl Rejection {
    /// A rejection of `name` for `reason`.
    pub fn new(name: &str, reason: impl fmt::Display) -> Self {
        Self {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.reason)
    }
}

/// Why the client cannot be built (bad configuration), or why a stream to the controller
/// ended; the latter are followed by a reconnect after backoff.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The trust bundle file cannot be read.
    #[error("cannot read the controller's trust bundle {path}: {source}")]
    TrustBundle {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The controller address is not a URI tonic can dial.
    #[error(
        "the controller address {address:?} is not usable: {detail}; write it as https://host:port"
    )]
    Address {
        /// The address as configured.
        address: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The TLS settings could not be turned into a client configuration.
    #[error(
        "the TLS settings for the controller are not usable: {detail}; check the trust bundle PEM"
    )]
    Tls {
        /// What is wrong with them.
        detail: String,
    },
    /// The bearer token file cannot be read.
    #[error("cannot read the bearer token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bearer token file holds nothing usable.
    #[error(
        "the bearer token file {path} is empty or holds characters that gRPC metadata cannot \
         carry; it must hold the token issued for this node"
    )]
    BadToken {
        /// The file.
        path: PathBuf,
    },
    /// No connection (TCP, TLS or HTTP/2) could be made.
    #[error("cannot connect to the controller at {address}: {detail}")]
    Connect {
        /// The controller address.
        address: String,
        /// The error chain.
        detail: String,
    },
    /// The controller does not accept the token.
    #[error(
        "the controller at {address} refused the bearer token ({message}); check that the \
         token file holds a token the controller issued for this node"
    )]
    Unauthenticated {
        /// The controller address.
        address: String,
        /// The controller's message.
        message: String,
    },
    /// The controller refused the stream for another reason.
    #[error("the controller at {address} refused the ADS stream ({code:?}: {message})")]
    Refused {
        /// The controller address.
        address: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The controller's message.
        message: String,
    },
    /// The open stream failed.
    #[error("the ADS stream failed ({code:?}: {message})")]
    StreamFailed {
        /// The gRPC status code.
        code: tonic::Code,
        /// The message.
        message: String,
    },
    /// The controller ended the stream.
    #[error("the controller closed the ADS stream")]
    StreamClosed,
}

impl XdsError {
    /// The `reason` label of the reconnect counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::TrustBundle { .. } | Self::Address { .. } | Self::Tls { .. } => "config",
            Self::Token { .. } | Self::BadToken { .. } => "token",
            Self::Connect { .. } => "connect",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::Refused { .. } => "refused",
            Self::StreamFailed { .. } => "stream_failed",
            Self::StreamClosed => "stream_closed",
        }
    }
}

/// An error and its sources on one line, since transport errors hide the cause in `source()`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
