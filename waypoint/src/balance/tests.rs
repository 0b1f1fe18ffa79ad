use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::istio::workload as wl;
use prost::Message;
use rand::SeedableRng;
use ztunnel::state::{DiscoveryStore, MeshDefaults};
use ztunnel::xds::{NamedResource, ResourceHandler, ResourceUpdate};

use super::*;

/// Candidates for `n` workloads, built through the discovery store.
fn candidates_of(n: u8) -> Vec<Candidate> {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    let mut resources = Vec::new();
    for i in 0..n {
        let workload = wl::Workload {
            uid: format!("w{i}"),
            name: format!("w{i}"),
            namespace: "ns".into(),
            addresses: vec![vec![10, 0, 0, i]],
            ..Default::default()
        };
        resources.push(NamedResource {
            name: format!("w{i}"),
            body: wl::Address {
                r#type: Some(wl::address::Type::Workload(workload)),
            }
            .encode_to_vec(),
        });
    }
    store.apply(
        mesh_proto::ADDRESS_TYPE_URL,
        ResourceUpdate {
            resources,
            removed: Vec::new(),
        },
    );
    let snapshot = store.snapshot();
    (0..n)
        .map(|i| Candidate {
            workload: snapshot.workload_by_uid(&format!("w{i}")).unwrap(),
            address: SocketAddr::from(([10, 0, 0, i], 80)),
        })
        .collect()
}

fn balancer(settings: OutlierSettings) -> Balancer {
    Balancer::new(settings, BalancerMetrics::default())
}

#[test]
fn p2c_picks_the_less_busy_of_two() {
    let candidates = candidates_of(2);
    let balancer = balancer(OutlierSettings::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // Hold three requests on the first endpoint.
    let held: Vec<Picked> = (0..3)
        .map(|_| balancer.pick(&candidates[..1], &[], &mut rng).unwrap())
        .collect();
    for _ in 0..20 {
        let picked = balancer.pick(&candidates, &[], &mut rng).unwrap();
        assert_eq!(picked.candidate.address, candidates[1].address);
    }
    drop(held);
    assert_eq!(balancer.state(&candidates[0].workload.uid).active(), 0);
}

#[test]
fn tried_endpoints_are_avoided_while_others_exist() {
    let candidates = candidates_of(2);
    let balancer = balancer(OutlierSettings::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..20 {
        let picked = balancer
            .pick(&candidates, &[candidates[0].address], &mut rng)
            .unwrap();
        assert_eq!(picked.candidate.address, candidates[1].address);
    }
    let both_tried = [candidates[0].address, candidates[1].address];
    assert!(balancer.pick(&candidates, &both_tried, &mut rng).is_some());
}

#[tokio::test(start_paused = true)]
async fn ejections_double_and_end() {
    let candidates = candidates_of(2);
    let settings = OutlierSettings {
        consecutive_failures: 2,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(25),
    };
    let balancer = balancer(settings);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let fail_twice = |balancer: &Balancer| {
        for _ in 0..2 {
            let picked = balancer
                .pick(
                    &candidates[..1],
                    &[],
                    &mut rand::rngs::StdRng::seed_from_u64(1),
                )
                .unwrap();
            balancer.report(&picked, Outcome::Failure);
        }
    };
    let state = balancer.state(&candidates[0].workload.uid);
    fail_twice(&balancer);
    assert!(state.is_ejected(Instant::now()));
    for _ in 0..10 {
        let picked = balancer.pick(&candidates, &[], &mut rng).unwrap();
        assert_eq!(
            picked.candidate.address, candidates[1].address,
            "the ejected endpoint is skipped"
        );
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        !state.is_ejected(Instant::now()),
        "back after the first ejection"
    );
    fail_twice(&balancer);
    tokio::time::advance(Duration::from_secs(19)).await;
    assert!(
        state.is_ejected(Instant::now()),
        "the second ejection lasts twice as long"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!state.is_ejected(Instant::now()));
    fail_twice(&balancer);
    tokio::time::advance(Duration::from_secs(24)).await;
    assert!(state.is_ejected(Instant::now()), "capped at the maximum");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!state.is_ejected(Instant::now()));
    // A success clears the record: the next ejection is short again.
    let picked = balancer.pick(&candidates[..1], &[], &mut rng).unwrap();
    balancer.report(&picked, Outcome::Success);
    drop(picked);
    fail_twice(&balancer);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(!state.is_ejected(Instant::now()));
}

#[test]
fn when_every_endpoint_is_ejected_one_is_used_anyway() {
    let candidates = candidates_of(1);
    let settings = OutlierSettings {
        consecutive_failures: 1,
        ..OutlierSettings::default()
    };
    let metrics = BalancerMetrics::default();
    let balancer = Balancer::new(settings, metrics.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let picked = balancer.pick(&candidates, &[], &mut rng).unwrap();
    balancer.report(&picked, Outcome::Failure);
    assert!(balancer.pick(&candidates, &[], &mut rng).is_some());
    assert_eq!(metrics.panic_picks.get(), 1);
    assert_eq!(metrics.ejections.get(), 1);
    let _ = Arc::clone(&picked.candidate.workload);
}
