//! Translation tests: manifests are loaded through the store (as the controller loads them),
//! translated, and the wire resources decoded and compared with what Istio's ambient API says
//! they must be.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_proto::istio::security::{
    self as wire, Action, Authorization, Group, Match, Rules, Scope, string_match,
};
use mesh_proto::istio::workload::{
    Address, GatewayAddress, NamespacedHostname, Port, Service, TunnelProtocol, Workload,
    WorkloadStatus, WorkloadType, address, gateway_address,
};
use prost::Message;

use super::*;
use crate::store::{self, StoreConfig};

// ---------------------------------------------------------------------------------------------
// Manifests.

fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect();
    format!("{{{}}}", body.join(", "))
}

fn namespace(name: &str, pairs: &[(&str, &str)]) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {}\n",
        labels(pairs)
    )
}

/// A pod on node-1 whose one container declares the port `web` (9090), with an IP when given.
fn pod(ns: &str, name: &str, pairs: &[(&str, &str)], ip: Option<&str>) -> String {
    pod_with(ns, name, pairs, ip, "[{name: web, containerPort: 9090}]")
}

fn pod_with(ns: &str, name: &str, pairs: &[(&str, &str)], ip: Option<&str>, ports: &str) -> String {
    let status = ip.map_or(String::new(), |ip| {
        format!("status:\n  podIP: {ip}\n  phase: Running\n")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {}\n\
         spec:\n  nodeName: node-1\n  serviceAccountName: {name}-sa\n  containers:\n  \
         - name: app\n    image: app\n    ports: {ports}\n{status}",
        labels(pairs)
    )
}

/// A service; `spec` is the flow-style body of `spec`.
fn service(ns: &str, name: &str, pairs: &[(&str, &str)], spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {}\nspec: {spec}\n",
        labels(pairs)
    )
}

/// A Gateway of class `istio-waypoint` (or `class`), with `istio.io/waypoint-for` when given.
fn gateway(ns: &str, name: &str, class: &str, waypoint_for: Option<&str>) -> String {
    let pairs: Vec<(&str, &str)> = waypoint_for
        .map(|w| vec![("istio.io/waypoint-for", w)])
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\n  labels: {}\nspec:\n  gatewayClassName: {class}\n  \
         listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n",
        labels(&pairs)
    )
}

fn waypoint(ns: &str, name: &str, waypoint_for: Option<&str>) -> String {
    gateway(ns, name, "istio-waypoint", waypoint_for)
}

/// An AuthorizationPolicy; `spec` is the flow-style body of `spec`.
fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec: {spec}\n"
    )
}

fn dry_run_policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\n  annotations: {{istio.io/dry-run: \"true\"}}\nspec: {spec}\n"
    )
}

fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

// ---------------------------------------------------------------------------------------------
// Loading and decoding.

/// Loads manifest text through the store, in a fresh manifest and state directory, and fails
/// the test when anything is refused: every case is meant to be valid input.
fn load(text: &str) -> store::DesiredState {
    let root = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(root.path().join("manifests"), root.path().join("state"));
    std::fs::create_dir_all(&config.manifest_dir).unwrap();
    std::fs::create_dir_all(&config.state_dir).unwrap();
    std::fs::write(config.manifest_dir.join("mesh.yaml"), text).unwrap();
    let state = store::load(&config).unwrap();
    let rejected: Vec<String> = state.rejected.iter().map(ToString::to_string).collect();
    assert!(
        rejected.is_empty(),
        "the test manifests were refused: {rejected:#?}\n{text}"
    );
    state
}

/// A translation decoded back into messages, by resource name.
#[derive(Debug)]
struct Decoded {
    workloads: BTreeMap<String, Workload>,
    services: BTreeMap<String, Service>,
    policies: BTreeMap<String, Authorization>,
    warnings: Vec<Warning>,
}

impl Decoded {
    fn workload(&self, ns: &str, name: &str) -> &Workload {
        let uid = format!("Kubernetes//Pod/{ns}/{name}");
        self.workloads
            .get(&uid)
            .unwrap_or_else(|| panic!("no workload {uid} in {:?}", self.workloads.keys()))
    }

    fn service(&self, ns: &str, name: &str) -> &Service {
        let key = format!("{ns}/{name}.{ns}.svc.cluster.local");
        self.services
            .get(&key)
            .unwrap_or_else(|| panic!("no service {key} in {:?}", self.services.keys()))
    }

    /// Warnings as `(object, message)`.
    fn warnings(&self) -> Vec<(&str, &str)> {
        self.warnings
            .iter()
            .map(|w| (w.object.as_str(), w.message.as_str()))
            .collect()
    }
}

fn translate_text(text: &str) -> Decoded {
    decode(translate(&load(text), &TranslateConfig::default(), 7))
}

fn decode(translation: Translation) -> Decoded {
    let snapshot = &translation.snapshot;
    assert_eq!(snapshot.generation, 7);
    let mut types = [
        mesh_proto::ADDRESS_TYPE_URL,
        mesh_proto::AUTHORIZATION_TYPE_URL,
        mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
        mesh_proto::L7_POLICY_TYPE_URL,
    ];
    types.sort_unstable();
    assert_eq!(snapshot.types.keys().collect::<Vec<_>>(), types);
    let mut workloads = BTreeMap::new();
    let mut services = BTreeMap::new();
    for (name, resource) in &snapshot.types[mesh_proto::ADDRESS_TYPE_URL] {
        assert_eq!(resource.name, *name);
        assert_eq!(resource.body.type_url, mesh_proto::ADDRESS_TYPE_URL);
        let address = Address::decode(resource.body.value.as_slice()).unwrap();
        match address
            .r#type
            .expect("an address is a workload or a service")
        {
            address::Type::Workload(w) => {
                assert_eq!(**name, w.uid, "a workload is named by its uid");
                workloads.insert(name.to_string(), w);
            }
            address::Type::Service(s) => {
                assert_eq!(**name, format!("{}/{}", s.namespace, s.hostname));
                services.insert(name.to_string(), s);
            }
        }
    }
    let mut policies = BTreeMap::new();
    for (name, resource) in &snapshot.types[mesh_proto::AUTHORIZATION_TYPE_URL] {
        assert_eq!(resource.body.type_url, mesh_proto::AUTHORIZATION_TYPE_URL);
        let policy = Authorization::decode(resource.body.value.as_slice()).unwrap();
        assert_eq!(**name, format!("{}/{}", policy.namespace, policy.name));
        policies.insert(name.to_string(), policy);
    }
    Decoded {
        workloads,
        services,
        policies,
        warnings: translation.warnings,
    }
}

fn ip(text: &str) -> Vec<u8> {
    match text.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn hostname_waypoint(ns: &str, name: &str) -> GatewayAddress {
    GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: ns.to_string(),
            hostname: format!("{name}.{ns}.svc.cluster.local"),
        })),
        hbone_mtls_port: 15008,
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.

#[test]
fn enrollment_follows_namespace_and_pod_labels() {
    const MODE: &str = "istio.io/dataplane-mode";
    type Labels = &'static [(&'static str, &'static str)];
    // (case, namespace labels, pod labels, tunnel protocol)
    let cases: [(&str, Labels, Labels, TunnelProtocol); 7] = [
        ("plain namespace", &[], &[], TunnelProtocol::None),
        (
            "ambient namespace",
            &[(MODE, "ambient")],
            &[],
            TunnelProtocol::Hbone,
        ),
        (
            "pod opts out",
            &[(MODE, "ambient")],
            &[(MODE, "none")],
            TunnelProtocol::None,
        ),
        (
            "pod opts in",
            &[],
            &[(MODE, "ambient")],
            TunnelProtocol::Hbone,
        ),
        (
            "pod opts in, namespace none",
            &[(MODE, "none")],
            &[(MODE, "ambient")],
            TunnelProtocol::Hbone,
        ),
        (
            "namespace none",
            &[(MODE, "none")],
            &[],
            TunnelProtocol::None,
        ),
        (
            "empty pod label defers",
            &[(MODE, "ambient")],
            &[(MODE, "")],
            TunnelProtocol::Hbone,
        ),
    ];
    for (case, ns_labels, pod_labels, expected) in cases {
        let text = documents(&[
            namespace("shop", ns_labels),
            pod("shop", "cart-1", pod_labels, Some("10.0.0.1")),
        ]);
        let decoded = translate_text(&text);
        let w = decoded.workload("shop", "cart-1");
        assert_eq!(w.tunnel_protocol(), expected, "{case}");
        assert!(
            decoded.warnings.is_empty(),
            "{case}: {:?}",
            decoded.warnings
        );
    }
}

#[test]
fn a_workload_record_carries_identity_placement_and_address() {
    let text = documents(&[
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        pod(
            "shop",
            "cart-1",
            &[("app", "cart"), ("version", "v2")],
            Some("10.0.0.1"),
        ),
        pod("shop", "v6", &[], Some("fd00::7")),
        pod("shop", "unplaced", &[], None),
        pod("shop", "pending", &[], Some("10.0.0.9")).replace("phase: Running", "phase: Pending"),
    ]);
    let decoded = translate_text(&text);
    assert_eq!(
        decoded.workloads.keys().collect::<Vec<_>>(),
        [
            "Kubernetes//Pod/shop/cart-1",
            "Kubernetes//Pod/shop/pending",
            "Kubernetes//Pod/shop/v6"
        ],
        "a pod without an IP has no workload record"
    );
    let w = decoded.workload("shop", "cart-1");
    let expected = Workload {
        uid: "Kubernetes//Pod/shop/cart-1".into(),
        name: "cart-1".into(),
        namespace: "shop".into(),
        addresses: vec![ip("10.0.0.1")],
        tunnel_protocol: TunnelProtocol::Hbone.into(),
        trust_domain: "cluster.local".into(),
        service_account: "cart-1-sa".into(),
        node: "node-1".into(),
        canonical_name: "cart".into(),
        canonical_revision: "v2".into(),
        workload_type: WorkloadType::Pod.into(),
        workload_name: "cart-1".into(),
        status: WorkloadStatus::Healthy.into(),
        cluster_id: "Kubernetes".into(),
        ..Default::default()
    };
    assert_eq!(*w, expected);
    assert_eq!(decoded.workload("shop", "v6").addresses, [ip("fd00::7")]);
    assert_eq!(decoded.workload("shop", "v6").canonical_revision, "latest");
    assert_eq!(
        decoded.workload("shop", "pending").status(),
        WorkloadStatus::Unhealthy
    );
}

#[test]
fn deployment_pods_are_workloads_of_their_deployment_once_placed() {
    // Deployment pods get their IP from the lab's status records, not from the manifest.
    let root = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(root.path().join("manifests"), root.path().join("state"));
    std::fs::create_dir_all(&config.manifest_dir).unwrap();
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\n\
                spec:\n  replicas: 2\n  selector: {matchLabels: {app: cart}}\n  template:\n    \
                metadata: {labels: {app: cart}}\n    spec:\n      containers: [{name: app, image: app}]\n";
    std::fs::write(config.manifest_dir.join("cart.yaml"), text).unwrap();
    let record = store::PodStatusRecord {
        namespace: "shop".into(),
        name: "cart-1".into(),
        node_name: Some("node-2".into()),
        pod_ip: Some("10.0.0.5".parse().unwrap()),
        phase: Some("Running".into()),
    };
    store::record_pod_status(&config.state_dir, &record).unwrap();
    let state = store::load(&config).unwrap();
    assert!(state.rejected.is_empty(), "{:?}", state.rejected);
    let decoded = decode(translate(&state, &TranslateConfig::default(), 7));
    assert_eq!(
        decoded.workloads.keys().collect::<Vec<_>>(),
        ["Kubernetes//Pod/shop/cart-1"],
        "cart-0 has no IP yet"
    );
    let w = decoded.workload("shop", "cart-1");
    assert_eq!(w.workload_type(), WorkloadType::Deployment);
    assert_eq!(w.workload_name, "cart");
    assert_eq!(w.node, "node-2");
    assert_eq!(w.addresses, [ip("10.0.0.5")]);
}

// ---------------------------------------------------------------------------------------------
// Services and selectors.

#[test]
fn selectors_give_each_pod_its_services_with_target_ports() {
    let cart_spec = "{clusterIP: 10.96.0.10, selector: {app: cart}, ports: [\
                     {name: http, port: 80, targetPort: 8080}, \
                     {name: web, port: 8443, targetPort: web}, \
                     {name: plain, port: 9000}]}";
    let text = documents(&[
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        pod("shop", "cart-1", &[("app", "cart")], Some("10.0.0.1")),
        pod_with(
            "shop",
            "cart-2",
            &[("app", "cart"), ("tier", "b")],
            Some("10.0.0.2"),
            "[{containerPort: 9090}]",
        ),
        pod("shop", "web-1", &[("app", "web")], Some("10.0.0.3")),
        pod("bank", "cart-1", &[("app", "cart")], Some("10.0.1.1")),
        service("shop", "cart", &[], cart_spec),
        service(
            "shop",
            "cart-admin",
            &[],
            "{selector: {app: cart}, ports: [{port: 81}]}",
        ),
        service(
            "shop",
            "tier-b",
            &[],
            "{selector: {app: cart, tier: b}, ports: [{port: 82, targetPort: 8082}]}",
        ),
        service("shop", "headless-ish", &[], "{ports: [{port: 83}]}"),
    ]);
    let decoded = translate_text(&text);
    let cart = "shop/cart.shop.svc.cluster.local";
    let admin = "shop/cart-admin.shop.svc.cluster.local";
    let tier_b = "shop/tier-b.shop.svc.cluster.local";
    // (namespace, pod, expected services map: key -> (service port, target port))
    type Expected<'a> = Vec<(&'a str, Vec<(u32, u32)>)>;
    let cases: [(&str, &str, Expected); 4] = [
        (
            "shop",
            "cart-1",
            vec![
                (cart, vec![(80, 8080), (8443, 9090), (9000, 9000)]),
                (admin, vec![(81, 81)]),
            ],
        ),
        (
            // The named port `web` is not declared by cart-2: left out, as Kubernetes does.
            "shop",
            "cart-2",
            vec![
                (cart, vec![(80, 8080), (9000, 9000)]),
                (admin, vec![(81, 81)]),
                (tier_b, vec![(82, 8082)]),
            ],
        ),
        ("shop", "web-1", vec![]),
        // Selectors pick pods of their own namespace only.
        ("bank", "cart-1", vec![]),
    ];
    for (ns, name, expected) in cases {
        let w = decoded.workload(ns, name);
        let actual: BTreeMap<&str, Vec<(u32, u32)>> = w
            .services
            .iter()
            .map(|(k, list)| {
                let ports = list
                    .ports
                    .iter()
                    .map(|p| (p.service_port, p.target_port))
                    .collect();
                (k.as_str(), ports)
            })
            .collect();
        let expected: BTreeMap<&str, Vec<(u32, u32)>> = expected.into_iter().collect();
        assert_eq!(actual, expected, "{ns}/{name}");
    }
}

#[test]
fn services_carry_their_vip_hostname_and_ports() {
    let text = documents(&[
        service(
            "shop",
            "cart",
            &[],
            "{clusterIP: 10.96.7.10, selector: {app: cart}, ports: [\
             {name: http, port: 80, targetPort: 8080}, {name: web, port: 8443, targetPort: web}]}",
        ),
        service(
            "shop",
            "allocated",
            &[],
            "{selector: {app: x}, ports: [{port: 81}]}",
        ),
        service(
            "shop",
            "v6",
            &[],
            "{clusterIP: \"fd00:96::10\", ports: [{port: 82}]}",
        ),
    ]);
    let decoded = translate_text(&text);
    assert_eq!(decoded.services.len(), 3);
    let cart = decoded.service("shop", "cart");
    assert_eq!(cart.name, "cart");
    assert_eq!(cart.namespace, "shop");
    assert_eq!(cart.hostname, "cart.shop.svc.cluster.local");
    assert_eq!(cart.addresses.len(), 1);
    assert_eq!(cart.addresses[0].address, ip("10.96.7.10"));
    assert_eq!(cart.addresses[0].network, "");
    assert_eq!(
        cart.ports,
        [
            Port {
                service_port: 80,
                target_port: 8080
            },
            // A named target port differs per pod: the workloads carry it.
            Port {
                service_port: 8443,
                target_port: 0
            },
        ]
    );
    assert_eq!(cart.waypoint, None);

    let allocated = decoded.service("shop", "allocated");
    let vip: IpAddr = match allocated.addresses[0].address.as_slice() {
        [a, b, c, d] => IpAddr::from([*a, *b, *c, *d]),
        other => panic!("not an IPv4 address: {other:?}"),
    };
    let cidr: ipnet::IpNet = store::vip::DEFAULT_SERVICE_CIDR.parse().unwrap();
    assert!(cidr.contains(&vip), "{vip} is outside {cidr}");
    assert_ne!(allocated.addresses[0].address, cart.addresses[0].address);
    assert_eq!(
        allocated.ports,
        [Port {
            service_port: 81,
            target_port: 81
        }]
    );

    assert_eq!(
        decoded.service("shop", "v6").addresses[0].address,
        ip("fd00:96::10")
    );
}

// ---------------------------------------------------------------------------------------------
// Waypoints.

#[test]
fn use_waypoint_labels_bind_services_and_workloads_to_waypoints() {
    const USE: &str = "istio.io/use-waypoint";
    const USE_NS: &str = "istio.io/use-waypoint-namespace";
    struct Case {
        name: &'static str,
        ns: &'static [(&'static str, &'static str)],
        svc: &'static [(&'static str, &'static str)],
        pod: &'static [(&'static str, &'static str)],
        gateways: Vec<String>,
        service_waypoint: Option<(&'static str, &'static str)>,
        workload_waypoint: Option<(&'static str, &'static str)>,
        /// (object, part of the message)
        warnings: &'static [(&'static str, &'static str)],
    }
    let cases = [
        Case {
            name: "no labels",
            ns: &[],
            svc: &[],
            pod: &[],
            gateways: vec![waypoint("shop", "wp", None)],
            service_waypoint: None,
            workload_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "namespace label, service waypoint",
            ns: &[(USE, "wp")],
            svc: &[],
            pod: &[],
            gateways: vec![waypoint("shop", "wp", None)],
            service_waypoint: Some(("shop", "wp")),
            workload_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "service label",
            ns: &[],
            svc: &[(USE, "wp")],
            pod: &[],
            gateways: vec![waypoint("shop", "wp", Some("service"))],
            service_waypoint: Some(("shop", "wp")),
            workload_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "service label wins over namespace label",
            ns: &[(USE, "wp")],
            svc: &[(USE, "other")],
            pod: &[],
            gateways: vec![
                waypoint("shop", "wp", None),
                waypoint("shop", "other", None),
            ],
            service_waypoint: Some(("shop", "other")),
            workload_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "service opts out with none",
            ns: &[(USE, "wp")],
            svc: &[(USE, "none")],
            pod: &[],
            gateways: vec![waypoint("shop", "wp", Some("all"))],
            service_waypoint: None,
            workload_waypoint: Some(("shop", "wp")),
            warnings: &[],
        },
        Case {
            name: "pod label, workload waypoint",
            ns: &[],
            svc: &[],
            pod: &[(USE, "wp")],
            gateways: vec![waypoint("shop", "wp", Some("workload"))],
            service_waypoint: None,
            workload_waypoint: Some(("shop", "wp")),
            warnings: &[],
        },
        Case {
            name: "namespace label, workload waypoint serves no service",
            ns: &[(USE, "wp")],
            svc: &[],
            pod: &[],
            gateways: vec![waypoint("shop", "wp", Some("workload"))],
            service_waypoint: None,
            workload_waypoint: Some(("shop", "wp")),
            warnings: &[],
        },
        Case {
            name: "waypoint for all",
            ns: &[(USE, "wp")],
            svc: &[],
            pod: &[],
            gateways: vec![waypoint("shop", "wp", Some("all"))],
            service_waypoint: Some(("shop", "wp")),
            workload_waypoint: Some(("shop", "wp")),
            warnings: &[],
        },
        Case {
            name: "waypoint for none",
            ns: &[(USE, "wp")],
            svc: &[],
            pod: &[],
            gateways: vec![waypoint("shop", "wp", Some("none"))],
            service_waypoint: None,
            workload_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "pod opts out with none",
            ns: &[(USE, "wp")],
            svc: &[],
            pod: &[(USE, "none")],
            gateways: vec![waypoint("shop", "wp", Some("all"))],
            service_waypoint: Some(("shop", "wp")),
            workload_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "waypoint in another namespace",
            ns: &[],
            svc: &[(USE, "shared"), (USE_NS, "infra")],
            pod: &[],
            gateways: vec![waypoint("infra", "shared", None)],
            service_waypoint: Some(("infra", "shared")),
            workload_waypoint: None,
            warnings: &[],
        },
        Case {
            name: "missing gateway",
            ns: &[],
            svc: &[(USE, "gone")],
            pod: &[(USE, "gone")],
            gateways: vec![],
            service_waypoint: None,
            workload_waypoint: None,
            warnings: &[
                ("Pod shop/cart-1", "istio.io/use-waypoint names shop/gone"),
                ("Service shop/cart", "istio.io/use-waypoint names shop/gone"),
            ],
        },
        Case {
            name: "gateway of another class",
            ns: &[(USE, "ingress")],
            svc: &[],
            pod: &[],
            gateways: vec![gateway("shop", "ingress", "istio", None)],
            service_waypoint: None,
            workload_waypoint: None,
            warnings: &[
                ("Pod shop/cart-1", "not a Gateway of class istio-waypoint"),
                ("Service shop/cart", "not a Gateway of class istio-waypoint"),
            ],
        },
    ];
    for case in cases {
        let mut docs = vec![
            namespace("shop", case.ns),
            namespace("infra", &[]),
            pod(
                "shop",
                "cart-1",
                &[&[("app", "cart")], case.pod].concat(),
                Some("10.0.0.1"),
            ),
            service(
                "shop",
                "cart",
                case.svc,
                "{selector: {app: cart}, ports: [{port: 80}]}",
            ),
        ];
        docs.extend(case.gateways);
        let decoded = translate_text(&documents(&docs));
        let expected = |w: Option<(&str, &str)>| w.map(|(ns, name)| hostname_waypoint(ns, name));
        assert_eq!(
            decoded.service("shop", "cart").waypoint,
            expected(case.service_waypoint),
            "{}: service",
            case.name
        );
        assert_eq!(
            decoded.workload("shop", "cart-1").waypoint,
            expected(case.workload_waypoint),
            "{}: workload",
            case.name
        );
        let warnings = decoded.warnings();
        assert_eq!(
            warnings.len(),
            case.warnings.len(),
            "{}: {warnings:?}",
            case.name
        );
        for ((object, message), (want_object, want_part)) in warnings.iter().zip(case.warnings) {
            assert_eq!(object, want_object, "{}", case.name);
            assert!(message.contains(want_part), "{}: {message}", case.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Authorization policies.

fn exact(s: &str) -> wire::StringMatch {
    string(string_match::MatchType::Exact(s.into()))
}

fn prefix(s: &str) -> wire::StringMatch {
    string(string_match::MatchType::Prefix(s.into()))
}

fn suffix(s: &str) -> wire::StringMatch {
    string(string_match::MatchType::Suffix(s.into()))
}

fn presence() -> wire::StringMatch {
    string(string_match::MatchType::Presence(()))
}

fn string(match_type: string_match::MatchType) -> wire::StringMatch {
    wire::StringMatch {
        match_type: Some(match_type),
    }
}

fn net(address: &str, length: u32) -> wire::Address {
    wire::Address {
        address: ip(address),
        length,
    }
}

/// A group: every `Rules` must hold; a `Rules` holds when any of its matches does.
fn group(rules: Vec<Vec<Match>>) -> Group {
    Group {
        rules: rules.into_iter().map(|matches| Rules { matches }).collect(),
    }
}

fn auth(ns: &str, name: &str, scope: Scope, action: Action, groups: Vec<Group>) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: ns.into(),
        scope: scope.into(),
        action: action.into(),
        groups,
        dry_run: false,
    }
}

/// The mesh every policy case is added to: `shop/cart-1`, `shop/web-1` and `bank/cart-1`;
/// `shop/cart` selects the carts of shop and has no waypoint; `shop/reviews` selects web and is
/// bound to the waypoint `shop/wp`.
fn policy_world() -> Vec<String> {
    vec![
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        namespace("bank", &[("istio.io/dataplane-mode", "ambient")]),
        namespace("istio-system", &[]),
        pod("shop", "cart-1", &[("app", "cart")], Some("10.0.0.1")),
        pod("shop", "web-1", &[("app", "web")], Some("10.0.0.2")),
        pod("bank", "cart-1", &[("app", "cart")], Some("10.0.1.1")),
        service(
            "shop",
            "cart",
            &[],
            "{selector: {app: cart}, ports: [{port: 80}]}",
        ),
        service(
            "shop",
            "reviews",
            &[("istio.io/use-waypoint", "wp")],
            "{selector: {app: web}, ports: [{port: 80}]}",
        ),
        waypoint("shop", "wp", None),
    ]
}

struct PolicyCase {
    name: &'static str,
    policies: Vec<String>,
    /// Every Authorization resource.
    expected: Vec<Authorization>,
    /// (object, part of the message) of every warning, in order.
    warnings: &'static [(&'static str, &'static str)],
    /// Workloads whose `authorization_policies` is not empty: (ns, pod, policies).
    selected: &'static [(&'static str, &'static str, &'static [&'static str])],
}

const L7_ALLOW_WARNING: &str =
    "they allow nothing, and the traffic their L4 part matches is denied";
const L7_DENY_WARNING: &str = "their L4 part is enforced, denying more than the L7 rule would";

fn run_policy_cases(cases: Vec<PolicyCase>) {
    let base = translate_text(&documents(&policy_world()));
    assert!(base.policies.is_empty());
    assert!(base.warnings.is_empty(), "{:?}", base.warnings);
    for case in cases {
        let mut docs = policy_world();
        docs.extend(case.policies);
        let decoded = translate_text(&documents(&docs));
        let expected: BTreeMap<String, Authorization> = case
            .expected
            .into_iter()
            .map(|a| (format!("{}/{}", a.namespace, a.name), a))
            .collect();
        assert_eq!(decoded.policies, expected, "{}", case.name);

        let warnings = decoded.warnings();
        assert_eq!(
            warnings.len(),
            case.warnings.len(),
            "{}: {warnings:?}",
            case.name
        );
        for ((object, message), (want_object, want_part)) in warnings.iter().zip(case.warnings) {
            assert_eq!(object, want_object, "{}", case.name);
            assert!(message.contains(want_part), "{}: {message}", case.name);
        }

        for w in decoded.workloads.values() {
            let want: &[&str] = case
                .selected
                .iter()
                .find(|(ns, pod, _)| *ns == w.namespace && *pod == w.name)
                .map_or(&[], |(_, _, names)| names);
            assert_eq!(
                w.authorization_policies, want,
                "{}: policies of {}/{}",
                case.name, w.namespace, w.name
            );
        }
    }
}

#[test]
fn policy_scope_follows_namespace_and_selector() {
    use Action::Allow;
    let from_cart = "{rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/cart]}}]}]}";
    let from_cart_group = || {
        group(vec![vec![Match {
            principals: vec![exact("cluster.local/ns/shop/sa/cart")],
            ..Default::default()
        }]])
    };
    run_policy_cases(vec![
        PolicyCase {
            name: "root namespace without selector is global",
            policies: vec![policy("istio-system", "mesh", from_cart)],
            expected: vec![auth(
                "istio-system",
                "mesh",
                Scope::Global,
                Allow,
                vec![from_cart_group()],
            )],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "other namespace without selector is namespace-wide",
            policies: vec![policy("shop", "ns-wide", from_cart)],
            expected: vec![auth(
                "shop",
                "ns-wide",
                Scope::Namespace,
                Allow,
                vec![from_cart_group()],
            )],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "an empty selector is namespace-wide",
            policies: vec![policy(
                "shop",
                "empty-selector",
                "{selector: {matchLabels: {}}, rules: [{}]}",
            )],
            expected: vec![auth(
                "shop",
                "empty-selector",
                Scope::Namespace,
                Allow,
                vec![group(vec![])],
            )],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "a selector picks pods of its own namespace",
            policies: vec![policy(
                "shop",
                "carts",
                &format!(
                    "{{selector: {{matchLabels: {{app: cart}}}}, {}",
                    &from_cart[1..]
                ),
            )],
            expected: vec![auth(
                "shop",
                "carts",
                Scope::WorkloadSelector,
                Allow,
                vec![from_cart_group()],
            )],
            warnings: &[],
            selected: &[("shop", "cart-1", &["shop/carts"])],
        },
        PolicyCase {
            name: "a selector in the root namespace picks pods of every namespace",
            policies: vec![policy(
                "istio-system",
                "all-carts",
                "{selector: {matchLabels: {app: cart}}, action: DENY, rules: [{}]}",
            )],
            expected: vec![auth(
                "istio-system",
                "all-carts",
                Scope::WorkloadSelector,
                Action::Deny,
                vec![group(vec![])],
            )],
            warnings: &[],
            selected: &[
                ("shop", "cart-1", &["istio-system/all-carts"]),
                ("bank", "cart-1", &["istio-system/all-carts"]),
            ],
        },
        PolicyCase {
            name: "two selector policies on one pod are listed in order",
            policies: vec![
                policy(
                    "shop",
                    "b-deny",
                    "{selector: {matchLabels: {app: cart}}, action: DENY, rules: [{}]}",
                ),
                policy(
                    "shop",
                    "a-allow",
                    "{selector: {matchLabels: {app: cart}}, rules: [{}]}",
                ),
            ],
            expected: vec![
                auth(
                    "shop",
                    "a-allow",
                    Scope::WorkloadSelector,
                    Allow,
                    vec![group(vec![])],
                ),
                auth(
                    "shop",
                    "b-deny",
                    Scope::WorkloadSelector,
                    Action::Deny,
                    vec![group(vec![])],
                ),
            ],
            warnings: &[],
            selected: &[("shop", "cart-1", &["shop/a-allow", "shop/b-deny"])],
        },
        PolicyCase {
            name: "a selector matching nothing selects nothing",
            policies: vec![policy(
                "shop",
                "nobody",
                "{selector: {matchLabels: {app: nobody}}, rules: [{}]}",
            )],
            expected: vec![auth(
                "shop",
                "nobody",
                Scope::WorkloadSelector,
                Allow,
                vec![group(vec![])],
            )],
            warnings: &[],
            selected: &[],
        },
    ]);
}

#[test]
fn policy_actions_rules_and_dry_run() {
    use Action::{Allow, Deny};
    use Scope::Namespace;
    run_policy_cases(vec![
        PolicyCase {
            name: "no rules: no groups (an ALLOW that allows nothing)",
            policies: vec![policy("shop", "deny-all", "{}")],
            expected: vec![auth("shop", "deny-all", Namespace, Allow, vec![])],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "an empty rule: one group without rules (matches everything)",
            policies: vec![policy("shop", "allow-all", "{action: ALLOW, rules: [{}]}")],
            expected: vec![auth(
                "shop",
                "allow-all",
                Namespace,
                Allow,
                vec![group(vec![])],
            )],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "DENY",
            policies: vec![policy(
                "shop",
                "deny",
                "{action: DENY, rules: [{}, {to: [{operation: {ports: [\"22\"]}}]}]}",
            )],
            expected: vec![auth(
                "shop",
                "deny",
                Namespace,
                Deny,
                vec![
                    group(vec![]),
                    group(vec![vec![Match {
                        destination_ports: vec![22],
                        ..Default::default()
                    }]]),
                ],
            )],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "dry-run annotation",
            policies: vec![dry_run_policy(
                "shop",
                "trial",
                "{action: DENY, rules: [{}]}",
            )],
            expected: vec![Authorization {
                dry_run: true,
                ..auth("shop", "trial", Namespace, Deny, vec![group(vec![])])
            }],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "AUDIT is not emitted",
            policies: vec![policy("shop", "audit", "{action: AUDIT, rules: [{}]}")],
            expected: vec![],
            warnings: &[(
                "AuthorizationPolicy shop/audit",
                "AUDIT and CUSTOM actions are not supported",
            )],
            selected: &[],
        },
        PolicyCase {
            name: "CUSTOM is not emitted",
            policies: vec![policy(
                "shop",
                "ext",
                "{action: CUSTOM, provider: {name: opa}, rules: [{}]}",
            )],
            expected: vec![],
            warnings: &[(
                "AuthorizationPolicy shop/ext",
                "AUDIT and CUSTOM actions are not supported",
            )],
            selected: &[],
        },
    ]);
}

#[test]
fn each_source_operation_and_condition_field_becomes_its_match() {
    use Action::Allow;
    use Scope::Namespace;
    let one = |name: &'static str, spec: &str, m: Vec<Vec<Match>>| PolicyCase {
        name,
        policies: vec![policy("shop", "p", spec)],
        expected: vec![auth("shop", "p", Namespace, Allow, vec![group(m)])],
        warnings: &[],
        selected: &[],
    };
    run_policy_cases(vec![
        one(
            "principals: exact, prefix, suffix and presence",
            "{rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/cart, \
             \"cluster.local/ns/shop/*\", \"*/ns/bank/sa/teller\", \"*\"]}}]}]}",
            vec![vec![Match {
                principals: vec![
                    exact("cluster.local/ns/shop/sa/cart"),
                    prefix("cluster.local/ns/shop/"),
                    suffix("/ns/bank/sa/teller"),
                    presence(),
                ],
                ..Default::default()
            }]],
        ),
        one(
            "notPrincipals",
            "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/shop/sa/cart, \"*\"]}}]}]}",
            vec![vec![Match {
                not_principals: vec![exact("cluster.local/ns/shop/sa/cart"), presence()],
                ..Default::default()
            }]],
        ),
        one(
            "namespaces and notNamespaces",
            "{rules: [{from: [{source: {namespaces: [shop, \"team-*\"], notNamespaces: [\"*-test\"]}}]}]}",
            vec![vec![Match {
                namespaces: vec![exact("shop"), prefix("team-")],
                not_namespaces: vec![suffix("-test")],
                ..Default::default()
            }]],
        ),
        one(
            "ipBlocks and notIpBlocks",
            "{rules: [{from: [{source: {ipBlocks: [10.1.0.0/16, 192.168.1.7, \"fd00::/8\"], \
             notIpBlocks: [10.1.2.0/24]}}]}]}",
            vec![vec![Match {
                source_ips: vec![
                    net("10.1.0.0", 16),
                    net("192.168.1.7", 32),
                    net("fd00::", 8),
                ],
                not_source_ips: vec![net("10.1.2.0", 24)],
                ..Default::default()
            }]],
        ),
        one(
            "several sources are alternatives within one Rules",
            "{rules: [{from: [{source: {namespaces: [shop]}}, {source: {ipBlocks: [10.9.0.0/16]}}]}]}",
            vec![vec![
                Match {
                    namespaces: vec![exact("shop")],
                    ..Default::default()
                },
                Match {
                    source_ips: vec![net("10.9.0.0", 16)],
                    ..Default::default()
                },
            ]],
        ),
        one(
            "ports and notPorts",
            "{rules: [{to: [{operation: {ports: [\"8080\", \"9090\"]}}, {operation: {notPorts: [\"22\"]}}]}]}",
            vec![vec![
                Match {
                    destination_ports: vec![8080, 9090],
                    ..Default::default()
                },
                Match {
                    not_destination_ports: vec![22],
                    ..Default::default()
                },
            ]],
        ),
        one(
            "from, to and when must all hold: one Rules each",
            "{rules: [{from: [{source: {namespaces: [shop]}}], to: [{operation: {ports: [\"80\"]}}], \
             when: [{key: source.ip, values: [10.3.0.0/16], notValues: [10.3.3.3]}, \
             {key: source.namespace, values: [shop], notValues: [\"kube-*\"]}, \
             {key: destination.port, values: [\"80\", \"443\"], notValues: [\"8443\"]}]}]}",
            vec![
                vec![Match {
                    namespaces: vec![exact("shop")],
                    ..Default::default()
                }],
                vec![Match {
                    destination_ports: vec![80],
                    ..Default::default()
                }],
                vec![Match {
                    source_ips: vec![net("10.3.0.0", 16)],
                    not_source_ips: vec![net("10.3.3.3", 32)],
                    ..Default::default()
                }],
                vec![Match {
                    namespaces: vec![exact("shop")],
                    not_namespaces: vec![prefix("kube-")],
                    ..Default::default()
                }],
                vec![Match {
                    destination_ports: vec![80, 443],
                    not_destination_ports: vec![8443],
                    ..Default::default()
                }],
            ],
        ),
        one(
            "when: source.principal and destination.ip",
            "{rules: [{when: [{key: source.principal, values: [cluster.local/ns/shop/sa/cart]}, \
             {key: destination.ip, notValues: [10.0.0.0/8]}]}]}",
            vec![
                vec![Match {
                    principals: vec![exact("cluster.local/ns/shop/sa/cart")],
                    ..Default::default()
                }],
                vec![Match {
                    not_destination_ips: vec![net("10.0.0.0", 8)],
                    ..Default::default()
                }],
            ],
        ),
    ]);
}

#[test]
fn l7_rules_without_a_waypoint_fail_closed_at_l4() {
    use Action::{Allow, Deny};
    use Scope::{Namespace, WorkloadSelector};
    let cart_principal = || Match {
        principals: vec![exact("cluster.local/ns/shop/sa/cart")],
        ..Default::default()
    };
    let port = |p: u32| Match {
        destination_ports: vec![p],
        ..Default::default()
    };
    run_policy_cases(vec![
        PolicyCase {
            name: "ALLOW with paths: the rule leaves the ALLOW and its L4 part is denied",
            policies: vec![policy(
                "shop",
                "api",
                "{selector: {matchLabels: {app: cart}}, rules: [\
                 {from: [{source: {principals: [cluster.local/ns/shop/sa/cart]}}], \
                  to: [{operation: {paths: [\"/admin/*\"], ports: [\"8080\"]}}]}, \
                 {to: [{operation: {ports: [\"9090\"]}}]}]}",
            )],
            expected: vec![
                auth(
                    "shop",
                    "api",
                    WorkloadSelector,
                    Allow,
                    vec![group(vec![vec![port(9090)]])],
                ),
                auth(
                    "shop",
                    "api:l7-deny",
                    WorkloadSelector,
                    Deny,
                    vec![group(vec![vec![cart_principal()], vec![port(8080)]])],
                ),
            ],
            warnings: &[("AuthorizationPolicy shop/api", L7_ALLOW_WARNING)],
            selected: &[("shop", "cart-1", &["shop/api", "shop/api:l7-deny"])],
        },
        PolicyCase {
            name: "ALLOW whose only rule needs L7 allows nothing",
            policies: vec![policy(
                "shop",
                "get-only",
                "{rules: [{to: [{operation: {methods: [GET]}}]}]}",
            )],
            expected: vec![
                auth("shop", "get-only", Namespace, Allow, vec![]),
                // The L4 part of `methods: [GET]` is every operation.
                auth(
                    "shop",
                    "get-only:l7-deny",
                    Namespace,
                    Deny,
                    vec![group(vec![vec![Match::default()]])],
                ),
            ],
            warnings: &[("AuthorizationPolicy shop/get-only", L7_ALLOW_WARNING)],
            selected: &[],
        },
        PolicyCase {
            name: "ALLOW with a header condition and requestPrincipals",
            policies: vec![policy(
                "shop",
                "jwt",
                "{rules: [{from: [{source: {requestPrincipals: [\"issuer/*\"], namespaces: [shop]}}], \
                 when: [{key: \"request.headers[x-user]\", values: [admin]}, {key: source.ip, values: [10.0.0.0/8]}]}]}",
            )],
            expected: vec![
                auth("shop", "jwt", Namespace, Allow, vec![]),
                auth(
                    "shop",
                    "jwt:l7-deny",
                    Namespace,
                    Deny,
                    vec![group(vec![
                        vec![Match {
                            namespaces: vec![exact("shop")],
                            ..Default::default()
                        }],
                        vec![Match {
                            source_ips: vec![net("10.0.0.0", 8)],
                            ..Default::default()
                        }],
                    ])],
                ),
            ],
            warnings: &[("AuthorizationPolicy shop/jwt", L7_ALLOW_WARNING)],
            selected: &[],
        },
        PolicyCase {
            name: "DENY with methods keeps its L4 part",
            policies: vec![policy(
                "shop",
                "no-delete",
                "{action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/cart]}}], \
                 to: [{operation: {methods: [DELETE], ports: [\"8080\"]}}]}]}",
            )],
            expected: vec![auth(
                "shop",
                "no-delete",
                Namespace,
                Deny,
                vec![group(vec![vec![cart_principal()], vec![port(8080)]])],
            )],
            warnings: &[("AuthorizationPolicy shop/no-delete", L7_DENY_WARNING)],
            selected: &[],
        },
    ]);
}

#[test]
fn target_refs_go_to_the_waypoint_or_fail_closed_on_the_pods() {
    use Action::{Allow, Deny};
    use Scope::WorkloadSelector;
    const NO_WAYPOINT: &str = "targets Service shop/cart, which has no waypoint: enforced at L4";
    run_policy_cases(vec![
        PolicyCase {
            name: "a Service without waypoint: enforced at L4 on its pods",
            policies: vec![policy(
                "shop",
                "cart-only",
                "{targetRefs: [{kind: Service, group: \"\", name: cart}], \
                 rules: [{from: [{source: {namespaces: [shop]}}]}]}",
            )],
            expected: vec![auth(
                "shop",
                "cart-only",
                WorkloadSelector,
                Allow,
                vec![group(vec![vec![Match {
                    namespaces: vec![exact("shop")],
                    ..Default::default()
                }]])],
            )],
            warnings: &[("AuthorizationPolicy shop/cart-only", NO_WAYPOINT)],
            // Only the service's own namespace: bank/cart-1 has the label but is not behind it.
            selected: &[("shop", "cart-1", &["shop/cart-only"])],
        },
        PolicyCase {
            name: "a Service without waypoint and an L7 rule: both halves on its pods",
            policies: vec![policy(
                "shop",
                "cart-get",
                "{targetRef: {kind: Service, group: \"\", name: cart}, \
                 rules: [{to: [{operation: {methods: [GET], ports: [\"80\"]}}]}]}",
            )],
            expected: vec![
                auth("shop", "cart-get", WorkloadSelector, Allow, vec![]),
                auth(
                    "shop",
                    "cart-get:l7-deny",
                    WorkloadSelector,
                    Deny,
                    vec![group(vec![vec![Match {
                        destination_ports: vec![80],
                        ..Default::default()
                    }]])],
                ),
            ],
            warnings: &[
                ("AuthorizationPolicy shop/cart-get", NO_WAYPOINT),
                ("AuthorizationPolicy shop/cart-get", L7_ALLOW_WARNING),
            ],
            selected: &[(
                "shop",
                "cart-1",
                &["shop/cart-get", "shop/cart-get:l7-deny"],
            )],
        },
        PolicyCase {
            name: "a Service with a waypoint: the waypoint enforces it",
            policies: vec![policy(
                "shop",
                "reviews-get",
                "{targetRefs: [{kind: Service, group: \"\", name: reviews}], \
                 rules: [{to: [{operation: {methods: [GET]}}]}]}",
            )],
            expected: vec![],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "a waypoint Gateway: the waypoint enforces it",
            policies: vec![policy(
                "shop",
                "at-wp",
                "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}], \
                 action: DENY, rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]}",
            )],
            expected: vec![],
            warnings: &[],
            selected: &[],
        },
        PolicyCase {
            name: "a missing Service: nothing enforced, a warning",
            policies: vec![policy(
                "shop",
                "ghost",
                "{targetRefs: [{kind: Service, group: \"\", name: ghost}], action: DENY, rules: [{}]}",
            )],
            expected: vec![],
            warnings: &[(
                "AuthorizationPolicy shop/ghost",
                "targets Service shop/ghost, which does not exist",
            )],
            selected: &[],
        },
    ]);
    // The DENY form of the fail-closed Service case keeps the action.
    let mut docs = policy_world();
    docs.push(policy(
        "shop",
        "cart-deny",
        "{targetRefs: [{kind: Service, group: \"\", name: cart}], action: DENY, rules: [{}]}",
    ));
    let decoded = translate_text(&documents(&docs));
    assert_eq!(
        decoded.policies["shop/cart-deny"],
        auth(
            "shop",
            "cart-deny",
            WorkloadSelector,
            Deny,
            vec![group(vec![])]
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Determinism.

/// Resource name -> version, per type.
fn versions(translation: &Translation) -> BTreeMap<String, BTreeMap<String, String>> {
    translation
        .snapshot
        .types
        .iter()
        .map(|(type_url, resources)| {
            let names = resources
                .iter()
                .map(|(name, r)| (name.to_string(), r.version.to_string()))
                .collect();
            (type_url.clone(), names)
        })
        .collect()
}

#[test]
fn the_same_state_always_translates_to_the_same_versions() {
    // One pod behind many services: its `services` map has many entries, whose order on the
    // wire must not depend on hashing.
    let mut docs = policy_world();
    for i in 0..12 {
        docs.push(service(
            "shop",
            &format!("cart-{i}"),
            &[],
            &format!(
                "{{selector: {{app: cart}}, ports: [{{port: {}}}]}}",
                1000 + i
            ),
        ));
    }
    docs.push(policy(
        "shop",
        "mixed",
        "{selector: {matchLabels: {app: cart}}, rules: [{from: [{source: {namespaces: [shop]}}]}, \
         {to: [{operation: {paths: [\"/x\"]}}]}]}",
    ));
    let text = documents(&docs);
    let state = load(&text);
    let config = TranslateConfig::default();
    let first = translate(&state, &config, 1);
    assert_eq!(
        first.snapshot.types[mesh_proto::ADDRESS_TYPE_URL].len(),
        3 + 2 + 1 + 12,
        "3 workloads and 15 services (one is the waypoint's)"
    );
    assert_eq!(decode_workload_services(&first), 13);
    for generation in 2..=10 {
        let again = translate(&state, &config, generation);
        assert_eq!(
            versions(&again),
            versions(&first),
            "translation {generation}"
        );
        assert_eq!(again.warnings, first.warnings);
    }
    // A fresh load of the same text (a controller restart) gives the same versions too.
    let reloaded = translate(&load(&text), &config, 1);
    assert_eq!(versions(&reloaded), versions(&first));

    // And a change changes exactly what it touches.
    let changed_text = text.replace("podIP: 10.0.0.2", "podIP: 10.0.0.22");
    let changed = translate(&load(&changed_text), &config, 2);
    let (before, after) = (versions(&first), versions(&changed));
    let addresses = mesh_proto::ADDRESS_TYPE_URL;
    let differing: Vec<&String> = before[addresses]
        .iter()
        .filter(|(name, version)| after[addresses].get(*name) != Some(version))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(differing, ["Kubernetes//Pod/shop/web-1"]);
    let policies = mesh_proto::AUTHORIZATION_TYPE_URL;
    assert_eq!(before[policies], after[policies]);
}

/// How many services the cart pod of `shop` backs.
fn decode_workload_services(translation: &Translation) -> usize {
    let resource =
        &translation.snapshot.types[mesh_proto::ADDRESS_TYPE_URL]["Kubernetes//Pod/shop/cart-1"];
    match Address::decode(resource.body.value.as_slice())
        .unwrap()
        .r#type
    {
        Some(address::Type::Workload(w)) => w.services.len(),
        other => panic!("not a workload: {other:?}"),
    }
}
