//! Outbound routing: where a captured connection goes, decided from its original destination
//! and the discovery snapshot alone (pure, so every branch is tested without sockets).
//!
//! In order: a service VIP goes to the service's waypoint when it has one (authority
//! `VIP:port`), otherwise to one healthy endpoint (HBONE to `endpoint:15008` with authority
//! `endpoint:target_port`, or plain TCP when the endpoint is not in the mesh); a workload IP
//! goes to the workload's waypoint, or straight to it over HBONE; anything else is not in the
//! mesh and is passed through unchanged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rand::Rng;

use crate::hbone::HBONE_PORT;
use crate::identity::SpiffeId;
use crate::state::{
    DiscoverySnapshot, Endpoint, GatewayRef, HealthPolicy, LoadBalancingMode, LocalityScope,
    ServiceInfo, Tunnel, WorkloadInfo,
};

/// Where one outbound connection goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// Through an HBONE tunnel.
    Hbone(HboneRoute),
    /// As plain TCP to this address (a destination outside the mesh, or not enrolled).
    Passthrough {
        /// The address to connect to.
        dst: SocketAddr,
        /// The workload there, when it is known.
        workload: Option<Arc<WorkloadInfo>>,
        /// The service the original destination named, if any.
        service: Option<Arc<ServiceInfo>>,
    },
}

/// An HBONE tunnel to open.
#[derive(Clone, Debug, PartialEq)]
pub struct HboneRoute {
    /// The HBONE server: `endpoint:15008` or a waypoint's.
    pub server: SocketAddr,
    /// The CONNECT target.
    pub authority: SocketAddr,
    /// Identities the server may present.
    pub expected: Vec<SpiffeId>,
    /// The workload at the far end (the endpoint, or the waypoint instance).
    pub workload: Arc<WorkloadInfo>,
    /// The service the original destination named, if any.
    pub service: Option<Arc<ServiceInfo>>,
    /// Whether the tunnel goes to a waypoint.
    pub via_waypoint: bool,
}

/// Why a connection cannot be routed; each is a counted failure reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("service {service} has no port {port}")]
    UnknownServicePort { service: Arc<str>, port: u16 },
    #[error("service {service} has no healthy endpoint for port {port}")]
    NoHealthyEndpoint { service: Arc<str>, port: u16 },
    #[error("waypoint of {target} is not known or has no healthy instance")]
    NoWaypoint { target: String },
}

impl RouteError {
    /// The label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RouteError::UnknownServicePort { .. } => "unknown_service_port",
            RouteError::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            RouteError::NoWaypoint { .. } => "no_waypoint",
        }
    }
}

/// Routes a connection from `source` to `dst`.
pub fn route(
    snapshot: &DiscoverySnapshot,
    source: &WorkloadInfo,
    dst: SocketAddr,
) -> Result<Route, RouteError> {
    if let Some(service) = snapshot.service_by_vip(dst.ip()) {
        return route_service(snapshot, source, service, dst);
    }
    match snapshot.workload_by_ip(dst.ip()) {
        Some(workload) => route_workload(snapshot, source, workload, dst, None),
        None => Ok(Route::Passthrough {
            dst,
            workload: None,
            service: None,
        }),
    }
}

fn route_service(
    snapshot: &DiscoverySnapshot,
    source: &WorkloadInfo,
    service: Arc<ServiceInfo>,
    dst: SocketAddr,
) -> Result<Route, RouteError> {
    if let Some(waypoint) = &service.waypoint
        && !is_waypoint_itself(snapshot, source, waypoint)
    {
        return via_waypoint(
            snapshot,
            waypoint,
            dst,
            Some(service.clone()),
            &service.hostname,
        );
    }
    let port = dst.port();
    if !service.ports.contains_key(&port) {
        return Err(RouteError::UnknownServicePort {
            service: service.hostname.clone(),
            port,
        });
    }
    let endpoint =
        pick_endpoint(snapshot.endpoints(&service), &service, source, port).ok_or_else(|| {
            RouteError::NoHealthyEndpoint {
                service: service.hostname.clone(),
                port,
            }
        })?;
    let (workload, target) = endpoint;
    let Some(ip) = workload.addresses.first().copied() else {
        return Err(RouteError::NoHealthyEndpoint {
            service: service.hostname.clone(),
            port,
        });
    };
    // The endpoint is reached directly: its own waypoint (for workload traffic) does not
    // apply to traffic addressed to the service.
    Ok(direct(workload, SocketAddr::new(ip, target), Some(service)))
}

fn route_workload(
    snapshot: &DiscoverySnapshot,
    source: &WorkloadInfo,
    workload: Arc<WorkloadInfo>,
    dst: SocketAddr,
    service: Option<Arc<ServiceInfo>>,
) -> Result<Route, RouteError> {
    if let Some(waypoint) = &workload.waypoint
        && !is_waypoint_itself(snapshot, source, waypoint)
    {
        return via_waypoint(snapshot, waypoint, dst, service, &workload.name);
    }
    Ok(direct(workload, dst, service))
}

fn direct(
    workload: Arc<WorkloadInfo>,
    dst: SocketAddr,
    service: Option<Arc<ServiceInfo>>,
) -> Route {
    match workload.tunnel {
        Tunnel::Hbone => Route::Hbone(HboneRoute {
            server: SocketAddr::new(dst.ip(), HBONE_PORT),
            authority: dst,
            expected: vec![workload.identity.clone()],
            workload,
            service,
            via_waypoint: false,
        }),
        Tunnel::None => Route::Passthrough {
            dst,
            workload: Some(workload),
            service,
        },
    }
}

fn via_waypoint(
    snapshot: &DiscoverySnapshot,
    waypoint: &GatewayRef,
    dst: SocketAddr,
    service: Option<Arc<ServiceInfo>>,
    target: &str,
) -> Result<Route, RouteError> {
    let no_waypoint = || RouteError::NoWaypoint {
        target: target.to_string(),
    };
    let resolved = snapshot
        .resolve_waypoint(waypoint)
        .ok_or_else(no_waypoint)?;
    let healthy: Vec<&Arc<WorkloadInfo>> = resolved
        .instances
        .iter()
        .filter(|w| w.healthy && !w.addresses.is_empty())
        .collect();
    let instance = pick_weighted(&healthy, |w| w.capacity).ok_or_else(no_waypoint)?;
    let ip = instance.addresses[0];
    Ok(Route::Hbone(HboneRoute {
        server: SocketAddr::new(ip, resolved.hbone_port),
        authority: dst,
        expected: vec![instance.identity.clone()],
        workload: (*instance).clone(),
        service,
        via_waypoint: true,
    }))
}

/// Traffic a waypoint sends on to its backends must not be sent back to the waypoint.
fn is_waypoint_itself(
    snapshot: &DiscoverySnapshot,
    source: &WorkloadInfo,
    waypoint: &GatewayRef,
) -> bool {
    snapshot
        .resolve_waypoint(waypoint)
        .is_some_and(|target| target.instances.iter().any(|w| w.uid == source.uid))
}

/// Picks one endpoint that serves `port`: healthy ones (unless the service allows all),
/// narrowed by the service's locality preference, then weighted by capacity.
fn pick_endpoint<'a>(
    endpoints: &'a [Endpoint],
    service: &ServiceInfo,
    source: &WorkloadInfo,
    port: u16,
) -> Option<(Arc<WorkloadInfo>, u16)> {
    let allow_unhealthy = service.health_policy() == HealthPolicy::AllowAll;
    let candidates: Vec<(&'a Endpoint, u16)> = endpoints
        .iter()
        .filter(|e| allow_unhealthy || e.workload.healthy)
        .filter_map(|e| Some((e, e.target_port(service, port)?)))
        .collect();
    let preferred = prefer_locality(candidates, service, source)?;
    let (endpoint, target) = pick_weighted(&preferred, |(e, _)| e.workload.capacity)?;
    Some((endpoint.workload.clone(), *target))
}

/// Applies the service's routing preference: in failover mode, the endpoints that share the
/// most leading scopes with the source; in strict mode, only those sharing all of them.
fn prefer_locality<'a>(
    candidates: Vec<(&'a Endpoint, u16)>,
    service: &ServiceInfo,
    source: &WorkloadInfo,
) -> Option<Vec<(&'a Endpoint, u16)>> {
    let Some(lb) = service
        .load_balancing
        .as_ref()
        .filter(|lb| !lb.routing_preference.is_empty())
    else {
        return (!candidates.is_empty()).then_some(candidates);
    };
    let scopes = &lb.routing_preference;
    let shared = |w: &WorkloadInfo| {
        scopes
            .iter()
            .take_while(|scope| same_scope(**scope, w, source))
            .count()
    };
    match lb.mode {
        LoadBalancingMode::Strict => {
            let all: Vec<_> = candidates
                .into_iter()
                .filter(|(e, _)| shared(&e.workload) == scopes.len())
                .collect();
            (!all.is_empty()).then_some(all)
        }
        _ => {
            let best = candidates.iter().map(|(e, _)| shared(&e.workload)).max()?;
            Some(
                candidates
                    .into_iter()
                    .filter(|(e, _)| shared(&e.workload) == best)
                    .collect(),
            )
        }
    }
}

fn same_scope(scope: LocalityScope, a: &WorkloadInfo, b: &WorkloadInfo) -> bool {
    match scope {
        LocalityScope::Region => a.locality.region == b.locality.region,
        LocalityScope::Zone => a.locality.zone == b.locality.zone,
        LocalityScope::Subzone => a.locality.subzone == b.locality.subzone,
        LocalityScope::Node => a.node == b.node,
        LocalityScope::Cluster => a.cluster_id == b.cluster_id,
        LocalityScope::Network => a.network == b.network,
    }
}

/// A random choice weighted by `weight` (a zero weight counts as one).
fn pick_weighted<T>(items: &[T], weight: impl Fn(&T) -> u32) -> Option<&T> {
    let total: u64 = items.iter().map(|i| u64::from(weight(i).max(1))).sum();
    if total == 0 {
        return None;
    }
    let mut point = rand::rng().random_range(0..total);
    for item in items {
        let w = u64::from(weight(item).max(1));
        if point < w {
            return Some(item);
        }
        point -= w;
    }
    None
}

/// The IP of a route's destination, for logs and metrics.
pub fn destination_ip(route: &Route) -> IpAddr {
    match route {
        Route::Hbone(h) => h.authority.ip(),
        Route::Passthrough { dst, .. } => dst.ip(),
    }
}

#[cfg(test)]
mod tests;
