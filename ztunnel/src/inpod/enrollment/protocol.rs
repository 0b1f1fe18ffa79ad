//! The wire types of the enrollment protocol (see the parent module for the protocol).

use serde::{Deserialize, Serialize};

use super::EnrollmentError;

/// One request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Request {
    /// Enroll a pod.
    Add {
        /// The pod's workload uid.
        uid: String,
        /// The pod's network namespace.
        netns: String,
    },
    /// Unenroll a pod.
    Remove {
        /// The pod's workload uid.
        uid: String,
    },
    /// The complete list of pods that should be enrolled.
    Snapshot {
        /// Every pod, each once.
        pods: Vec<PodEntry>,
    },
}

impl Request {
    /// The request's `op`, for messages.
    pub(crate) fn op(&self) -> &'static str {
        match self {
            Request::Add { .. } => "add",
            Request::Remove { .. } => "remove",
            Request::Snapshot { .. } => "snapshot",
        }
    }

    /// Parses one request line (without or with its trailing newline).
    pub(crate) fn parse(line: &[u8]) -> Result<Self, EnrollmentError> {
        serde_json::from_slice(line).map_err(|source| EnrollmentError::Malformed { source })
    }

    /// The request as one line, newline included.
    pub(crate) fn to_line(&self) -> String {
        let mut line =
            serde_json::to_string(self).expect("strings and lists of strings always serialize");
        line.push('\n');
        line
    }
}

/// A pod in a snapshot: its workload uid and the path of its network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEntry {
    /// The pod's workload uid, `<cluster>//Pod/<namespace>/<name>`.
    pub uid: String,
    /// The pod's network namespace: `/var/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub netns: String,
}

/// One reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// Whether the request was applied.
    pub(crate) ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Reply {
    /// The reply for an outcome.
    pub(crate) fn from_outcome(outcome: &Result<(), EnrollmentError>) -> Self {
        match outcome {
            Ok(()) => Reply {
                ok: true,
                error: None,
            },
            Err(error) => Reply {
                ok: false,
                error: Some(error.to_string()),
            },
        }
    }

    /// The reply as one line, newline included.
    pub(crate) fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a bool and a string always serialize");
        line.push('\n');
        line
    }
}
