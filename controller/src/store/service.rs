//! Services: the store's own flattened Service, made from the community Kubernetes type. The
//! virtual IP is tied on later, by the allocator, because it depends on every other service.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::kube_syntax::{Labels, check_dns_label, check_labels, port_number};
use super::object::{NamespacedName, metadata_labels};
use super::rejection::{FieldProblem, Findings, Problem};
use super::workload::{check_protocol, parse_ip};

/// A service as written, before it has a virtual IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceManifest {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The service name.
    pub name: Arc<str>,
    /// Labels of the service (`istio.io/use-waypoint`, ...).
    pub labels: Labels,
    /// The pod selector; empty selects no pod.
    pub selector: Labels,
    /// `spec.clusterIP` when the manifest gives one.
    pub cluster_ip: Option<IpAddr>,
    /// The ports.
    pub ports: Vec<ServicePort>,
}

impl ServiceManifest {
    /// The service's namespace and name.
    pub fn namespaced_name(&self) -> NamespacedName {
        NamespacedName::new(self.namespace.clone(), self.name.clone())
    }

    /// The service with its virtual IP.
    pub fn with_vip(self, vip: IpAddr) -> Service {
        Service {
            namespace: self.namespace,
            name: self.name,
            labels: self.labels,
            selector: self.selector,
            vip,
            ports: self.ports,
        }
    }
}

/// A service of the desired state, with its virtual IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The service name.
    pub name: Arc<str>,
    /// Labels of the service (`istio.io/use-waypoint`, ...).
    pub labels: Labels,
    /// The pod selector; empty selects no pod.
    pub selector: Labels,
    /// The virtual IP: `spec.clusterIP`, or one allocated from the service CIDR.
    pub vip: IpAddr,
    /// The ports.
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// The service's namespace and name.
    pub fn namespaced_name(&self) -> NamespacedName {
        NamespacedName::new(self.namespace.clone(), self.name.clone())
    }
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name; required when the service has more than one port.
    pub name: Option<String>,
    /// The port clients connect to on the virtual IP.
    pub port: u16,
    /// Where the traffic goes on the pods.
    pub target_port: TargetPort,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The application protocol (`http`, `kubernetes.io/h2c`, ...), when given.
    pub app_protocol: Option<String>,
}

/// The pod port of a service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// The name of a container port.
    Name(String),
}

/// Makes the store's ServiceManifest from a checked manifest.
pub(crate) fn service_from_manifest(
    manifest: core::Service,
    id: NamespacedName,
) -> Result<ServiceManifest, Vec<FieldProblem>> {
    let mut findings = Findings::default();
    let labels = metadata_labels(&manifest.metadata, &mut findings);
    let spec = manifest.spec.unwrap_or_default();
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer"].contains(&service_type) {
        findings.push(
            "spec.type",
            Problem::invalid(
                service_type,
                "this mesh serves ClusterIP services (NodePort and LoadBalancer are treated as \
                 ClusterIP); ExternalName is not supported",
            ),
        );
    }
    let selector = spec.selector.unwrap_or_default();
    check_labels(&selector, "spec.selector", &mut findings);
    let cluster_ip = cluster_ip(spec.cluster_ip, spec.cluster_ips, &mut findings);
    let ports = service_ports(spec.ports.unwrap_or_default(), &mut findings);
    findings.finish(ServiceManifest {
        namespace: id.namespace,
        name: id.name,
        labels,
        selector,
        cluster_ip,
        ports,
    })
}

fn cluster_ip(
    cluster_ip: Option<String>,
    cluster_ips: Option<Vec<String>>,
    findings: &mut Findings,
) -> Option<IpAddr> {
    let (field, text) = match cluster_ip.filter(|ip| !ip.is_empty()) {
        Some(ip) => ("spec.clusterIP", ip),
        None => ("spec.clusterIPs[0]", cluster_ips?.into_iter().next()?),
    };
    if text == "None" {
        findings.push(
            field,
            Problem::invalid(
                text,
                "headless services are not supported by this mesh; remove the field to get a \
                 virtual IP allocated",
            ),
        );
        return None;
    }
    findings.take(field, parse_ip(&text))
}

fn service_ports(ports: Vec<core::ServicePort>, findings: &mut Findings) -> Vec<ServicePort> {
    let several = ports.len() > 1;
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut result = Vec::with_capacity(ports.len());
    for (i, port) in ports.into_iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = port.name.filter(|name| !name.is_empty());
        match &name {
            Some(name) => {
                findings.take(format!("{at}.name"), check_dns_label(name));
                if !names.insert(name.clone()) {
                    findings.push(
                        format!("{at}.name"),
                        Problem::invalid(name, "another port of this service has the same name"),
                    );
                }
            }
            None if several => findings.push(
                format!("{at}.name"),
                Problem::invalid(
                    "",
                    "every port needs a name when a service has several ports",
                ),
            ),
            None => {}
        }
        let protocol = port.protocol.unwrap_or_else(|| "TCP".to_string());
        findings.take(format!("{at}.protocol"), check_protocol(&protocol));
        let Some(number) = findings.take(format!("{at}.port"), port_number(port.port.into()))
        else {
            continue;
        };
        if !numbers.insert((number, protocol.clone())) {
            findings.push(
                format!("{at}.port"),
                Problem::invalid_number(
                    number,
                    "another port of this service has the same number and protocol",
                ),
            );
        }
        let target_port = match port.target_port {
            None => Some(TargetPort::Number(number)),
            Some(target) => findings.take(format!("{at}.targetPort"), target_port(target)),
        };
        result.push(ServicePort {
            name,
            port: number,
            target_port: target_port.unwrap_or(TargetPort::Number(number)),
            protocol,
            app_protocol: port.app_protocol.filter(|p| !p.is_empty()),
        });
    }
    result
}

fn target_port(target: IntOrString) -> Result<TargetPort, Problem> {
    match target {
        IntOrString::Int(n) => port_number(n.into()).map(TargetPort::Number),
        IntOrString::String(name) => {
            // A numeric string is how some tools write a number.
            if let Ok(n) = name.parse::<i64>() {
                return port_number(n).map(TargetPort::Number);
            }
            let ok = !name.is_empty()
                && name.len() <= 15
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.bytes().any(|b| b.is_ascii_lowercase())
                && !name.starts_with('-')
                && !name.ends_with('-');
            if ok {
                Ok(TargetPort::Name(name))
            } else {
                Err(Problem::invalid(
                    name,
                    "a named target port is at most 15 lower-case letters, digits or '-', with at \
                     least one letter",
                ))
            }
        }
    }
}
