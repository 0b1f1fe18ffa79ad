use std::collections::BTreeMap;

use mesh_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_proto::google::rpc::Status;

use super::*;
use crate::xds::resources::VersionedResource;

const T: &str = "type.googleapis.com/test.Thing";
const U: &str = "type.googleapis.com/test.Other";

fn snapshot(generation: u64, things: &[(&str, i64)]) -> ResourceSnapshot {
    let list = things
        .iter()
        .map(|(name, v)| {
            VersionedResource::encode(
                T,
                *name,
                &prost_types::Duration {
                    seconds: *v,
                    nanos: 0,
                },
            )
        })
        .collect();
    ResourceSnapshot::new(generation, BTreeMap::from([(T.to_string(), list)]))
}

fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// The connection's answers as the proxy receives them.
trait Built {
    fn on_request_built(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &ResourceSnapshot,
    ) -> (Option<Acknowledgement>, Vec<DeltaDiscoveryResponse>);
    fn on_snapshot_built(&mut self, snapshot: &ResourceSnapshot) -> Vec<DeltaDiscoveryResponse>;
}

impl Built for AdsConnection {
    fn on_request_built(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &ResourceSnapshot,
    ) -> (Option<Acknowledgement>, Vec<DeltaDiscoveryResponse>) {
        let (ack, pending) = self.on_request(request, snapshot);
        (
            ack,
            pending.into_iter().map(PendingResponse::build).collect(),
        )
    }

    fn on_snapshot_built(&mut self, snapshot: &ResourceSnapshot) -> Vec<DeltaDiscoveryResponse> {
        self.on_snapshot(snapshot)
            .into_iter()
            .map(PendingResponse::build)
            .collect()
    }
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn wildcard_subscription_gets_everything_then_only_changes() {
    let mut conn = AdsConnection::default();
    let (ack0, first) =
        conn.on_request_built(subscribe(T, &[]), &snapshot(1, &[("a", 1), ("b", 1)]));
    assert_eq!(ack0, None);
    assert_eq!(first.len(), 1);
    assert_eq!(names(&first[0]), ["a", "b"]);
    assert_eq!(first[0].system_version_info, "1");

    let changed = conn.on_snapshot_built(&snapshot(2, &[("a", 1), ("b", 2), ("c", 1)]));
    assert_eq!(changed.len(), 1);
    assert_eq!(names(&changed[0]), ["b", "c"]);
    assert!(changed[0].removed_resources.is_empty());

    let removed = conn.on_snapshot_built(&snapshot(3, &[("b", 2), ("c", 1)]));
    assert_eq!(removed.len(), 1);
    assert!(removed[0].resources.is_empty());
    assert_eq!(removed[0].removed_resources, ["a"]);

    assert!(
        conn.on_snapshot_built(&snapshot(4, &[("b", 2), ("c", 1)]))
            .is_empty(),
        "nothing changed"
    );
}

#[test]
fn first_answer_is_sent_even_when_the_type_is_empty() {
    let mut conn = AdsConnection::default();
    let (_, first) = conn.on_request_built(subscribe(U, &[]), &snapshot(1, &[("a", 1)]));
    assert_eq!(first.len(), 1);
    assert!(first[0].resources.is_empty());
    assert_eq!(first[0].type_url, U);
}

#[test]
fn named_subscriptions_get_only_their_names() {
    let mut conn = AdsConnection::default();
    let snap = snapshot(1, &[("a", 1), ("b", 1), ("c", 1)]);
    let (_, first) = conn.on_request_built(subscribe(T, &["b"]), &snap);
    assert_eq!(names(&first[0]), ["b"]);
    let (_, more) = conn.on_request_built(subscribe(T, &["c"]), &snap);
    assert_eq!(names(&more[0]), ["c"]);
    let changed = conn.on_snapshot_built(&snapshot(2, &[("a", 9), ("b", 1), ("c", 1)]));
    assert!(changed.is_empty(), "a is not subscribed");
    let unsub = DeltaDiscoveryRequest {
        type_url: T.to_string(),
        resource_names_unsubscribe: vec!["c".to_string()],
        ..Default::default()
    };
    conn.on_request_built(unsub, &snap);
    assert!(
        conn.on_snapshot_built(&snapshot(3, &[("b", 1), ("c", 5)]))
            .is_empty()
    );
}

#[test]
fn reconnect_with_initial_versions_sends_only_the_difference() {
    let snap = snapshot(7, &[("a", 1), ("b", 2)]);
    let version_of = |name: &str| snap.of_type(T).unwrap()[name].version.to_string();
    let mut conn = AdsConnection::default();
    let request = DeltaDiscoveryRequest {
        type_url: T.to_string(),
        initial_resource_versions: [
            ("a".to_string(), version_of("a")),
            ("b".to_string(), "stale".to_string()),
            ("gone".to_string(), "x".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let (_, first) = conn.on_request_built(request, &snap);
    assert_eq!(first.len(), 1);
    assert_eq!(names(&first[0]), ["b"]);
    assert_eq!(first[0].removed_resources, ["gone"]);
}

#[test]
fn acks_and_nacks_are_tracked_per_type() {
    let mut conn = AdsConnection::default();
    let (_, first) = conn.on_request_built(subscribe(T, &[]), &snapshot(1, &[("a", 1)]));
    let (got, none) = conn.on_request_built(ack(T, &first[0].nonce), &snapshot(1, &[("a", 1)]));
    assert!(none.is_empty(), "an ACK alone asks for nothing");
    assert_eq!(
        got,
        Some(Acknowledgement::Ack {
            type_url: T.into(),
            version: 1
        })
    );
    assert_eq!(conn.status()[T].acked_version, Some(1));

    let pushed = conn.on_snapshot_built(&snapshot(2, &[("a", 2)]));
    let nack = DeltaDiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: "workload a: bad address".into(),
            ..Default::default()
        }),
        ..ack(T, &pushed[0].nonce)
    };
    let (got, _) = conn.on_request_built(nack, &snapshot(2, &[("a", 2)]));
    assert!(matches!(
        got,
        Some(Acknowledgement::Nack { version: 2, .. })
    ));
    let status = &conn.status()[T];
    assert_eq!(
        status.acked_version,
        Some(1),
        "a NACK does not move the acked version"
    );
    assert_eq!(status.last_nack.as_deref(), Some("workload a: bad address"));
    assert_eq!(status.nacks, 1);
    assert_eq!(status.pending, 0);
}

#[test]
fn unknown_nonces_acknowledge_nothing() {
    let mut conn = AdsConnection::default();
    conn.on_request_built(subscribe(T, &[]), &snapshot(1, &[("a", 1)]));
    let (got, _) = conn.on_request_built(ack(T, "forged"), &snapshot(1, &[("a", 1)]));
    assert_eq!(got, None);
    assert_eq!(conn.status()[T].acked_version, None);
}

#[test]
fn large_first_syncs_are_split_under_the_message_limit() {
    let big = "x".repeat(4096);
    let list = (0..600)
        .map(|i| {
            VersionedResource::encode(
                T,
                format!("r{i:04}"),
                &mesh_proto::google::rpc::Status {
                    code: i,
                    message: big.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    let snap = ResourceSnapshot::new(1, BTreeMap::from([(T.to_string(), list)]));
    let mut conn = AdsConnection::default();
    let (_, responses) = conn.on_request_built(subscribe(T, &[]), &snap);
    assert!(
        responses.len() >= 3,
        "600 x 4 KiB must take several responses"
    );
    let total: usize = responses.iter().map(|r| r.resources.len()).sum();
    assert_eq!(total, 600);
    for r in &responses {
        let bytes: usize = r
            .resources
            .iter()
            .map(|x| x.resource.as_ref().unwrap().value.len())
            .sum();
        assert!(bytes <= MAX_RESPONSE_BYTES + 8192);
    }
    let nonces: std::collections::HashSet<_> = responses.iter().map(|r| &r.nonce).collect();
    assert_eq!(
        nonces.len(),
        responses.len(),
        "every response has its own nonce"
    );
}

/// A snapshot as the publisher makes it: it knows its changes since `previous`.
fn published(
    previous: &ResourceSnapshot,
    generation: u64,
    things: &[(&str, i64)],
) -> ResourceSnapshot {
    snapshot(generation, things).with_changes_since(previous)
}

#[test]
fn published_changes_give_what_a_full_comparison_gives() {
    let steps: [&[(&str, i64)]; 5] = [
        &[("a", 1), ("b", 1), ("c", 1)],
        &[("a", 1), ("b", 2), ("c", 1), ("d", 1)],
        &[("b", 2), ("d", 1)],
        &[("b", 2), ("d", 1)],
        &[("a", 3), ("d", 2), ("e", 1)],
    ];
    // One proxy sees publisher snapshots (with changes), the other the same contents without.
    let mut fast = AdsConnection::default();
    let mut full = AdsConnection::default();
    let mut previous = snapshot(1, steps[0]);
    fast.on_request_built(subscribe(T, &["a", "b", "d"]), &previous);
    full.on_request_built(subscribe(T, &["a", "b", "d"]), &previous);
    for (i, step) in steps.iter().enumerate().skip(1) {
        let generation = i as u64 + 1;
        let next = published(&previous, generation, step);
        let got = fast.on_snapshot_built(&next);
        let want = full.on_snapshot_built(&snapshot(generation, step));
        let strip = |responses: Vec<DeltaDiscoveryResponse>| {
            responses
                .into_iter()
                .map(|r| (r.resources, r.removed_resources))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(got), strip(want), "step {i}");
        assert!(
            fast.on_snapshot_built(&next).is_empty(),
            "a snapshot is handled once"
        );
        previous = next;
    }
}

#[test]
fn a_proxy_that_missed_a_snapshot_is_compared_in_full() {
    let mut conn = AdsConnection::default();
    let first = snapshot(1, &[("a", 1), ("b", 1)]);
    conn.on_request_built(subscribe(T, &[]), &first);
    let second = published(&first, 2, &[("a", 2), ("b", 1)]);
    // The stream never saw generation 2: its changes alone would lose a's update.
    let third = published(&second, 3, &[("a", 2), ("b", 1), ("c", 1)]);
    let pushed = conn.on_snapshot_built(&third);
    assert_eq!(names(&pushed[0]), ["a", "c"]);
}

#[test]
fn a_request_does_not_hide_a_snapshot_from_the_other_types() {
    let mut conn = AdsConnection::default();
    let types = |generation, t: i64, u: i64| {
        let body = |seconds| prost_types::Duration { seconds, nanos: 0 };
        ResourceSnapshot::new(
            generation,
            BTreeMap::from([
                (
                    T.to_string(),
                    vec![VersionedResource::encode(T, "t", &body(t))],
                ),
                (
                    U.to_string(),
                    vec![VersionedResource::encode(U, "u", &body(u))],
                ),
            ]),
        )
    };
    let first = types(1, 1, 1);
    conn.on_request_built(subscribe(T, &[]), &first);
    conn.on_request_built(subscribe(U, &[]), &first);
    let second = types(2, 2, 2).with_changes_since(&first);
    // The proxy widens its subscription of T before the stream handles the new snapshot.
    let (_, for_t) = conn.on_request_built(subscribe(T, &["extra"]), &second);
    assert_eq!(names(&for_t[0]), ["t"]);
    let pushed = conn.on_snapshot_built(&second);
    assert_eq!(
        pushed.len(),
        1,
        "T is current already; U still needs the change"
    );
    assert_eq!(pushed[0].type_url, U);
    assert_eq!(names(&pushed[0]), ["u"]);
}
