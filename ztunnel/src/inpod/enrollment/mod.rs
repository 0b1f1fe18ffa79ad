//! The enrollment API: how the node agent tells the node's ztunnel which pods to serve.
//!
//! The node agent is the lab's supervisor today and a CNI plugin on Kubernetes later. It
//! connects to a Unix stream socket that ztunnel listens on ([`DEFAULT_SOCKET_PATH`] unless
//! configured) and speaks line-delimited JSON:
//!
//! - Each request is one JSON object on one line (UTF-8, ending in `\n`, at most
//!   [`MAX_LINE_BYTES`] bytes). Each request gets exactly one reply line, in request order.
//!   Blank lines are ignored. Unknown fields are ignored, so agents may add fields.
//! - Requests:
//!
//!   ```text
//!   {"op":"add","uid":"Kubernetes//Pod/ns/name","netns":"/var/run/netns/x"}
//!   {"op":"remove","uid":"Kubernetes//Pod/ns/name"}
//!   {"op":"snapshot","pods":[{"uid":"Kubernetes//Pod/ns/name","netns":"/var/run/netns/x"}]}
//!   ```
//!
//!   `uid` is the workload uid the controller pushes (`<cluster>//Pod/<namespace>/<name>`);
//!   it must be non-empty and contain no whitespace. `netns` is the pod's network namespace
//!   as a path on the node: `/var/run/netns/<name>` or `/proc/<pid>/ns/net`.
//! - Replies: `{"ok":true}` or `{"ok":false,"error":"<what went wrong and what to do>"}`.
//!
//! Meaning:
//!
//! - `add`: the pod runs on this node in this namespace. ztunnel captures it (redirection
//!   rules in its namespace, listeners inside it) for as long as the controller says the pod
//!   is in the mesh (tunnel protocol HBONE, placed on this node), and releases it when that
//!   stops being true; no restart of the pod either way. Adding a pod again replaces the
//!   earlier announcement (the namespace may have changed); the reply comes once the pod is
//!   captured when it should be, or with the reason it could not be.
//! - `remove`: the pod is gone: rules and listeners go away and the pod's open connections
//!   are closed. Removing a pod that is not known succeeds.
//! - `snapshot`: the complete list of pods on the node that should be enrolled, sent by the
//!   agent on every (re)connect. ztunnel removes every pod not in it and adds the missing
//!   ones. A pod whose namespace cannot be opened is treated as gone (it is not kept), and the
//!   reply is an error naming it, after the rest has been applied.
//!
//! A malformed line gets an error reply and the connection stays usable; a line longer than
//! [`MAX_LINE_BYTES`] gets an error reply and the connection is closed (there is no telling
//! where the next request starts). Several agents may be connected at once; none of this
//! ever stops the server.
//!
//! Inside ztunnel, the [`EnrollmentServer`] opens the namespaces and turns each request into
//! an [`EnrollmentEvent`] on a channel; the proxy applies it and answers through the event's
//! [`Responder`]. The [`EnrollmentClient`] is the agent's side.

mod client;
mod protocol;
mod server;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::netns::{Netns, NetnsError};

pub use client::EnrollmentClient;
pub use protocol::PodEntry;
pub use server::EnrollmentServer;

/// Where ztunnel listens for the node agent unless configured otherwise (Istio's path).
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/ztunnel/ztunnel.sock";

/// The longest request line accepted: a snapshot of ~20,000 pods.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// How long the server waits for the proxy to apply one request before answering with an
/// error. Installing rules is bounded by [`super::rules::TOOL_TIMEOUT`] per command.
pub const PROXY_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the client waits for a reply: a little longer than the server waits for the proxy.
pub const CLIENT_REPLY_TIMEOUT: Duration = Duration::from_secs(65);

/// Why an enrollment request failed, on either side of the socket.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    /// The server could not listen on its socket.
    #[error("cannot listen for the node agent on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The socket path is taken by something that is not a socket.
    #[error("{path} exists and is not a Unix socket; remove it or configure another path")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process already serves the socket.
    #[error("another process is already serving the enrollment socket {path}; stop it first")]
    AlreadyServed {
        /// The socket path.
        path: PathBuf,
    },
    /// A request line is not valid JSON or not a known request.
    #[error(
        "malformed request: {source}; expected one JSON object per line with \"op\" one of \
         \"add\", \"remove\", \"snapshot\""
    )]
    Malformed {
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A request line is longer than [`MAX_LINE_BYTES`].
    #[error("request line longer than {MAX_LINE_BYTES} bytes; closing the connection")]
    LineTooLong,
    /// A uid is empty or contains whitespace.
    #[error("invalid pod uid {uid:?}: it must be non-empty and contain no whitespace")]
    InvalidUid {
        /// The uid received.
        uid: String,
    },
    /// A snapshot names the same pod twice.
    #[error("the snapshot lists pod {uid} more than once; send each pod once")]
    DuplicateUid {
        /// The repeated uid.
        uid: PodUid,
    },
    /// A pod's namespace could not be opened.
    #[error("pod {uid}: {source}")]
    Netns {
        /// The pod.
        uid: PodUid,
        /// Why its namespace could not be opened.
        source: NetnsError,
    },
    /// Pods of a snapshot whose namespace could not be opened; the rest was applied.
    #[error("snapshot applied without {} pod(s) whose namespace could not be opened: {}", .failures.len(), join(.failures))]
    SnapshotIncomplete {
        /// One error per pod left out.
        failures: Vec<EnrollmentError>,
    },
    /// The proxy is not taking requests any more.
    #[error("ztunnel is shutting down and takes no enrollment requests; retry after it restarts")]
    ProxyGone,
    /// The proxy did not answer in time.
    #[error("ztunnel did not apply the request within {PROXY_REPLY_TIMEOUT:?}; see its log")]
    ProxyTimeout,
    /// The proxy dropped the request without answering it.
    #[error("ztunnel dropped the request without answering; see its log")]
    Unanswered,
    /// The proxy refused or failed the request.
    #[error("{message}")]
    Proxy {
        /// The proxy's reason.
        message: String,
    },
    /// The client could not connect to the socket.
    #[error(
        "cannot connect to ztunnel's enrollment socket {path}: {source}; is ztunnel running on this node?"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The connection failed while sending a request or reading its reply.
    #[error("lost the connection to ztunnel's enrollment socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// ztunnel closed the connection before replying.
    #[error("ztunnel closed the enrollment connection {path} without replying; see its log")]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// No reply came in time.
    #[error("no reply from ztunnel on {path} within {CLIENT_REPLY_TIMEOUT:?}")]
    ReplyTimeout {
        /// The socket path.
        path: PathBuf,
    },
    /// A reply line is not a valid reply.
    #[error("ztunnel sent a reply that is not {{\"ok\":...}}: {line:?} ({source})")]
    BadReply {
        /// The line received.
        line: String,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// ztunnel answered with an error.
    #[error("ztunnel refused {op}: {message}")]
    Rejected {
        /// The request's `op`.
        op: &'static str,
        /// ztunnel's reason.
        message: String,
    },
}

fn join(errors: &[EnrollmentError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A pod's workload uid (`<cluster>//Pod/<namespace>/<name>`), cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodUid(Arc<str>);

impl PodUid {
    /// Checks and wraps a uid: non-empty, no whitespace or control characters.
    pub fn parse(uid: &str) -> Result<Self, EnrollmentError> {
        if uid.is_empty() || uid.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EnrollmentError::InvalidUid {
                uid: uid.to_string(),
            });
        }
        Ok(Self(uid.into()))
    }

    /// The uid as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One enrollment request for the proxy to apply; answer it through `reply`.
#[derive(Debug)]
pub enum EnrollmentEvent {
    /// Capture this pod, replacing any earlier enrollment of the same uid.
    Add {
        /// The pod.
        uid: PodUid,
        /// Its network namespace, already open.
        netns: Netns,
        /// Where the outcome goes.
        reply: Responder,
    },
    /// Stop capturing this pod and close its connections; unknown pods are not an error.
    Remove {
        /// The pod.
        uid: PodUid,
        /// Where the outcome goes.
        reply: Responder,
    },
    /// Exactly these pods should be enrolled: remove the others, add the missing ones.
    Snapshot {
        /// Every pod that should be enrolled, each once, namespaces already open.
        pods: Vec<(PodUid, Netns)>,
        /// Where the outcome goes.
        reply: Responder,
    },
}

/// The proxy's answer to one [`EnrollmentEvent`]. Dropping it unanswered sends an error.
#[derive(Debug)]
pub struct Responder(oneshot::Sender<Result<(), String>>);

impl Responder {
    /// A responder and the receiver of its answer: what the server makes for each request,
    /// and what a test makes to drive the proxy with events but without a socket.
    pub fn pair() -> (Self, oneshot::Receiver<Result<(), String>>) {
        let (sender, receiver) = oneshot::channel();
        (Self(sender), receiver)
    }

    /// Sends the outcome; an error's message reaches the node agent as it is, so it should say
    /// what went wrong and what to do.
    pub fn send<E: fmt::Display>(self, outcome: Result<(), E>) {
        // The agent may have gone away; then nobody is waiting for the answer.
        let _ = self.0.send(outcome.map_err(|error| error.to_string()));
    }

    /// Sends success.
    pub fn ok(self) {
        self.send(Ok::<(), &str>(()));
    }
}
