use super::*;
use crate::store::pod_status::{PodStatusRecord, record_pod_status};

/// A manifest directory and a state directory in a temporary place.
pub(crate) struct Fixture {
    _root: tempfile::TempDir,
    pub(crate) config: StoreConfig,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(root.path().join("manifests"), root.path().join("state"));
        std::fs::create_dir_all(&config.manifest_dir).unwrap();
        std::fs::create_dir_all(&config.state_dir).unwrap();
        Fixture {
            _root: root,
            config,
        }
    }

    pub(crate) fn write(&self, name: &str, text: &str) {
        std::fs::write(self.config.manifest_dir.join(name), text).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.config.manifest_dir.join(name)).unwrap();
    }

    fn loader(&self) -> Loader {
        Loader::open(self.config.clone()).unwrap()
    }
}

pub(crate) fn service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n{spec}"
    )
}

fn port(number: i32) -> String {
    format!("  selector: {{app: cart}}\n  ports: [{{port: {number}}}]\n")
}

fn key(name: &str) -> NamespacedName {
    NamespacedName::new("shop", name)
}

fn messages(state: &DesiredState) -> Vec<String> {
    state.rejected.iter().map(ToString::to_string).collect()
}

#[test]
fn an_invalid_edit_keeps_the_last_good_version_while_other_files_apply() {
    let fixture = Fixture::new();
    fixture.write("cart.yaml", &service("cart", &port(80)));
    fixture.write("web.yaml", &service("web", &port(80)));
    let mut loader = fixture.loader();
    let first = loader.reload().unwrap();
    assert!(first.rejected.is_empty(), "{:?}", messages(&first));

    fixture.write("cart.yaml", &service("cart", &port(-3)));
    fixture.write("web.yaml", &service("web", &port(8080)));
    let second = loader.reload().unwrap();
    assert_eq!(second.services[&key("cart")].ports[0].port, 80);
    assert_eq!(second.services[&key("web")].ports[0].port, 8080);
    assert_eq!(
        messages(&second),
        [
            "manifests/cart.yaml: Service shop/cart: spec.ports[0].port: invalid value -3: a port \
          must be between 1 and 65535"
        ]
    );

    fixture.write("cart.yaml", &service("cart", &port(81)));
    let third = loader.reload().unwrap();
    assert_eq!(third.services[&key("cart")].ports[0].port, 81);
    assert!(third.rejected.is_empty());
}

#[test]
fn a_syntax_error_keeps_every_object_of_the_file() {
    let fixture = Fixture::new();
    let both = format!(
        "{}---\n{}",
        service("cart", &port(80)),
        service("web", &port(80))
    );
    fixture.write("shop.yaml", &both);
    let mut loader = fixture.loader();
    loader.reload().unwrap();
    fixture.write("shop.yaml", &format!("{both}  ports: [\n"));
    let state = loader.reload().unwrap();
    assert_eq!(state.services.len(), 2);
    assert!(
        messages(&state)[0].starts_with("manifests/shop.yaml: document "),
        "{:?}",
        messages(&state)
    );
    assert!(messages(&state)[0].contains("YAML syntax error"));
}

#[test]
fn a_document_without_a_name_keeps_the_old_objects_of_its_file() {
    let fixture = Fixture::new();
    fixture.write("shop.yaml", &service("cart", &port(80)));
    let mut loader = fixture.loader();
    loader.reload().unwrap();
    fixture.write(
        "shop.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\n",
    );
    let state = loader.reload().unwrap();
    assert!(state.services.contains_key(&key("cart")));
    assert_eq!(state.rejected.len(), 1);
}

#[test]
fn removed_objects_and_files_disappear() {
    let fixture = Fixture::new();
    fixture.write(
        "shop.yaml",
        &format!(
            "{}---\n{}",
            service("cart", &port(80)),
            service("web", &port(80))
        ),
    );
    let mut loader = fixture.loader();
    assert_eq!(loader.reload().unwrap().services.len(), 2);
    fixture.write("shop.yaml", &service("cart", &port(80)));
    assert_eq!(loader.reload().unwrap().services.len(), 1);
    fixture.remove("shop.yaml");
    assert!(loader.reload().unwrap().services.is_empty());
}

#[test]
fn a_second_definition_of_an_object_is_rejected() {
    let fixture = Fixture::new();
    fixture.write("a.yaml", &service("cart", &port(80)));
    fixture.write("b.yaml", &service("cart", &port(81)));
    let state = load(&fixture.config).unwrap();
    assert_eq!(state.services[&key("cart")].ports[0].port, 80);
    assert_eq!(
        messages(&state),
        [
            "manifests/b.yaml: Service shop/cart: the same object is already defined in \
          manifests/a.yaml (document 0); this definition is ignored until one of the two is removed"
        ]
    );
}

#[test]
fn other_files_are_ignored() {
    let fixture = Fixture::new();
    fixture.write("README.md", "not yaml: [");
    fixture.write(".hidden.yaml", "not yaml: [");
    fixture.write("cart.yml", &service("cart", &port(80)));
    let state = load(&fixture.config).unwrap();
    assert!(state.rejected.is_empty(), "{:?}", messages(&state));
    assert_eq!(state.services.len(), 1);
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\n\
    spec:\n  replicas: 3\n  selector: {matchLabels: {app: cart}}\n  template:\n    \
    metadata: {labels: {app: cart, version: v1}}\n    spec:\n      serviceAccountName: cart\n      \
    containers: [{name: app, command: [serve]}]\n";

#[test]
fn deployments_expand_to_pods_with_stable_names_and_uids() {
    let fixture = Fixture::new();
    fixture.write("cart.yaml", DEPLOYMENT);
    let state = load(&fixture.config).unwrap();
    let names: Vec<String> = state.pods.keys().map(ToString::to_string).collect();
    assert_eq!(names, ["shop/cart-0", "shop/cart-1", "shop/cart-2"]);
    let pod = &state.pods[&key("cart-1")];
    assert_eq!(&*pod.service_account, "cart");
    assert_eq!(pod.labels["version"], "v1");
    assert_eq!(pod.containers[0].command, ["serve"]);
    assert_eq!(pod.from_deployment.as_deref(), Some("cart"));
    assert_eq!(state.deployments[&key("cart")].replicas, 3);
    let again = load(&fixture.config).unwrap();
    assert_eq!(again.pods[&key("cart-1")].uid, pod.uid);
    assert_ne!(state.pods[&key("cart-0")].uid, pod.uid);
}

#[test]
fn a_pod_named_like_a_deployment_pod_wins_and_the_deployment_is_reported() {
    let fixture = Fixture::new();
    fixture.write("cart.yaml", DEPLOYMENT);
    fixture.write(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: cart-1, namespace: shop}\nspec: {containers: [{name: other}]}\n",
    );
    let state = load(&fixture.config).unwrap();
    assert_eq!(state.pods[&key("cart-1")].containers[0].name, "other");
    assert!(state.pods.contains_key(&key("cart-2")));
    assert!(messages(&state)[0].starts_with(
        "manifests/cart.yaml: Deployment shop/cart: metadata.name: its pod shop/cart-1 clashes"
    ));
}

#[test]
fn pod_status_records_place_pods() {
    let fixture = Fixture::new();
    fixture.write("cart.yaml", DEPLOYMENT);
    fixture.write(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {nodeName: node-1, containers: [{name: app}]}\n\
         status: {podIP: 10.0.1.5}\n",
    );
    let record = |name: &str, node: &str, ip: &str| PodStatusRecord {
        namespace: "shop".into(),
        name: name.into(),
        node_name: Some(node.into()),
        pod_ip: Some(ip.parse().unwrap()),
        phase: Some("Running".into()),
    };
    record_pod_status(
        &fixture.config.state_dir,
        &record("cart-0", "node-2", "10.0.2.7"),
    )
    .unwrap();
    record_pod_status(
        &fixture.config.state_dir,
        &record("web", "node-3", "10.0.3.9"),
    )
    .unwrap();
    record_pod_status(
        &fixture.config.state_dir,
        &record("gone", "node-3", "10.0.3.10"),
    )
    .unwrap();
    let state = load(&fixture.config).unwrap();
    let cart = &state.pods[&key("cart-0")];
    assert_eq!(
        (cart.node.as_deref(), cart.ip),
        (Some("node-2"), Some("10.0.2.7".parse().unwrap()))
    );
    let web = &state.pods[&key("web")];
    assert_eq!(
        (web.node.as_deref(), web.ip),
        (Some("node-3"), Some("10.0.3.9".parse().unwrap()))
    );
    assert_eq!(state.pods[&key("cart-1")].ip, None);
    assert!(!state.pods.contains_key(&key("gone")));
}

fn vip(state: &DesiredState, name: &str) -> IpAddr {
    state.services[&key(name)].vip
}

#[test]
fn vips_are_unique_and_stable_across_restarts_and_unrelated_changes() {
    let fixture = Fixture::new();
    for name in ["a", "b", "c"] {
        fixture.write(&format!("{name}.yaml"), &service(name, &port(80)));
    }
    let first = load(&fixture.config).unwrap();
    let vips: BTreeSet<IpAddr> = ["a", "b", "c"].iter().map(|n| vip(&first, n)).collect();
    assert_eq!(vips.len(), 3);
    assert!(
        vips.iter()
            .all(|ip| fixture.config.service_cidr.contains(ip))
    );

    // A restart: a new loader on the same state directory.
    fixture.remove("a.yaml");
    fixture.write("d.yaml", &service("d", &port(80)));
    let second = load(&fixture.config).unwrap();
    assert_eq!(vip(&second, "b"), vip(&first, "b"));
    assert_eq!(vip(&second, "c"), vip(&first, "c"));
    assert!(
        !vips.contains(&vip(&second, "d")),
        "a fresh service gets an address nobody had"
    );

    // The deleted service comes back and gets its address again.
    fixture.write("a.yaml", &service("a", &port(80)));
    let third = load(&fixture.config).unwrap();
    assert_eq!(vip(&third, "a"), vip(&first, "a"));
}

#[test]
fn a_given_cluster_ip_is_used_and_a_taken_one_is_rejected() {
    let fixture = Fixture::new();
    fixture.write("a.yaml", &service("a", "  clusterIP: 192.168.7.7\n"));
    fixture.write("b.yaml", &service("b", "  clusterIP: 10.96.0.200\n"));
    let mut loader = fixture.loader();
    let first = loader.reload().unwrap();
    assert_eq!(vip(&first, "a").to_string(), "192.168.7.7");
    assert_eq!(vip(&first, "b").to_string(), "10.96.0.200");

    // `c` asks for a's address: c is the later one and is rejected; `b` moves to a's address
    // too, and its last good version (with its old address) stays.
    fixture.write("c.yaml", &service("c", "  clusterIP: 192.168.7.7\n"));
    fixture.write("b.yaml", &service("b", "  clusterIP: 192.168.7.7\n"));
    let second = loader.reload().unwrap();
    assert_eq!(vip(&second, "a").to_string(), "192.168.7.7");
    assert_eq!(vip(&second, "b").to_string(), "10.96.0.200");
    assert!(!second.services.contains_key(&key("c")));
    let messages = messages(&second);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(messages.iter().all(|m| {
        m.contains("spec.clusterIP: virtual IP 192.168.7.7 is already used by Service shop/a")
    }));

    // Once `a` is deleted, its address is free for the next load.
    fixture.remove("a.yaml");
    fixture.remove("b.yaml");
    let third = loader.reload().unwrap();
    assert_eq!(vip(&third, "c").to_string(), "192.168.7.7");
}

#[test]
fn the_vip_table_is_written_to_the_state_directory() {
    let fixture = Fixture::new();
    fixture.write("a.yaml", &service("a", &port(80)));
    load(&fixture.config).unwrap();
    let text = std::fs::read_to_string(fixture.config.state_dir.join("vips.json")).unwrap();
    assert!(text.contains("\"shop/a\""), "{text}");
}

#[test]
fn a_missing_manifest_directory_is_an_error_and_changes_nothing() {
    let fixture = Fixture::new();
    fixture.write("a.yaml", &service("a", &port(80)));
    let mut loader = fixture.loader();
    loader.reload().unwrap();
    std::fs::rename(
        &fixture.config.manifest_dir,
        fixture.config.state_dir.join("moved"),
    )
    .unwrap();
    let err = loader.reload().unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot list the manifest directory"),
        "{err}"
    );
}

#[test]
fn reloads_that_reuse_unchanged_files_match_a_fresh_load() {
    let fixture = Fixture::new();
    fixture.write("cart.yaml", &service("cart", &port(80)));
    fixture.write("web.yaml", &service("web", &port(80)));
    let mut loader = fixture.loader();
    loader.reload().unwrap();
    let edits: [(&str, Option<String>); 5] = [
        ("web.yaml", Some(service("web", &port(81)))),
        ("cart.yaml", Some("kind: [".to_string())),
        ("web.yaml", None),
        ("cart.yaml", Some(service("cart", &port(82)))),
        ("web.yaml", Some(service("web", &port(80)))),
    ];
    for (step, (file, text)) in edits.into_iter().enumerate() {
        match text {
            Some(text) => fixture.write(file, &text),
            None => fixture.remove(file),
        }
        let reused = loader.reload().unwrap();
        // A fresh loader parses every file; it only lacks the last good versions, which
        // matter while cart.yaml is broken (steps 1 and 2).
        let fresh = fixture.loader().reload().unwrap();
        if matches!(step, 1 | 2) {
            assert!(
                reused.services.contains_key(&key("cart")),
                "the last good cart stays"
            );
            assert_eq!(messages(&reused), messages(&fresh));
        } else {
            assert_eq!(reused, fresh, "step {step}");
        }
    }
}

const WAYPOINT: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
    metadata: {name: wp, namespace: shop}\nspec:\n  gatewayClassName: istio-waypoint\n  \
    listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n";

#[test]
fn a_waypoint_gateway_gets_a_service_and_a_pod_with_a_stable_vip() {
    let fixture = Fixture::new();
    fixture.write("wp.yaml", WAYPOINT);
    fixture.write("cart.yaml", &service("cart", &port(80)));
    let first = load(&fixture.config).unwrap();
    assert!(first.rejected.is_empty(), "{:?}", messages(&first));
    let service = &first.services[&key("wp")];
    assert_eq!(service.ports[0].port, 15008);
    assert!(fixture.config.service_cidr.contains(&service.vip));
    assert_ne!(service.vip, vip(&first, "cart"));
    let pod = &first.pods[&key("wp-0")];
    assert_eq!(pod.containers[0].command, ["waypoint"]);
    assert_eq!(first.deployments[&key("wp")].replicas, 1);

    // A restart keeps the address; a gateway of another class gets nothing.
    fixture.write(
        "other.yaml",
        &WAYPOINT
            .replace("name: wp", "name: ingress")
            .replace("istio-waypoint", "istio"),
    );
    let second = load(&fixture.config).unwrap();
    assert_eq!(vip(&second, "wp"), vip(&first, "wp"));
    assert!(!second.services.contains_key(&key("ingress")));
    assert!(!second.pods.contains_key(&key("ingress-0")));

    // A broken gateway file keeps the last good gateway, and so its waypoint.
    let mut loader = fixture.loader();
    loader.reload().unwrap();
    fixture.write("wp.yaml", "kind: [");
    let broken = loader.reload().unwrap();
    assert_eq!(vip(&broken, "wp"), vip(&first, "wp"));
    assert!(broken.pods.contains_key(&key("wp-0")));

    // Deleting the gateway removes both.
    fixture.remove("wp.yaml");
    let gone = loader.reload().unwrap();
    assert!(!gone.services.contains_key(&key("wp")));
    assert!(!gone.pods.contains_key(&key("wp-0")));
    assert!(!gone.deployments.contains_key(&key("wp")));
}

#[test]
fn declared_objects_named_like_a_waypoints_win_and_the_gateway_is_reported() {
    let fixture = Fixture::new();
    fixture.write("wp.yaml", WAYPOINT);
    fixture.write("svc.yaml", &service("wp", &port(80)));
    fixture.write(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wp-0, namespace: shop}\nspec: {containers: [{name: mine}]}\n",
    );
    let state = load(&fixture.config).unwrap();
    assert_eq!(state.services[&key("wp")].ports[0].port, 80);
    assert_eq!(state.pods[&key("wp-0")].containers[0].name, "mine");
    assert!(!state.deployments.contains_key(&key("wp")));
    assert_eq!(
        messages(&state),
        [
            "manifests/wp.yaml: Gateway shop/wp: metadata.name: Service shop/wp, which the mesh \
             would make for this waypoint, is declared in manifests/svc.yaml: the declared one is \
             used; it must select the waypoint's pods (gateway.networking.k8s.io/gateway-name) and \
             offer port 15008, or ztunnels cannot reach the waypoint",
            "manifests/wp.yaml: Gateway shop/wp: metadata.name: Pod shop/wp-0, which the mesh \
             would make to run this waypoint, is declared in manifests/pod.yaml: the declared one \
             is kept and the mesh runs no waypoint pod for this gateway; rename one of them",
        ]
    );
}

#[test]
fn a_waypoint_service_without_a_free_address_is_reported_not_looped_on() {
    let mut fixture = Fixture::new();
    fixture.config.service_cidr = "10.96.0.0/30".parse().unwrap();
    fixture.write("a.yaml", &service("a", &port(80)));
    fixture.write("b.yaml", &service("b", &port(80)));
    fixture.write("wp.yaml", WAYPOINT);
    let state = load(&fixture.config).unwrap();
    assert!(!state.services.contains_key(&key("wp")));
    assert!(state.pods.contains_key(&key("wp-0")));
    assert_eq!(
        messages(&state),
        [
            "manifests/wp.yaml: Gateway shop/wp: no free virtual IP left in the service CIDR \
             10.96.0.0/30; configure a wider CIDR"
        ]
    );
}

fn standalone_pod(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {labels}}}\n\
         spec: {{nodeName: node-1, containers: [{{name: app}}]}}\nstatus: {{podIP: 10.0.1.5}}\n"
    )
}

#[test]
fn pods_edited_in_place_take_the_quick_way_and_match_a_fresh_load() {
    let fixture = Fixture::new();
    fixture.write("a-cart.yaml", &service("cart", &port(80)));
    fixture.write("b-deploy.yaml", DEPLOYMENT);
    fixture.write("c-web.yaml", &standalone_pod("web", "{app: cart}"));
    // Defined twice: the first file in name order wins, the second is reported.
    fixture.write("d-api.yaml", &standalone_pod("api", "{v: one}"));
    fixture.write("e-api-again.yaml", &standalone_pod("api", "{v: two}"));
    let record = PodStatusRecord {
        namespace: "shop".into(),
        name: "web".into(),
        node_name: Some("node-2".into()),
        pod_ip: Some("10.0.2.9".parse().unwrap()),
        phase: Some("Running".into()),
    };
    record_pod_status(&fixture.config.state_dir, &record).unwrap();
    let mut loader = fixture.loader();
    let mut last = loader.reload().unwrap();
    // The quick way starts from the last snapshot, so it shares the services with it; the
    // full way makes each service again (with its virtual IP).
    let quick = |before: &DesiredState, after: &DesiredState| {
        Arc::ptr_eq(
            &before.services[&key("cart")],
            &after.services[&key("cart")],
        )
    };
    let mut moved = record.clone();
    moved.pod_ip = Some("10.0.3.3".parse().unwrap());
    let two_documents = format!(
        "{}---\n{}",
        standalone_pod("web", "{}"),
        standalone_pod("db", "{}")
    );
    let invalid = "apiVersion: v1\nkind: Pod\nmetadata: {name: api, namespace: shop}\n\
                   spec: {nodeName: 'x y'}\n";
    // (what, file, new text, whether the quick way may take it)
    let edits = [
        (
            "a pod's labels",
            "c-web.yaml",
            standalone_pod("web", "{app: other}"),
            true,
        ),
        // Which definition wins is the full way's business.
        (
            "the losing duplicate",
            "e-api-again.yaml",
            standalone_pod("api", "{v: three}"),
            false,
        ),
        (
            "the winning duplicate",
            "d-api.yaml",
            standalone_pod("api", "{v: four}"),
            true,
        ),
        (
            "a pod and its status record",
            "c-web.yaml",
            standalone_pod("web", "{}"),
            false,
        ),
        ("a second document", "c-web.yaml", two_documents, false),
        ("an invalid pod", "d-api.yaml", invalid.to_string(), false),
    ];
    for (what, file, text, expect_quick) in edits {
        if what == "a pod and its status record" {
            record_pod_status(&fixture.config.state_dir, &moved).unwrap();
        }
        fixture.write(file, &text);
        let reused = loader.reload().unwrap();
        assert_eq!(quick(&last, &reused), expect_quick, "{what}: the way taken");
        let fresh = fixture.loader().reload().unwrap();
        if what == "an invalid pod" {
            // The last good version stays in force unless, as here, another file's
            // definition that lost to it takes over; either way as a fresh load has it.
            assert_eq!(messages(&reused), messages(&fresh), "{what}");
            assert_eq!(reused.pods, fresh.pods, "{what}");
        } else {
            assert_eq!(reused, fresh, "{what}");
        }
        last = reused;
    }
    assert_eq!(last.pods[&key("web")].ip, Some("10.0.3.3".parse().unwrap()));
}
