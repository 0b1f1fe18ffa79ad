//! Pods and services -> `istio.workload.Address`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_proto::istio::workload::{
    Address, GatewayAddress, NamespacedHostname, NetworkAddress, Port, PortList, Service,
    TunnelProtocol, Workload, WorkloadStatus, WorkloadType, address, gateway_address,
};

use super::authorization::PolicySelections;
use super::{HBONE_PORT, TranslateConfig, Warning, resource};
use crate::store::{self, DesiredState, NamespacedName, Pod, TargetPort, WaypointFor};
use crate::xds::VersionedResource;

/// Pod labels that name the workload's canonical service, most specific first.
const CANONICAL_NAME_LABELS: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];

/// Pod labels that name the workload's canonical revision, most specific first.
const CANONICAL_REVISION_LABELS: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

/// The phase of a pod that may receive traffic.
const RUNNING_PHASE: &str = "Running";

/// The address resource of a pod that has an IP, and what to warn about it.
pub(super) fn pod_address(
    state: &DesiredState,
    config: &TranslateConfig,
    pod: &Pod,
    policies: &PolicySelections,
) -> (Option<VersionedResource>, Vec<Warning>) {
    let mut warnings = Vec::new();
    let Some(ip) = pod.ip else {
        return (None, warnings);
    };
    let workload = workload(state, config, pod, ip, policies, &mut warnings);
    let name = workload.uid.clone();
    let resource = address_resource(name, address::Type::Workload(workload));
    (Some(resource), warnings)
}

/// The address resources of every service.
pub(super) fn service_addresses(
    state: &DesiredState,
    config: &TranslateConfig,
    warnings: &mut Vec<Warning>,
) -> Vec<VersionedResource> {
    state
        .services
        .values()
        .map(|svc| {
            let service = service(state, config, svc, warnings);
            let name = format!("{}/{}", service.namespace, service.hostname);
            address_resource(name, address::Type::Service(service))
        })
        .collect()
}

fn address_resource(name: String, body: address::Type) -> VersionedResource {
    let message = Address { r#type: Some(body) };
    resource(mesh_proto::ADDRESS_TYPE_URL, name, &message)
}

fn workload(
    state: &DesiredState,
    config: &TranslateConfig,
    pod: &Pod,
    ip: IpAddr,
    policies: &PolicySelections,
    warnings: &mut Vec<Warning>,
) -> Workload {
    let tunnel = if state.pod_speaks_hbone(pod) {
        TunnelProtocol::Hbone
    } else {
        TunnelProtocol::None
    };
    let healthy = pod
        .phase
        .as_deref()
        .is_none_or(|phase| phase == RUNNING_PHASE);
    let status = if healthy {
        WorkloadStatus::Healthy
    } else {
        WorkloadStatus::Unhealthy
    };
    let (workload_type, workload_name) = match &pod.from_deployment {
        Some(deployment) => (WorkloadType::Deployment, deployment.to_string()),
        None => (WorkloadType::Pod, pod.name.to_string()),
    };
    let canonical_name = first_label(pod, &CANONICAL_NAME_LABELS).unwrap_or(&workload_name);
    let canonical_revision = first_label(pod, &CANONICAL_REVISION_LABELS).unwrap_or("latest");
    let object = || format!("Pod {}/{}", pod.namespace, pod.name);
    let waypoint = state.use_waypoint_for_pod(pod).and_then(|name| {
        waypoint_address(
            state,
            config,
            &name,
            WaypointFor::Workload,
            &object,
            warnings,
        )
    });
    Workload {
        uid: config.workload_uid(&pod.namespace, &pod.name),
        name: pod.name.to_string(),
        namespace: pod.namespace.to_string(),
        addresses: vec![ip_bytes(ip)],
        tunnel_protocol: tunnel as i32,
        trust_domain: config.trust_domain.to_string(),
        service_account: pod.service_account.to_string(),
        waypoint,
        node: pod.node.as_deref().unwrap_or_default().to_string(),
        canonical_name: canonical_name.to_string(),
        canonical_revision: canonical_revision.to_string(),
        workload_type: workload_type as i32,
        workload_name,
        authorization_policies: policies.of_pod(pod),
        status: status as i32,
        cluster_id: config.cluster_id.to_string(),
        services: services_of(state, config, pod),
        ..Default::default()
    }
}

/// The services a pod backs, with the pod's own target port for each service port. A named
/// target port the pod does not declare is left out, as Kubernetes leaves it out of the
/// endpoints.
fn services_of(
    state: &DesiredState,
    config: &TranslateConfig,
    pod: &Pod,
) -> BTreeMap<String, PortList> {
    state
        .services_of_pod(pod)
        .into_iter()
        .map(|svc| {
            let ports = svc
                .ports
                .iter()
                .filter_map(|p| {
                    let target = match &p.target_port {
                        TargetPort::Number(n) => Some(*n),
                        TargetPort::Name(name) => named_port(pod, name),
                    }?;
                    Some(Port {
                        service_port: p.port.into(),
                        target_port: target.into(),
                    })
                })
                .collect();
            let key = format!(
                "{}/{}",
                svc.namespace,
                config.hostname(&svc.namespace, &svc.name)
            );
            (key, PortList { ports })
        })
        .collect()
}

fn named_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.containers
        .iter()
        .flat_map(|c| &c.ports)
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.port)
}

fn service(
    state: &DesiredState,
    config: &TranslateConfig,
    svc: &store::Service,
    warnings: &mut Vec<Warning>,
) -> Service {
    let object = || format!("Service {}/{}", svc.namespace, svc.name);
    let waypoint = state.use_waypoint_for_service(svc).and_then(|name| {
        waypoint_address(
            state,
            config,
            &name,
            WaypointFor::Service,
            &object,
            warnings,
        )
    });
    Service {
        name: svc.name.to_string(),
        namespace: svc.namespace.to_string(),
        hostname: config.hostname(&svc.namespace, &svc.name),
        addresses: vec![NetworkAddress {
            network: String::new(),
            address: ip_bytes(svc.vip),
        }],
        ports: svc
            .ports
            .iter()
            .map(|p| Port {
                service_port: p.port.into(),
                // A named target port differs per pod: each workload's `services` map has it.
                target_port: match p.target_port {
                    TargetPort::Number(n) => n.into(),
                    TargetPort::Name(_) => 0,
                },
            })
            .collect(),
        waypoint,
        ..Default::default()
    }
}

/// The address of the waypoint a binding names, when it exists and serves this kind of
/// traffic; a warning otherwise. The waypoint is named by its service hostname, which proxies
/// resolve through the same address feed.
fn waypoint_address(
    state: &DesiredState,
    config: &TranslateConfig,
    name: &NamespacedName,
    traffic: WaypointFor,
    object: &dyn Fn() -> String,
    warnings: &mut Vec<Warning>,
) -> Option<GatewayAddress> {
    let Some(gateway) = state.waypoint(name) else {
        warnings.push(Warning {
            object: object(),
            message: format!(
                "istio.io/use-waypoint names {name}, which is not a Gateway of class istio-waypoint; traffic goes direct"
            ),
        });
        return None;
    };
    let serves = matches!(
        (gateway.waypoint_for, traffic),
        (WaypointFor::All, _)
            | (WaypointFor::Service, WaypointFor::Service)
            | (WaypointFor::Workload, WaypointFor::Workload)
    );
    if !serves {
        return None;
    }
    Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: name.namespace.to_string(),
            hostname: config.hostname(&name.namespace, &name.name),
        })),
        hbone_mtls_port: HBONE_PORT,
    })
}

fn first_label<'a>(pod: &'a Pod, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| pod.labels.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Raw bytes of an address, as the workload API carries them (4 or 16).
pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
