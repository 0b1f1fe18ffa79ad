//! Whether an inbound connection may reach a captured pod. One decision, in one order, for
//! HBONE tunnels and plaintext connections when they arrive and for open ones when discovery
//! changes ([`super::tracker`]): the destination workload must be known, a waypoint that
//! serves it must be the source ([`super::bypass`], unless protection is off), and policy
//! must allow it.

use std::sync::Arc;

use super::bypass;
use crate::rbac::{self, Connection, Decision};
use crate::state::{DiscoverySnapshot, WorkloadInfo};

/// The reason of a refusal whose destination is not a known workload.
pub const UNKNOWN_TARGET: &str = "unknown_target";
/// The reason of a refusal by policy.
pub const POLICY_DENIED: &str = "policy_denied";

/// Why a connection is refused: the failure counter's reason and a message for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `unknown_target`, `bypassed_waypoint` or `policy_denied`.
    pub reason: &'static str,
    /// What was wrong, for the operator.
    pub detail: String,
}

impl Refusal {
    /// What happened to the connection, for a log line: `connection <summary>`.
    pub fn summary(&self) -> &'static str {
        match self.reason {
            UNKNOWN_TARGET => "refused: its destination is not a known workload",
            POLICY_DENIED => "denied by policy",
            _ => "refused: it bypassed the waypoint",
        }
    }
}

/// The destination workload and the policy decision (its dry-run outcomes included) of an
/// admitted connection.
pub struct Admitted<'a> {
    /// The pod the connection goes to.
    pub workload: Arc<WorkloadInfo>,
    /// The policy decision; `allowed` is true.
    pub decision: Decision<'a>,
}

/// Decides `connection` to the captured pod `pod_uid` against `snapshot`.
pub fn admit<'a>(
    snapshot: &'a DiscoverySnapshot,
    pod_uid: &str,
    connection: &Connection,
    bypass_protection: bool,
) -> Result<Admitted<'a>, Refusal> {
    let Some(workload) = snapshot.workload_by_uid(pod_uid) else {
        return Err(Refusal {
            reason: UNKNOWN_TARGET,
            detail: "the destination workload is not known".into(),
        });
    };
    if bypass_protection
        && let Err(bypass) = bypass::check(snapshot, &workload, connection.src_identity.as_ref())
    {
        return Err(Refusal {
            reason: bypass::BYPASS_REASON,
            detail: bypass.to_string(),
        });
    }
    let decision = rbac::evaluate(snapshot.policies_for(&workload), connection);
    if !decision.allowed {
        return Err(Refusal {
            reason: POLICY_DENIED,
            detail: decision.reason.to_string(),
        });
    }
    Ok(Admitted { workload, decision })
}
