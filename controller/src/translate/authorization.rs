//! AuthorizationPolicy -> `istio.security.Authorization`, with Istio's semantics.
//!
//! The proxies evaluate `groups` as: a policy matches when any group matches; a group when all
//! its `rules` match; a `Rules` when any of its `matches` matches; a `Match` when every field
//! it sets matches and no `not_` field does. A policy with no groups matches nothing.
//!
//! A tunnel sees connections, not requests. Where a policy asks for L7 attributes and no
//! waypoint enforces it, we fail closed: an ALLOW rule that needs L7 admits nothing and its
//! L4 part becomes a DENY (named `<policy>` + [`L7_DENY_SUFFIX`]); a DENY rule loses its L7
//! conditions and so denies all the traffic its L4 part matches. Both are reported as warnings.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use mesh_proto::istio::security::{
    self as wire, Action, Authorization, Group, Match, Rules, Scope, string_match,
};

use super::{TranslateConfig, Warning, resource};
use crate::store::kube_syntax::{Labels, selector_matches};
use crate::store::{
    AuthorizationPolicy, DesiredState, NamespacedName, Pod, PolicyAction, PolicyCondition,
    PolicyOperation, PolicyRule, PolicySource, StringMatch, WaypointFor,
};
use crate::xds::VersionedResource;

/// Appended to a policy's name for the DENY that stands in for its L7 ALLOW rules at L4.
/// A colon cannot appear in a Kubernetes name, so it never collides with a user's policy.
pub const L7_DENY_SUFFIX: &str = ":l7-deny";

/// Translated policies, and which pods the selector-scoped ones apply to.
pub(super) struct Policies {
    pub resources: Vec<VersionedResource>,
    /// Which pods each selector-scoped policy applies to.
    pub selections: PolicySelections,
}

/// The selector-scoped policies: which pods each applies to, and the names (`namespace/name`)
/// of the resources it became. Depends on policies and services, never on pods, so a change
/// of pods alone is answered by asking it about the changed pods.
#[derive(Debug, Default)]
pub(super) struct PolicySelections(Vec<(PodSelection, Vec<String>)>);

impl PolicySelections {
    /// The names of the policies that apply to a pod, sorted.
    pub fn of_pod(&self, pod: &Pod) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .0
            .iter()
            .filter(|(selection, _)| selection.selects(pod))
            .flat_map(|(_, names)| names)
            .collect();
        names.into_iter().cloned().collect()
    }
}

/// The pods a selector-scoped policy applies to.
#[derive(Debug)]
enum PodSelection {
    /// Pods whose labels match the selector: in one namespace, or in all (`None`, a policy of
    /// the root namespace).
    Labels {
        namespace: Option<Arc<str>>,
        selector: Labels,
    },
    /// The pods behind services (namespace and selector of each) that have no waypoint.
    ServicePods(Vec<(Arc<str>, Labels)>),
}

impl PodSelection {
    fn selects(&self, pod: &Pod) -> bool {
        match self {
            PodSelection::Labels {
                namespace,
                selector,
            } => {
                namespace.as_ref().is_none_or(|ns| *ns == pod.namespace)
                    && selector_matches(selector, &pod.labels)
            }
            PodSelection::ServicePods(services) => services.iter().any(|(namespace, selector)| {
                *namespace == pod.namespace
                    && !selector.is_empty()
                    && selector_matches(selector, &pod.labels)
            }),
        }
    }
}

/// Where a policy is enforced.
enum Placement {
    /// By the tunnels, with this scope (and, for the workload-selector scope, these pods).
    L4(Scope, Option<PodSelection>),
    /// By a waypoint; the waypoint configuration carries it.
    Waypoint,
    /// Nowhere: the reason was reported.
    Nowhere,
}

pub(super) fn translate(
    state: &DesiredState,
    config: &TranslateConfig,
    warnings: &mut Vec<Warning>,
) -> Policies {
    let mut out = Policies {
        resources: Vec::new(),
        selections: PolicySelections::default(),
    };
    for policy in state.authorization_policies.values() {
        let object = format!("AuthorizationPolicy {}/{}", policy.namespace, policy.name);
        let mut warn = |message: String| {
            warnings.push(Warning {
                object: object.clone(),
                message,
            })
        };
        let action = match policy.action {
            PolicyAction::Allow => Action::Allow,
            PolicyAction::Deny => Action::Deny,
            PolicyAction::Audit | PolicyAction::Custom => {
                warn(
                    "AUDIT and CUSTOM actions are not supported; the policy is not enforced".into(),
                );
                continue;
            }
        };
        let (scope, selection) = match placement(state, config, policy, &mut warn) {
            Placement::L4(scope, selection) => (scope, selection),
            Placement::Waypoint | Placement::Nowhere => continue,
        };
        let converted = convert_rules(&policy.rules);
        if converted.has_l7 {
            warn(match action {
                Action::Allow => "rules with L7 attributes cannot be enforced without a waypoint: they allow nothing, and the traffic their L4 part matches is denied".into(),
                Action::Deny => "rules with L7 attributes cannot be enforced without a waypoint: their L4 part is enforced, denying more than the L7 rule would".into(),
            });
        }
        let base = Authorization {
            name: policy.name.to_string(),
            namespace: policy.namespace.to_string(),
            scope: scope as i32,
            action: action as i32,
            groups: Vec::new(),
            dry_run: policy.dry_run,
        };
        let mut emitted = Vec::new();
        match action {
            Action::Allow => {
                emitted.push(Authorization {
                    groups: converted.l4_only,
                    ..base.clone()
                });
                if !converted.l7_as_l4.is_empty() {
                    emitted.push(Authorization {
                        name: format!("{}{L7_DENY_SUFFIX}", policy.name),
                        action: Action::Deny as i32,
                        groups: converted.l7_as_l4,
                        ..base
                    });
                }
            }
            Action::Deny => emitted.push(Authorization {
                groups: converted
                    .l4_only
                    .into_iter()
                    .chain(converted.l7_as_l4)
                    .collect(),
                ..base
            }),
        }
        let mut names = Vec::with_capacity(emitted.len());
        for auth in emitted {
            let name = format!("{}/{}", auth.namespace, auth.name);
            out.resources.push(resource(
                mesh_proto::AUTHORIZATION_TYPE_URL,
                name.clone(),
                &auth,
            ));
            names.push(name);
        }
        if let Some(selection) = selection {
            out.selections.0.push((selection, names));
        }
    }
    out
}

/// Decides where a policy is enforced, following Istio: `targetRefs` policies belong to the
/// waypoint of their target; selector policies to the selected pods; others to a namespace,
/// or to the whole mesh in the root namespace. A `targetRefs` policy whose Service has no
/// waypoint is enforced at L4 on the service's pods rather than dropped, so it fails closed.
fn placement(
    state: &DesiredState,
    config: &TranslateConfig,
    policy: &AuthorizationPolicy,
    warn: &mut dyn FnMut(String),
) -> Placement {
    if policy.target_refs.is_empty() {
        return match policy.selector.as_ref().filter(|s| !s.is_empty()) {
            Some(selector) => {
                let all_namespaces = *policy.namespace == *config.root_namespace;
                let selection = PodSelection::Labels {
                    namespace: (!all_namespaces).then(|| policy.namespace.clone()),
                    selector: selector.clone(),
                };
                Placement::L4(Scope::WorkloadSelector, Some(selection))
            }
            None if *policy.namespace == *config.root_namespace => {
                Placement::L4(Scope::Global, None)
            }
            None => Placement::L4(Scope::Namespace, None),
        };
    }
    let mut services_without_waypoint = Vec::new();
    let mut at_waypoint = false;
    for target in &policy.target_refs {
        let name = NamespacedName::new(policy.namespace.clone(), target.name.as_str());
        match target.kind.as_str() {
            "Gateway" if state.waypoint(&name).is_some() => at_waypoint = true,
            "Service" => match state.services.get(&name) {
                Some(svc) if bound_waypoint(state, svc) => at_waypoint = true,
                Some(svc) => {
                    warn(format!(
                        "targets Service {name}, which has no waypoint: enforced at L4 on the service's pods"
                    ));
                    services_without_waypoint.push((svc.namespace.clone(), svc.selector.clone()));
                }
                None => warn(format!("targets Service {name}, which does not exist")),
            },
            kind => warn(format!(
                "targets {kind} {name}, which is not a waypoint Gateway or a Service of the mesh"
            )),
        }
    }
    if !services_without_waypoint.is_empty() {
        // Whether or not the services have pods now: the policy must hold for the pods they
        // get later too.
        let selection = PodSelection::ServicePods(services_without_waypoint);
        Placement::L4(Scope::WorkloadSelector, Some(selection))
    } else if at_waypoint {
        Placement::Waypoint
    } else {
        Placement::Nowhere
    }
}

fn bound_waypoint(state: &DesiredState, svc: &crate::store::Service) -> bool {
    state
        .use_waypoint_for_service(svc)
        .and_then(|name| state.waypoint(&name))
        .is_some_and(|gw| matches!(gw.waypoint_for, WaypointFor::Service | WaypointFor::All))
}

/// A policy's rules as groups: those the tunnel can evaluate as written, and the L4 parts of
/// those that also need L7 attributes.
struct ConvertedRules {
    l4_only: Vec<Group>,
    l7_as_l4: Vec<Group>,
    has_l7: bool,
}

fn convert_rules(rules: &[PolicyRule]) -> ConvertedRules {
    let mut out = ConvertedRules {
        l4_only: Vec::new(),
        l7_as_l4: Vec::new(),
        has_l7: false,
    };
    for rule in rules {
        let (group, needs_l7) = convert_rule(rule);
        if needs_l7 {
            out.has_l7 = true;
            out.l7_as_l4.push(group);
        } else {
            out.l4_only.push(group);
        }
    }
    out
}

/// One rule as a group: an OR over its sources, an OR over its operations, and each condition;
/// all of them must hold. Returns whether L7 attributes had to be left out.
fn convert_rule(rule: &PolicyRule) -> (Group, bool) {
    let mut needs_l7 = false;
    let mut rules = Vec::new();
    if !rule.from.is_empty() {
        let matches = rule
            .from
            .iter()
            .map(|s| source_match(s, &mut needs_l7))
            .collect();
        rules.push(Rules { matches });
    }
    if !rule.to.is_empty() {
        let matches = rule
            .to
            .iter()
            .map(|o| operation_match(o, &mut needs_l7))
            .collect();
        rules.push(Rules { matches });
    }
    for condition in &rule.when {
        match condition_match(condition) {
            Some(m) => rules.push(Rules { matches: vec![m] }),
            None => needs_l7 = true,
        }
    }
    (Group { rules }, needs_l7)
}

fn source_match(source: &PolicySource, needs_l7: &mut bool) -> Match {
    if !source.request_principals.is_empty() || !source.not_request_principals.is_empty() {
        *needs_l7 = true;
    }
    // The tunnel sees the peer address only; it stands for both the direct and the remote peer.
    let ips = |a: &[IpNet], b: &[IpNet]| a.iter().chain(b).map(address).collect();
    Match {
        principals: strings(&source.principals),
        not_principals: strings(&source.not_principals),
        namespaces: strings(&source.namespaces),
        not_namespaces: strings(&source.not_namespaces),
        source_ips: ips(&source.ip_blocks, &source.remote_ip_blocks),
        not_source_ips: ips(&source.not_ip_blocks, &source.not_remote_ip_blocks),
        ..Default::default()
    }
}

fn operation_match(op: &PolicyOperation, needs_l7: &mut bool) -> Match {
    let l7 = [
        &op.hosts,
        &op.not_hosts,
        &op.methods,
        &op.not_methods,
        &op.paths,
        &op.not_paths,
    ];
    if l7.iter().any(|list| !list.is_empty()) {
        *needs_l7 = true;
    }
    Match {
        destination_ports: op.ports.iter().map(|&p| p.into()).collect(),
        not_destination_ports: op.not_ports.iter().map(|&p| p.into()).collect(),
        ..Default::default()
    }
}

/// The L4 conditions Istio defines; `None` for anything that needs a request.
fn condition_match(condition: &PolicyCondition) -> Option<Match> {
    let exact = |values: &[String]| -> Vec<wire::StringMatch> {
        values
            .iter()
            .map(|v| string(&StringMatch::parse(v).unwrap_or(StringMatch::Exact(v.clone()))))
            .collect()
    };
    let nets = |values: &[String]| {
        values
            .iter()
            .filter_map(|v| parse_net(v))
            .map(|n| address(&n))
            .collect()
    };
    let ports = |values: &[String]| {
        values
            .iter()
            .filter_map(|v| v.parse::<u32>().ok())
            .collect()
    };
    let (yes, no) = (&condition.values, &condition.not_values);
    let m = match condition.key.as_str() {
        "source.ip" | "remote.ip" => Match {
            source_ips: nets(yes),
            not_source_ips: nets(no),
            ..Default::default()
        },
        "source.namespace" => Match {
            namespaces: exact(yes),
            not_namespaces: exact(no),
            ..Default::default()
        },
        "source.principal" => Match {
            principals: exact(yes),
            not_principals: exact(no),
            ..Default::default()
        },
        "destination.ip" => Match {
            destination_ips: nets(yes),
            not_destination_ips: nets(no),
            ..Default::default()
        },
        "destination.port" => Match {
            destination_ports: ports(yes),
            not_destination_ports: ports(no),
            ..Default::default()
        },
        _ => return None,
    };
    Some(m)
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn address(net: &IpNet) -> wire::Address {
    wire::Address {
        address: super::workload::ip_bytes(net.network()),
        length: net.prefix_len().into(),
    }
}

fn strings(list: &[StringMatch]) -> Vec<wire::StringMatch> {
    list.iter().map(string).collect()
}

fn string(m: &StringMatch) -> wire::StringMatch {
    let match_type = match m {
        StringMatch::Exact(s) => string_match::MatchType::Exact(s.clone()),
        StringMatch::Prefix(s) => string_match::MatchType::Prefix(s.clone()),
        StringMatch::Suffix(s) => string_match::MatchType::Suffix(s.clone()),
        StringMatch::Any => string_match::MatchType::Presence(()),
    };
    wire::StringMatch {
        match_type: Some(match_type),
    }
}
