//! Routing decisions, table by table, on snapshots built through the real discovery store.

use std::net::{IpAddr, SocketAddr};

use mesh_proto::istio::workload as wl;

use super::*;
use crate::proxy::test_snapshot::{pod, service, snapshot};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const ECHO: &str = "shop/echo.shop.svc.cluster.local";
const WAYPOINT: &str = "shop/waypoint.shop.svc.cluster.local";

fn client() -> wl::Workload {
    pod("client", "10.244.1.2", true, "node-1", &[])
}

#[test]
fn service_vip_goes_over_hbone_to_an_endpoint_with_its_target_port() {
    let snap = snapshot(
        vec![
            client(),
            pod("echo-0", "10.244.2.5", true, "node-2", &[(ECHO, 80, 8080)]),
        ],
        vec![service("echo", "10.96.0.10", 80, 8080, None)],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    let Route::Hbone(r) = route(&snap, &source, addr("10.96.0.10:80")).unwrap() else {
        panic!("expected HBONE")
    };
    assert_eq!(r.server, addr("10.244.2.5:15008"));
    assert_eq!(r.authority, addr("10.244.2.5:8080"));
    assert_eq!(
        r.expected[0].to_string(),
        "spiffe://cluster.local/ns/shop/sa/echo-0"
    );
    assert!(!r.via_waypoint);
    assert_eq!(r.service.unwrap().name.as_ref(), "echo");
}

#[test]
fn endpoints_outside_the_mesh_get_plain_tcp() {
    let snap = snapshot(
        vec![
            client(),
            pod("legacy", "10.244.2.6", false, "node-2", &[(ECHO, 80, 8080)]),
        ],
        vec![service("echo", "10.96.0.10", 80, 8080, None)],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    match route(&snap, &source, addr("10.96.0.10:80")).unwrap() {
        Route::Passthrough { dst, workload, .. } => {
            assert_eq!(dst, addr("10.244.2.6:8080"));
            assert_eq!(workload.unwrap().name.as_ref(), "legacy");
        }
        other => panic!("expected passthrough, got {other:?}"),
    }
}

#[test]
fn a_pod_ip_goes_straight_to_the_pod_and_unknown_addresses_pass_through() {
    let snap = snapshot(
        vec![client(), pod("echo-0", "10.244.2.5", true, "node-2", &[])],
        vec![],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    let Route::Hbone(r) = route(&snap, &source, addr("10.244.2.5:9000")).unwrap() else {
        panic!("expected HBONE")
    };
    assert_eq!(
        (r.server, r.authority),
        (addr("10.244.2.5:15008"), addr("10.244.2.5:9000"))
    );
    assert_eq!(
        route(&snap, &source, addr("172.30.0.2:15012")).unwrap(),
        Route::Passthrough {
            dst: addr("172.30.0.2:15012"),
            workload: None,
            service: None
        }
    );
}

#[test]
fn services_without_healthy_endpoints_or_with_unknown_ports_fail_fast() {
    let snap = snapshot(
        vec![client()],
        vec![service("echo", "10.96.0.10", 80, 8080, None)],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    let err = route(&snap, &source, addr("10.96.0.10:80")).unwrap_err();
    assert_eq!(err.metric_label(), "no_healthy_endpoint");
    let err = route(&snap, &source, addr("10.96.0.10:81")).unwrap_err();
    assert_eq!(err.metric_label(), "unknown_service_port");
}

#[test]
fn unhealthy_endpoints_are_skipped() {
    let mut sick = pod("echo-0", "10.244.2.5", true, "node-2", &[(ECHO, 80, 8080)]);
    sick.status = wl::WorkloadStatus::Unhealthy.into();
    let snap = snapshot(
        vec![
            client(),
            sick,
            pod("echo-1", "10.244.2.7", true, "node-2", &[(ECHO, 80, 8080)]),
        ],
        vec![service("echo", "10.96.0.10", 80, 8080, None)],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    for _ in 0..50 {
        let Route::Hbone(r) = route(&snap, &source, addr("10.96.0.10:80")).unwrap() else {
            panic!()
        };
        assert_eq!(r.authority, addr("10.244.2.7:8080"));
    }
}

#[test]
fn load_is_spread_by_capacity() {
    let mut big = pod("echo-0", "10.244.2.5", true, "node-2", &[(ECHO, 80, 8080)]);
    big.capacity = Some(3);
    let snap = snapshot(
        vec![
            client(),
            big,
            pod("echo-1", "10.244.2.7", true, "node-2", &[(ECHO, 80, 8080)]),
        ],
        vec![service("echo", "10.96.0.10", 80, 8080, None)],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    let picks = (0..4000)
        .filter(|_| {
            let Route::Hbone(r) = route(&snap, &source, addr("10.96.0.10:80")).unwrap() else {
                panic!()
            };
            r.authority.ip() == "10.244.2.5".parse::<IpAddr>().unwrap()
        })
        .count();
    // Expected 3/4 = 3000; the bound is ~10 standard deviations wide.
    assert!(
        (2700..3300).contains(&picks),
        "capacity 3 of 4 got {picks} of 4000"
    );
}

#[test]
fn a_service_with_a_waypoint_goes_to_the_waypoint_with_the_vip_as_authority() {
    let snap = snapshot(
        vec![
            client(),
            pod("echo-0", "10.244.2.5", true, "node-2", &[(ECHO, 80, 8080)]),
            pod(
                "waypoint-0",
                "10.244.2.9",
                true,
                "node-2",
                &[(WAYPOINT, 15008, 15008)],
            ),
        ],
        vec![
            service("echo", "10.96.0.10", 80, 8080, Some("waypoint")),
            service("waypoint", "10.96.0.20", 15008, 15008, None),
        ],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    let Route::Hbone(r) = route(&snap, &source, addr("10.96.0.10:80")).unwrap() else {
        panic!()
    };
    assert!(r.via_waypoint);
    assert_eq!(r.server, addr("10.244.2.9:15008"));
    assert_eq!(r.authority, addr("10.96.0.10:80"));
    assert_eq!(r.expected[0].service_account(), "waypoint-0");

    // The waypoint itself sends on to the endpoint, not back to itself.
    let waypoint = snap.workload_by_ip("10.244.2.9".parse().unwrap()).unwrap();
    let Route::Hbone(r) = route(&snap, &waypoint, addr("10.96.0.10:80")).unwrap() else {
        panic!()
    };
    assert!(!r.via_waypoint);
    assert_eq!(r.authority, addr("10.244.2.5:8080"));
}

#[test]
fn a_missing_waypoint_fails_closed() {
    let snap = snapshot(
        vec![
            client(),
            pod("echo-0", "10.244.2.5", true, "node-2", &[(ECHO, 80, 8080)]),
        ],
        vec![service("echo", "10.96.0.10", 80, 8080, Some("waypoint"))],
    );
    let source = snap.workload_by_ip("10.244.1.2".parse().unwrap()).unwrap();
    let err = route(&snap, &source, addr("10.96.0.10:80")).unwrap_err();
    assert_eq!(err.metric_label(), "no_waypoint");
}
