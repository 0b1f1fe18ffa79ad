//! Re-evaluation of open connections when discovery changes: a waypoint binding that appears
//! while a direct connection is open closes it (bypass protection), unless protection is off;
//! the waypoint's own connections stay.

use std::sync::Arc;

use super::*;
use crate::identity::SpiffeId;
use crate::proxy::test_snapshot::{pod, service, snapshot};

const REVIEWS: &str = "shop/reviews.shop.svc.cluster.local";
const WAYPOINT: &str = "shop/waypoint.shop.svc.cluster.local";
const REVIEWS_UID: &str = "Kubernetes//Pod/shop/reviews-0";

/// The waypoint `waypoint-0` and an endpoint of `reviews`, which is bound to the waypoint
/// when `bound`.
fn mesh(bound: bool) -> Arc<DiscoverySnapshot> {
    snapshot(
        vec![
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
        ],
        vec![
            service(
                "reviews",
                "10.96.0.10",
                80,
                8080,
                bound.then_some("waypoint"),
            ),
            service("waypoint", "10.96.0.20", 15008, 15008, None),
        ],
    )
}

/// A connection to `reviews-0:8080` from `source` (its identity; `None` for plaintext).
fn to_reviews(source: Option<&str>, src_ip: &str) -> Connection {
    Connection {
        src_identity: source.map(|sa| SpiffeId::new("cluster.local", "shop", sa).unwrap()),
        src_ip: src_ip.parse().unwrap(),
        dst_ip: "10.244.2.5".parse().unwrap(),
        dst_port: 8080,
    }
}

/// A tracker holding a direct HBONE connection from `frontend`, a plaintext one, and one from
/// the waypoint, all to `reviews-0`.
fn open_connections() -> (ConnectionTracker, [TrackedConnection; 3]) {
    let tracker = ConnectionTracker::default();
    let pod_token = CancellationToken::new();
    let uid = || PodUid::parse(REVIEWS_UID).unwrap();
    let held = [
        tracker.track(
            uid(),
            to_reviews(Some("frontend"), "10.244.1.4"),
            &pod_token,
        ),
        tracker.track(uid(), to_reviews(None, "10.244.1.7"), &pod_token),
        tracker.track(
            uid(),
            to_reviews(Some("waypoint-0"), "10.244.2.9"),
            &pod_token,
        ),
    ];
    (tracker, held)
}

#[test]
fn binding_a_service_to_a_waypoint_closes_open_connections_that_bypass_it() {
    let (tracker, [direct, plaintext, via_waypoint]) = open_connections();
    assert_eq!(tracker.reevaluate(&mesh(false), true), vec![]);
    assert!(!direct.cancel.is_cancelled() && !plaintext.cancel.is_cancelled());

    let revoked = tracker.reevaluate(&mesh(true), true);
    assert!(
        direct.cancel.is_cancelled(),
        "the direct connection stays open"
    );
    assert!(
        plaintext.cancel.is_cancelled(),
        "the plaintext one stays open"
    );
    assert!(
        !via_waypoint.cancel.is_cancelled(),
        "the waypoint's own connection was closed"
    );
    let mut revoked = revoked;
    revoked.sort_by_key(|r| r.direction);
    assert_eq!(
        revoked,
        vec![
            Revoked {
                direction: "inbound",
                reason: "bypassed_waypoint"
            },
            Revoked {
                direction: "inbound_plaintext",
                reason: "bypassed_waypoint"
            },
        ]
    );

    // Closed once: the next change does not count them again.
    assert_eq!(tracker.reevaluate(&mesh(true), true), vec![]);
}

#[test]
fn without_bypass_protection_a_binding_closes_nothing() {
    let (tracker, held) = open_connections();
    assert_eq!(tracker.reevaluate(&mesh(true), false), vec![]);
    assert!(held.iter().all(|c| !c.cancel.is_cancelled()));
}

#[test]
fn connections_to_a_workload_that_is_gone_are_closed() {
    let (tracker, held) = open_connections();
    let empty = snapshot(vec![], vec![]);
    let revoked = tracker.reevaluate(&empty, true);
    assert_eq!(revoked.len(), 3, "{revoked:?}");
    assert!(revoked.iter().all(|r| r.reason == "unknown_target"));
    assert!(held.iter().all(|c| c.cancel.is_cancelled()));
}

#[test]
fn a_closed_connection_leaves_the_tracker() {
    let (tracker, held) = open_connections();
    assert_eq!(tracker.len(), 3);
    drop(held);
    assert!(tracker.is_empty());
}
