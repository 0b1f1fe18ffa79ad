//! The checks a policy must pass before the tunnel enforces it.

use mesh_proto::istio::security::{Action, Address, Authorization, Match, Scope, StringMatch};

use super::RbacError;
use super::matching::network;

/// Checks everything in `policy` that the evaluator would otherwise have to guess at, and
/// returns every problem found, each naming its place in the policy. The xDS client NACKs a
/// policy that fails, so that the controller hears about it instead of the tunnel silently
/// enforcing something else.
///
/// # Errors
///
/// Every problem found, in the order of the policy's fields.
pub fn validate(policy: &Authorization) -> Result<(), Vec<RbacError>> {
    let mut check = Checker {
        policy: format!("{}/{}", policy.namespace, policy.name),
        problems: Vec::new(),
    };
    if Action::try_from(policy.action).is_err() {
        check.problems.push(RbacError::UnknownAction {
            policy: check.policy.clone(),
            value: policy.action,
        });
    }
    if Scope::try_from(policy.scope).is_err() {
        check.problems.push(RbacError::UnknownScope {
            policy: check.policy.clone(),
            value: policy.scope,
        });
    }
    for (g, group) in policy.groups.iter().enumerate() {
        for (r, rules) in group.rules.iter().enumerate() {
            for (m, one) in rules.matches.iter().enumerate() {
                check.one_match(&format!("groups[{g}].rules[{r}].matches[{m}]"), one);
            }
        }
    }
    if check.problems.is_empty() {
        Ok(())
    } else {
        Err(check.problems)
    }
}

struct Checker {
    policy: String,
    problems: Vec<RbacError>,
}

impl Checker {
    fn one_match(&mut self, at: &str, m: &Match) {
        self.strings(at, "namespaces", &m.namespaces);
        self.strings(at, "not_namespaces", &m.not_namespaces);
        self.strings(at, "principals", &m.principals);
        self.strings(at, "not_principals", &m.not_principals);
        self.addresses(at, "source_ips", &m.source_ips);
        self.addresses(at, "not_source_ips", &m.not_source_ips);
        self.addresses(at, "destination_ips", &m.destination_ips);
        self.addresses(at, "not_destination_ips", &m.not_destination_ips);
        self.ports(at, "destination_ports", &m.destination_ports);
        self.ports(at, "not_destination_ports", &m.not_destination_ports);
    }

    fn strings(&mut self, at: &str, field: &str, list: &[StringMatch]) {
        for (i, s) in list.iter().enumerate() {
            if s.match_type.is_none() {
                self.problems.push(RbacError::NoPattern {
                    policy: self.policy.clone(),
                    at: format!("{at}.{field}[{i}]"),
                });
            }
        }
    }

    fn addresses(&mut self, at: &str, field: &str, list: &[Address]) {
        for (i, a) in list.iter().enumerate() {
            if network(a).is_some() {
                continue;
            }
            let at = format!("{at}.{field}[{i}]");
            let policy = self.policy.clone();
            self.problems.push(match a.address.len() {
                4 => RbacError::PrefixLength {
                    policy,
                    at,
                    length: a.length,
                    max: 32,
                },
                16 => RbacError::PrefixLength {
                    policy,
                    at,
                    length: a.length,
                    max: 128,
                },
                len => RbacError::AddressLength { policy, at, len },
            });
        }
    }

    fn ports(&mut self, at: &str, field: &str, list: &[u32]) {
        for (i, &port) in list.iter().enumerate() {
            if port > u32::from(u16::MAX) {
                self.problems.push(RbacError::PortRange {
                    policy: self.policy.clone(),
                    at: format!("{at}.{field}[{i}]"),
                    port,
                });
            }
        }
    }
}
