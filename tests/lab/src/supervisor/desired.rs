//! What the supervisor reads from the controller's status API: the pods to run and the
//! services to translate, as the rows of `GET /objects/pods` and `GET /objects/services`.
//! Only the fields the lab uses are decoded; the rest is ignored.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use controller::store::object::{DATAPLANE_MODE_LABEL, DATAPLANE_MODE_NONE};
use serde::Deserialize;

use crate::status_client::{StatusClient, StatusClientError};

/// A pod as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DesiredPod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its node: `spec.nodeName`, or where the lab placed it.
    #[serde(default)]
    pub node: Option<String>,
    /// Whether the controller counts it in the mesh.
    #[serde(default)]
    pub enrolled: bool,
    /// Its labels (a waypoint's get credentials from the lab).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What it runs.
    #[serde(default)]
    pub containers: Vec<ContainerSpec>,
}

impl DesiredPod {
    /// Whether the pod opted out of the mesh itself (`istio.io/dataplane-mode: none`, as a
    /// waypoint does): the node agent does not hand it to the ztunnel, as Istio's CNI agent
    /// does not, so it is never captured, not even when its record says HBONE because it
    /// speaks HBONE itself.
    pub fn opted_out(&self) -> bool {
        self.labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) == Some(DATAPLANE_MODE_NONE)
    }

    /// `namespace/name`.
    pub fn key(&self) -> PodKey {
        PodKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A pod's identity: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One container of a pod: the lab runs `command` + `args` (the image is ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ContainerSpec {
    /// Its name.
    pub name: String,
    /// The command.
    #[serde(default)]
    pub command: Vec<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// The command line: `command` + `args`, or `args` alone when there is no command (the
    /// image's entrypoint would come first, and there is no image).
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// A service as the controller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DesiredService {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its virtual IP.
    pub vip: String,
    /// Its ports, as `PORT/PROTOCOL->TARGET`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The pods behind it, as `POD/IP`.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port on the VIP.
    pub port: u16,
    /// `tcp` or `udp`, as iptables spells it.
    pub protocol: String,
    /// The port on the endpoints; `None` for a named target port (not translated by the lab).
    pub target: Option<u16>,
    /// The target as written.
    pub target_text: String,
}

impl DesiredService {
    /// The service's IPv4 VIP, when it has one.
    pub fn vip_v4(&self) -> Option<Ipv4Addr> {
        self.vip.parse().ok()
    }

    /// The ports that parse (`80/TCP->8080`); SCTP and malformed entries are left out.
    pub fn parsed_ports(&self) -> Vec<ServicePort> {
        self.ports.iter().filter_map(|p| parse_port(p)).collect()
    }

    /// The IPv4 addresses of the endpoints.
    pub fn endpoint_ips(&self) -> Vec<Ipv4Addr> {
        self.endpoints
            .iter()
            .filter_map(|e| e.rsplit_once('/')?.1.parse().ok())
            .collect()
    }
}

fn parse_port(text: &str) -> Option<ServicePort> {
    let (front, target) = text.split_once("->")?;
    let (port, protocol) = front.split_once('/')?;
    let protocol = match protocol {
        "TCP" => "tcp",
        "UDP" => "udp",
        _ => return None,
    };
    Some(ServicePort {
        port: port.parse().ok()?,
        protocol: protocol.to_string(),
        target: target.parse().ok(),
        target_text: target.to_string(),
    })
}

/// The pods and services the controller wants, read together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every pod.
    pub pods: Vec<DesiredPod>,
    /// Every service.
    pub services: Vec<DesiredService>,
}

/// Reads the desired pods and services.
pub async fn fetch(client: &StatusClient) -> Result<Desired, StatusClientError> {
    let pods = client.get_json("/objects/pods").await?;
    let services = client.get_json("/objects/services").await?;
    Ok(Desired { pods, services })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_with_unknown_fields_ignored() {
        let pods: Vec<DesiredPod> = serde_json::from_str(
            r#"[{"namespace":"shop","name":"web","node":null,"ip":null,"phase":null,
                 "service_account":"default","enrolled":true,"deployment":null,"labels":{},
                 "containers":[{"name":"app","command":["sleep"],"args":["3600"],
                                "env":{"A":"1"},"ports":[80]}]}]"#,
        )
        .unwrap();
        assert_eq!(pods[0].key().to_string(), "shop/web");
        assert_eq!(pods[0].containers[0].argv(), ["sleep", "3600"]);
        assert!(pods[0].enrolled);
    }

    #[test]
    fn service_ports_and_endpoints_parse() {
        let service = DesiredService {
            namespace: "shop".into(),
            name: "web".into(),
            vip: "10.96.0.10".into(),
            ports: vec![
                "80/TCP->8080".into(),
                "53/UDP->53".into(),
                "81/TCP->http".into(),
                "9/SCTP->9".into(),
            ],
            endpoints: vec!["web-0/10.244.1.2".into(), "web-1/10.244.2.2".into()],
        };
        let ports = service.parsed_ports();
        assert_eq!(ports.len(), 3);
        assert_eq!(
            (ports[0].port, ports[0].protocol.as_str(), ports[0].target),
            (80, "tcp", Some(8080))
        );
        assert_eq!(ports[1].protocol, "udp");
        assert_eq!(ports[2].target, None);
        assert_eq!(service.endpoint_ips().len(), 2);
        assert_eq!(service.vip_v4(), Some(Ipv4Addr::new(10, 96, 0, 10)));
    }
}
