//! L7 authorization, evaluated per request with Istio's semantics: a matching DENY policy
//! denies; otherwise, when any ALLOW policy applies, the request must match one of them.
//! Dry-run policies are evaluated too, as if enforced, and only reported.

use std::sync::Arc;

use http::{HeaderMap, Method};
use ztunnel::identity::SpiffeId;

use crate::config::{Action, HeaderCondition, L7Policy, Operation, Pattern, PolicyRule, Source};

/// What a policy sees of a request.
#[derive(Clone, Copy, Debug)]
pub struct PolicyRequest<'a> {
    /// The mTLS identity of the HBONE peer (the source workload).
    pub peer: &'a SpiffeId,
    /// The method.
    pub method: &'a Method,
    /// The normalized path, without the query.
    pub path: &'a str,
    /// Host/:authority, lower case.
    pub host: &'a str,
    /// The destination service port.
    pub port: u16,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// Why a request is denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// This DENY policy matched.
    DenyPolicy(Arc<str>),
    /// ALLOW policies apply and none matched.
    NoAllowMatch,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DenyPolicy(name) => write!(f, "DENY policy {name} matched"),
            Self::NoAllowMatch => f.write_str("no ALLOW policy matched"),
        }
    }
}

/// The outcome of evaluating the policies of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `Some` when the enforced policies deny the request.
    pub denied: Option<Denial>,
    /// `Some` when the request would be denied were the dry-run policies enforced, and is
    /// not denied now.
    pub dry_run_denied: Option<Denial>,
}

/// Evaluates `policies` (those that govern the request's destination) for `request`.
pub fn evaluate<'a>(
    policies: impl Iterator<Item = &'a Arc<L7Policy>> + Clone,
    request: &PolicyRequest<'_>,
) -> Decision {
    let denied = verdict(policies.clone().filter(|p| !p.dry_run), request);
    let dry_run_denied = if denied.is_none() && policies.clone().any(|p| p.dry_run) {
        verdict(policies, request)
    } else {
        None
    };
    Decision {
        denied,
        dry_run_denied,
    }
}

fn verdict<'a>(
    policies: impl Iterator<Item = &'a Arc<L7Policy>>,
    request: &PolicyRequest<'_>,
) -> Option<Denial> {
    let mut allow_present = false;
    let mut allowed = false;
    for policy in policies {
        match policy.action {
            Action::Deny if policy.matches(request) => {
                return Some(Denial::DenyPolicy(policy.name.clone()));
            }
            Action::Deny => {}
            Action::Allow => {
                allow_present = true;
                allowed = allowed || policy.matches(request);
            }
        }
    }
    (allow_present && !allowed).then_some(Denial::NoAllowMatch)
}

impl L7Policy {
    /// Whether any rule matches; a policy without rules matches nothing.
    pub fn matches(&self, request: &PolicyRequest<'_>) -> bool {
        self.rules.iter().any(|rule| rule.matches(request))
    }
}

impl PolicyRule {
    fn matches(&self, request: &PolicyRequest<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(request.peer)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(request)))
            && self.when.iter().all(|c| c.matches(request.headers))
    }
}

/// A list of patterns must be satisfied: empty, or one matches.
fn any_of(patterns: &[Pattern], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(value))
}

/// A `not_` list is satisfied when none of its patterns matches.
fn none_of(patterns: &[Pattern], value: &str) -> bool {
    !patterns.iter().any(|p| p.matches(value))
}

impl Source {
    fn matches(&self, peer: &SpiffeId) -> bool {
        let principal = peer.principal();
        any_of(&self.principals, &principal)
            && none_of(&self.not_principals, &principal)
            && any_of(&self.namespaces, peer.namespace())
            && none_of(&self.not_namespaces, peer.namespace())
    }
}

impl Operation {
    fn matches(&self, request: &PolicyRequest<'_>) -> bool {
        let method = request.method.as_str();
        any_of(&self.methods, method)
            && none_of(&self.not_methods, method)
            && any_of(&self.paths, request.path)
            && none_of(&self.not_paths, request.path)
            && any_of(&self.hosts, request.host)
            && none_of(&self.not_hosts, request.host)
            && (self.ports.is_empty() || self.ports.contains(&request.port))
            && !self.not_ports.contains(&request.port)
    }
}

impl HeaderCondition {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let values: Vec<&str> = headers
            .get_all(&self.name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return false;
        }
        let matched =
            |patterns: &[Pattern]| values.iter().any(|v| patterns.iter().any(|p| p.matches(v)));
        (self.values.is_empty() || matched(&self.values)) && !matched(&self.not_values)
    }
}
