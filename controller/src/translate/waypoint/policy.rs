//! AuthorizationPolicy with `targetRefs` -> `mesh.waypoint.v1.L7Policy`.
//!
//! A policy is the waypoint's when a target is a waypoint Gateway or a Service bound to a
//! waypoint; the L4 translation leaves such targets out and reports the targets that are
//! neither, so nothing is reported twice. A policy with several such targets becomes one
//! resource per target, named `namespace/name:gateway/<name>` or `namespace/name:service/<name>`
//! (a colon never appears in a Kubernetes name); with one target it is `namespace/name`.
//!
//! What a waypoint cannot check fails closed, as at L4: an ALLOW rule that needs it allows
//! nothing (the rule is left out), a DENY rule loses that part and so denies more. The waypoint
//! cannot check request principals (no JWT), IP blocks, and `when` keys other than
//! `request.headers[...]`, `source.principal`, `source.namespace` and `destination.port`; the
//! last three are folded into the rule's sources and operations when that keeps their meaning.

use std::collections::BTreeSet;

use mesh_proto::mesh::waypoint::v1::{self as wire, l7_policy, pattern, policy_target};

use super::super::resource;
use crate::store::{
    AuthorizationPolicy, DesiredState, NamespacedName, PolicyAction, PolicyCondition,
    PolicyOperation, PolicyRule, PolicySource, StringMatch,
};
use crate::translate::{TranslateConfig, Warning};
use crate::xds::VersionedResource;

/// Translates every policy that a waypoint enforces.
pub(super) fn translate(
    state: &DesiredState,
    config: &TranslateConfig,
    warnings: &mut Vec<Warning>,
) -> Vec<VersionedResource> {
    let mut out = Vec::new();
    for policy in state.authorization_policies.values() {
        let action = match policy.action {
            PolicyAction::Allow => l7_policy::Action::Allow,
            PolicyAction::Deny => l7_policy::Action::Deny,
            // Reported by the L4 translation, which sees every policy.
            PolicyAction::Audit | PolicyAction::Custom => continue,
        };
        let targets = targets(state, config, policy);
        if targets.is_empty() {
            continue;
        }
        let object = format!("AuthorizationPolicy {}/{}", policy.namespace, policy.name);
        let mut warn = |message| {
            warnings.push(Warning {
                object: object.clone(),
                message,
            });
        };
        let rules = rules(&policy.rules, action, &mut warn);
        let several = targets.len() > 1;
        for (label, target) in targets {
            let mut name = format!("{}/{}", policy.namespace, policy.name);
            if several {
                name = format!("{name}:{label}");
            }
            let message = wire::L7Policy {
                name: name.clone(),
                namespace: policy.namespace.to_string(),
                target: Some(wire::PolicyTarget { kind: Some(target) }),
                action: action as i32,
                rules: rules.clone(),
                dry_run: policy.dry_run,
            };
            out.push(resource(mesh_proto::L7_POLICY_TYPE_URL, name, &message));
        }
    }
    out
}

/// The targets a waypoint enforces, each with the label that names it among several.
fn targets(
    state: &DesiredState,
    config: &TranslateConfig,
    policy: &AuthorizationPolicy,
) -> Vec<(String, policy_target::Kind)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for target in &policy.target_refs {
        let name = NamespacedName::new(policy.namespace.clone(), target.name.as_str());
        let found = match target.kind.as_str() {
            "Gateway" if state.waypoint(&name).is_some() => Some((
                format!("gateway/{}", name.name),
                policy_target::Kind::Gateway(name.to_string()),
            )),
            "Service" => state
                .services
                .get(&name)
                .filter(|svc| state.service_waypoint(svc).is_some())
                .map(|_| {
                    let hostname = config.hostname(&name.namespace, &name.name);
                    (
                        format!("service/{}", name.name),
                        policy_target::Kind::Service(hostname),
                    )
                }),
            _ => None,
        };
        if let Some((label, kind)) = found
            && seen.insert(label.clone())
        {
            out.push((label, kind));
        }
    }
    out
}

/// The rules a waypoint can enforce, failing closed on what it cannot check.
fn rules(
    rules: &[PolicyRule],
    action: l7_policy::Action,
    warn: &mut dyn FnMut(String),
) -> Vec<wire::PolicyRule> {
    let mut out = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let (converted, unchecked) = convert_rule(rule);
        if unchecked.is_empty() {
            out.push(converted);
            continue;
        }
        let what = unchecked.into_iter().collect::<Vec<_>>().join(", ");
        match action {
            l7_policy::Action::Allow => warn(format!(
                "spec.rules[{i}] uses {what}, which a waypoint cannot check: the rule allows \
                 nothing"
            )),
            l7_policy::Action::Deny => {
                warn(format!(
                    "spec.rules[{i}] uses {what}, which a waypoint cannot check: that part is \
                     left out, so the rule denies more than written"
                ));
                out.push(converted);
            }
        }
    }
    out
}

/// One rule on the wire, and the attributes that had to be left out.
fn convert_rule(rule: &PolicyRule) -> (wire::PolicyRule, BTreeSet<String>) {
    let mut unchecked = BTreeSet::new();
    let mut out = wire::PolicyRule {
        from: rule
            .from
            .iter()
            .map(|s| source(s, &mut unchecked))
            .collect(),
        to: rule.to.iter().map(operation).collect(),
        when: Vec::new(),
    };
    for condition in &rule.when {
        if !add_condition(&mut out, condition) {
            unchecked.insert(format!("when {}", condition.key));
        }
    }
    (out, unchecked)
}

fn source(source: &PolicySource, unchecked: &mut BTreeSet<String>) -> wire::Source {
    let unsupported = [
        ("requestPrincipals", source.request_principals.is_empty()),
        (
            "notRequestPrincipals",
            source.not_request_principals.is_empty(),
        ),
        ("ipBlocks", source.ip_blocks.is_empty()),
        ("notIpBlocks", source.not_ip_blocks.is_empty()),
        ("remoteIpBlocks", source.remote_ip_blocks.is_empty()),
        ("notRemoteIpBlocks", source.not_remote_ip_blocks.is_empty()),
    ];
    for (field, empty) in unsupported {
        if !empty {
            unchecked.insert(format!("source.{field}"));
        }
    }
    wire::Source {
        principals: patterns(&source.principals),
        not_principals: patterns(&source.not_principals),
        namespaces: patterns(&source.namespaces),
        not_namespaces: patterns(&source.not_namespaces),
    }
}

fn operation(op: &PolicyOperation) -> wire::Operation {
    let ports = |list: &[u16]| list.iter().map(|&p| p.into()).collect();
    wire::Operation {
        methods: patterns(&op.methods),
        not_methods: patterns(&op.not_methods),
        paths: patterns(&op.paths),
        not_paths: patterns(&op.not_paths),
        hosts: patterns(&op.hosts),
        not_hosts: patterns(&op.not_hosts),
        ports: ports(&op.ports),
        not_ports: ports(&op.not_ports),
    }
}

/// Adds a `when` condition to a rule; `false` when the waypoint cannot check it.
fn add_condition(rule: &mut wire::PolicyRule, condition: &PolicyCondition) -> bool {
    let (yes, no) = (&condition.values, &condition.not_values);
    let key = condition.key.as_str();
    if let Some(header) = key
        .strip_prefix("request.headers[")
        .and_then(|rest| rest.strip_suffix(']'))
    {
        rule.when.push(wire::HeaderCondition {
            name: header.to_string(),
            values: text_patterns(yes),
            not_values: text_patterns(no),
        });
        return true;
    }
    match key {
        "source.principal" => fold(&mut rule.from, text_patterns(yes), text_patterns(no), |s| {
            (&mut s.principals, &mut s.not_principals)
        }),
        "source.namespace" => fold(&mut rule.from, text_patterns(yes), text_patterns(no), |s| {
            (&mut s.namespaces, &mut s.not_namespaces)
        }),
        "destination.port" => fold(&mut rule.to, ports(yes), ports(no), |o| {
            (&mut o.ports, &mut o.not_ports)
        }),
        _ => false,
    }
}

/// Folds a condition into every alternative of a rule's sources (or operations): its values
/// must hold for each. That is expressible when no alternative already restricts the same
/// field (two lists of alternatives do not intersect on the wire); excluded values always are.
/// An empty list of alternatives gets one that holds only the condition.
fn fold<T: Default, V: Clone>(
    alternatives: &mut Vec<T>,
    yes: Vec<V>,
    no: Vec<V>,
    lists: fn(&mut T) -> (&mut Vec<V>, &mut Vec<V>),
) -> bool {
    if !yes.is_empty() && alternatives.iter_mut().any(|a| !lists(a).0.is_empty()) {
        return false;
    }
    if alternatives.is_empty() {
        alternatives.push(T::default());
    }
    for alternative in alternatives {
        let (list, not_list) = lists(alternative);
        if !yes.is_empty() {
            list.clone_from(&yes);
        }
        not_list.extend(no.iter().cloned());
    }
    true
}

fn ports(values: &[String]) -> Vec<u32> {
    values.iter().filter_map(|v| v.parse().ok()).collect()
}

/// Condition values in Istio's wildcard syntax; one the syntax refuses is taken literally.
fn text_patterns(values: &[String]) -> Vec<wire::Pattern> {
    values
        .iter()
        .map(|v| pattern(&StringMatch::parse(v).unwrap_or_else(|_| StringMatch::Exact(v.clone()))))
        .collect()
}

fn patterns(list: &[StringMatch]) -> Vec<wire::Pattern> {
    list.iter().map(pattern).collect()
}

fn pattern(m: &StringMatch) -> wire::Pattern {
    let kind = match m {
        StringMatch::Exact(s) => pattern::Kind::Exact(s.clone()),
        StringMatch::Prefix(s) => pattern::Kind::Prefix(s.clone()),
        StringMatch::Suffix(s) => pattern::Kind::Suffix(s.clone()),
        StringMatch::Any => pattern::Kind::Any(true),
    };
    wire::Pattern { kind: Some(kind) }
}
