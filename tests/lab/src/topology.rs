//! The lab's network, built with `ip`: a switch namespace with bridge `br0`, the controller's
//! namespace and one namespace per node on the switch, and one namespace per pod on its node's
//! bridge `cbr0`.
//!
//! Every veth pair is created inside a lab namespace with its peer placed directly into another
//! lab namespace (`ip -n A link add X type veth peer name Y netns B`): no interface of the lab
//! ever exists in the host's namespace, even for an instant, and no interface name can clash
//! with the host's or another lab's.

use std::net::Ipv4Addr;

use crate::addressing::{self, CONTROLLER_IP, LAN};
use crate::command::{self, CommandError};
use crate::name::LabName;
use crate::sysctl::{self, SysctlError};

/// The bridge in the switch namespace.
pub const SWITCH_BRIDGE: &str = "br0";

/// The pods' bridge in every node namespace.
pub const POD_BRIDGE: &str = "cbr0";

/// The name of a namespace's link towards its parent (switch or node).
pub const UPLINK: &str = "eth0";

/// The iptables chain (nat table, every node) holding the service VIP translations.
pub const SERVICES_CHAIN: &str = "LAB-SERVICES";

/// The iptables chain (nat table, every node, POSTROUTING) that masquerades a pod's connection
/// to a VIP that was translated back to the pod itself: without it the pod would get a packet
/// from its own address and drop it.
pub const HAIRPIN_CHAIN: &str = "LAB-HAIRPIN";

/// Why the network could not be built or torn down.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A tool failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A kernel setting could not be written.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// The namespace exists already: a lab of the same name is still there.
    #[error(
        "network namespace {netns} exists already; another lab with this name is up, or a \
         crashed one was not cleaned: run `down` for it first"
    )]
    NamespaceExists {
        /// The namespace.
        netns: String,
    },
}

/// Creates an empty namespace with its loopback up.
pub async fn add_namespace(netns: &str) -> Result<(), TopologyError> {
    if let Err(e) = command::run("ip", &["netns", "add", netns]).await {
        if e.stderr().is_some_and(|s| s.contains("File exists")) {
            return Err(TopologyError::NamespaceExists {
                netns: netns.to_string(),
            });
        }
        return Err(e.into());
    }
    ip(netns, &["link", "set", "lo", "up"]).await
}

/// Runs `ip -n NETNS args...`.
pub async fn ip(netns: &str, args: &[&str]) -> Result<(), TopologyError> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    command::run("ip", &full).await?;
    Ok(())
}

/// Creates a veth pair: `near` inside `near_netns`, attached to `bridge` and up; `eth0` inside
/// `far_netns`, not yet configured.
async fn veth_to_bridge(
    near_netns: &str,
    near: &str,
    bridge: &str,
    far_netns: &str,
) -> Result<(), TopologyError> {
    ip(
        near_netns,
        &[
            "link", "add", near, "type", "veth", "peer", "name", UPLINK, "netns", far_netns,
        ],
    )
    .await?;
    ip(near_netns, &["link", "set", near, "master", bridge, "up"]).await
}

/// When the host has `br_netfilter` loaded, frames crossing a bridge pass iptables too: a
/// service translation would then happen on the bridge and a pod's connection to a VIP served
/// by itself would be bridged back to it and lost. The lab's bridges are plain switches, and
/// these settings are per namespace, so they are turned off in the lab's namespaces only.
const BRIDGE_NETFILTER_OFF: [(&str, &str); 3] = [
    ("net.bridge.bridge-nf-call-iptables", "0"),
    ("net.bridge.bridge-nf-call-ip6tables", "0"),
    ("net.bridge.bridge-nf-call-arptables", "0"),
];

/// Creates a bridge with an optional address and brings it up.
async fn bridge(netns: &str, name: &str, address: Option<String>) -> Result<(), TopologyError> {
    sysctl::set_with(netns, &BRIDGE_NETFILTER_OFF, sysctl::Presence::Optional).await?;
    ip(netns, &["link", "add", name, "type", "bridge"]).await?;
    if let Some(address) = address {
        ip(netns, &["addr", "add", &address, "dev", name]).await?;
    }
    ip(netns, &["link", "set", name, "up"]).await
}

/// Builds the switch, the controller's namespace and `nodes` node namespaces.
pub async fn build(lab: &LabName, nodes: u8) -> Result<(), TopologyError> {
    let switch = lab.switch_netns();
    add_namespace(&switch).await?;
    bridge(&switch, SWITCH_BRIDGE, None).await?;

    let ctl = lab.controller_netns();
    add_namespace(&ctl).await?;
    veth_to_bridge(&switch, "ctl", SWITCH_BRIDGE, &ctl).await?;
    let address = format!("{CONTROLLER_IP}/{}", LAN.prefix_len());
    ip(&ctl, &["addr", "add", &address, "dev", UPLINK]).await?;
    ip(&ctl, &["link", "set", UPLINK, "up"]).await?;

    for index in 1..=nodes {
        build_node(lab, index, nodes).await?;
        // Pods reach the controller as a cluster's pods reach its control plane: a waypoint
        // pod talks to it directly, so the answers must find their way back.
        let cidr = addressing::pod_cidr(index).to_string();
        let via = addressing::node_ip(index).to_string();
        ip(&ctl, &["route", "add", &cidr, "via", &via, "dev", UPLINK]).await?;
    }
    Ok(())
}

async fn build_node(lab: &LabName, index: u8, nodes: u8) -> Result<(), TopologyError> {
    let switch = lab.switch_netns();
    let netns = lab.node_netns(index);
    add_namespace(&netns).await?;
    // Redirects would tell a pod to reach a same-node pod directly over the bridge, which
    // would bypass the node's connection tracking (and with it the VIP translation).
    sysctl::set(
        &netns,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.default.send_redirects", "0"),
        ],
    )
    .await?;
    veth_to_bridge(&switch, &format!("n{index}"), SWITCH_BRIDGE, &netns).await?;
    let address = format!("{}/{}", addressing::node_ip(index), LAN.prefix_len());
    ip(&netns, &["addr", "add", &address, "dev", UPLINK]).await?;
    ip(&netns, &["link", "set", UPLINK, "up"]).await?;
    let gateway = format!("{}/24", addressing::pod_gateway(index));
    bridge(&netns, POD_BRIDGE, Some(gateway)).await?;
    sysctl::set(&netns, &[("net.ipv4.conf.cbr0.send_redirects", "0")]).await?;
    for other in (1..=nodes).filter(|&j| j != index) {
        let cidr = addressing::pod_cidr(other).to_string();
        let via = addressing::node_ip(other).to_string();
        ip(&netns, &["route", "add", &cidr, "via", &via, "dev", UPLINK]).await?;
    }
    install_services_chain(&netns).await
}

/// Creates the (empty) service chains of a node and hooks them in: the services chain into
/// PREROUTING (traffic from pods) and OUTPUT (traffic from the node itself), the hairpin chain
/// into POSTROUTING.
async fn install_services_chain(netns: &str) -> Result<(), TopologyError> {
    let rules = format!(
        "*nat\n:{SERVICES_CHAIN} - [0:0]\n:{HAIRPIN_CHAIN} - [0:0]\n\
         -A PREROUTING -j {SERVICES_CHAIN}\n-A OUTPUT -j {SERVICES_CHAIN}\n\
         -A POSTROUTING -j {HAIRPIN_CHAIN}\nCOMMIT\n"
    );
    command::run_with_input(
        "ip",
        &["netns", "exec", netns, "iptables-restore", "--noflush"],
        Some(&rules),
    )
    .await?;
    Ok(())
}

/// The network of one pod.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    /// The pod's namespace.
    pub netns: String,
    /// The node's namespace.
    pub node_netns: String,
    /// The node's end of the veth pair (on `cbr0`).
    pub node_link: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The pod's gateway (the node's `cbr0`).
    pub gateway: Ipv4Addr,
}

impl PodNetwork {
    /// Creates the pod's namespace, its veth to the node's bridge, its `/32` address and its
    /// routes. On failure the half-built namespace is removed.
    pub async fn create(&self) -> Result<(), TopologyError> {
        add_namespace(&self.netns).await?;
        if let Err(e) = self.configure().await {
            let _ = delete_namespace(&self.netns).await;
            return Err(e);
        }
        Ok(())
    }

    async fn configure(&self) -> Result<(), TopologyError> {
        let netns = self.netns.as_str();
        veth_to_bridge(&self.node_netns, &self.node_link, POD_BRIDGE, netns).await?;
        ip(
            netns,
            &["addr", "add", &format!("{}/32", self.ip), "dev", UPLINK],
        )
        .await?;
        ip(netns, &["link", "set", UPLINK, "up"]).await?;
        let gateway = self.gateway.to_string();
        ip(
            netns,
            &["route", "add", &gateway, "dev", UPLINK, "scope", "link"],
        )
        .await?;
        ip(
            netns,
            &["route", "add", "default", "via", &gateway, "dev", UPLINK],
        )
        .await
    }
}

/// Deletes a namespace (its veth pairs go with it); a namespace that is gone already is fine.
pub async fn delete_namespace(netns: &str) -> Result<(), TopologyError> {
    match command::run("ip", &["netns", "del", netns]).await {
        Ok(_) => Ok(()),
        Err(e) if e.stderr().is_some_and(|s| s.contains("No such file")) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every named network namespace on the machine.
pub async fn list_namespaces() -> Result<Vec<String>, TopologyError> {
    let out = command::run("ip", &["netns", "list"]).await?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}
