//! Gateway API `Gateway`: a waypoint when its class is `istio-waypoint`. Gateways of other
//! classes are kept (so that routes naming them resolve) but flagged as not waypoints.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::kube_syntax::{Labels, check_dns_label, port_number};
use super::object::{NamespacedName, metadata_labels};
use super::rejection::{FieldProblem, Findings, Problem};

/// The gateway class of Istio waypoints.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";

/// Gateway label saying which traffic a waypoint serves: `service` (default), `workload`,
/// `all` or `none`.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";

/// A gateway of the desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The gateway name; `istio.io/use-waypoint` labels refer to it.
    pub name: Arc<str>,
    /// Labels of the gateway.
    pub labels: Labels,
    /// `spec.gatewayClassName`.
    pub class_name: String,
    /// The listeners.
    pub listeners: Vec<Listener>,
    /// Whether the class is `istio-waypoint`: only then does the mesh run it as a waypoint.
    pub is_waypoint: bool,
    /// Which traffic the waypoint serves (`istio.io/waypoint-for`).
    pub waypoint_for: WaypointFor,
}

impl Gateway {
    /// The gateway's namespace and name.
    pub fn namespaced_name(&self) -> NamespacedName {
        NamespacedName::new(self.namespace.clone(), self.name.clone())
    }
}

/// One listener of a gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The listener (section) name.
    pub name: String,
    /// The port.
    pub port: u16,
    /// The protocol as written (`HBONE`, `HTTP`, `TCP`, ...).
    pub protocol: String,
    /// The hostname the listener is bound to, if any.
    pub hostname: Option<String>,
}

/// Which traffic a waypoint serves, as Istio's `istio.io/waypoint-for` label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaypointFor {
    /// Traffic addressed to services (the default).
    Service,
    /// Traffic addressed to workloads directly.
    Workload,
    /// Both.
    All,
    /// Neither.
    None,
}

impl WaypointFor {
    /// The label value that says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Workload => "workload",
            Self::All => "all",
            Self::None => "none",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawGateway {
    metadata: ObjectMeta,
    spec: Option<RawGatewaySpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawGatewaySpec {
    gateway_class_name: Option<String>,
    listeners: Vec<RawListener>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawListener {
    name: Option<String>,
    port: Option<i64>,
    protocol: Option<String>,
    hostname: Option<String>,
}

/// Makes the store's Gateway from a decoded manifest, checking every field.
pub(crate) fn gateway_from_manifest(
    raw: RawGateway,
    id: NamespacedName,
) -> Result<Gateway, Vec<FieldProblem>> {
    let mut findings = Findings::default();
    let labels = metadata_labels(&raw.metadata, &mut findings);
    let waypoint_for = waypoint_for(&labels, &mut findings);
    let Some(spec) = raw.spec else {
        findings.push("spec", Problem::Missing);
        return findings.fail();
    };
    let class_name = spec.gateway_class_name.unwrap_or_default();
    if class_name.is_empty() {
        findings.push("spec.gatewayClassName", Problem::Missing);
    }
    if spec.listeners.is_empty() {
        findings.push(
            "spec.listeners",
            Problem::invalid(
                Vec::<String>::new(),
                "a gateway needs at least one listener",
            ),
        );
    }
    let mut names = BTreeSet::new();
    let listeners = spec
        .listeners
        .into_iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let at = format!("spec.listeners[{i}]");
            let listener = listener(raw, &at, &mut findings)?;
            if !names.insert(listener.name.clone()) {
                findings.push(
                    format!("{at}.name"),
                    Problem::invalid(&listener.name, "another listener has the same name"),
                );
            }
            Some(listener)
        })
        .collect();
    findings.finish(Gateway {
        namespace: id.namespace,
        name: id.name,
        labels,
        is_waypoint: class_name == WAYPOINT_GATEWAY_CLASS,
        class_name,
        listeners,
        waypoint_for,
    })
}

fn listener(raw: RawListener, at: &str, findings: &mut Findings) -> Option<Listener> {
    let name = match raw.name {
        Some(name) => findings.take(format!("{at}.name"), check_dns_label(&name).map(|()| name)),
        None => {
            findings.push(format!("{at}.name"), Problem::Missing);
            None
        }
    };
    let port = match raw.port {
        Some(port) => findings.take(format!("{at}.port"), port_number(port)),
        None => {
            findings.push(format!("{at}.port"), Problem::Missing);
            None
        }
    };
    let protocol = raw.protocol.filter(|p| !p.is_empty());
    if protocol.is_none() {
        findings.push(format!("{at}.protocol"), Problem::Missing);
    }
    Some(Listener {
        name: name?,
        port: port?,
        protocol: protocol?,
        hostname: raw.hostname.filter(|h| !h.is_empty()),
    })
}

fn waypoint_for(labels: &Labels, findings: &mut Findings) -> WaypointFor {
    match labels.get(WAYPOINT_FOR_LABEL).map(String::as_str) {
        None | Some("service") => WaypointFor::Service,
        Some("workload") => WaypointFor::Workload,
        Some("all") => WaypointFor::All,
        Some("none") => WaypointFor::None,
        Some(other) => {
            findings.push(
                format!("metadata.labels[{WAYPOINT_FOR_LABEL:?}]"),
                Problem::invalid(other, "must be service, workload, all or none"),
            );
            WaypointFor::Service
        }
    }
}
