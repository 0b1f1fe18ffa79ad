//! Bypass protection: a workload that a waypoint serves accepts connections only from that
//! waypoint, so that its L7 routing and policy cannot be skipped by dialing the pod's address
//! directly or from outside the mesh.
//!
//! A waypoint serves a workload when the workload itself names one (`waypoint-for: workload`
//! or `all`) or when a service the workload backs does (`waypoint-for: service` or `all`).
//! Clients route traffic addressed to the service through its waypoint, but traffic addressed
//! to the pod's own IP only through the workload's own waypoint (Istio's rule), so a direct
//! dial of an endpoint of a waypoint-bound service arrives here without having passed it:
//! that is the bypass refused. The check is on the peer's verified identity, which must be
//! that of an instance of one of the serving waypoints; a plaintext connection has none and
//! is always refused. A waypoint that cannot be resolved fails closed.
//!
//! `ztunnel --no-bypass-protection` ([`super::ProxySettings::bypass_protection`]) turns the
//! check off.

use std::sync::Arc;

use crate::identity::SpiffeId;
use crate::state::{DiscoverySnapshot, GatewayRef, WorkloadInfo};

/// The failure label of a refused bypass.
pub const BYPASS_REASON: &str = "bypassed_waypoint";

/// Why a connection to a waypoint-served workload is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BypassError {
    /// The connection did not come from a waypoint that serves the workload.
    #[error(
        "{workload} is served by waypoint {waypoints}; a connection from {client} did not come \
         through it"
    )]
    NotFromWaypoint {
        /// The destination workload.
        workload: Arc<str>,
        /// The serving waypoints, by name.
        waypoints: String,
        /// Who connected: its identity, or that it had none.
        client: String,
    },
}

/// Whether a connection from `source` (its verified identity; `None` for plaintext) may reach
/// `workload` without passing a waypoint.
pub fn check(
    snapshot: &DiscoverySnapshot,
    workload: &WorkloadInfo,
    source: Option<&SpiffeId>,
) -> Result<(), BypassError> {
    let serving = serving_waypoints(snapshot, workload);
    if serving.is_empty() {
        return Ok(());
    }
    let from_waypoint = source.is_some_and(|source| {
        serving.iter().any(|waypoint| {
            snapshot
                .resolve_waypoint(waypoint)
                .is_some_and(|target| target.instances.iter().any(|i| i.identity == *source))
        })
    });
    if from_waypoint {
        return Ok(());
    }
    Err(BypassError::NotFromWaypoint {
        workload: workload.name.clone(),
        waypoints: serving.iter().map(describe).collect::<Vec<_>>().join(", "),
        client: source.map_or_else(|| "outside the mesh".to_string(), ToString::to_string),
    })
}

/// The waypoints that serve `workload`: its own, then those of the services it backs.
fn serving_waypoints(snapshot: &DiscoverySnapshot, workload: &WorkloadInfo) -> Vec<GatewayRef> {
    let mut serving: Vec<GatewayRef> = workload.waypoint.iter().cloned().collect();
    for key in workload.services.keys() {
        if let Some(waypoint) = snapshot
            .service_by_key(key)
            .and_then(|s| s.waypoint.clone())
            && !serving.contains(&waypoint)
        {
            serving.push(waypoint);
        }
    }
    serving
}

fn describe(waypoint: &GatewayRef) -> String {
    match &waypoint.destination {
        crate::state::GatewayDestination::Service {
            namespace,
            hostname,
        } => format!("{namespace}/{hostname}"),
        crate::state::GatewayDestination::Address(address) => address.ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::istio::workload::{self as wl, gateway_address};

    use super::*;
    use crate::proxy::test_snapshot::{pod, service, snapshot};

    const REVIEWS: &str = "shop/reviews.shop.svc.cluster.local";
    const RATINGS: &str = "shop/ratings.shop.svc.cluster.local";
    const WAYPOINT: &str = "shop/waypoint.shop.svc.cluster.local";

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::new("cluster.local", "shop", sa).unwrap()
    }

    /// A mesh with a waypoint (`waypoint-0`, identity `sa/waypoint-0`), `reviews` bound to it,
    /// `ratings` not, and one endpoint of each.
    fn mesh(extra: Vec<wl::Workload>) -> Arc<DiscoverySnapshot> {
        let mut workloads = vec![
            pod(
                "waypoint-0",
                "10.244.2.9",
                true,
                "node-2",
                &[(WAYPOINT, 15008, 15008)],
            ),
            pod(
                "reviews-0",
                "10.244.2.5",
                true,
                "node-2",
                &[(REVIEWS, 80, 8080)],
            ),
            pod(
                "ratings-0",
                "10.244.2.6",
                true,
                "node-2",
                &[(RATINGS, 80, 8080)],
            ),
        ];
        workloads.extend(extra);
        snapshot(
            workloads,
            vec![
                service("reviews", "10.96.0.10", 80, 8080, Some("waypoint")),
                service("ratings", "10.96.0.11", 80, 8080, None),
                service("waypoint", "10.96.0.20", 15008, 15008, None),
            ],
        )
    }

    fn workload(snap: &DiscoverySnapshot, name: &str) -> Arc<WorkloadInfo> {
        snap.workload_by_uid(&format!("Kubernetes//Pod/shop/{name}"))
            .unwrap()
    }

    #[test]
    fn an_endpoint_of_a_bound_service_takes_only_its_waypoint() {
        let snap = mesh(vec![]);
        let reviews = workload(&snap, "reviews-0");
        assert_eq!(check(&snap, &reviews, Some(&id("waypoint-0"))), Ok(()));
        let direct = check(&snap, &reviews, Some(&id("frontend"))).unwrap_err();
        assert!(
            direct
                .to_string()
                .contains("shop/waypoint.shop.svc.cluster.local")
                && direct.to_string().contains("sa/frontend"),
            "{direct}"
        );
        let plaintext = check(&snap, &reviews, None).unwrap_err();
        assert!(
            plaintext.to_string().contains("outside the mesh"),
            "{plaintext}"
        );
    }

    #[test]
    fn workloads_no_waypoint_serves_take_anyone() {
        let snap = mesh(vec![]);
        let ratings = workload(&snap, "ratings-0");
        assert_eq!(check(&snap, &ratings, Some(&id("frontend"))), Ok(()));
        assert_eq!(check(&snap, &ratings, None), Ok(()));
    }

    #[test]
    fn a_workload_bound_waypoint_is_required_too() {
        let mut own = pod("legacy-0", "10.244.2.7", true, "node-2", &[]);
        own.waypoint = Some(wl::GatewayAddress {
            destination: Some(gateway_address::Destination::Hostname(
                wl::NamespacedHostname {
                    namespace: "shop".into(),
                    hostname: "waypoint.shop.svc.cluster.local".into(),
                },
            )),
            hbone_mtls_port: 15008,
        });
        let snap = mesh(vec![own]);
        let legacy = workload(&snap, "legacy-0");
        assert!(check(&snap, &legacy, Some(&id("frontend"))).is_err());
        assert_eq!(check(&snap, &legacy, Some(&id("waypoint-0"))), Ok(()));
    }

    #[test]
    fn an_endpoint_of_a_bound_and_an_unbound_service_still_needs_the_waypoint() {
        let both = pod(
            "both-0",
            "10.244.2.8",
            true,
            "node-2",
            &[(REVIEWS, 80, 8080), (RATINGS, 80, 8080)],
        );
        let snap = mesh(vec![both]);
        let both = workload(&snap, "both-0");
        assert!(check(&snap, &both, Some(&id("frontend"))).is_err());
        assert_eq!(check(&snap, &both, Some(&id("waypoint-0"))), Ok(()));
    }

    #[test]
    fn an_unknown_waypoint_fails_closed() {
        let snap = snapshot(
            vec![pod(
                "reviews-0",
                "10.244.2.5",
                true,
                "node-2",
                &[(REVIEWS, 80, 8080)],
            )],
            vec![service("reviews", "10.96.0.10", 80, 8080, Some("waypoint"))],
        );
        let reviews = workload(&snap, "reviews-0");
        assert!(check(&snap, &reviews, Some(&id("waypoint-0"))).is_err());
    }
}
