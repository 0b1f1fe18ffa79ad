use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(namespace: &str, name: &str, pod_labels: Labels) -> Pod {
    Pod {
        namespace: namespace.into(),
        name: name.into(),
        uid: name.into(),
        labels: pod_labels,
        service_account: "default".into(),
        node: Some("node-1".into()),
        ip: Some("10.0.1.5".parse().unwrap()),
        phase: None,
        containers: Vec::new(),
        from_deployment: None,
    }
}

fn service(namespace: &str, name: &str, service_labels: Labels, selector: Labels) -> Service {
    Service {
        namespace: namespace.into(),
        name: name.into(),
        labels: service_labels,
        selector,
        vip: "10.96.0.1".parse().unwrap(),
        ports: Vec::new(),
    }
}

fn state_with_namespace(namespace_labels: Labels) -> DesiredState {
    let mut state = DesiredState::default();
    state.namespaces.insert(
        "shop".into(),
        Arc::new(Namespace {
            name: "shop".into(),
            labels: namespace_labels,
        }),
    );
    state
}

#[test]
fn pod_label_overrides_namespace_label_for_enrollment() {
    let cases = [
        (None, None, false),
        (Some("ambient"), None, true),
        (Some("ambient"), Some("none"), false),
        (None, Some("ambient"), true),
        (Some("none"), Some("ambient"), true),
        (Some("ambient"), Some(""), true),
    ];
    for (namespace_mode, pod_mode, enrolled) in cases {
        let ns = namespace_mode.map_or_else(Labels::new, |m| labels(&[(DATAPLANE_MODE_LABEL, m)]));
        let state = state_with_namespace(ns);
        let pod_labels =
            pod_mode.map_or_else(Labels::new, |m| labels(&[(DATAPLANE_MODE_LABEL, m)]));
        let pod = pod("shop", "web", pod_labels);
        assert_eq!(
            state.pod_enrolled(&pod),
            enrolled,
            "{namespace_mode:?} {pod_mode:?}"
        );
    }
    // A namespace nobody declared has no labels.
    let pod = pod("elsewhere", "web", Labels::new());
    assert!(!DesiredState::default().pod_enrolled(&pod));
}

#[test]
fn use_waypoint_follows_istio_label_rules() {
    let waypoint = |ns: &str, name: &str| Some(NamespacedName::new(ns, name));
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: [(Pairs, Pairs, Option<NamespacedName>); 6] = [
        (&[], &[], None),
        (&[(USE_WAYPOINT_LABEL, "wp")], &[], waypoint("shop", "wp")),
        (
            &[
                (USE_WAYPOINT_LABEL, "wp"),
                (USE_WAYPOINT_NAMESPACE_LABEL, "infra"),
            ],
            &[],
            waypoint("infra", "wp"),
        ),
        (
            &[(USE_WAYPOINT_LABEL, "wp")],
            &[(USE_WAYPOINT_LABEL, "own")],
            waypoint("shop", "own"),
        ),
        (
            &[(USE_WAYPOINT_LABEL, "wp")],
            &[(USE_WAYPOINT_LABEL, "none")],
            None,
        ),
        (
            &[(USE_WAYPOINT_LABEL, "wp")],
            &[
                (USE_WAYPOINT_LABEL, "own"),
                (USE_WAYPOINT_NAMESPACE_LABEL, "infra"),
            ],
            waypoint("infra", "own"),
        ),
    ];
    for (namespace_labels, object_labels, expected) in cases {
        let state = state_with_namespace(labels(namespace_labels));
        let svc = service("shop", "cart", labels(object_labels), Labels::new());
        assert_eq!(
            state.use_waypoint_for_service(&svc),
            expected,
            "{namespace_labels:?} {object_labels:?}"
        );
        let pod = pod("shop", "web", labels(object_labels));
        assert_eq!(state.use_waypoint_for_pod(&pod), expected);
    }
}

#[test]
fn service_endpoints_are_selected_pods_with_an_ip() {
    let mut state = DesiredState::default();
    let app = |value: &str| labels(&[("app", value)]);
    let mut without_ip = pod("shop", "cart-2", app("cart"));
    without_ip.ip = None;
    for pod in [
        pod("shop", "cart-0", app("cart")),
        pod("shop", "cart-1", app("cart")),
        without_ip,
        pod("shop", "web-0", app("web")),
        pod("other", "cart-0", app("cart")),
    ] {
        state.pods.insert(pod.namespaced_name(), Arc::new(pod));
    }
    let cart = service("shop", "cart", Labels::new(), app("cart"));
    let names: Vec<&str> = state
        .service_endpoints(&cart)
        .iter()
        .map(|p| &*p.name)
        .collect();
    assert_eq!(names, ["cart-0", "cart-1"]);
    let no_selector = service("shop", "cart", Labels::new(), Labels::new());
    assert!(state.service_endpoints(&no_selector).is_empty());
    state
        .services
        .insert(cart.namespaced_name(), Arc::new(cart));
    let pod = &state.pods[&NamespacedName::new("shop", "cart-0")];
    assert_eq!(state.services_of_pod(pod).len(), 1);
}

#[test]
fn a_node_runs_the_identities_of_its_pods_only() {
    let mut state = DesiredState::default();
    let mut cart = pod("shop", "cart-0", Labels::new());
    cart.service_account = "cart".into();
    state.pods.insert(cart.namespaced_name(), Arc::new(cart));
    assert!(state.node_runs_identity("node-1", "shop", "cart"));
    assert!(!state.node_runs_identity("node-2", "shop", "cart"));
    assert!(!state.node_runs_identity("node-1", "shop", "web"));
    assert!(!state.node_runs_identity("node-1", "sho", "cart"));
    assert_eq!(state.pods_on_node("node-1").count(), 1);
}

#[test]
fn a_waypoint_token_runs_only_the_identities_of_waypoint_pods() {
    let mut state = DesiredState::default();
    let mut cart = pod("shop", "cart-0", Labels::new());
    cart.service_account = "cart".into();
    state.pods.insert(cart.namespaced_name(), Arc::new(cart));
    let mut waypoint = pod(
        "shop",
        "wp-0",
        Labels::from([("gateway.networking.k8s.io/gateway-name".into(), "wp".into())]),
    );
    waypoint.service_account = "wp".into();
    state
        .pods
        .insert(waypoint.namespaced_name(), Arc::new(waypoint));
    assert!(state.node_runs_waypoint_identity("node-1", "shop", "wp"));
    assert!(!state.node_runs_waypoint_identity("node-1", "shop", "cart"));
    assert!(!state.node_runs_waypoint_identity("node-2", "shop", "wp"));
    assert!(state.node_runs_identity("node-1", "shop", "cart"));
}
