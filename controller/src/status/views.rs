//! The desired state as rows for `meshctl get`: one flat, serializable record per object,
//! with what the controller derived (enrollment, VIP, endpoints, waypoint) filled in.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{DesiredState, PolicyAction, TargetPort};
use crate::translate::TranslateConfig;

/// The kinds `meshctl get` lists.
pub const KINDS: [&str; 7] = [
    "namespaces",
    "pods",
    "services",
    "workloads",
    "authorizationpolicies",
    "gateways",
    "httproutes",
];

/// A namespace row.
#[derive(Debug, Serialize)]
pub struct NamespaceRow {
    pub name: String,
    pub enrolled: bool,
    pub waypoint: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A pod row.
#[derive(Debug, Serialize)]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub ip: Option<String>,
    pub phase: Option<String>,
    pub service_account: String,
    pub enrolled: bool,
    pub deployment: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// What the pod runs; the lab's kubelet starts these.
    pub containers: Vec<ContainerRow>,
}

/// One container of a pod.
#[derive(Debug, Serialize)]
pub struct ContainerRow {
    pub name: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<u16>,
}

/// A service row.
#[derive(Debug, Serialize)]
pub struct ServiceRow {
    pub namespace: String,
    pub name: String,
    pub vip: String,
    pub ports: Vec<String>,
    pub endpoints: Vec<String>,
    pub waypoint: Option<String>,
    pub selector: BTreeMap<String, String>,
}

/// A workload row: what the proxies are told about a pod.
#[derive(Debug, Serialize)]
pub struct WorkloadRow {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Option<String>,
    pub node: Option<String>,
    pub identity: String,
    pub protocol: &'static str,
    pub waypoint: Option<String>,
}

/// An authorization policy row.
#[derive(Debug, Serialize)]
pub struct PolicyRow {
    pub namespace: String,
    pub name: String,
    pub action: &'static str,
    pub applies_to: String,
    pub rules: usize,
    pub dry_run: bool,
}

/// A gateway row.
#[derive(Debug, Serialize)]
pub struct GatewayRow {
    pub namespace: String,
    pub name: String,
    pub class: String,
    pub waypoint: bool,
    /// Which traffic a waypoint serves (`istio.io/waypoint-for`).
    pub waypoint_for: &'static str,
    pub listeners: Vec<String>,
}

/// An HTTP route row.
#[derive(Debug, Serialize)]
pub struct HttpRouteRow {
    pub namespace: String,
    pub name: String,
    pub parents: Vec<String>,
    pub hostnames: Vec<String>,
    pub rules: usize,
}

/// The rows of one kind (a name from [`KINDS`]), optionally of one namespace; `None` for an
/// unknown kind.
pub fn rows(
    state: &DesiredState,
    config: &TranslateConfig,
    kind: &str,
    namespace: Option<&str>,
) -> Option<serde_json::Value> {
    let in_ns = |ns: &str| namespace.is_none_or(|wanted| wanted == ns);
    let value = match kind {
        "namespaces" => serde_json::to_value(namespaces(state)).ok()?,
        "pods" => serde_json::to_value(pods(state, &in_ns)).ok()?,
        "services" => serde_json::to_value(services(state, &in_ns)).ok()?,
        "workloads" => serde_json::to_value(workloads(state, config, &in_ns)).ok()?,
        "authorizationpolicies" => serde_json::to_value(policies(state, &in_ns)).ok()?,
        "gateways" => serde_json::to_value(gateways(state, &in_ns)).ok()?,
        "httproutes" => serde_json::to_value(routes(state, &in_ns)).ok()?,
        _ => return None,
    };
    Some(value)
}

fn namespaces(state: &DesiredState) -> Vec<NamespaceRow> {
    let mut names: std::collections::BTreeSet<&str> =
        state.namespaces.keys().map(|n| &**n).collect();
    names.extend(state.pods.values().map(|p| &*p.namespace));
    names.extend(state.services.values().map(|s| &*s.namespace));
    names
        .into_iter()
        .map(|name| {
            let labels = state.namespace_labels(name);
            NamespaceRow {
                name: name.to_string(),
                enrolled: labels.get("istio.io/dataplane-mode").map(String::as_str)
                    == Some("ambient"),
                waypoint: labels.get("istio.io/use-waypoint").cloned(),
                labels: labels.clone(),
            }
        })
        .collect()
}

fn pods(state: &DesiredState, in_ns: &dyn Fn(&str) -> bool) -> Vec<PodRow> {
    state
        .pods
        .values()
        .filter(|p| in_ns(&p.namespace))
        .map(|p| PodRow {
            namespace: p.namespace.to_string(),
            name: p.name.to_string(),
            node: p.node.as_deref().map(str::to_string),
            ip: p.ip.map(|ip| ip.to_string()),
            phase: p.phase.clone(),
            service_account: p.service_account.to_string(),
            enrolled: state.pod_enrolled(p),
            deployment: p.from_deployment.as_deref().map(str::to_string),
            labels: p.labels.clone(),
            containers: p
                .containers
                .iter()
                .map(|c| ContainerRow {
                    name: c.name.clone(),
                    command: c.command.clone(),
                    args: c.args.clone(),
                    env: c
                        .env
                        .iter()
                        .map(|e| (e.name.clone(), e.value.clone()))
                        .collect(),
                    ports: c.ports.iter().map(|p| p.port).collect(),
                })
                .collect(),
        })
        .collect()
}

fn services(state: &DesiredState, in_ns: &dyn Fn(&str) -> bool) -> Vec<ServiceRow> {
    state
        .services
        .values()
        .filter(|s| in_ns(&s.namespace))
        .map(|s| ServiceRow {
            namespace: s.namespace.to_string(),
            name: s.name.to_string(),
            vip: s.vip.to_string(),
            ports: s
                .ports
                .iter()
                .map(|p| {
                    let target = match &p.target_port {
                        TargetPort::Number(n) => n.to_string(),
                        TargetPort::Name(n) => n.clone(),
                    };
                    format!("{}/{}->{target}", p.port, p.protocol)
                })
                .collect(),
            endpoints: state
                .service_endpoints(s)
                .iter()
                .filter_map(|p| p.ip.map(|ip| format!("{}/{ip}", p.name)))
                .collect(),
            waypoint: state.use_waypoint_for_service(s).map(|w| w.to_string()),
            selector: s.selector.clone(),
        })
        .collect()
}

fn workloads(
    state: &DesiredState,
    config: &TranslateConfig,
    in_ns: &dyn Fn(&str) -> bool,
) -> Vec<WorkloadRow> {
    state
        .pods
        .values()
        .filter(|p| in_ns(&p.namespace))
        .map(|p| WorkloadRow {
            namespace: p.namespace.to_string(),
            name: p.name.to_string(),
            uid: config.workload_uid(&p.namespace, &p.name),
            ip: p.ip.map(|ip| ip.to_string()),
            node: p.node.as_deref().map(str::to_string),
            identity: format!(
                "spiffe://{}/ns/{}/sa/{}",
                config.trust_domain, p.namespace, p.service_account
            ),
            protocol: if state.pod_speaks_hbone(p) {
                "HBONE"
            } else {
                "TCP"
            },
            waypoint: state.use_waypoint_for_pod(p).map(|w| w.to_string()),
        })
        .collect()
}

fn policies(state: &DesiredState, in_ns: &dyn Fn(&str) -> bool) -> Vec<PolicyRow> {
    state
        .authorization_policies
        .values()
        .filter(|p| in_ns(&p.namespace))
        .map(|p| PolicyRow {
            namespace: p.namespace.to_string(),
            name: p.name.to_string(),
            action: match p.action {
                PolicyAction::Allow => "ALLOW",
                PolicyAction::Deny => "DENY",
                PolicyAction::Audit => "AUDIT",
                PolicyAction::Custom => "CUSTOM",
            },
            applies_to: if !p.target_refs.is_empty() {
                p.target_refs
                    .iter()
                    .map(|t| format!("{}/{}", t.kind, t.name))
                    .collect::<Vec<_>>()
                    .join(",")
            } else if let Some(selector) = p.selector.as_ref().filter(|s| !s.is_empty()) {
                selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                "namespace".to_string()
            },
            rules: p.rules.len(),
            dry_run: p.dry_run,
        })
        .collect()
}

fn gateways(state: &DesiredState, in_ns: &dyn Fn(&str) -> bool) -> Vec<GatewayRow> {
    state
        .gateways
        .values()
        .filter(|g| in_ns(&g.namespace))
        .map(|g| GatewayRow {
            namespace: g.namespace.to_string(),
            name: g.name.to_string(),
            class: g.class_name.clone(),
            waypoint: g.is_waypoint,
            waypoint_for: g.waypoint_for.as_str(),
            listeners: g
                .listeners
                .iter()
                .map(|l| format!("{}:{}/{}", l.name, l.port, l.protocol))
                .collect(),
        })
        .collect()
}

fn routes(state: &DesiredState, in_ns: &dyn Fn(&str) -> bool) -> Vec<HttpRouteRow> {
    state
        .http_routes
        .values()
        .filter(|r| in_ns(&r.namespace))
        .map(|r| HttpRouteRow {
            namespace: r.namespace.to_string(),
            name: r.name.to_string(),
            parents: r
                .parent_refs
                .iter()
                .map(|p| format!("{}/{}/{}", p.kind, p.namespace, p.name))
                .collect(),
            hostnames: r.hostnames.clone(),
            rules: r.rules.len(),
        })
        .collect()
}
