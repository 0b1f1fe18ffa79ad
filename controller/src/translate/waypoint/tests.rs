//! Waypoint translation tests: manifests are loaded through the store, translated, and the
//! `RouteConfiguration`, `L7Policy` and `Address` resources decoded and compared with what the
//! schema says they must be. Routes and policies have their own files; the waypoint's own
//! Service and pod are tested here.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_proto::istio::workload::{
    Address, GatewayAddress, NamespacedHostname, Service, TunnelProtocol, Workload, address,
    gateway_address,
};
use mesh_proto::mesh::waypoint::v1::{
    self as wire, header_match, l7_policy, parent_ref, path_match, path_modifier, pattern,
    policy_target, query_param_match,
};
use prost::Message;

use super::fault::{FaultAnnotationError, parse_abort, parse_delay};
use crate::store::{self, PodStatusRecord, StoreConfig, record_pod_status};
use crate::translate::{TranslateConfig, Warning, translate};

// ---------------------------------------------------------------------------------------------
// The world every case starts from, and loading.

/// Namespace `shop` (ambient) with the waypoint `wp`; services `cart` (bound to `wp`, port 80
/// `http` and 8080 `admin`), `cart-v1` and `cart-v2` (port 80) and `reviews` (port 9080, no
/// waypoint); namespace `infra` with service `echo` (port 80).
const WORLD: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop, labels: {istio.io/use-waypoint: wp}}
spec: {selector: {app: cart}, ports: [{name: http, port: 80}, {name: admin, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart-v1, namespace: shop}
spec: {selector: {app: cart, version: v1}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart-v2, namespace: shop}
spec: {selector: {app: cart, version: v2}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: infra}
spec: {selector: {app: echo}, ports: [{port: 80}]}
";

/// An HTTPRoute in `shop`; `spec` is the flow-style body of `spec`.
fn route_with(name: &str, annotations: &[(&str, &str)], spec: &str) -> String {
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k:?}: {v:?}"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  \
         namespace: shop\n  annotations: {{{}}}\nspec: {spec}\n",
        annotations.join(", ")
    )
}

/// An HTTPRoute attached to the Service `cart` with these rules (flow style).
fn cart_route(rules: &str) -> String {
    route_with(
        "cart",
        &[],
        &format!("{{parentRefs: [{{group: \"\", kind: Service, name: cart}}], rules: {rules}}}"),
    )
}

/// An AuthorizationPolicy in `shop`; `spec` is the flow-style body of `spec`.
fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  \
         namespace: shop\nspec: {spec}\n"
    )
}

/// Loads the world plus `extra` through the store, with pod status records written as the lab
/// writes them; fails the test when anything is refused.
fn load_with_status(extra: &[String], statuses: &[PodStatusRecord]) -> store::DesiredState {
    let root = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(root.path().join("manifests"), root.path().join("state"));
    std::fs::create_dir_all(&config.manifest_dir).unwrap();
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let mut text = WORLD.to_string();
    for doc in extra {
        text.push_str("---\n");
        text.push_str(doc);
    }
    std::fs::write(config.manifest_dir.join("mesh.yaml"), &text).unwrap();
    for status in statuses {
        record_pod_status(&config.state_dir, status).unwrap();
    }
    let state = store::load(&config).unwrap();
    let rejected: Vec<String> = state.rejected.iter().map(ToString::to_string).collect();
    assert!(rejected.is_empty(), "refused: {rejected:#?}\n{text}");
    state
}

/// The waypoint resources of a translation, decoded, by resource name.
#[derive(Debug)]
struct Decoded {
    routes: BTreeMap<String, wire::RouteConfiguration>,
    policies: BTreeMap<String, wire::L7Policy>,
    workloads: BTreeMap<String, Workload>,
    services: BTreeMap<String, Service>,
    warnings: Vec<Warning>,
}

impl Decoded {
    fn route(&self, name: &str) -> &wire::RouteConfiguration {
        self.routes
            .get(name)
            .unwrap_or_else(|| panic!("no route {name} in {:?}", self.routes.keys()))
    }

    /// Warnings as `(object, message)`.
    fn warnings(&self) -> Vec<(&str, &str)> {
        self.warnings
            .iter()
            .map(|w| (w.object.as_str(), w.message.as_str()))
            .collect()
    }
}

fn translate_docs(extra: &[String]) -> Decoded {
    decode(&load_with_status(extra, &[]))
}

fn decode(state: &store::DesiredState) -> Decoded {
    let translation = translate(state, &TranslateConfig::default(), 1);
    let types = &translation.snapshot.types;
    let mut routes = BTreeMap::new();
    for (name, resource) in &types[mesh_proto::ROUTE_CONFIGURATION_TYPE_URL] {
        let body = &resource.body;
        assert_eq!(body.type_url, mesh_proto::ROUTE_CONFIGURATION_TYPE_URL);
        let route = wire::RouteConfiguration::decode(body.value.as_slice()).unwrap();
        assert_eq!(**name, route.name, "a route is named by its resource name");
        routes.insert(name.to_string(), route);
    }
    let mut policies = BTreeMap::new();
    for (name, resource) in &types[mesh_proto::L7_POLICY_TYPE_URL] {
        assert_eq!(resource.body.type_url, mesh_proto::L7_POLICY_TYPE_URL);
        let policy = wire::L7Policy::decode(resource.body.value.as_slice()).unwrap();
        assert_eq!(
            **name, policy.name,
            "a policy is named by its resource name"
        );
        policies.insert(name.to_string(), policy);
    }
    let mut workloads = BTreeMap::new();
    let mut services = BTreeMap::new();
    for (name, resource) in &types[mesh_proto::ADDRESS_TYPE_URL] {
        match Address::decode(resource.body.value.as_slice())
            .unwrap()
            .r#type
        {
            Some(address::Type::Workload(w)) => {
                workloads.insert(name.to_string(), w);
            }
            Some(address::Type::Service(s)) => {
                services.insert(name.to_string(), s);
            }
            None => panic!("an empty address"),
        }
    }
    Decoded {
        routes,
        policies,
        workloads,
        services,
        warnings: translation.warnings,
    }
}

// ---------------------------------------------------------------------------------------------
// Expected wire values.

fn host(name: &str) -> String {
    let (name, ns) = name.split_once('.').unwrap_or((name, "shop"));
    format!("{name}.{ns}.svc.cluster.local")
}

fn backend(name: &str, port: u32, weight: u32) -> wire::Backend {
    wire::Backend {
        hostname: host(name),
        port,
        weight,
    }
}

fn path(kind: path_match::Kind) -> wire::RouteMatch {
    wire::RouteMatch {
        path: Some(wire::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

fn prefix(p: &str) -> wire::RouteMatch {
    path(path_match::Kind::Prefix(p.into()))
}

fn exact(p: &str) -> wire::RouteMatch {
    path(path_match::Kind::Exact(p.into()))
}

/// A rule with these matches that forwards everything to `cart-v1:80`.
fn to_v1(matches: Vec<wire::RouteMatch>) -> wire::Rule {
    wire::Rule {
        matches,
        backends: vec![backend("cart-v1", 80, 1)],
        ..Default::default()
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap()
}

fn header(name: &str, value: &str) -> wire::Header {
    wire::Header {
        name: name.into(),
        value: value.into(),
    }
}

const V1: &str = "{name: cart-v1, port: 80}";

// ---------------------------------------------------------------------------------------------
// The waypoint's own Service and pod.

fn placed(ns: &str, name: &str, ip: &str) -> PodStatusRecord {
    PodStatusRecord {
        namespace: ns.into(),
        name: name.into(),
        node_name: Some("node-2".into()),
        pod_ip: Some(ip.parse().unwrap()),
        phase: Some("Running".into()),
    }
}

/// A namespace bound as a whole to its own waypoint `edge/gw`, which serves all traffic.
const EDGE: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: edge, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: gw}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge, labels: {istio.io/waypoint-for: all}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
";

#[test]
fn a_waypoint_gets_a_service_and_a_pod_that_ztunnels_reach_over_hbone() {
    let statuses = [
        placed("shop", "wp-0", "10.0.2.9"),
        placed("edge", "gw-0", "10.0.2.10"),
    ];
    let state = load_with_status(&[EDGE.to_string()], &statuses);

    let service = &state.services[&store::NamespacedName::new("shop", "wp")];
    assert_eq!(service.ports.len(), 1);
    assert_eq!(service.ports[0].port, 15008);
    assert_eq!(service.ports[0].name.as_deref(), Some("mesh"));
    assert_eq!(
        service.selector,
        store::Labels::from([("gateway.networking.k8s.io/gateway-name".into(), "wp".into())])
    );
    let endpoints: Vec<&str> = state
        .service_endpoints(service)
        .iter()
        .map(|p| &*p.name)
        .collect();
    assert_eq!(endpoints, ["wp-0"]);

    let pod = &state.pods[&store::NamespacedName::new("shop", "wp-0")];
    assert_eq!(&*pod.service_account, "wp");
    assert_eq!(pod.from_deployment.as_deref(), Some("wp"));
    assert_eq!(pod.containers[0].command, ["waypoint"]);
    assert_eq!(
        pod.containers[0].args,
        ["--name", "wp", "--namespace", "shop"]
    );
    assert!(
        !state.pod_enrolled(pod),
        "no ztunnel captures the waypoint's own traffic"
    );
    assert!(state.pod_speaks_hbone(pod));
    assert!(
        state.node_runs_identity("node-2", "shop", "wp"),
        "the CA places its identity"
    );

    let decoded = decode(&state);
    let wp_service = &decoded.services["shop/wp.shop.svc.cluster.local"];
    let cart = &decoded.services["shop/cart.shop.svc.cluster.local"];
    let expected = GatewayAddress {
        destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: "shop".into(),
            hostname: wp_service.hostname.clone(),
        })),
        hbone_mtls_port: 15008,
    };
    assert_eq!(
        cart.waypoint,
        Some(expected),
        "use-waypoint resolves to the waypoint's service record"
    );
    let workload = &decoded.workloads["Kubernetes//Pod/shop/wp-0"];
    assert_eq!(workload.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(workload.service_account, "wp");
    assert_eq!(
        workload.services.keys().collect::<Vec<_>>(),
        ["shop/wp.shop.svc.cluster.local"]
    );

    // In a namespace bound to it, the waypoint itself is not sent through a waypoint.
    let gw_service = &decoded.services["edge/gw.edge.svc.cluster.local"];
    assert_eq!(gw_service.waypoint, None);
    let gw_pod = &decoded.workloads["Kubernetes//Pod/edge/gw-0"];
    assert_eq!(gw_pod.waypoint, None);
    assert_eq!(gw_pod.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(decoded.warnings(), []);
}

mod policies;
mod routes;
