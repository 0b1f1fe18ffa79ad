use mesh_proto::mesh::waypoint::v1 as wp;
use prost::Message;
use ztunnel::state::{DiscoveryStore, MeshDefaults};
use ztunnel::xds::{NamedResource, ResourceHandler, ResourceUpdate};

use super::*;

fn store() -> ConfigStore {
    ConfigStore::new(WaypointName {
        gateway: "shop/waypoint".into(),
    })
}

fn upsert(name: &str, body: Vec<u8>) -> ResourceUpdate {
    ResourceUpdate {
        resources: vec![NamedResource {
            name: name.into(),
            body,
        }],
        removed: Vec::new(),
    }
}

fn service_parent(host: &str, port: u32) -> wp::ParentRef {
    wp::ParentRef {
        target: Some(wp::parent_ref::Target::Service(host.into())),
        port,
    }
}

fn backend(host: &str) -> wp::Backend {
    wp::Backend {
        hostname: host.into(),
        port: 80,
        weight: 1,
    }
}

fn prefix(path: &str) -> wp::RouteMatch {
    wp::RouteMatch {
        path: Some(wp::PathMatch {
            kind: Some(wp::path_match::Kind::Prefix(path.into())),
        }),
        ..Default::default()
    }
}

fn simple_route(name: &str, parent: wp::ParentRef, rules: Vec<wp::Rule>) -> wp::RouteConfiguration {
    wp::RouteConfiguration {
        name: name.into(),
        namespace: "shop".into(),
        parents: vec![parent],
        hostnames: Vec::new(),
        rules,
    }
}

fn forward(matches: Vec<wp::RouteMatch>, to: &str) -> wp::Rule {
    wp::Rule {
        matches,
        backends: vec![backend(to)],
        ..Default::default()
    }
}

#[test]
fn every_problem_of_a_route_is_reported_at_once() {
    let mut bad = forward(vec![], "v1");
    bad.matches = vec![wp::RouteMatch {
        path: Some(wp::PathMatch {
            kind: Some(wp::path_match::Kind::Regex("/items/(".into())),
        }),
        headers: vec![wp::HeaderMatch {
            name: "bad header".into(),
            value: Some(wp::header_match::Value::Exact("x".into())),
        }],
        ..Default::default()
    }];
    bad.redirect = Some(wp::Redirect {
        status_code: 200,
        ..Default::default()
    });
    bad.timeouts = Some(wp::Timeouts {
        request: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        backend_request: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
    });
    let route = simple_route("shop/bad", service_parent("front", 0), vec![bad]);
    let errors = compile_route("shop/bad", &route).unwrap_err();
    let text = errors.to_string();
    assert_eq!(errors.0.len(), 4, "{text}");
    assert!(text.contains("rules[0].matches[0].path.regex"), "{text}");
    assert!(
        text.contains("rules[0].matches[0].headers[0].name"),
        "{text}"
    );
    assert!(text.contains("rules[0].redirect.status_code"), "{text}");
    assert!(text.contains("backend_request"), "{text}");
}

#[test]
fn a_rejected_route_keeps_its_previous_version_and_others_still_apply() {
    let mut store = store();
    let good = simple_route(
        "shop/a",
        service_parent("front", 0),
        vec![forward(vec![prefix("/")], "v1")],
    );
    assert!(
        store
            .apply(
                mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
                upsert("shop/a", good.encode_to_vec())
            )
            .is_empty()
    );

    let mut broken = good.clone();
    broken.rules[0].matches = vec![prefix("no-slash")];
    let other = simple_route(
        "shop/b",
        service_parent("back", 0),
        vec![forward(vec![], "v2")],
    );
    let update = ResourceUpdate {
        resources: vec![
            NamedResource {
                name: "shop/a".into(),
                body: broken.encode_to_vec(),
            },
            NamedResource {
                name: "shop/b".into(),
                body: other.encode_to_vec(),
            },
        ],
        removed: Vec::new(),
    };
    let rejected = store.apply(mesh_proto::ROUTE_CONFIGURATION_TYPE_URL, update);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].name, "shop/a");
    assert!(
        rejected[0].reason.contains("not an absolute path"),
        "{}",
        rejected[0].reason
    );
    let snapshot = store.snapshot();
    let front = snapshot.routes.service_routes("front", 80).unwrap();
    assert!(
        matches!(front.entries[0].condition().path, Some(PathMatch::Prefix(ref p)) if p.is_empty())
    );
    assert!(snapshot.routes.service_routes("back", 80).is_some());
    assert_eq!(snapshot.routes.len(), 2);
}

#[test]
fn names_and_bodies_must_agree_and_decode() {
    let mut store = store();
    let route = simple_route("shop/a", service_parent("front", 0), vec![]);
    let rejected = store.apply(
        mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
        upsert("shop/other", route.encode_to_vec()),
    );
    assert!(
        rejected[0].reason.contains("\"shop/a\""),
        "{}",
        rejected[0].reason
    );
    let rejected = store.apply(
        mesh_proto::L7_POLICY_TYPE_URL,
        upsert("shop/p", vec![0xff, 0xff]),
    );
    assert!(
        rejected[0].reason.contains("does not decode"),
        "{}",
        rejected[0].reason
    );
}

#[test]
fn removal_drops_a_route() {
    let mut store = store();
    let route = simple_route(
        "shop/a",
        service_parent("front", 0),
        vec![forward(vec![], "v1")],
    );
    store.apply(
        mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
        upsert("shop/a", route.encode_to_vec()),
    );
    let mut receiver = store.subscribe();
    receiver.mark_unchanged();
    store.apply(
        mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
        ResourceUpdate {
            resources: Vec::new(),
            removed: vec!["shop/a".into()],
        },
    );
    assert!(receiver.has_changed().unwrap());
    assert!(store.snapshot().routes.is_empty());
}

#[test]
fn ports_split_entries_and_every_port_routes_are_shared() {
    let everywhere = simple_route(
        "shop/all",
        service_parent("front", 0),
        vec![forward(vec![prefix("/")], "v1")],
    );
    let on_8080 = simple_route(
        "shop/8080",
        service_parent("front", 8080),
        vec![forward(vec![prefix("/api")], "v2")],
    );
    let routes = [
        compile_route("shop/all", &everywhere).unwrap(),
        compile_route("shop/8080", &on_8080).unwrap(),
    ]
    .map(Arc::new);
    let table = RouteTable::build(routes.iter(), "shop/waypoint");
    let on_port = table.service_routes("front", 8080).unwrap();
    assert_eq!(on_port.entries.len(), 2);
    assert_eq!(
        &*on_port.entries[0].rule.route, "shop/8080",
        "the longer prefix first"
    );
    assert_eq!(table.service_routes("front", 80).unwrap().entries.len(), 1);
    assert!(table.service_routes("other", 80).is_none());
}

#[test]
fn gateway_routes_count_only_for_this_waypoint() {
    let ours = wp::ParentRef {
        target: Some(wp::parent_ref::Target::Gateway("shop/waypoint".into())),
        port: 0,
    };
    let theirs = wp::ParentRef {
        target: Some(wp::parent_ref::Target::Gateway("other/waypoint".into())),
        port: 0,
    };
    let routes = [
        compile_route(
            "shop/ours",
            &simple_route("shop/ours", ours, vec![forward(vec![], "v1")]),
        )
        .unwrap(),
        compile_route(
            "shop/theirs",
            &simple_route("shop/theirs", theirs, vec![forward(vec![], "v2")]),
        )
        .unwrap(),
    ]
    .map(Arc::new);
    let table = RouteTable::build(routes.iter(), "shop/waypoint");
    let entries = &table.gateway_routes(80).unwrap().entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(&*entries[0].rule.route, "shop/ours");
}

#[test]
fn policies_compile_and_index_by_target() {
    let policy = wp::L7Policy {
        name: "shop/deny".into(),
        namespace: "shop".into(),
        target: Some(wp::PolicyTarget {
            kind: Some(wp::policy_target::Kind::Service(
                "Front.shop.svc.cluster.local".into(),
            )),
        }),
        action: wp::l7_policy::Action::Deny as i32,
        rules: vec![wp::PolicyRule {
            to: vec![wp::Operation {
                hosts: vec![wp::Pattern {
                    kind: Some(wp::pattern::Kind::Suffix(".EXAMPLE.com".into())),
                }],
                ports: vec![80],
                ..Default::default()
            }],
            ..Default::default()
        }],
        dry_run: false,
    };
    let compiled = compile_policy("shop/deny", &policy).unwrap();
    assert_eq!(compiled.action, Action::Deny);
    assert_eq!(
        compiled.rules[0].to[0].hosts[0],
        Pattern::Suffix(".example.com".into())
    );
    let table = PolicyTable::build([Arc::new(compiled)].iter(), "shop/waypoint");
    assert_eq!(table.for_service("front.shop.svc.cluster.local").count(), 1);
    assert_eq!(table.for_service("other").count(), 0);

    let mut broken = policy.clone();
    broken.target = None;
    broken.action = 7;
    broken.rules[0].to[0].ports = vec![70000];
    let errors = compile_policy("shop/deny", &broken).unwrap_err();
    assert_eq!(errors.0.len(), 3, "{errors}");
}

#[test]
fn the_waypoint_subscribes_to_addresses_routes_and_policies_on_one_handler() {
    let mut resources = WaypointResources {
        discovery: DiscoveryStore::new(MeshDefaults::default()),
        config: store(),
    };
    assert_eq!(
        resources.type_urls(),
        vec![
            mesh_proto::ADDRESS_TYPE_URL,
            mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
            mesh_proto::L7_POLICY_TYPE_URL
        ]
    );
    let route = simple_route(
        "shop/a",
        service_parent("front", 0),
        vec![forward(vec![], "v1")],
    );
    assert!(
        resources
            .apply(
                mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
                upsert("shop/a", route.encode_to_vec())
            )
            .is_empty()
    );
    assert_eq!(resources.config.snapshot().routes.len(), 1);
    let rejected = resources.apply(mesh_proto::AUTHORIZATION_TYPE_URL, upsert("x", Vec::new()));
    assert_eq!(rejected.len(), 1, "L4 policies are not the waypoint's");
}
