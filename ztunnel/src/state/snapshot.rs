//! The immutable view the data path reads: every index built once per update, so a lookup
//! is a hash probe with no lock and no allocation.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_proto::istio::security::{Authorization, Scope};

use super::model::{
    Endpoint, GatewayDestination, GatewayRef, NetworkMode, ServiceInfo, WorkloadInfo,
};
use crate::identity::SpiffeId;

/// A resource with the order in which it was last written: when two records claim the same
/// address, the newer one wins (it is the pod that replaced the other).
#[derive(Clone, Debug)]
pub(crate) struct Stamped<T> {
    pub(crate) value: Arc<T>,
    pub(crate) stamp: u64,
}

/// Everything the proxy knows at one moment. Published whole; never changed in place.
#[derive(Debug, Default)]
pub struct DiscoverySnapshot {
    /// The network this proxy is on; IP lookups without a network use it.
    network: Arc<str>,
    workloads: HashMap<Arc<str>, Arc<WorkloadInfo>>,
    /// network -> IP -> workload.
    workloads_by_ip: HashMap<Arc<str>, HashMap<IpAddr, Arc<WorkloadInfo>>>,
    services: HashMap<Arc<str>, Arc<ServiceInfo>>,
    /// network -> VIP -> service.
    services_by_vip: HashMap<Arc<str>, HashMap<IpAddr, Arc<ServiceInfo>>>,
    /// service key -> endpoints, ordered by workload uid.
    endpoints: HashMap<Arc<str>, Vec<Endpoint>>,
    policies: HashMap<Arc<str>, Arc<Authorization>>,
    /// Mesh-wide policies, by name.
    global_policies: Vec<Arc<Authorization>>,
    /// namespace -> namespace-wide policies, by name.
    namespace_policies: HashMap<Arc<str>, Vec<Arc<Authorization>>>,
}

/// Where to send traffic that must pass a waypoint.
#[derive(Clone, Debug)]
pub struct WaypointTarget {
    /// The waypoint's service, when the reference names one or its address is a VIP.
    pub service: Option<Arc<ServiceInfo>>,
    /// The port the waypoint accepts HBONE on.
    pub hbone_port: u16,
    /// The waypoint's instances, healthy or not, ordered by uid.
    pub instances: Vec<Arc<WorkloadInfo>>,
}

impl WaypointTarget {
    /// The healthy instances as HBONE destinations: first address and HBONE port, and the
    /// identity the instance must present.
    pub fn destinations(&self) -> impl Iterator<Item = (SocketAddr, &SpiffeId)> + '_ {
        self.instances.iter().filter(|w| w.healthy).filter_map(|w| {
            Some((
                SocketAddr::new(*w.addresses.first()?, self.hbone_port),
                &w.identity,
            ))
        })
    }
}

impl DiscoverySnapshot {
    /// Builds every index from the current resources.
    pub(crate) fn build<'a>(
        network: Arc<str>,
        workloads: impl Iterator<Item = &'a Stamped<WorkloadInfo>>,
        services: impl Iterator<Item = &'a Stamped<ServiceInfo>>,
        policies: impl Iterator<Item = &'a Arc<Authorization>>,
    ) -> Self {
        let mut snapshot = Self {
            network,
            ..Self::default()
        };
        snapshot.index_workloads(workloads);
        snapshot.index_services(services);
        snapshot.index_policies(policies);
        snapshot
    }

    fn index_workloads<'a>(&mut self, workloads: impl Iterator<Item = &'a Stamped<WorkloadInfo>>) {
        let mut by_ip: HashMap<Arc<str>, HashMap<IpAddr, &Stamped<WorkloadInfo>>> = HashMap::new();
        for stamped in workloads {
            let workload = &stamped.value;
            self.workloads
                .insert(workload.uid.clone(), workload.clone());
            if workload.network_mode == NetworkMode::HostNetwork {
                continue;
            }
            let network = by_ip.entry(workload.network.clone()).or_default();
            for ip in &workload.addresses {
                newest_wins(network, *ip, stamped);
            }
        }
        self.workloads_by_ip = unstamp(by_ip);
    }

    fn index_services<'a>(&mut self, services: impl Iterator<Item = &'a Stamped<ServiceInfo>>) {
        let mut by_vip: HashMap<Arc<str>, HashMap<IpAddr, &Stamped<ServiceInfo>>> = HashMap::new();
        for stamped in services {
            let service = &stamped.value;
            self.services.insert(service.key.clone(), service.clone());
            for vip in &service.vips {
                newest_wins(
                    by_vip.entry(vip.network.clone()).or_default(),
                    vip.ip,
                    stamped,
                );
            }
        }
        self.services_by_vip = unstamp(by_vip);
        // A workload may name a service that has not arrived (yet); its endpoints wait here
        // and appear as soon as the service does.
        for workload in self.workloads.values() {
            for (key, ports) in &workload.services {
                self.endpoints
                    .entry(key.clone())
                    .or_default()
                    .push(Endpoint {
                        workload: workload.clone(),
                        ports: ports.clone(),
                    });
            }
        }
        for endpoints in self.endpoints.values_mut() {
            endpoints.sort_by(|a, b| a.workload.uid.cmp(&b.workload.uid));
        }
    }

    fn index_policies<'a>(&mut self, policies: impl Iterator<Item = &'a Arc<Authorization>>) {
        for policy in policies {
            let name: Arc<str> = super::convert::policy_key(policy).into();
            match Scope::try_from(policy.scope) {
                Ok(Scope::Global) => self.global_policies.push(policy.clone()),
                Ok(Scope::Namespace) => self
                    .namespace_policies
                    .entry(policy.namespace.as_str().into())
                    .or_default()
                    .push(policy.clone()),
                // Selected ones are found through the workload's list; an unknown scope
                // never gets here (conversion rejects it).
                Ok(Scope::WorkloadSelector) | Err(_) => {}
            }
            self.policies.insert(name, policy.clone());
        }
        let by_name = |a: &Arc<Authorization>, b: &Arc<Authorization>| {
            (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
        };
        self.global_policies.sort_by(by_name);
        for list in self.namespace_policies.values_mut() {
            list.sort_by(by_name);
        }
    }

    /// The workload with this address on the proxy's own network.
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<WorkloadInfo>> {
        self.workload_by_network_ip(&self.network, ip)
    }

    /// The workload with this address on a given network.
    pub fn workload_by_network_ip(&self, network: &str, ip: IpAddr) -> Option<Arc<WorkloadInfo>> {
        self.workloads_by_ip.get(network)?.get(&ip).cloned()
    }

    /// The workload with this uid.
    pub fn workload_by_uid(&self, uid: &str) -> Option<Arc<WorkloadInfo>> {
        self.workloads.get(uid).cloned()
    }

    /// The service with this VIP on the proxy's own network.
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<ServiceInfo>> {
        self.service_by_network_vip(&self.network, ip)
    }

    /// The service with this VIP on a given network.
    pub fn service_by_network_vip(&self, network: &str, ip: IpAddr) -> Option<Arc<ServiceInfo>> {
        self.services_by_vip.get(network)?.get(&ip).cloned()
    }

    /// The service with this key (`namespace/hostname`).
    pub fn service_by_key(&self, key: &str) -> Option<Arc<ServiceInfo>> {
        self.services.get(key).cloned()
    }

    /// The service with this hostname in this namespace.
    pub fn service_by_hostname(&self, namespace: &str, hostname: &str) -> Option<Arc<ServiceInfo>> {
        self.service_by_key(&super::convert::service_key(namespace, hostname))
    }

    /// Every workload backing a service, healthy or not, ordered by uid.
    pub fn endpoints(&self, service: &ServiceInfo) -> &[Endpoint] {
        self.endpoints.get(&service.key).map_or(&[], Vec::as_slice)
    }

    /// The endpoints that serve `service_port` of a service, each with the port to dial.
    pub fn endpoints_on_port<'a>(
        &'a self,
        service: &'a ServiceInfo,
        service_port: u16,
    ) -> impl Iterator<Item = (&'a Arc<WorkloadInfo>, u16)> + 'a {
        self.endpoints(service)
            .iter()
            .filter_map(move |e| Some((&e.workload, e.target_port(service, service_port)?)))
    }

    /// The policy with this name (`namespace/name`).
    pub fn policy(&self, name: &str) -> Option<&Authorization> {
        self.policies.get(name).map(|p| &**p)
    }

    /// The policies that apply to a workload: mesh-wide ones, those of its namespace, and
    /// the selector-scoped ones its record lists. A listed policy that has not arrived is
    /// skipped, as is a listed one whose scope is not a selector (it is already counted).
    pub fn policies_for<'a, 'w>(
        &'a self,
        workload: &'w WorkloadInfo,
    ) -> impl Iterator<Item = &'a Authorization> + use<'a, 'w> {
        let namespace = self
            .namespace_policies
            .get(&workload.namespace)
            .map_or(&[][..], Vec::as_slice);
        let selected = workload
            .authorization_policies
            .iter()
            .filter_map(|name| self.policies.get(name))
            .filter(|p| p.scope == Scope::WorkloadSelector as i32);
        self.global_policies
            .iter()
            .chain(namespace)
            .chain(selected)
            .map(|p| &**p)
    }

    /// Where traffic for a waypoint goes. `None` when the waypoint is unknown: the caller
    /// must fail closed rather than skip the waypoint.
    pub fn resolve_waypoint(&self, waypoint: &GatewayRef) -> Option<WaypointTarget> {
        let endpoints_of = |service: &ServiceInfo| {
            self.endpoints(service)
                .iter()
                .map(|e| e.workload.clone())
                .collect()
        };
        let (service, instances) = match &waypoint.destination {
            GatewayDestination::Service {
                namespace,
                hostname,
            } => {
                let service = self.service_by_hostname(namespace, hostname)?;
                let instances = endpoints_of(&service);
                (Some(service), instances)
            }
            GatewayDestination::Address(address) => {
                match self.workload_by_network_ip(&address.network, address.ip) {
                    Some(workload) => (None, vec![workload]),
                    None => {
                        let service = self.service_by_network_vip(&address.network, address.ip)?;
                        let instances = endpoints_of(&service);
                        (Some(service), instances)
                    }
                }
            }
        };
        Some(WaypointTarget {
            service,
            hbone_port: waypoint.hbone_port,
            instances,
        })
    }

    /// Every workload, in no particular order (for the admin dump).
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<WorkloadInfo>> {
        self.workloads.values()
    }

    /// Every service, in no particular order (for the admin dump).
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceInfo>> {
        self.services.values()
    }

    /// Every policy, in no particular order (for the admin dump).
    pub fn policies(&self) -> impl Iterator<Item = &Authorization> {
        self.policies.values().map(|p| &**p)
    }
}

fn newest_wins<'a, T>(
    index: &mut HashMap<IpAddr, &'a Stamped<T>>,
    ip: IpAddr,
    candidate: &'a Stamped<T>,
) {
    index
        .entry(ip)
        .and_modify(|current| {
            if candidate.stamp > current.stamp {
                *current = candidate;
            }
        })
        .or_insert(candidate);
}

fn unstamp<T>(
    index: HashMap<Arc<str>, HashMap<IpAddr, &Stamped<T>>>,
) -> HashMap<Arc<str>, HashMap<IpAddr, Arc<T>>> {
    index
        .into_iter()
        .map(|(network, ips)| {
            (
                network,
                ips.into_iter()
                    .map(|(ip, s)| (ip, s.value.clone()))
                    .collect(),
            )
        })
        .collect()
}
