//! The client's side of the delta protocol, without a network.

use std::collections::HashSet;

use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};

use super::*;

const A: &str = "type.googleapis.com/test.A";
const B: &str = "type.googleapis.com/test.B";

/// Records what it is given and rejects the names in `reject`.
#[derive(Default)]
struct Recorder {
    updates: Vec<(String, ResourceUpdate)>,
    reject: HashSet<String>,
}

impl ResourceHandler for Recorder {
    fn type_urls(&self) -> Vec<&'static str> {
        vec![A, B]
    }

    fn apply(&mut self, type_url: &str, update: ResourceUpdate) -> Vec<Rejection> {
        let rejections = update
            .resources
            .iter()
            .filter(|r| self.reject.contains(&r.name))
            .map(|r| Rejection::new(&r.name, "it is on the reject list"))
            .collect();
        self.updates.push((type_url.to_string(), update));
        rejections
    }
}

fn resource(type_url: &str, name: &str, version: &str) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(prost_types::Any {
            type_url: type_url.into(),
            value: name.as_bytes().to_vec(),
        }),
        ..Default::default()
    }
}

fn response(
    type_url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn node() -> Node {
    Node {
        id: "ztunnel~10.0.0.1~node-1~svc.cluster.local".into(),
        ..Default::default()
    }
}

#[test]
fn first_requests_subscribe_to_everything_with_the_node_on_the_first() {
    let subscriptions = Subscriptions::new(vec![A, B]);
    let requests = subscriptions.initial_requests(node());
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].type_url, A);
    assert_eq!(requests[1].type_url, B);
    assert_eq!(requests[0].node.as_ref().unwrap().id, node().id);
    assert!(requests[1].node.is_none());
    for request in &requests {
        assert!(
            request.resource_names_subscribe.is_empty(),
            "wildcard is the empty list"
        );
        assert!(request.initial_resource_versions.is_empty());
        assert!(request.response_nonce.is_empty());
    }
}

#[test]
fn responses_are_acked_and_versions_kept_for_the_next_stream() {
    let mut handler = Recorder::default();
    let mut subscriptions = Subscriptions::new(vec![A, B]);
    let applied = subscriptions.apply(
        &mut handler,
        response(
            A,
            "n1",
            vec![resource(A, "x", "1"), resource(A, "y", "1")],
            &[],
        ),
    );
    assert_eq!(applied.reply.response_nonce, "n1");
    assert_eq!(applied.reply.type_url, A);
    assert!(applied.reply.error_detail.is_none());
    assert!(!subscriptions.synced(), "B has not answered yet");

    subscriptions.apply(
        &mut handler,
        response(A, "n2", vec![resource(A, "x", "2")], &["y"]),
    );
    subscriptions.apply(&mut handler, response(B, "n3", Vec::new(), &[]));
    assert!(subscriptions.synced());
    assert_eq!(handler.updates[1].1.removed, vec!["y".to_string()]);
    assert_eq!(
        handler.updates[1].1.resources[0].body,
        b"x".to_vec(),
        "the handler gets the Any's value"
    );

    let requests = subscriptions.initial_requests(node());
    assert_eq!(
        requests[0].initial_resource_versions,
        [("x".to_string(), "2".to_string())].into()
    );
    assert!(requests[1].initial_resource_versions.is_empty());
}

#[test]
fn rejected_resources_are_nacked_by_name_and_keep_their_old_version() {
    let mut handler = Recorder::default();
    let mut subscriptions = Subscriptions::new(vec![A, B]);
    subscriptions.apply(
        &mut handler,
        response(A, "n1", vec![resource(A, "x", "1")], &[]),
    );
    handler.reject.insert("x".into());
    let mut no_body = resource(A, "empty", "1");
    no_body.resource = None;
    let wrong_type = resource(B, "mistyped", "1");
    let applied = subscriptions.apply(
        &mut handler,
        response(
            A,
            "n2",
            vec![
                resource(A, "x", "2"),
                resource(A, "z", "1"),
                no_body,
                wrong_type,
            ],
            &[],
        ),
    );
    let nack = applied.reply.error_detail.expect("a NACK");
    assert_eq!(applied.reply.response_nonce, "n2");
    assert_eq!(nack.code, tonic::Code::InvalidArgument as i32);
    assert!(
        nack.message
            .starts_with("rejected 3 of 4 resources of type.googleapis.com/test.A: "),
        "{}",
        nack.message
    );
    for part in [
        "empty: it has no body",
        "mistyped: its body is a type.googleapis.com/test.B",
        "x: it is on the reject list",
    ] {
        assert!(
            nack.message.contains(part),
            "{part:?} missing from {:?}",
            nack.message
        );
    }
    let names: Vec<&str> = handler.updates[1]
        .1
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["x", "z"],
        "only well-formed bodies reach the handler"
    );
    assert_eq!(
        subscriptions.held(A),
        [
            ("x".to_string(), "1".to_string()),
            ("z".to_string(), "1".to_string())
        ]
        .into(),
        "x keeps the version that was applied"
    );
}

#[test]
fn a_type_nobody_subscribed_to_is_nacked() {
    let mut handler = Recorder::default();
    let mut subscriptions = Subscriptions::new(vec![A, B]);
    let other = "type.googleapis.com/test.C";
    let applied = subscriptions.apply(
        &mut handler,
        response(other, "n1", vec![resource(other, "c", "1")], &[]),
    );
    assert!(
        applied
            .reply
            .error_detail
            .unwrap()
            .message
            .contains("not a type this proxy subscribed to")
    );
    assert_eq!(applied.reply.type_url, other);
    assert!(handler.updates.is_empty());
}

#[test]
fn long_nack_messages_are_cut_with_a_count() {
    let rejections: Vec<Rejection> = (0..1000)
        .map(|i| Rejection::new(&format!("resource-{i}"), "it is bad"))
        .collect();
    let message = nack_message(A, 1000, &rejections);
    assert!(
        message.len() <= MAX_NACK_MESSAGE_BYTES + 32,
        "{} bytes",
        message.len()
    );
    assert!(message.ends_with(" more"), "{message}");
    assert!(message.contains("resource-0: it is bad; resource-1: it is bad"));
}
