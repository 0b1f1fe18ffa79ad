//! Wire form -> typed model, with validation. A resource that fails here is rejected as a
//! whole (and NACKed by the xDS client); the rest of its update still applies.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use mesh_proto::istio::security::{self as wire_authz, Authorization};
use mesh_proto::istio::workload::{
    self as wire, GatewayAddress, Port, Service, Workload, gateway_address,
};

use super::model::{
    GatewayDestination, GatewayRef, HealthPolicy, LoadBalancing, LoadBalancingMode, Locality,
    LocalityScope, NetworkIp, NetworkMode, PortMap, ServiceInfo, Tunnel, WorkloadInfo,
    WorkloadKind,
};
use super::{MeshDefaults, ResourceError};
use crate::identity::SpiffeId;

/// The service account of a workload whose record names none, as in Kubernetes.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

impl WorkloadInfo {
    /// Converts and validates a workload record. `defaults` fills in the trust domain when
    /// the record leaves it empty.
    pub fn from_proto(workload: &Workload, defaults: &MeshDefaults) -> Result<Self, ResourceError> {
        require(&workload.uid, "uid")?;
        let trust_domain = non_empty_or(&workload.trust_domain, &defaults.trust_domain);
        let service_account = non_empty_or(&workload.service_account, DEFAULT_SERVICE_ACCOUNT);
        let identity = SpiffeId::new(trust_domain, &workload.namespace, service_account)?;
        let addresses = workload
            .addresses
            .iter()
            .map(|bytes| ip_from_bytes(bytes, "addresses"))
            .collect::<Result<Vec<_>, _>>()?;
        let WorkloadEnums {
            tunnel,
            network_mode,
            workload_kind,
            healthy,
        } = workload_enums(workload)?;
        let services = workload
            .services
            .iter()
            .map(|(key, list)| Ok((Arc::from(key.as_str()), port_map(&list.ports, "services")?)))
            .collect::<Result<HashMap<_, _>, ResourceError>>()?;
        Ok(Self {
            uid: workload.uid.as_str().into(),
            name: workload.name.as_str().into(),
            namespace: workload.namespace.as_str().into(),
            addresses,
            hostname: (!workload.hostname.is_empty()).then(|| workload.hostname.as_str().into()),
            network: workload.network.as_str().into(),
            network_mode,
            tunnel,
            identity,
            waypoint: workload.waypoint.as_ref().map(gateway_ref).transpose()?,
            node: workload.node.as_str().into(),
            canonical_name: workload.canonical_name.as_str().into(),
            canonical_revision: workload.canonical_revision.as_str().into(),
            workload_name: workload.workload_name.as_str().into(),
            workload_kind,
            cluster_id: workload.cluster_id.as_str().into(),
            authorization_policies: workload
                .authorization_policies
                .iter()
                .map(|name| name.as_str().into())
                .collect(),
            healthy,
            capacity: workload.capacity.unwrap_or(1),
            locality: workload.locality.as_ref().map(locality).unwrap_or_default(),
            services,
        })
    }
}

/// The enum fields of a workload, each checked against the values this build knows.
struct WorkloadEnums {
    tunnel: Tunnel,
    network_mode: NetworkMode,
    workload_kind: WorkloadKind,
    healthy: bool,
}

fn workload_enums(workload: &Workload) -> Result<WorkloadEnums, ResourceError> {
    let tunnel = match enum_value(workload.tunnel_protocol, "tunnel_protocol")? {
        wire::TunnelProtocol::None => Tunnel::None,
        wire::TunnelProtocol::Hbone => Tunnel::Hbone,
    };
    let network_mode = match enum_value(workload.network_mode, "network_mode")? {
        wire::NetworkMode::Standard => NetworkMode::Standard,
        wire::NetworkMode::HostNetwork => NetworkMode::HostNetwork,
    };
    let workload_kind = match enum_value(workload.workload_type, "workload_type")? {
        wire::WorkloadType::Deployment => WorkloadKind::Deployment,
        wire::WorkloadType::Cronjob => WorkloadKind::CronJob,
        wire::WorkloadType::Pod => WorkloadKind::Pod,
        wire::WorkloadType::Job => WorkloadKind::Job,
    };
    let healthy = match enum_value(workload.status, "status")? {
        wire::WorkloadStatus::Healthy => true,
        wire::WorkloadStatus::Unhealthy => false,
    };
    Ok(WorkloadEnums {
        tunnel,
        network_mode,
        workload_kind,
        healthy,
    })
}

impl ServiceInfo {
    /// Converts and validates a service record.
    pub fn from_proto(service: &Service) -> Result<Self, ResourceError> {
        require(&service.namespace, "namespace")?;
        require(&service.hostname, "hostname")?;
        let vips = service
            .addresses
            .iter()
            .map(|a| {
                Ok(NetworkIp {
                    network: a.network.as_str().into(),
                    ip: ip_from_bytes(&a.address, "addresses")?,
                })
            })
            .collect::<Result<Vec<_>, ResourceError>>()?;
        Ok(Self {
            name: service.name.as_str().into(),
            namespace: service.namespace.as_str().into(),
            hostname: service.hostname.as_str().into(),
            key: service_key(&service.namespace, &service.hostname).into(),
            vips,
            ports: port_map(&service.ports, "ports")?,
            subject_alt_names: service
                .subject_alt_names
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
            waypoint: service.waypoint.as_ref().map(gateway_ref).transpose()?,
            load_balancing: service
                .load_balancing
                .as_ref()
                .map(load_balancing)
                .transpose()?,
        })
    }
}

/// The resource name (and `services` key) of a service: `namespace/hostname`.
pub fn service_key(namespace: &str, hostname: &str) -> String {
    format!("{namespace}/{hostname}")
}

/// The resource name of a policy: `namespace/name`.
pub fn policy_key(policy: &Authorization) -> String {
    format!("{}/{}", policy.namespace, policy.name)
}

/// Checks that a policy can be evaluated exactly as written: known scope and action, every
/// string match says how to match, every address range is well formed, every port is a port.
/// A policy that fails is rejected rather than evaluated approximately.
pub fn validate_authorization(policy: &Authorization) -> Result<(), ResourceError> {
    require(&policy.name, "name")?;
    require(&policy.namespace, "namespace")?;
    enum_value::<wire_authz::Scope>(policy.scope, "scope")?;
    enum_value::<wire_authz::Action>(policy.action, "action")?;
    for (g, group) in policy.groups.iter().enumerate() {
        for (r, rules) in group.rules.iter().enumerate() {
            for (m, matches) in rules.matches.iter().enumerate() {
                validate_match(matches, &format!("groups[{g}].rules[{r}].matches[{m}]"))?;
            }
        }
    }
    Ok(())
}

fn validate_match(m: &wire_authz::Match, at: &str) -> Result<(), ResourceError> {
    let strings = [
        ("namespaces", &m.namespaces),
        ("not_namespaces", &m.not_namespaces),
        ("principals", &m.principals),
        ("not_principals", &m.not_principals),
    ];
    for (field, list) in strings {
        if list.iter().any(|s| s.match_type.is_none()) {
            return Err(ResourceError::EmptyStringMatch {
                field: format!("{at}.{field}"),
            });
        }
    }
    let ranges = [
        ("source_ips", &m.source_ips),
        ("not_source_ips", &m.not_source_ips),
        ("destination_ips", &m.destination_ips),
        ("not_destination_ips", &m.not_destination_ips),
    ];
    for (field, list) in ranges {
        for range in list {
            let ip = ip_from_bytes(&range.address, field).map_err(|e| e.at(at))?;
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            if range.length > bits {
                let field = format!("{at}.{field}");
                return Err(ResourceError::BadPrefix {
                    field,
                    length: range.length,
                    bits,
                });
            }
        }
    }
    for (field, ports) in [
        ("destination_ports", &m.destination_ports),
        ("not_destination_ports", &m.not_destination_ports),
    ] {
        for &port in ports {
            tcp_port(port, field).map_err(|e| e.at(at))?;
        }
    }
    Ok(())
}

fn gateway_ref(gateway: &GatewayAddress) -> Result<GatewayRef, ResourceError> {
    let destination = match &gateway.destination {
        Some(gateway_address::Destination::Hostname(name)) => {
            require(&name.namespace, "waypoint.hostname.namespace")?;
            require(&name.hostname, "waypoint.hostname.hostname")?;
            GatewayDestination::Service {
                namespace: name.namespace.as_str().into(),
                hostname: name.hostname.as_str().into(),
            }
        }
        Some(gateway_address::Destination::Address(address)) => {
            GatewayDestination::Address(NetworkIp {
                network: address.network.as_str().into(),
                ip: ip_from_bytes(&address.address, "waypoint.address")?,
            })
        }
        None => {
            return Err(ResourceError::MissingField {
                field: "waypoint.destination".into(),
            });
        }
    };
    let hbone_port = match gateway.hbone_mtls_port {
        // Unset on the wire: the mesh's HBONE port.
        0 => crate::hbone::HBONE_PORT,
        port => tcp_port(port, "waypoint.hbone_mtls_port")?,
    };
    Ok(GatewayRef {
        destination,
        hbone_port,
    })
}

fn load_balancing(lb: &wire::LoadBalancing) -> Result<LoadBalancing, ResourceError> {
    use wire::load_balancing::{HealthPolicy as WireHealth, Mode, Scope};
    let mut routing_preference = Vec::with_capacity(lb.routing_preference.len());
    for &value in &lb.routing_preference {
        let scope = match enum_value::<Scope>(value, "load_balancing.routing_preference")? {
            // Says nothing, so it constrains nothing.
            Scope::UnspecifiedScope => continue,
            Scope::Region => LocalityScope::Region,
            Scope::Zone => LocalityScope::Zone,
            Scope::Subzone => LocalityScope::Subzone,
            Scope::Node => LocalityScope::Node,
            Scope::Cluster => LocalityScope::Cluster,
            Scope::Network => LocalityScope::Network,
        };
        routing_preference.push(scope);
    }
    let mode = match enum_value::<Mode>(lb.mode, "load_balancing.mode")? {
        Mode::UnspecifiedMode => LoadBalancingMode::Unspecified,
        Mode::Strict => LoadBalancingMode::Strict,
        Mode::Failover => LoadBalancingMode::Failover,
        Mode::Passthrough => LoadBalancingMode::Passthrough,
    };
    let health_policy =
        match enum_value::<WireHealth>(lb.health_policy, "load_balancing.health_policy")? {
            WireHealth::OnlyHealthy => HealthPolicy::OnlyHealthy,
            WireHealth::AllowAll => HealthPolicy::AllowAll,
        };
    Ok(LoadBalancing {
        routing_preference,
        mode,
        health_policy,
    })
}

fn locality(l: &wire::Locality) -> Locality {
    Locality {
        region: l.region.as_str().into(),
        zone: l.zone.as_str().into(),
        subzone: l.subzone.as_str().into(),
    }
}

fn port_map(ports: &[Port], field: &'static str) -> Result<PortMap, ResourceError> {
    let mut map = PortMap::new();
    for port in ports {
        let service_port = tcp_port(port.service_port, field)?;
        // 0 is allowed here: a named target port resolved per endpoint.
        let target_port = u16::try_from(port.target_port).map_err(|_| ResourceError::BadPort {
            field: field.into(),
            value: port.target_port,
        })?;
        if map.insert(service_port, target_port).is_some() {
            return Err(ResourceError::DuplicatePort {
                field: field.into(),
                port: service_port,
            });
        }
    }
    Ok(map)
}

fn tcp_port(value: u32, field: &str) -> Result<u16, ResourceError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ResourceError::BadPort {
            field: field.into(),
            value,
        }),
    }
}

fn ip_from_bytes(bytes: &[u8], field: &str) -> Result<IpAddr, ResourceError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    Err(ResourceError::BadAddress {
        field: field.into(),
        len: bytes.len(),
    })
}

/// Decodes a protobuf enum, rejecting numbers this build does not know: guessing what an
/// unknown tunnel protocol or policy action means could open a hole.
fn enum_value<E: TryFrom<i32>>(value: i32, field: &str) -> Result<E, ResourceError> {
    E::try_from(value).map_err(|_| ResourceError::UnknownEnum {
        field: field.into(),
        value,
    })
}

fn require(value: &str, field: &str) -> Result<(), ResourceError> {
    if value.is_empty() {
        return Err(ResourceError::MissingField {
            field: field.into(),
        });
    }
    Ok(())
}

fn non_empty_or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}
