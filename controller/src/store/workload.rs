//! Namespaces and workloads: the store's own flattened Namespace, Pod and Deployment, made from
//! the community Kubernetes types after checking them.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::kube_syntax::{
    Labels, check_dns_label, check_dns_subdomain, label_selector_selects, port_number,
};
use super::object::{NamespacedName, metadata_labels};
use super::rejection::{FieldProblem, Findings, Problem};

/// The service account of a pod whose manifest names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The replica count of a Deployment whose manifest gives none, as in Kubernetes.
pub const DEFAULT_REPLICAS: u32 = 1;

/// A namespace and its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace name.
    pub name: Arc<str>,
    /// Its labels (`istio.io/dataplane-mode`, `istio.io/use-waypoint`, ...).
    pub labels: Labels,
}

/// A pod: written as a manifest or made from a Deployment, placed by its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The pod name.
    pub name: Arc<str>,
    /// The manifest's `metadata.uid`, or one derived from namespace and name (stable).
    pub uid: Arc<str>,
    /// Labels of the pod (a Deployment's pods carry its template's labels).
    pub labels: Labels,
    /// The service account; its identity is `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    pub service_account: Arc<str>,
    /// The node the pod runs on (`spec.nodeName`, or the lab's status record).
    pub node: Option<Arc<str>>,
    /// The pod's IP (`status.podIP`, or the lab's status record).
    pub ip: Option<IpAddr>,
    /// The pod phase from its status (`Running`, ...), when known.
    pub phase: Option<String>,
    /// The containers: what the lab runs in the pod.
    pub containers: Vec<Container>,
    /// The Deployment that made the pod, when it was not written as a Pod.
    pub from_deployment: Option<Arc<str>>,
}

impl Pod {
    /// The pod's namespace and name.
    pub fn namespaced_name(&self) -> NamespacedName {
        NamespacedName::new(self.namespace.clone(), self.name.clone())
    }
}

/// One container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The container name.
    pub name: String,
    /// The command (Kubernetes `command`).
    pub command: Vec<String>,
    /// Its arguments (Kubernetes `args`).
    pub args: Vec<String>,
    /// Environment variables, in manifest order.
    pub env: Vec<EnvVar>,
    /// Declared ports.
    pub ports: Vec<ContainerPort>,
}

/// An environment variable with a literal value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable name.
    pub name: String,
    /// Its value (empty when the manifest gives none).
    pub value: String,
}

/// A port a container declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    /// The port's name, which a service's `targetPort` may refer to.
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// What a Deployment stamps out: the pod part of its template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTemplate {
    /// Labels of every pod.
    pub labels: Labels,
    /// The service account of every pod.
    pub service_account: Arc<str>,
    /// A node fixed in the template (`spec.nodeName`), if any.
    pub node: Option<Arc<str>>,
    /// The containers.
    pub containers: Vec<Container>,
}

/// A Deployment: a pod template and how many pods to make from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The deployment name; its pods are `<name>-0`, `<name>-1`, ...
    pub name: Arc<str>,
    /// Labels of the deployment itself.
    pub labels: Labels,
    /// How many pods.
    pub replicas: u32,
    /// What each pod looks like.
    pub template: PodTemplate,
}

impl Deployment {
    /// The pods of the deployment, named `<deployment>-<index>`, with uids derived from their
    /// names, so that they are the same on every load.
    pub fn pods(&self) -> Vec<Pod> {
        (0..self.replicas)
            .map(|index| {
                let name: Arc<str> = format!("{}-{index}", self.name).into();
                Pod {
                    namespace: self.namespace.clone(),
                    uid: derived_uid(&self.namespace, &name),
                    name,
                    labels: self.template.labels.clone(),
                    service_account: self.template.service_account.clone(),
                    node: self.template.node.clone(),
                    ip: None,
                    phase: None,
                    containers: self.template.containers.clone(),
                    from_deployment: Some(self.name.clone()),
                }
            })
            .collect()
    }
}

/// A uid for a pod whose manifest has none, derived from its namespace and name, shaped like
/// the UUIDs Kubernetes gives out.
pub fn derived_uid(namespace: &str, name: &str) -> Arc<str> {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("Pod/{namespace}/{name}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
    .into()
}

/// Makes the store's Namespace from a checked manifest.
pub(crate) fn namespace_from_manifest(
    manifest: core::Namespace,
    name: Arc<str>,
) -> Result<Namespace, Vec<FieldProblem>> {
    let mut findings = Findings::default();
    let labels = metadata_labels(&manifest.metadata, &mut findings);
    findings.finish(Namespace { name, labels })
}

/// Makes the store's Pod from a checked manifest; node and IP come from `spec.nodeName` and
/// `status.podIP`.
pub(crate) fn pod_from_manifest(
    manifest: core::Pod,
    id: NamespacedName,
) -> Result<Pod, Vec<FieldProblem>> {
    let mut findings = Findings::default();
    let labels = metadata_labels(&manifest.metadata, &mut findings);
    let Some(spec) = manifest.spec else {
        findings.push("spec", Problem::Missing);
        return findings.fail();
    };
    let template = pod_template(spec, labels, "spec", &mut findings);
    let status = manifest.status.unwrap_or_default();
    let ip = status
        .pod_ip
        .filter(|ip| !ip.is_empty())
        .and_then(|ip| findings.take("status.podIP", parse_ip(&ip)));
    let uid = manifest
        .metadata
        .uid
        .filter(|uid| !uid.is_empty())
        .map(Arc::from)
        .unwrap_or_else(|| derived_uid(&id.namespace, &id.name));
    findings.finish(Pod {
        namespace: id.namespace,
        name: id.name,
        uid,
        labels: template.labels,
        service_account: template.service_account,
        node: template.node,
        ip,
        phase: status.phase.filter(|phase| !phase.is_empty()),
        containers: template.containers,
        from_deployment: None,
    })
}

/// Makes the store's Deployment from a checked manifest: the selector must select the
/// template's labels, as the API server requires.
pub(crate) fn deployment_from_manifest(
    manifest: apps::Deployment,
    id: NamespacedName,
) -> Result<Deployment, Vec<FieldProblem>> {
    let mut findings = Findings::default();
    let labels = metadata_labels(&manifest.metadata, &mut findings);
    let Some(spec) = manifest.spec else {
        findings.push("spec", Problem::Missing);
        return findings.fail();
    };
    let replicas = match spec.replicas {
        None => DEFAULT_REPLICAS,
        Some(n) => findings
            .take(
                "spec.replicas",
                u32::try_from(n).map_err(|_| Problem::invalid_number(n, "must be 0 or more")),
            )
            .unwrap_or_default(),
    };
    let template_labels =
        template_labels(spec.template.metadata.unwrap_or_default(), &mut findings);
    if !label_selector_selects(
        &spec.selector,
        &template_labels,
        "spec.selector",
        &mut findings,
    ) {
        findings.push(
            "spec.selector",
            Problem::invalid(
                spec.selector.match_labels.clone().unwrap_or_default(),
                "the selector must select the labels of spec.template.metadata.labels",
            ),
        );
    }
    let Some(pod_spec) = spec.template.spec else {
        findings.push("spec.template.spec", Problem::Missing);
        return findings.fail();
    };
    let template = pod_template(
        pod_spec,
        template_labels,
        "spec.template.spec",
        &mut findings,
    );
    findings.finish(Deployment {
        namespace: id.namespace,
        name: id.name,
        labels,
        replicas,
        template,
    })
}

/// The checked labels of a Deployment's pod template, with problems named under `spec.template`.
fn template_labels(meta: ObjectMeta, findings: &mut Findings) -> Labels {
    let mut template_findings = Findings::default();
    let labels = metadata_labels(&meta, &mut template_findings);
    for problem in template_findings.finish(()).err().unwrap_or_default() {
        findings.push(format!("spec.template.{}", problem.field), problem.problem);
    }
    labels
}

fn pod_template(
    spec: core::PodSpec,
    labels: Labels,
    field: &str,
    findings: &mut Findings,
) -> PodTemplate {
    let service_account = spec
        .service_account_name
        .or(spec.service_account)
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_string());
    findings.take(
        format!("{field}.serviceAccountName"),
        check_dns_subdomain(&service_account),
    );
    let node = spec.node_name.filter(|node| !node.is_empty());
    if let Some(node) = &node {
        findings.take(format!("{field}.nodeName"), check_dns_subdomain(node));
    }
    if spec.containers.is_empty() {
        // The community type reads an absent list as empty; both mean the field is missing.
        findings.push(format!("{field}.containers"), Problem::Missing);
    }
    let containers = spec
        .containers
        .into_iter()
        .enumerate()
        .map(|(i, c)| container(c, &format!("{field}.containers[{i}]"), findings))
        .collect();
    PodTemplate {
        labels,
        service_account: service_account.into(),
        node: node.map(Arc::from),
        containers,
    }
}

fn container(manifest: core::Container, field: &str, findings: &mut Findings) -> Container {
    findings.take(format!("{field}.name"), check_dns_label(&manifest.name));
    let env = manifest
        .env
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, var)| {
            if var.value_from.is_some() {
                findings.push(
                    format!("{field}.env[{i}].valueFrom"),
                    Problem::invalid(
                        &var.name,
                        "valueFrom is not supported by this mesh's lab; give a literal value",
                    ),
                );
            }
            EnvVar {
                name: var.name,
                value: var.value.unwrap_or_default(),
            }
        })
        .collect();
    let ports = manifest
        .ports
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, port)| {
            let at = format!("{field}.ports[{i}]");
            let protocol = port.protocol.unwrap_or_else(|| "TCP".to_string());
            findings.take(format!("{at}.protocol"), check_protocol(&protocol));
            let number = findings.take(
                format!("{at}.containerPort"),
                port_number(port.container_port.into()),
            )?;
            Some(ContainerPort {
                name: port.name,
                port: number,
                protocol,
            })
        })
        .collect();
    Container {
        name: manifest.name,
        command: manifest.command.unwrap_or_default(),
        args: manifest.args.unwrap_or_default(),
        env,
        ports,
    }
}

/// Checks a Kubernetes port protocol.
pub(crate) fn check_protocol(protocol: &str) -> Result<(), Problem> {
    if ["TCP", "UDP", "SCTP"].contains(&protocol) {
        Ok(())
    } else {
        Err(Problem::invalid(protocol, "must be TCP, UDP or SCTP"))
    }
}

/// Parses an IP address written in a manifest or a status record.
pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, Problem> {
    text.parse()
        .map_err(|_| Problem::invalid(text, "not an IPv4 or IPv6 address"))
}

#[cfg(test)]
mod tests;
