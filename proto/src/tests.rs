//! Wire checks: round trips through prost, and field numbers pinned by
//! looking at the encoded tag, so a renumbering in a schema fails here rather
//! than in an interop test against Istio.

use prost::Message;
use prost::encoding::{WireType, decode_key};

use crate::envoy::service::discovery::v3 as xds;
use crate::istio::security as authz;
use crate::istio::v1::auth as ca;
use crate::istio::workload as wl;
use crate::mesh::waypoint::v1 as waypoint;

/// Encodes `msg` and returns the field number and wire type of its first
/// field. Callers set exactly one field so the first tag is that field's.
fn first_tag(msg: &impl Message) -> (u32, WireType) {
    let bytes = msg.encode_to_vec();
    let mut buf = bytes.as_slice();
    decode_key(&mut buf).expect("an encoded message with one field set starts with a tag")
}

fn sample_workload() -> wl::Workload {
    wl::Workload {
        uid: "lab/Pod/default/echo-0".into(),
        name: "echo-0".into(),
        namespace: "default".into(),
        addresses: vec![vec![10, 1, 2, 3]],
        network: "lab".into(),
        tunnel_protocol: wl::TunnelProtocol::Hbone.into(),
        trust_domain: "cluster.local".into(),
        service_account: "echo".into(),
        waypoint: Some(wl::GatewayAddress {
            destination: Some(wl::gateway_address::Destination::Hostname(
                wl::NamespacedHostname {
                    namespace: "default".into(),
                    hostname: "waypoint.default.svc.cluster.local".into(),
                },
            )),
            hbone_mtls_port: 15008,
        }),
        node: "node-1".into(),
        canonical_name: "echo".into(),
        canonical_revision: "v1".into(),
        workload_type: wl::WorkloadType::Pod.into(),
        workload_name: "echo".into(),
        cluster_id: "lab".into(),
        services: [(
            "default/echo.default.svc.cluster.local".to_string(),
            wl::PortList {
                ports: vec![wl::Port {
                    service_port: 80,
                    target_port: 8080,
                }],
            },
        )]
        .into(),
        authorization_policies: vec!["default/allow-client".into()],
        status: wl::WorkloadStatus::Healthy.into(),
        capacity: Some(3),
        locality: Some(wl::Locality {
            region: "r1".into(),
            zone: "z1".into(),
            subzone: String::new(),
        }),
        ..Default::default()
    }
}

#[test]
fn address_with_workload_round_trips() {
    let address = wl::Address {
        r#type: Some(wl::address::Type::Workload(sample_workload())),
    };
    let decoded = wl::Address::decode(address.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, address);
}

#[test]
fn authorization_with_negated_matches_round_trips() {
    let policy = authz::Authorization {
        name: "deny-outsiders".into(),
        namespace: "default".into(),
        scope: authz::Scope::Namespace.into(),
        action: authz::Action::Deny.into(),
        groups: vec![authz::Group {
            rules: vec![authz::Rules {
                matches: vec![authz::Match {
                    not_namespaces: vec![authz::StringMatch {
                        match_type: Some(authz::string_match::MatchType::Exact("default".into())),
                    }],
                    not_source_ips: vec![authz::Address {
                        address: vec![10, 0, 0, 0],
                        length: 8,
                    }],
                    not_destination_ports: vec![15021],
                    principals: vec![authz::StringMatch {
                        match_type: Some(authz::string_match::MatchType::Presence(())),
                    }],
                    ..Default::default()
                }],
            }],
        }],
        dry_run: true,
    };
    let decoded = authz::Authorization::decode(policy.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, policy);
}

/// A default workload with one change applied.
fn workload_with(change: impl FnOnce(&mut wl::Workload)) -> wl::Workload {
    let mut workload = wl::Workload::default();
    change(&mut workload);
    workload
}

#[test]
fn workload_field_numbers_match_istio() {
    let length_delimited = [
        (workload_with(|w| w.uid = "u".into()), 20),
        (workload_with(|w| w.hostname = "h".into()), 21),
        (
            workload_with(|w| w.authorization_policies = vec!["p".into()]),
            16,
        ),
        (
            workload_with(|w| w.services = [("k".into(), wl::PortList::default())].into()),
            22,
        ),
        (
            workload_with(|w| w.locality = Some(wl::Locality::default())),
            24,
        ),
        (workload_with(|w| w.capacity = Some(1)), 27),
    ];
    for (workload, number) in length_delimited {
        assert_eq!(first_tag(&workload), (number, WireType::LengthDelimited));
    }
    let varint = [
        (
            workload_with(|w| w.status = wl::WorkloadStatus::Unhealthy.into()),
            17,
        ),
        (
            workload_with(|w| w.network_mode = wl::NetworkMode::HostNetwork.into()),
            25,
        ),
        (
            workload_with(|w| w.tunnel_protocol = wl::TunnelProtocol::Hbone.into()),
            5,
        ),
    ];
    for (workload, number) in varint {
        assert_eq!(first_tag(&workload), (number, WireType::Varint));
    }
    let service = wl::Service {
        load_balancing: Some(wl::LoadBalancing::default()),
        ..Default::default()
    };
    assert_eq!(first_tag(&service), (8, WireType::LengthDelimited));
    let network_address = wl::NetworkAddress {
        address: vec![127, 0, 0, 1],
        ..Default::default()
    };
    assert_eq!(first_tag(&network_address), (2, WireType::LengthDelimited));
}

#[test]
fn workload_uid_tag_bytes_are_field_20() {
    let workload = wl::Workload {
        uid: "u".into(),
        ..Default::default()
    };
    // (20 << 3) | 2 = 162, a two-byte varint.
    assert_eq!(workload.encode_to_vec()[..2], [0xa2, 0x01]);
}

#[test]
fn authorization_field_numbers_match_istio() {
    let dry_run = authz::Authorization {
        dry_run: true,
        ..Default::default()
    };
    assert_eq!(first_tag(&dry_run), (6, WireType::Varint));
    let rules = authz::Rules {
        matches: vec![authz::Match::default()],
    };
    assert_eq!(first_tag(&rules), (2, WireType::LengthDelimited));
    let ports = authz::Match {
        not_destination_ports: vec![1],
        ..Default::default()
    };
    assert_eq!(first_tag(&ports), (10, WireType::LengthDelimited));
}

#[test]
fn delta_xds_field_numbers_match_envoy() {
    let nonce = xds::DeltaDiscoveryRequest {
        response_nonce: "n".into(),
        ..Default::default()
    };
    assert_eq!(first_tag(&nonce), (6, WireType::LengthDelimited));
    let nack = xds::DeltaDiscoveryRequest {
        error_detail: Some(crate::google::rpc::Status::default()),
        ..Default::default()
    };
    assert_eq!(first_tag(&nack), (7, WireType::LengthDelimited));
    let removed = xds::DeltaDiscoveryResponse {
        removed_resources: vec!["r".into()],
        ..Default::default()
    };
    assert_eq!(first_tag(&removed), (6, WireType::LengthDelimited));
    let resource_name = xds::Resource {
        name: "r".into(),
        ..Default::default()
    };
    assert_eq!(first_tag(&resource_name), (3, WireType::LengthDelimited));
}

#[test]
fn ca_field_numbers_match_istio() {
    let validity = ca::IstioCertificateRequest {
        validity_duration: 3600,
        ..Default::default()
    };
    assert_eq!(first_tag(&validity), (3, WireType::Varint));
    let metadata = ca::IstioCertificateRequest {
        metadata: Some(prost_types::Struct::default()),
        ..Default::default()
    };
    assert_eq!(first_tag(&metadata), (4, WireType::LengthDelimited));
}

#[test]
fn grpc_service_names_match_upstream() {
    assert_eq!(
        xds::aggregated_discovery_service_server::SERVICE_NAME,
        "envoy.service.discovery.v3.AggregatedDiscoveryService"
    );
    assert_eq!(
        ca::istio_certificate_service_server::SERVICE_NAME,
        "istio.v1.auth.IstioCertificateService"
    );
}

#[test]
fn waypoint_route_round_trips() {
    let route = waypoint::RouteConfiguration {
        name: "default/echo".into(),
        namespace: "default".into(),
        parents: vec![waypoint::ParentRef {
            target: Some(waypoint::parent_ref::Target::Service(
                "echo.default.svc.cluster.local".into(),
            )),
            port: 80,
        }],
        rules: vec![waypoint::Rule {
            matches: vec![waypoint::RouteMatch {
                path: Some(waypoint::PathMatch {
                    kind: Some(waypoint::path_match::Kind::Prefix("/api".into())),
                }),
                method: "GET".into(),
                ..Default::default()
            }],
            backends: vec![waypoint::Backend {
                hostname: "echo-v2.default.svc.cluster.local".into(),
                port: 80,
                weight: 1,
            }],
            timeouts: Some(waypoint::Timeouts {
                request: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                backend_request: None,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let decoded = waypoint::RouteConfiguration::decode(route.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, route);
}
