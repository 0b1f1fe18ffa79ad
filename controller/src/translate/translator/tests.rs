//! The translator against the full translation: after every change, loaded through the store
//! as the controller loads it, both must give the same resources, versions, changes and
//! warnings, and only pod changes may take the incremental way.

use std::path::PathBuf;

use super::*;
use crate::store::{Loader, PodStatusRecord, StoreConfig, record_pod_status};
use crate::translate::translate;

/// A manifest directory with one object per file, so that a change rewrites one file and the
/// store shares every other object with the previous state, as in a running controller.
struct Mesh {
    _root: tempfile::TempDir,
    config: StoreConfig,
    loader: Loader,
    translator: Translator,
    /// The previous full translation, to compare the recorded changes with.
    previous: Option<Arc<ResourceSnapshot>>,
}

impl Mesh {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(root.path().join("manifests"), root.path().join("state"));
        std::fs::create_dir_all(&config.manifest_dir).unwrap();
        std::fs::create_dir_all(&config.state_dir).unwrap();
        let loader = Loader::open(config.clone()).unwrap();
        Mesh {
            _root: root,
            config,
            loader,
            translator: Translator::new(TranslateConfig::default()),
            previous: None,
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.config.manifest_dir.join(format!("{file}.yaml"))
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.path(file)).unwrap();
    }

    /// Reloads, translates both ways, and checks they agree. Returns whether the translator
    /// took the incremental way.
    fn step(&mut self, what: &str) -> bool {
        let state = self.loader.reload().unwrap();
        let rejected: Vec<String> = state.rejected.iter().map(ToString::to_string).collect();
        assert!(rejected.is_empty(), "{what}: refused: {rejected:#?}");
        let got = self.translator.translate(state.clone());
        let generation = got.snapshot.generation;
        let full = translate(&state, &TranslateConfig::default(), generation);
        let versions = |snapshot: &ResourceSnapshot| -> Vec<(String, String, String)> {
            snapshot
                .types
                .iter()
                .flat_map(|(type_url, resources)| {
                    resources.values().map(move |r| {
                        assert_eq!(r.body.type_url, *type_url);
                        (type_url.clone(), r.name.to_string(), r.version.to_string())
                    })
                })
                .collect()
        };
        assert_eq!(versions(&got.snapshot), versions(&full.snapshot), "{what}");
        assert_eq!(got.warnings, full.warnings, "{what}");
        match &self.previous {
            Some(previous) => {
                let expected = ResourceSnapshot {
                    generation,
                    types: full.snapshot.types.clone(),
                    changes: None,
                }
                .with_changes_since(previous);
                assert_eq!(got.snapshot.changes, expected.changes, "{what}");
            }
            None => assert_eq!(got.snapshot.changes, None, "{what}"),
        }
        self.previous = Some(got.snapshot.clone());
        got.incremental
    }

    fn updated(&self, type_url: &str) -> Vec<String> {
        let snapshot = self.previous.as_ref().unwrap();
        let changes = snapshot.changes.as_ref().unwrap();
        changes.types.get(type_url).map_or_else(Vec::new, |c| {
            c.updated
                .iter()
                .chain(&c.removed)
                .map(ToString::to_string)
                .collect()
        })
    }
}

fn pod(name: &str, labels: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {labels}}}\n\
         spec:\n  nodeName: node-1\n  serviceAccountName: {name}\n  containers:\n  \
         - {{name: app, image: app, ports: [{{name: web, containerPort: 9090}}]}}\n\
         status: {{podIP: {ip}, phase: Running}}\n"
    )
}

fn service(name: &str, selector: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec: {{selector: {selector}, ports: [{{port: 80, targetPort: web}}]}}\n"
    )
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
    )
}

const ADDRESS: &str = mesh_proto::ADDRESS_TYPE_URL;

fn workload(name: &str) -> String {
    format!("Kubernetes//Pod/shop/{name}")
}

#[test]
fn pod_changes_take_the_incremental_way_and_give_what_a_full_translation_gives() {
    let mut mesh = Mesh::new();
    mesh.write(
        "ns",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n",
    );
    mesh.write("svc-cart", &service("cart", "{app: cart}"));
    mesh.write("svc-pay", &service("pay", "{app: pay}"));
    mesh.write(
        "pol-selector",
        &policy(
            "cart-only",
            "{selector: {matchLabels: {app: cart}}, action: ALLOW, rules: [{from: [{source: {namespaces: [shop]}}]}]}",
        ),
    );
    mesh.write(
        "pol-target",
        &policy(
            "pay-target",
            "{targetRefs: [{kind: Service, group: '', name: pay}], action: DENY, rules: [{to: [{operation: {ports: ['81']}}]}]}",
        ),
    );
    mesh.write(
        "pod-cart-1",
        &pod("cart-1", "{app: cart, version: v1}", "10.1.0.1"),
    );
    mesh.write(
        "pod-cart-2",
        &pod("cart-2", "{app: cart, version: v1}", "10.1.0.2"),
    );
    assert!(!mesh.step("first"), "the first translation is a full one");

    mesh.write(
        "pod-cart-1",
        &pod("cart-1", "{app: cart, version: v2}", "10.1.0.1"),
    );
    assert!(mesh.step("a pod's label changes"));
    assert_eq!(mesh.updated(ADDRESS), [workload("cart-1")]);

    // A pod the service-targeted policy (no waypoint: enforced at L4) selects, with no pod
    // before it: the policy existed already and now lists it.
    mesh.write("pod-pay-1", &pod("pay-1", "{app: pay}", "10.1.0.3"));
    assert!(mesh.step("a pod appears"));
    assert_eq!(mesh.updated(ADDRESS), [workload("pay-1")]);

    mesh.write(
        "pod-cart-2",
        &pod(
            "cart-2",
            "{app: cart, istio.io/use-waypoint: missing}",
            "10.1.0.2",
        ),
    );
    assert!(mesh.step("a pod names a waypoint that does not exist: a warning"));
    assert!(
        !mesh
            .translator
            .last
            .as_ref()
            .unwrap()
            .parts
            .pod_warnings
            .is_empty()
    );

    mesh.write("pod-cart-2", &pod("cart-2", "{app: pay}", "10.1.0.2"));
    assert!(mesh.step("the pod moves to the other service; the warning goes"));

    mesh.remove("pod-cart-1");
    assert!(mesh.step("a pod goes"));
    assert_eq!(mesh.updated(ADDRESS), [workload("cart-1")]);

    let record = PodStatusRecord {
        namespace: "shop".into(),
        name: "pay-1".into(),
        node_name: Some("node-2".into()),
        pod_ip: Some("10.2.0.9".parse().unwrap()),
        phase: Some("Running".into()),
    };
    record_pod_status(&mesh.config.state_dir, &record).unwrap();
    assert!(mesh.step("a kubelet-style status record moves a pod"));
    assert_eq!(mesh.updated(ADDRESS), [workload("pay-1")]);

    mesh.write("svc-cart", &service("cart", "{app: pay}"));
    assert!(!mesh.step("a service changes: everything again"));

    mesh.write("pod-cart-1", &pod("cart-1", "{app: cart}", "10.1.0.1"));
    assert!(mesh.step("pods alone again after a full translation"));

    mesh.remove("pol-selector");
    assert!(!mesh.step("a policy goes"));

    assert!(mesh.step("nothing changed"));
    assert_eq!(mesh.updated(ADDRESS), Vec::<String>::new());
}
