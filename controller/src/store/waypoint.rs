//! Waypoint deployment: what the mesh runs for every Gateway of class `istio-waypoint`, in the
//! shape Istio's gateway controller deploys it. For a gateway `<gw>` in namespace `<ns>` the
//! loader adds to the desired state:
//!
//! - a Service `<ns>/<gw>` with the HBONE port 15008, selecting
//!   `gateway.networking.k8s.io/gateway-name: <gw>`, its virtual IP allocated and kept like any
//!   other service's. `istio.io/use-waypoint` bindings name the waypoint by this service's
//!   hostname, and ztunnels resolve it through its address record.
//! - a Deployment `<ns>/<gw>` of one replica, so one pod `<gw>-0`, with service account `<gw>`,
//!   running [`WAYPOINT_COMMAND`] with `--name <gw> --namespace <ns>`. The command is the bare
//!   binary name: the lab puts its own binaries first on the pod's `PATH`.
//!
//! The pod is not captured by a ztunnel (`istio.io/dataplane-mode: none`, as Istio's waypoints
//! are): it terminates HBONE on port 15008 itself, the very port an in-pod ztunnel would listen
//! on, and its own outbound HBONE must not be captured and tunnelled a second time. It carries
//! [`TUNNEL_LABEL`]` = http` instead, which makes its workload record HBONE, so ztunnels reach
//! it over mutual TLS all the same.
//!
//! What a user declares wins: a Service, Deployment or Pod with one of these names replaces the
//! generated object, and the Gateway is reported (see the loader).

use std::sync::Arc;

use super::gateway::Gateway;
use super::kube_syntax::Labels;
use super::object::{DATAPLANE_MODE_LABEL, DATAPLANE_MODE_NONE};
use super::service::{ServiceManifest, ServicePort, TargetPort};
use super::workload::{Container, ContainerPort, Deployment, PodTemplate};

/// The label that ties a waypoint's Service and pods to their Gateway, as Gateway API
/// implementations name it.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The label on objects the mesh made for a Gateway, naming who manages them (as Istio does).
pub const GATEWAY_MANAGED_LABEL: &str = "gateway.istio.io/managed";

/// The [`GATEWAY_MANAGED_LABEL`] value of waypoints.
pub const MESH_CONTROLLER: &str = "istio.io-mesh-controller";

/// Istio's label for a workload that speaks HBONE itself, without a ztunnel in front of it.
pub const TUNNEL_LABEL: &str = "networking.istio.io/tunnel";

/// The [`TUNNEL_LABEL`] value meaning HBONE.
pub const TUNNEL_HTTP: &str = "http";

/// The command of the waypoint container: the waypoint binary, found on the pod's `PATH`.
pub const WAYPOINT_COMMAND: &str = "waypoint";

/// The name of the waypoint container.
pub const WAYPOINT_CONTAINER: &str = "waypoint";

/// The name of the HBONE port on the waypoint's Service, as Istio names it.
pub const WAYPOINT_PORT_NAME: &str = "mesh";

/// How many waypoint pods run per Gateway.
pub const WAYPOINT_REPLICAS: u32 = 1;

/// Whether an object was made by the mesh for a waypoint: such objects are the waypoint, so no
/// `istio.io/use-waypoint` applies to them.
pub fn is_waypoint_managed(labels: &Labels) -> bool {
    labels.get(GATEWAY_MANAGED_LABEL).map(String::as_str) == Some(MESH_CONTROLLER)
}

/// Whether a workload terminates HBONE itself ([`TUNNEL_LABEL`]` = http`).
pub fn speaks_hbone_natively(labels: &Labels) -> bool {
    labels.get(TUNNEL_LABEL).map(String::as_str) == Some(TUNNEL_HTTP)
}

/// The Service through which ztunnels reach a waypoint.
pub fn waypoint_service(gateway: &Gateway) -> ServiceManifest {
    let port = ztunnel::hbone::HBONE_PORT;
    ServiceManifest {
        namespace: gateway.namespace.clone(),
        name: gateway.name.clone(),
        labels: object_labels(gateway),
        selector: Labels::from([(GATEWAY_NAME_LABEL.to_string(), gateway.name.to_string())]),
        cluster_ip: None,
        ports: vec![ServicePort {
            name: Some(WAYPOINT_PORT_NAME.to_string()),
            port,
            target_port: TargetPort::Number(port),
            protocol: "TCP".to_string(),
            app_protocol: None,
        }],
    }
}

/// The Deployment that runs a waypoint; its pods are named `<gateway>-<index>`.
pub fn waypoint_deployment(gateway: &Gateway) -> Deployment {
    let mut pod_labels = object_labels(gateway);
    pod_labels.extend([
        (
            DATAPLANE_MODE_LABEL.to_string(),
            DATAPLANE_MODE_NONE.to_string(),
        ),
        (TUNNEL_LABEL.to_string(), TUNNEL_HTTP.to_string()),
        (
            "service.istio.io/canonical-name".to_string(),
            gateway.name.to_string(),
        ),
        (
            "service.istio.io/canonical-revision".to_string(),
            "latest".to_string(),
        ),
    ]);
    let container = Container {
        name: WAYPOINT_CONTAINER.to_string(),
        command: vec![WAYPOINT_COMMAND.to_string()],
        args: vec![
            "--name".to_string(),
            gateway.name.to_string(),
            "--namespace".to_string(),
            gateway.namespace.to_string(),
        ],
        env: Vec::new(),
        ports: vec![ContainerPort {
            name: Some("hbone".to_string()),
            port: ztunnel::hbone::HBONE_PORT,
            protocol: "TCP".to_string(),
        }],
    };
    Deployment {
        namespace: gateway.namespace.clone(),
        name: gateway.name.clone(),
        labels: object_labels(gateway),
        replicas: WAYPOINT_REPLICAS,
        template: PodTemplate {
            labels: pod_labels,
            service_account: Arc::clone(&gateway.name),
            node: None,
            containers: vec![container],
        },
    }
}

/// Labels every object made for a waypoint carries.
fn object_labels(gateway: &Gateway) -> Labels {
    Labels::from([
        (GATEWAY_NAME_LABEL.to_string(), gateway.name.to_string()),
        (
            GATEWAY_MANAGED_LABEL.to_string(),
            MESH_CONTROLLER.to_string(),
        ),
    ])
}
