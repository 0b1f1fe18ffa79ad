//! Compiled L7 authorization policies: one [`L7Policy`] per wire `L7Policy`.

use std::sync::Arc;

use http::HeaderName;
use mesh_proto::mesh::waypoint::v1 as wire;

use super::route::header_name;
use super::{ConfigError, ConfigErrors, Problems};

/// What a matching policy decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Requests must match one ALLOW policy (when any applies).
    Allow,
    /// A matching request is denied.
    Deny,
}

/// The traffic a policy governs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyTarget {
    /// Every request through this waypoint Gateway (`namespace/name`).
    Gateway(Arc<str>),
    /// Requests bound for the service with this hostname.
    Service(Arc<str>),
}

/// One authorization policy, validated.
#[derive(Debug)]
pub struct L7Policy {
    /// `namespace/name`; also the resource name.
    pub name: Arc<str>,
    /// What it governs.
    pub target: PolicyTarget,
    /// What it decides.
    pub action: Action,
    /// Alternatives; a policy without rules matches nothing.
    pub rules: Vec<PolicyRule>,
    /// Log and count the decision without enforcing it.
    pub dry_run: bool,
}

/// `from`, `to` and `when` must all hold; an empty part holds.
#[derive(Debug, Default)]
pub struct PolicyRule {
    /// Any one is enough.
    pub from: Vec<Source>,
    /// Any one is enough.
    pub to: Vec<Operation>,
    /// All must hold.
    pub when: Vec<HeaderCondition>,
}

/// Conditions on the peer identity; each non-empty list must be satisfied.
#[derive(Debug, Default)]
pub struct Source {
    /// Principals (`td/ns/x/sa/y`), one must match.
    pub principals: Vec<Pattern>,
    /// None may match.
    pub not_principals: Vec<Pattern>,
    /// Source namespaces, one must match.
    pub namespaces: Vec<Pattern>,
    /// None may match.
    pub not_namespaces: Vec<Pattern>,
}

/// Conditions on the request; each non-empty list must be satisfied.
#[derive(Debug, Default)]
pub struct Operation {
    /// Methods, one must match.
    pub methods: Vec<Pattern>,
    /// None may match.
    pub not_methods: Vec<Pattern>,
    /// Paths (normalized, without query), one must match.
    pub paths: Vec<Pattern>,
    /// None may match.
    pub not_paths: Vec<Pattern>,
    /// Hosts (lower case), one must match.
    pub hosts: Vec<Pattern>,
    /// None may match.
    pub not_hosts: Vec<Pattern>,
    /// Destination service ports, one must match.
    pub ports: Vec<u16>,
    /// None may match.
    pub not_ports: Vec<u16>,
}

/// A condition on a header: present, one of `values` (if any) and none of `not_values`.
#[derive(Debug)]
pub struct HeaderCondition {
    /// The header.
    pub name: HeaderName,
    /// One must match, when listed.
    pub values: Vec<Pattern>,
    /// None may match.
    pub not_values: Vec<Pattern>,
}

/// Istio's string patterns, already parsed by the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Equal.
    Exact(Box<str>),
    /// Starts with.
    Prefix(Box<str>),
    /// Ends with.
    Suffix(Box<str>),
    /// Any non-empty value.
    Any,
}

impl Pattern {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(p) => value == &**p,
            Self::Prefix(p) => value.starts_with(&**p),
            Self::Suffix(p) => value.ends_with(&**p),
            Self::Any => !value.is_empty(),
        }
    }

    fn lowercase(self) -> Self {
        match self {
            Self::Exact(p) => Self::Exact(p.to_ascii_lowercase().into()),
            Self::Prefix(p) => Self::Prefix(p.to_ascii_lowercase().into()),
            Self::Suffix(p) => Self::Suffix(p.to_ascii_lowercase().into()),
            Self::Any => Self::Any,
        }
    }
}

/// Compiles one `L7Policy` named `resource_name`, reporting every problem in it.
pub fn compile_policy(
    resource_name: &str,
    wire: &wire::L7Policy,
) -> Result<L7Policy, ConfigErrors> {
    let mut problems = Problems::default();
    if wire.name != resource_name {
        problems.push(ConfigError::NameMismatch {
            expected: wire.name.clone(),
        });
    }
    let target = problems.check(target(wire.target.as_ref()));
    let action = problems.check(match wire::l7_policy::Action::try_from(wire.action) {
        Ok(wire::l7_policy::Action::Allow) => Ok(Action::Allow),
        Ok(wire::l7_policy::Action::Deny) => Ok(Action::Deny),
        Err(_) => Err(ConfigError::UnknownEnum {
            field: "action".into(),
            value: wire.action,
        }),
    });
    let rules: Vec<PolicyRule> = wire
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, &format!("rules[{i}]"), &mut problems))
        .collect();
    let (Some(target), Some(action)) = (target, action) else {
        return Err(ConfigErrors(problems.0));
    };
    problems.finish(|| L7Policy {
        name: resource_name.into(),
        target,
        action,
        rules,
        dry_run: wire.dry_run,
    })
}

fn target(wire: Option<&wire::PolicyTarget>) -> Result<PolicyTarget, ConfigError> {
    use wire::policy_target::Kind;
    match wire.and_then(|t| t.kind.as_ref()) {
        Some(Kind::Gateway(name)) if !name.is_empty() => {
            Ok(PolicyTarget::Gateway(name.as_str().into()))
        }
        Some(Kind::Service(host)) if !host.is_empty() => {
            Ok(PolicyTarget::Service(host.to_ascii_lowercase().into()))
        }
        _ => Err(ConfigError::MissingField {
            field: "target".into(),
        }),
    }
}

fn rule(wire: &wire::PolicyRule, field: &str, problems: &mut Problems) -> PolicyRule {
    let from = wire
        .from
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = format!("{field}.from[{i}]");
            Source {
                principals: patterns(&s.principals, &format!("{at}.principals"), problems),
                not_principals: patterns(
                    &s.not_principals,
                    &format!("{at}.not_principals"),
                    problems,
                ),
                namespaces: patterns(&s.namespaces, &format!("{at}.namespaces"), problems),
                not_namespaces: patterns(
                    &s.not_namespaces,
                    &format!("{at}.not_namespaces"),
                    problems,
                ),
            }
        })
        .collect();
    let to = wire
        .to
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let at = format!("{field}.to[{i}]");
            Operation {
                methods: patterns(&o.methods, &format!("{at}.methods"), problems),
                not_methods: patterns(&o.not_methods, &format!("{at}.not_methods"), problems),
                paths: patterns(&o.paths, &format!("{at}.paths"), problems),
                not_paths: patterns(&o.not_paths, &format!("{at}.not_paths"), problems),
                hosts: lower(patterns(&o.hosts, &format!("{at}.hosts"), problems)),
                not_hosts: lower(patterns(&o.not_hosts, &format!("{at}.not_hosts"), problems)),
                ports: ports(&o.ports, &format!("{at}.ports"), problems),
                not_ports: ports(&o.not_ports, &format!("{at}.not_ports"), problems),
            }
        })
        .collect();
    let when = wire
        .when
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let at = format!("{field}.when[{i}]");
            let name = problems.check(header_name(&c.name, &format!("{at}.name")))?;
            Some(HeaderCondition {
                name,
                values: patterns(&c.values, &format!("{at}.values"), problems),
                not_values: patterns(&c.not_values, &format!("{at}.not_values"), problems),
            })
        })
        .collect();
    PolicyRule { from, to, when }
}

fn patterns(list: &[wire::Pattern], field: &str, problems: &mut Problems) -> Vec<Pattern> {
    list.iter()
        .enumerate()
        .filter_map(|(i, p)| problems.check(pattern(p, &format!("{field}[{i}]"))))
        .collect()
}

fn lower(patterns: Vec<Pattern>) -> Vec<Pattern> {
    patterns.into_iter().map(Pattern::lowercase).collect()
}

fn ports(list: &[u32], field: &str, problems: &mut Problems) -> Vec<u16> {
    list.iter()
        .enumerate()
        .filter_map(|(i, &p)| problems.check(super::port(p, format!("{field}[{i}]"))))
        .collect()
}

fn pattern(wire: &wire::Pattern, field: &str) -> Result<Pattern, ConfigError> {
    use wire::pattern::Kind;
    match &wire.kind {
        Some(Kind::Exact(v)) => Ok(Pattern::Exact(v.as_str().into())),
        Some(Kind::Prefix(v)) => Ok(Pattern::Prefix(v.as_str().into())),
        Some(Kind::Suffix(v)) => Ok(Pattern::Suffix(v.as_str().into())),
        Some(Kind::Any(_)) => Ok(Pattern::Any),
        None => Err(ConfigError::MissingField {
            field: field.to_string(),
        }),
    }
}
