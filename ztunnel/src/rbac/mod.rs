//! L4 authorization: decides whether an inbound connection may reach its destination workload,
//! from the `istio.security.Authorization` policies that apply to that workload.
//!
//! The input is the wire type itself. Evaluation walks it directly, without a compiled copy:
//! every check is a comparison of integers or string slices, nothing is parsed or allocated per
//! connection (the decision borrows policy names), and a policy update needs no second
//! representation kept in step with the first. [`validate`] is the gate that rejects what the
//! evaluator could only guess at, so the xDS client can NACK it.
//!
//! # Semantics (Istio's, with the differences listed)
//!
//! - A policy matches when any of its groups matches; a policy without groups matches nothing.
//!   A group matches when all of its `rules` match (a group without rules matches everything);
//!   a `Rules` when any of its `matches` matches (an empty `matches` list matches everything).
//! - A `Match` matches when every non-empty positive field has an entry that matches and no
//!   entry of any `not_` field matches. An empty `Match` matches everything. *Istio's ztunnel
//!   skips empty matches instead, which makes a DENY rule whose conditions were all L7 (and so
//!   were dropped on the way to L4) deny nothing (istio/istio#61126); the controller of this
//!   mesh relies on the fail-closed reading: see `controller/src/translate/authorization.rs`.*
//! - Principals are compared with [`SpiffeId::principal`] (`<td>/ns/<ns>/sa/<sa>`, no scheme),
//!   namespaces with the identity's namespace, service accounts by namespace and name in any
//!   trust domain. `presence` means "any non-empty value", so for a mesh peer it always holds.
//! - A connection without an identity (plaintext from outside the mesh) matches no positive
//!   namespace, principal or service-account entry, whatever the pattern, and so satisfies every
//!   `not_` form of them: `not_principals: [presence]` is exactly "has no identity". Istio does
//!   the same except for degenerate patterns (an empty exact, prefix or suffix namespace would
//!   match its empty namespace); here the absence of an identity never matches anything.
//! - Addresses match by prefix; host bits in the policy's address are ignored. IPv4 and IPv6
//!   never match each other, but IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4 on
//!   both sides: a dual-stack socket reports IPv4 peers that way, and a rule written for IPv4
//!   must still see them. A policy prefix inside `::ffff:0:0/96` becomes the IPv4 prefix it
//!   covers; a shorter IPv6 prefix (`::/0`) does not match IPv4 peers.
//! - Decision: a matching DENY denies; otherwise, if any ALLOW policy applies, one of them must
//!   match; otherwise the connection is allowed. Dry-run policies never change the decision;
//!   each one's would-be decision is reported (see [`DryRunOutcome`]).
//! - Entries [`validate`] rejects never match at evaluation time: a positive list made only of
//!   them matches nothing and a `not_` list excludes nothing. A policy with an unknown action
//!   is treated as DENY, so that a policy nobody understands fails closed.
//! - The policy's `scope` is not looked at here: the caller passes the policies that apply to
//!   the destination workload.

mod matching;
mod validation;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use mesh_proto::istio::security::{Action, Authorization};

use crate::identity::SpiffeId;

pub use validation::validate;

/// What is known about an inbound connection when it is authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The peer's verified identity; `None` for plaintext from outside the mesh.
    pub src_identity: Option<SpiffeId>,
    /// The peer's address.
    pub src_ip: IpAddr,
    /// The destination workload's address.
    pub dst_ip: IpAddr,
    /// The destination port on the workload.
    pub dst_port: u16,
}

/// Allow or deny: a policy's action, or a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The connection goes through.
    Allow,
    /// The connection is refused.
    Deny,
}

/// A policy named in a decision, borrowed from the policies that were evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyRef<'a> {
    /// The policy's namespace.
    pub namespace: &'a str,
    /// The policy's name.
    pub name: &'a str,
}

/// Why a connection was allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionReason<'a> {
    /// No enforced policy applies to the destination.
    NoPolicies,
    /// Only DENY policies apply, and none of them matched.
    NoDenyMatched,
    /// This ALLOW policy matched (the first one, in the order given).
    AllowedBy(PolicyRef<'a>),
    /// This DENY policy matched (the first one, in the order given).
    DeniedBy(PolicyRef<'a>),
    /// ALLOW policies apply, and none of them matched.
    NoAllowMatched,
}

/// What a dry-run policy would have changed had it been enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DryRunOutcome<'a> {
    /// The dry-run policy.
    pub policy: PolicyRef<'a>,
    /// The policy's action.
    pub action: Verdict,
    /// Whether the policy matched the connection.
    pub matched: bool,
    /// The decision if this policy, and no other dry-run policy, were enforced alongside the
    /// enforced ones. It differs from [`Decision::allowed`] exactly when the policy would
    /// change the outcome, which is what the proxy logs.
    pub would: Verdict,
}

/// The outcome of authorizing one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Whether the connection may proceed.
    pub allowed: bool,
    /// Why.
    pub reason: DecisionReason<'a>,
    /// One entry per dry-run policy, in the order given; empty (and unallocated) when there
    /// are none.
    pub dry_run: Vec<DryRunOutcome<'a>>,
}

/// Why a policy cannot be used as received; see [`validate`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RbacError {
    /// The action is neither `ALLOW` nor `DENY`.
    #[error("policy {policy}: unknown action {value}; expected ALLOW (0) or DENY (1)")]
    UnknownAction {
        /// `namespace/name` of the policy.
        policy: String,
        /// The value received.
        value: i32,
    },
    /// The scope is none of `GLOBAL`, `NAMESPACE`, `WORKLOAD_SELECTOR`.
    #[error(
        "policy {policy}: unknown scope {value}; expected GLOBAL (0), NAMESPACE (1) or WORKLOAD_SELECTOR (2)"
    )]
    UnknownScope {
        /// `namespace/name` of the policy.
        policy: String,
        /// The value received.
        value: i32,
    },
    /// An address is neither 4 nor 16 bytes long.
    #[error("policy {policy}: {at}: address has {len} bytes; expected 4 (IPv4) or 16 (IPv6)")]
    AddressLength {
        /// `namespace/name` of the policy.
        policy: String,
        /// Where in the policy, e.g. `groups[0].rules[1].matches[0].source_ips[2]`.
        at: String,
        /// The number of bytes received.
        len: usize,
    },
    /// A prefix length is longer than the address.
    #[error(
        "policy {policy}: {at}: prefix length {length} is longer than the address ({max} bits)"
    )]
    PrefixLength {
        /// `namespace/name` of the policy.
        policy: String,
        /// Where in the policy.
        at: String,
        /// The prefix length received.
        length: u32,
        /// The address's size in bits.
        max: u32,
    },
    /// A port is not a TCP port number.
    #[error("policy {policy}: {at}: port {port} is not in 0-65535")]
    PortRange {
        /// `namespace/name` of the policy.
        policy: String,
        /// Where in the policy.
        at: String,
        /// The value received.
        port: u32,
    },
    /// A string match says neither exact, prefix, suffix nor presence.
    #[error("policy {policy}: {at}: string match has no pattern")]
    NoPattern {
        /// `namespace/name` of the policy.
        policy: String,
        /// Where in the policy.
        at: String,
    },
}

/// Authorizes `conn` against the policies that apply to its destination workload.
///
/// Allocation-free unless dry-run policies are present. Enforced policies are evaluated only as
/// far as the decision needs; dry-run policies always are.
#[must_use]
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Authorization>,
    conn: &Connection,
) -> Decision<'a> {
    let subject = matching::Subject::new(conn);
    let mut denied_by = None;
    let mut allowed_by = None;
    let (mut allow_present, mut deny_present) = (false, false);
    let mut dry_run = Vec::new();
    for policy in policies {
        let action = Verdict::action_of(policy);
        if policy.dry_run {
            dry_run.push(DryRunOutcome {
                policy: PolicyRef::of(policy),
                action,
                matched: matching::policy_matches(policy, &subject),
                // Set below, once the enforced decision is known.
                would: action,
            });
            continue;
        }
        match action {
            Verdict::Deny => {
                deny_present = true;
                if denied_by.is_none() && matching::policy_matches(policy, &subject) {
                    denied_by = Some(PolicyRef::of(policy));
                }
            }
            Verdict::Allow => {
                allow_present = true;
                if denied_by.is_none()
                    && allowed_by.is_none()
                    && matching::policy_matches(policy, &subject)
                {
                    allowed_by = Some(PolicyRef::of(policy));
                }
            }
        }
    }
    let reason = match (denied_by, allowed_by) {
        (Some(policy), _) => DecisionReason::DeniedBy(policy),
        (None, Some(policy)) => DecisionReason::AllowedBy(policy),
        (None, None) if allow_present => DecisionReason::NoAllowMatched,
        (None, None) if deny_present => DecisionReason::NoDenyMatched,
        (None, None) => DecisionReason::NoPolicies,
    };
    let allowed = reason.allows();
    for outcome in &mut dry_run {
        outcome.would = would_decide(outcome, denied_by.is_some(), allowed_by.is_some(), allowed);
    }
    Decision {
        allowed,
        reason,
        dry_run,
    }
}

/// Whether `policy` matches `conn`, regardless of its action and dry-run flag.
#[must_use]
pub fn matches(policy: &Authorization, conn: &Connection) -> bool {
    matching::policy_matches(policy, &matching::Subject::new(conn))
}

/// The decision had this one dry-run policy been enforced.
fn would_decide(
    outcome: &DryRunOutcome<'_>,
    enforced_deny_matched: bool,
    enforced_allow_matched: bool,
    allowed: bool,
) -> Verdict {
    let verdict = match (outcome.action, outcome.matched) {
        _ if enforced_deny_matched => false,
        (Verdict::Deny, true) => false,
        (Verdict::Deny, false) => allowed,
        (Verdict::Allow, true) => true,
        // Enforced, this ALLOW would make ALLOW policies apply, so another must match.
        (Verdict::Allow, false) => enforced_allow_matched,
    };
    if verdict {
        Verdict::Allow
    } else {
        Verdict::Deny
    }
}

impl Verdict {
    /// A policy's action; an unknown action counts as DENY (see the module documentation).
    fn action_of(policy: &Authorization) -> Self {
        match Action::try_from(policy.action) {
            Ok(Action::Allow) => Verdict::Allow,
            Ok(Action::Deny) | Err(_) => Verdict::Deny,
        }
    }
}

impl<'a> PolicyRef<'a> {
    /// The name of `policy`.
    pub fn of(policy: &'a Authorization) -> Self {
        Self {
            namespace: &policy.namespace,
            name: &policy.name,
        }
    }
}

impl DecisionReason<'_> {
    /// Whether a decision for this reason lets the connection through.
    pub fn allows(&self) -> bool {
        matches!(
            self,
            DecisionReason::NoPolicies
                | DecisionReason::NoDenyMatched
                | DecisionReason::AllowedBy(_)
        )
    }
}

impl<'a> Decision<'a> {
    /// The policy the decision names, if any.
    pub fn policy(&self) -> Option<PolicyRef<'a>> {
        match self.reason {
            DecisionReason::AllowedBy(p) | DecisionReason::DeniedBy(p) => Some(p),
            _ => None,
        }
    }

    /// The dry-run policies that would have changed the decision.
    pub fn dry_run_changes(&self) -> impl Iterator<Item = &DryRunOutcome<'a>> {
        let actual = if self.allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        self.dry_run.iter().filter(move |o| o.would != actual)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

impl fmt::Display for PolicyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for DecisionReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionReason::NoPolicies => f.write_str("no policy applies"),
            DecisionReason::NoDenyMatched => f.write_str("no DENY policy matched"),
            DecisionReason::AllowedBy(p) => write!(f, "allowed by policy {p}"),
            DecisionReason::DeniedBy(p) => write!(f, "denied by policy {p}"),
            DecisionReason::NoAllowMatched => f.write_str("no ALLOW policy matched"),
        }
    }
}
