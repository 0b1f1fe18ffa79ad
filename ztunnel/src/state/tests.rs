//! Conversion, indexes and update semantics of the discovery state.

use mesh_proto::istio::security::{self as authz, Authorization};
use mesh_proto::istio::workload::{self as wl, address, gateway_address};
use prost::Message;
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::xds::{NamedResource, ResourceHandler, ResourceUpdate};

const ECHO_HOST: &str = "echo.shop.svc.cluster.local";
const ECHO_KEY: &str = "shop/echo.shop.svc.cluster.local";
const WAYPOINT_HOST: &str = "waypoint.shop.svc.cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bytes(s: &str) -> Vec<u8> {
    match ip(s) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn uid(name: &str) -> String {
    format!("Kubernetes//Pod/shop/{name}")
}

/// An enrolled pod of `shop` backing `echo` (80 -> 8080).
fn workload(name: &str, addr: &str) -> wl::Workload {
    wl::Workload {
        uid: uid(name),
        name: name.into(),
        namespace: "shop".into(),
        addresses: vec![bytes(addr)],
        tunnel_protocol: wl::TunnelProtocol::Hbone.into(),
        service_account: "echo".into(),
        node: "node-1".into(),
        services: [(
            ECHO_KEY.to_string(),
            wl::PortList {
                ports: vec![wl::Port {
                    service_port: 80,
                    target_port: 8080,
                }],
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn workload_with(change: impl FnOnce(&mut wl::Workload)) -> wl::Workload {
    let mut w = workload("echo-0", "10.1.0.1");
    change(&mut w);
    w
}

fn service(name: &str, vip: &str, ports: &[(u32, u32)]) -> wl::Service {
    wl::Service {
        name: name.into(),
        namespace: "shop".into(),
        hostname: format!("{name}.shop.svc.cluster.local"),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: bytes(vip),
        }],
        ports: ports
            .iter()
            .map(|&(service_port, target_port)| wl::Port {
                service_port,
                target_port,
            })
            .collect(),
        ..Default::default()
    }
}

fn service_with(change: impl FnOnce(&mut wl::Service)) -> wl::Service {
    let mut s = service("echo", "10.96.0.10", &[(80, 8080)]);
    change(&mut s);
    s
}

fn policy(namespace: &str, name: &str, scope: authz::Scope) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: namespace.into(),
        scope: scope.into(),
        action: authz::Action::Allow.into(),
        ..Default::default()
    }
}

fn policy_with(change: impl FnOnce(&mut authz::Match)) -> Authorization {
    let mut m = authz::Match::default();
    change(&mut m);
    Authorization {
        groups: vec![authz::Group {
            rules: vec![authz::Rules { matches: vec![m] }],
        }],
        ..policy("shop", "p", authz::Scope::Namespace)
    }
}

fn workload_resource(w: wl::Workload) -> NamedResource {
    let name = w.uid.clone();
    address_resource(&name, address::Type::Workload(w))
}

fn service_resource(s: wl::Service) -> NamedResource {
    let name = service_key(&s.namespace, &s.hostname);
    address_resource(&name, address::Type::Service(s))
}

fn address_resource(name: &str, body: address::Type) -> NamedResource {
    NamedResource {
        name: name.into(),
        body: wl::Address { r#type: Some(body) }.encode_to_vec(),
    }
}

fn policy_resource(p: Authorization) -> NamedResource {
    NamedResource {
        name: policy_key(&p),
        body: p.encode_to_vec(),
    }
}

fn upsert(
    store: &mut DiscoveryStore,
    type_url: &str,
    resources: Vec<NamedResource>,
) -> Vec<crate::xds::Rejection> {
    store.apply(
        type_url,
        ResourceUpdate {
            resources,
            removed: Vec::new(),
        },
    )
}

fn remove(store: &mut DiscoveryStore, type_url: &str, names: &[&str]) {
    let removed = names.iter().map(|n| n.to_string()).collect();
    let rejections = store.apply(
        type_url,
        ResourceUpdate {
            resources: Vec::new(),
            removed,
        },
    );
    assert!(rejections.is_empty());
}

fn addresses(store: &mut DiscoveryStore, resources: Vec<NamedResource>) {
    let rejections = upsert(store, mesh_proto::ADDRESS_TYPE_URL, resources);
    assert!(rejections.is_empty(), "{rejections:?}");
}

fn field(name: &str) -> String {
    name.to_string()
}

#[test]
fn workload_conversion_fills_defaults() {
    let info = WorkloadInfo::from_proto(
        &workload_with(|w| w.service_account.clear()),
        &MeshDefaults::default(),
    )
    .unwrap();
    assert_eq!(
        info.identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/default"
    );
    assert_eq!(info.capacity, 1);
    assert!(info.healthy);
    assert_eq!(info.tunnel, Tunnel::Hbone);
    assert_eq!(info.addresses, vec![ip("10.1.0.1")]);
    assert_eq!(info.services[ECHO_KEY].get(&80), Some(&8080));

    let info = WorkloadInfo::from_proto(
        &workload_with(|w| {
            w.trust_domain = "example.org".into();
            w.capacity = Some(3);
            w.status = wl::WorkloadStatus::Unhealthy.into();
            w.addresses.push(bytes("fd00::1"));
            w.waypoint = Some(wl::GatewayAddress {
                destination: Some(gateway_address::Destination::Hostname(
                    wl::NamespacedHostname {
                        namespace: "shop".into(),
                        hostname: WAYPOINT_HOST.into(),
                    },
                )),
                hbone_mtls_port: 0,
            });
        }),
        &MeshDefaults::default(),
    )
    .unwrap();
    assert_eq!(
        info.identity.to_string(),
        "spiffe://example.org/ns/shop/sa/echo"
    );
    assert_eq!(info.capacity, 3);
    assert!(!info.healthy);
    assert_eq!(info.addresses, vec![ip("10.1.0.1"), ip("fd00::1")]);
    let waypoint = info.waypoint.unwrap();
    assert_eq!(
        waypoint.hbone_port,
        crate::hbone::HBONE_PORT,
        "an unset port is the mesh's HBONE port"
    );
}

#[test]
fn bad_workloads_are_rejected_with_the_field_named() {
    let cases: Vec<(&str, wl::Workload, ResourceError)> = vec![
        (
            "empty uid",
            workload_with(|w| w.uid.clear()),
            ResourceError::MissingField {
                field: field("uid"),
            },
        ),
        (
            "5-byte address",
            workload_with(|w| w.addresses = vec![vec![1, 2, 3, 4, 5]]),
            ResourceError::BadAddress {
                field: field("addresses"),
                len: 5,
            },
        ),
        (
            "unknown tunnel protocol",
            workload_with(|w| w.tunnel_protocol = 7),
            ResourceError::UnknownEnum {
                field: field("tunnel_protocol"),
                value: 7,
            },
        ),
        (
            "unknown status",
            workload_with(|w| w.status = 9),
            ResourceError::UnknownEnum {
                field: field("status"),
                value: 9,
            },
        ),
        (
            "service port out of range",
            workload_with(|w| {
                w.services.insert(
                    ECHO_KEY.into(),
                    wl::PortList {
                        ports: vec![wl::Port {
                            service_port: 70000,
                            target_port: 1,
                        }],
                    },
                );
            }),
            ResourceError::BadPort {
                field: field("services"),
                value: 70000,
            },
        ),
        (
            "waypoint without destination",
            workload_with(|w| w.waypoint = Some(wl::GatewayAddress::default())),
            ResourceError::MissingField {
                field: field("waypoint.destination"),
            },
        ),
    ];
    for (case, proto, expected) in cases {
        let got = WorkloadInfo::from_proto(&proto, &MeshDefaults::default());
        assert_eq!(got.unwrap_err(), expected, "{case}");
    }
    let bad_namespace = workload_with(|w| w.namespace = "Shop".into());
    let error = WorkloadInfo::from_proto(&bad_namespace, &MeshDefaults::default()).unwrap_err();
    assert!(matches!(error, ResourceError::Identity(_)), "{error:?}");
    assert!(error.to_string().contains("namespace"), "{error}");
}

#[test]
fn service_conversion() {
    let info = ServiceInfo::from_proto(&service_with(|s| {
        s.load_balancing = Some(wl::LoadBalancing {
            routing_preference: vec![
                wl::load_balancing::Scope::UnspecifiedScope.into(),
                wl::load_balancing::Scope::Zone.into(),
            ],
            mode: wl::load_balancing::Mode::Failover.into(),
            health_policy: wl::load_balancing::HealthPolicy::AllowAll.into(),
        });
    }))
    .unwrap();
    assert_eq!(&*info.key, ECHO_KEY);
    assert_eq!(
        info.vips,
        vec![NetworkIp {
            network: "".into(),
            ip: ip("10.96.0.10")
        }]
    );
    assert_eq!(info.ports.get(&80), Some(&8080));
    let lb = info.load_balancing.as_ref().unwrap();
    assert_eq!(lb.routing_preference, vec![LocalityScope::Zone]);
    assert_eq!(lb.mode, LoadBalancingMode::Failover);
    assert_eq!(info.health_policy(), HealthPolicy::AllowAll);

    let cases: Vec<(&str, wl::Service, ResourceError)> = vec![
        (
            "empty hostname",
            service_with(|s| s.hostname.clear()),
            ResourceError::MissingField {
                field: field("hostname"),
            },
        ),
        (
            "3-byte VIP",
            service_with(|s| s.addresses[0].address = vec![1, 2, 3]),
            ResourceError::BadAddress {
                field: field("addresses"),
                len: 3,
            },
        ),
        (
            "duplicate port",
            service_with(|s| {
                s.ports.push(wl::Port {
                    service_port: 80,
                    target_port: 9090,
                })
            }),
            ResourceError::DuplicatePort {
                field: field("ports"),
                port: 80,
            },
        ),
        (
            "service port 0",
            service_with(|s| s.ports[0].service_port = 0),
            ResourceError::BadPort {
                field: field("ports"),
                value: 0,
            },
        ),
        (
            "unknown load balancing mode",
            service_with(|s| {
                s.load_balancing = Some(wl::LoadBalancing {
                    mode: 42,
                    ..Default::default()
                })
            }),
            ResourceError::UnknownEnum {
                field: field("load_balancing.mode"),
                value: 42,
            },
        ),
    ];
    for (case, proto, expected) in cases {
        assert_eq!(
            ServiceInfo::from_proto(&proto).unwrap_err(),
            expected,
            "{case}"
        );
    }
}

#[test]
fn policy_validation() {
    let exact = |s: &str| authz::StringMatch {
        match_type: Some(authz::string_match::MatchType::Exact(s.into())),
    };
    let good = policy_with(|m| {
        m.namespaces = vec![exact("shop")];
        m.source_ips = vec![authz::Address {
            address: bytes("10.0.0.0"),
            length: 8,
        }];
        m.not_destination_ports = vec![15021];
    });
    assert_eq!(validate_authorization(&good), Ok(()));
    let at = "groups[0].rules[0].matches[0]";
    let cases: Vec<(&str, Authorization, ResourceError)> = vec![
        (
            "unknown action",
            Authorization {
                action: 5,
                ..policy("shop", "p", authz::Scope::Global)
            },
            ResourceError::UnknownEnum {
                field: field("action"),
                value: 5,
            },
        ),
        (
            "unknown scope",
            Authorization {
                scope: 8,
                ..policy("shop", "p", authz::Scope::Global)
            },
            ResourceError::UnknownEnum {
                field: field("scope"),
                value: 8,
            },
        ),
        (
            "empty string match",
            policy_with(|m| m.not_principals = vec![authz::StringMatch { match_type: None }]),
            ResourceError::EmptyStringMatch {
                field: format!("{at}.not_principals"),
            },
        ),
        (
            "prefix longer than the address",
            policy_with(|m| {
                m.source_ips = vec![authz::Address {
                    address: bytes("10.0.0.0"),
                    length: 33,
                }]
            }),
            ResourceError::BadPrefix {
                field: format!("{at}.source_ips"),
                length: 33,
                bits: 32,
            },
        ),
        (
            "odd address length",
            policy_with(|m| {
                m.not_destination_ips = vec![authz::Address {
                    address: vec![10],
                    length: 8,
                }]
            }),
            ResourceError::BadAddress {
                field: format!("{at}.not_destination_ips"),
                len: 1,
            },
        ),
        (
            "port 0",
            policy_with(|m| m.destination_ports = vec![0]),
            ResourceError::BadPort {
                field: format!("{at}.destination_ports"),
                value: 0,
            },
        ),
    ];
    for (case, proto, expected) in cases {
        assert_eq!(validate_authorization(&proto), Err(expected), "{case}");
    }
}

#[test]
fn lookups_by_ip_uid_vip_and_key() {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    let host_networked = wl::Workload {
        network_mode: wl::NetworkMode::HostNetwork.into(),
        ..workload("host-0", "192.168.0.1")
    };
    addresses(
        &mut store,
        vec![
            workload_resource(workload("echo-0", "10.1.0.1")),
            workload_resource(host_networked),
            service_resource(service("echo", "10.96.0.10", &[(80, 8080)])),
        ],
    );
    let snapshot = store.snapshot();
    assert_eq!(
        &*snapshot.workload_by_ip(ip("10.1.0.1")).unwrap().uid,
        uid("echo-0")
    );
    assert_eq!(
        &*snapshot.workload_by_uid(&uid("host-0")).unwrap().name,
        "host-0"
    );
    assert!(
        snapshot.workload_by_ip(ip("192.168.0.1")).is_none(),
        "host-network addresses are not the workload's"
    );
    assert!(
        snapshot
            .workload_by_network_ip("other", ip("10.1.0.1"))
            .is_none()
    );
    assert_eq!(
        &*snapshot.service_by_vip(ip("10.96.0.10")).unwrap().hostname,
        ECHO_HOST
    );
    assert_eq!(
        &*snapshot.service_by_hostname("shop", ECHO_HOST).unwrap().key,
        ECHO_KEY
    );
    assert!(snapshot.service_by_vip(ip("10.1.0.1")).is_none());
}

#[test]
fn endpoints_carry_their_own_target_ports() {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    // Port 80 -> 8080 on the service; 81 is a named port (0) that only echo-1 declares.
    let mut echo_1 = workload("echo-1", "10.1.0.2");
    echo_1.services.insert(
        ECHO_KEY.into(),
        wl::PortList {
            ports: vec![
                wl::Port {
                    service_port: 80,
                    target_port: 9080,
                },
                wl::Port {
                    service_port: 81,
                    target_port: 9081,
                },
            ],
        },
    );
    addresses(
        &mut store,
        vec![
            workload_resource(workload("echo-0", "10.1.0.1")),
            workload_resource(echo_1),
            service_resource(service("echo", "10.96.0.10", &[(80, 8080), (81, 0)])),
        ],
    );
    let snapshot = store.snapshot();
    let echo = snapshot.service_by_vip(ip("10.96.0.10")).unwrap();
    let on = |port| {
        snapshot
            .endpoints_on_port(&echo, port)
            .map(|(w, target)| (w.name.to_string(), target))
            .collect::<Vec<_>>()
    };
    assert_eq!(snapshot.endpoints(&echo).len(), 2);
    assert_eq!(
        on(80),
        vec![("echo-0".to_string(), 8080), ("echo-1".to_string(), 9080)]
    );
    assert_eq!(
        on(81),
        vec![("echo-1".to_string(), 9081)],
        "echo-0 does not declare the named port"
    );
    assert!(on(82).is_empty(), "the service has no port 82");
}

#[test]
fn the_newest_record_owns_a_shared_address() {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    addresses(
        &mut store,
        vec![workload_resource(workload("old", "10.1.0.1"))],
    );
    addresses(
        &mut store,
        vec![workload_resource(workload("new", "10.1.0.1"))],
    );
    let owner = |store: &DiscoveryStore| {
        store
            .snapshot()
            .workload_by_ip(ip("10.1.0.1"))
            .map(|w| w.name.to_string())
    };
    assert_eq!(owner(&store).as_deref(), Some("new"));
    remove(&mut store, mesh_proto::ADDRESS_TYPE_URL, &[&uid("old")]);
    assert_eq!(
        owner(&store).as_deref(),
        Some("new"),
        "removing the old pod keeps the new one's address"
    );
    addresses(
        &mut store,
        vec![workload_resource(workload("old", "10.1.0.1"))],
    );
    remove(&mut store, mesh_proto::ADDRESS_TYPE_URL, &[&uid("old")]);
    assert_eq!(
        owner(&store).as_deref(),
        Some("new"),
        "the address falls back to the remaining record"
    );
}

#[test]
fn policies_for_a_workload() {
    use authz::Scope::{Global, Namespace, WorkloadSelector};
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    let policies = vec![
        policy("istio-system", "mesh-b", Global),
        policy("istio-system", "mesh-a", Global),
        policy("shop", "ns-wide", Namespace),
        policy("bank", "other-ns", Namespace),
        policy("shop", "selected", WorkloadSelector),
        policy("shop", "not-selected", WorkloadSelector),
    ];
    let rejections = upsert(
        &mut store,
        mesh_proto::AUTHORIZATION_TYPE_URL,
        policies.into_iter().map(policy_resource).collect(),
    );
    assert!(rejections.is_empty(), "{rejections:?}");
    let listed = workload_with(|w| {
        // A listed namespace-wide policy must not count twice; a missing one is skipped.
        w.authorization_policies = vec![
            "shop/selected".into(),
            "shop/ns-wide".into(),
            "shop/missing".into(),
        ];
    });
    addresses(&mut store, vec![workload_resource(listed)]);
    let snapshot = store.snapshot();
    let workload = snapshot.workload_by_uid(&uid("echo-0")).unwrap();
    let names: Vec<String> = snapshot.policies_for(&workload).map(policy_key).collect();
    assert_eq!(
        names,
        [
            "istio-system/mesh-a",
            "istio-system/mesh-b",
            "shop/ns-wide",
            "shop/selected"
        ]
    );
    assert!(snapshot.policy("bank/other-ns").is_some());

    remove(
        &mut store,
        mesh_proto::AUTHORIZATION_TYPE_URL,
        &["istio-system/mesh-a", "shop/selected"],
    );
    let snapshot = store.snapshot();
    let names: Vec<String> = snapshot.policies_for(&workload).map(policy_key).collect();
    assert_eq!(names, ["istio-system/mesh-b", "shop/ns-wide"]);
}

#[test]
fn a_bad_resource_is_rejected_and_the_rest_applies() {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    addresses(
        &mut store,
        vec![workload_resource(workload("echo-0", "10.1.0.1"))],
    );
    let mut changed = store.subscribe();
    changed.mark_unchanged();

    let bad_update = wl::Workload {
        addresses: vec![vec![1, 2, 3]],
        ..workload("echo-0", "10.1.0.9")
    };
    let rejections = upsert(
        &mut store,
        mesh_proto::ADDRESS_TYPE_URL,
        vec![
            workload_resource(bad_update),
            workload_resource(workload("echo-1", "10.1.0.2")),
            address_resource("shop/empty", address::Type::Service(wl::Service::default())),
            NamedResource {
                name: "garbage".into(),
                body: vec![0xff, 0xff],
            },
            address_resource(
                "wrong-name",
                address::Type::Workload(workload("echo-2", "10.1.0.3")),
            ),
            service_resource(service("echo", "10.96.0.10", &[(80, 8080)])),
        ],
    );
    let rejected: Vec<&str> = rejections.iter().map(|r| r.name.as_str()).collect();
    let echo_0 = uid("echo-0");
    assert_eq!(
        rejected,
        [echo_0.as_str(), "shop/empty", "garbage", "wrong-name"]
    );
    assert!(
        rejections[0].reason.contains("3-byte address"),
        "{}",
        rejections[0].reason
    );
    assert!(
        rejections[3].reason.contains(&uid("echo-2")),
        "{}",
        rejections[3].reason
    );

    assert!(changed.has_changed().unwrap());
    let snapshot = store.snapshot();
    assert!(
        snapshot.workload_by_ip(ip("10.1.0.2")).is_some(),
        "the good workload applied"
    );
    assert!(
        snapshot.service_by_vip(ip("10.96.0.10")).is_some(),
        "the good service applied"
    );
    assert!(
        snapshot.workload_by_ip(ip("10.1.0.1")).is_some(),
        "the rejected update kept the previous version"
    );
    assert!(snapshot.workload_by_ip(ip("10.1.0.9")).is_none());
}

#[test]
fn an_update_that_changes_nothing_publishes_nothing() {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    let mut changed = store.subscribe();
    changed.mark_unchanged();
    let bad = wl::Workload {
        tunnel_protocol: 9,
        ..workload("echo-0", "10.1.0.1")
    };
    assert_eq!(
        upsert(
            &mut store,
            mesh_proto::ADDRESS_TYPE_URL,
            vec![workload_resource(bad)]
        )
        .len(),
        1
    );
    remove(&mut store, mesh_proto::ADDRESS_TYPE_URL, &["never-seen"]);
    assert!(!changed.has_changed().unwrap());
    let rejections = upsert(
        &mut store,
        "type.googleapis.com/other.Type",
        vec![NamedResource {
            name: "x".into(),
            body: Vec::new(),
        }],
    );
    assert!(
        rejections[0].reason.contains("other.Type"),
        "{rejections:?}"
    );
}

#[test]
fn waypoints_resolve_through_the_service_feed() {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    let waypoint_pod = |name: &str, addr: &str, healthy: bool| wl::Workload {
        service_account: "waypoint".into(),
        status: if healthy {
            wl::WorkloadStatus::Healthy
        } else {
            wl::WorkloadStatus::Unhealthy
        }
        .into(),
        services: [(
            format!("shop/{WAYPOINT_HOST}"),
            wl::PortList {
                ports: vec![wl::Port {
                    service_port: 15008,
                    target_port: 15008,
                }],
            },
        )]
        .into(),
        ..workload(name, addr)
    };
    addresses(
        &mut store,
        vec![
            workload_resource(waypoint_pod("waypoint-0", "10.1.0.50", true)),
            workload_resource(waypoint_pod("waypoint-1", "10.1.0.51", false)),
            service_resource(service("waypoint", "10.96.0.50", &[(15008, 15008)])),
        ],
    );
    let snapshot = store.snapshot();
    let by_name = GatewayRef {
        destination: GatewayDestination::Service {
            namespace: "shop".into(),
            hostname: WAYPOINT_HOST.into(),
        },
        hbone_port: 15008,
    };
    let target = snapshot.resolve_waypoint(&by_name).unwrap();
    assert_eq!(
        target.service.as_ref().unwrap().vips[0].ip,
        ip("10.96.0.50")
    );
    assert_eq!(target.instances.len(), 2);
    let destinations: Vec<(SocketAddr, String)> = target
        .destinations()
        .map(|(a, id)| (a, id.to_string()))
        .collect();
    assert_eq!(
        destinations,
        [(
            "10.1.0.50:15008".parse().unwrap(),
            "spiffe://cluster.local/ns/shop/sa/waypoint".to_string()
        )],
        "only healthy instances, at their HBONE port, with their identity"
    );

    let by_pod_ip = GatewayRef {
        destination: GatewayDestination::Address(NetworkIp {
            network: "".into(),
            ip: ip("10.1.0.50"),
        }),
        hbone_port: 15008,
    };
    let target = snapshot.resolve_waypoint(&by_pod_ip).unwrap();
    assert!(target.service.is_none());
    assert_eq!(&*target.instances[0].name, "waypoint-0");

    let by_vip = GatewayRef {
        destination: GatewayDestination::Address(NetworkIp {
            network: "".into(),
            ip: ip("10.96.0.50"),
        }),
        hbone_port: 15008,
    };
    assert_eq!(
        snapshot.resolve_waypoint(&by_vip).unwrap().instances.len(),
        2
    );

    let unknown = GatewayRef {
        destination: GatewayDestination::Service {
            namespace: "shop".into(),
            hostname: "nope".into(),
        },
        hbone_port: 15008,
    };
    assert!(
        snapshot.resolve_waypoint(&unknown).is_none(),
        "an unknown waypoint must not be skipped"
    );
}

#[test]
fn removal_by_name_drops_services_and_their_vips() {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    addresses(
        &mut store,
        vec![service_resource(service(
            "echo",
            "10.96.0.10",
            &[(80, 8080)],
        ))],
    );
    remove(&mut store, mesh_proto::ADDRESS_TYPE_URL, &[ECHO_KEY]);
    let snapshot = store.snapshot();
    assert!(snapshot.service_by_key(ECHO_KEY).is_none());
    assert!(snapshot.service_by_vip(ip("10.96.0.10")).is_none());
    assert_eq!(snapshot.services().count(), 0);
}
