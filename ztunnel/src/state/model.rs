//! The typed discovery model: what the proxy knows about workloads and services, converted
//! from the wire form (see `convert`) once, when a resource arrives, so that the data path
//! never parses bytes or handles unknown enum values.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::identity::SpiffeId;

/// Service port -> target port. A target port of 0 on a service means "named": every
/// endpoint carries its own number for it.
pub type PortMap = BTreeMap<u16, u16>;

/// An IP address qualified by the network it is meaningful in (empty: the default network).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkIp {
    /// The network name; empty means the default network.
    pub network: Arc<str>,
    /// The address.
    pub ip: IpAddr,
}

/// How peers must carry traffic to a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// Bytes as they are: the workload is not in the mesh.
    None,
    /// HTTP/2 CONNECT over mutual TLS to port 15008.
    Hbone,
}

/// Whether a workload's addresses are its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// The addresses identify this workload.
    Standard,
    /// The workload shares its node's addresses, so they are not indexed: an IP lookup must
    /// not be taken to mean this workload.
    HostNetwork,
}

/// The kind of controller that owns a workload, for telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// A Deployment's pod.
    Deployment,
    /// A CronJob's pod.
    CronJob,
    /// A bare pod.
    Pod,
    /// A Job's pod.
    Job,
}

/// Where a workload runs, for locality-aware load balancing. Empty parts are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    /// The region.
    pub region: Arc<str>,
    /// The zone within the region.
    pub zone: Arc<str>,
    /// The subzone within the zone.
    pub subzone: Arc<str>,
}

/// What a waypoint reference points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayDestination {
    /// A service, resolved through the address feed.
    Service {
        /// The service's namespace.
        namespace: Arc<str>,
        /// The service's hostname.
        hostname: Arc<str>,
    },
    /// A concrete address: a waypoint workload or a service VIP.
    Address(NetworkIp),
}

/// A reference to the waypoint (or other gateway) that traffic must pass through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRef {
    /// The waypoint.
    pub destination: GatewayDestination,
    /// The port the waypoint accepts HBONE on.
    pub hbone_port: u16,
}

/// One endpoint: a pod, a VM, or a hostname behind a gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// Globally unique key, e.g. `Kubernetes//Pod/ns/name`; also the resource name.
    pub uid: Arc<str>,
    /// The pod (or equivalent) name.
    pub name: Arc<str>,
    /// The namespace.
    pub namespace: Arc<str>,
    /// The addresses, all in `network`. Empty for a workload reached by hostname.
    pub addresses: Vec<IpAddr>,
    /// The DNS name of a workload reached by name rather than address.
    pub hostname: Option<Arc<str>>,
    /// The network the addresses belong to; empty means the default network.
    pub network: Arc<str>,
    /// Whether the addresses are indexed.
    pub network_mode: NetworkMode,
    /// How peers must reach the workload.
    pub tunnel: Tunnel,
    /// The identity the workload's certificate carries.
    pub identity: SpiffeId,
    /// The waypoint inbound traffic to the workload must pass, if any.
    pub waypoint: Option<GatewayRef>,
    /// The node the workload runs on.
    pub node: Arc<str>,
    /// Canonical service name, for telemetry.
    pub canonical_name: Arc<str>,
    /// Canonical revision, for telemetry.
    pub canonical_revision: Arc<str>,
    /// The name of the owning controller (or the pod), for telemetry.
    pub workload_name: Arc<str>,
    /// The kind of the owning controller.
    pub workload_kind: WorkloadKind,
    /// The cluster the workload runs in.
    pub cluster_id: Arc<str>,
    /// Names (`namespace/name`) of the selector-scoped policies that select this workload.
    pub authorization_policies: Vec<Arc<str>>,
    /// Whether the workload should receive traffic.
    pub healthy: bool,
    /// Relative weight when balancing across endpoints (1 unless the controller says).
    pub capacity: u32,
    /// Where the workload runs.
    pub locality: Locality,
    /// Services this workload backs, by `namespace/hostname`, with its own target ports.
    pub services: HashMap<Arc<str>, PortMap>,
}

/// Which endpoint property a service prefers to share with the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalityScope {
    /// Same region.
    Region,
    /// Same zone.
    Zone,
    /// Same subzone.
    Subzone,
    /// Same node.
    Node,
    /// Same cluster.
    Cluster,
    /// Same network.
    Network,
}

/// What to do with a service's routing preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalancingMode {
    /// No preference was given: every endpoint is equal.
    Unspecified,
    /// Only endpoints that share every listed scope are eligible.
    Strict,
    /// Prefer endpoints sharing all scopes, then drop scopes from the end, then any.
    Failover,
    /// Connect to the original destination instead of picking an endpoint.
    Passthrough,
}

/// Which endpoints are candidates at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthPolicy {
    /// Only healthy endpoints.
    OnlyHealthy,
    /// Every endpoint, healthy or not.
    AllowAll,
}

/// A service's endpoint selection preferences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancing {
    /// Ordered from most to least important.
    pub routing_preference: Vec<LocalityScope>,
    /// How the preference is applied.
    pub mode: LoadBalancingMode,
    /// Which endpoints are candidates.
    pub health_policy: HealthPolicy,
}

/// A named group of workloads reachable through shared addresses and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The short name, e.g. the Kubernetes Service name.
    pub name: Arc<str>,
    /// The namespace.
    pub namespace: Arc<str>,
    /// The fully qualified hostname.
    pub hostname: Arc<str>,
    /// `namespace/hostname`: the resource name, and the key workloads use in `services`.
    pub key: Arc<str>,
    /// The virtual addresses; empty for a headless service.
    pub vips: Vec<NetworkIp>,
    /// Service port -> default target port (0: named, see each endpoint).
    pub ports: PortMap,
    /// When not empty, the identities a server must present instead of the endpoint's own.
    pub subject_alt_names: Vec<Arc<str>>,
    /// The waypoint traffic to this service passes, if any.
    pub waypoint: Option<GatewayRef>,
    /// Endpoint selection preferences, when the controller gave any.
    pub load_balancing: Option<LoadBalancing>,
}

impl ServiceInfo {
    /// The health policy that applies: only healthy endpoints unless the service says so.
    pub fn health_policy(&self) -> HealthPolicy {
        self.load_balancing
            .as_ref()
            .map_or(HealthPolicy::OnlyHealthy, |lb| lb.health_policy)
    }
}

/// A workload backing a service, with its own port mapping for that service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The workload.
    pub workload: Arc<WorkloadInfo>,
    /// The workload's service port -> target port entries for this service.
    pub ports: PortMap,
}

impl Endpoint {
    /// The port to connect to on this endpoint for `service_port` of `service`: the
    /// endpoint's own mapping first, then the service's default. `None` when the service
    /// has no such port or the port is named and this endpoint does not declare it.
    pub fn target_port(&self, service: &ServiceInfo, service_port: u16) -> Option<u16> {
        let default = *service.ports.get(&service_port)?;
        match self.ports.get(&service_port) {
            Some(&own) if own != 0 => Some(own),
            _ if default != 0 => Some(default),
            _ => None,
        }
    }
}
