use super::*;

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  ports: [{{port: 80}}]\n"
    )
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  \
                   labels: {app: web}\nspec: {containers: [{name: app}]}\n";

fn fixture() -> (tempfile::TempDir, ManifestDir) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    (root, ManifestDir::new(dir))
}

fn read(dir: &ManifestDir, name: &str) -> String {
    std::fs::read_to_string(dir.path().join(name)).unwrap()
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey::namespaced(kind, "shop", name)
}

#[test]
fn apply_validates_before_writing() {
    let (_root, dir) = fixture();
    let err = dir
        .apply(
            "bad.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: Cart}\n",
        )
        .unwrap_err();
    assert!(matches!(err, ManifestDirError::Invalid { .. }));
    assert!(
        err.to_string()
            .contains("bad.yaml: Service default/Cart: metadata.name"),
        "{err}"
    );
    assert!(!dir.path().join("bad.yaml").exists());
    assert!(matches!(
        dir.apply("../escape.yaml", &service("cart")),
        Err(ManifestDirError::BadFileName { .. })
    ));
}

#[test]
fn apply_moves_objects_out_of_other_files() {
    let (_root, dir) = fixture();
    dir.write_file(
        "old.yaml",
        &format!("{}---\n{}", service("cart"), service("web")),
    )
    .unwrap();
    let keys = dir.apply("cart.yaml", &service("cart")).unwrap();
    assert_eq!(keys, [key(Kind::Service, "cart")]);
    assert_eq!(read(&dir, "old.yaml"), service("web"));
    assert_eq!(read(&dir, "cart.yaml"), service("cart"));
    // Applying the same file again leaves it as the single definition.
    dir.apply("cart.yaml", &service("cart")).unwrap();
    assert_eq!(read(&dir, "cart.yaml"), service("cart"));
}

#[test]
fn delete_keeps_the_other_documents_as_written() {
    let (_root, dir) = fixture();
    let text = format!(
        "# shop services\n{}---  # the web one\n{}---\n{POD}",
        service("cart"),
        service("web")
    );
    dir.write_file("shop.yaml", &text).unwrap();
    let changed = dir.delete(&key(Kind::Service, "web")).unwrap();
    assert_eq!(changed, [dir.path().join("shop.yaml")]);
    assert_eq!(
        read(&dir, "shop.yaml"),
        format!("# shop services\n{}---\n{POD}", service("cart"))
    );
    dir.delete(&key(Kind::Service, "cart")).unwrap();
    assert_eq!(read(&dir, "shop.yaml"), POD);
    dir.delete(&key(Kind::Pod, "web")).unwrap();
    assert!(
        !dir.path().join("shop.yaml").exists(),
        "an emptied file is removed"
    );
}

#[test]
fn delete_of_an_unknown_object_says_so() {
    let (_root, dir) = fixture();
    dir.write_file("broken.yaml", "not: [valid").unwrap();
    let err = dir.delete(&key(Kind::Pod, "cart-0")).unwrap_err();
    assert!(matches!(err, ManifestDirError::NotFound { .. }));
    assert!(
        err.to_string().contains("pods made by a Deployment"),
        "{err}"
    );
}

#[test]
fn set_label_rewrites_only_its_document() {
    let (_root, dir) = fixture();
    let text = format!("{}---\n{POD}", service("cart"));
    dir.write_file("shop.yaml", &text).unwrap();
    let written = dir
        .set_label(
            &key(Kind::Pod, "web"),
            "istio.io/dataplane-mode",
            Some("none"),
        )
        .unwrap();
    assert_eq!(written, Some(dir.path().join("shop.yaml")));
    let after = read(&dir, "shop.yaml");
    assert!(
        after.starts_with(&format!("{}---\n", service("cart"))),
        "{after}"
    );
    let objects = validate_manifest_text("shop.yaml", &after).unwrap();
    let crate::store::Object::Pod(pod) = &objects[1] else {
        panic!()
    };
    assert_eq!(pod.labels["istio.io/dataplane-mode"], "none");
    assert_eq!(pod.labels["app"], "web");

    // Setting the same value again changes nothing; removing it does.
    assert_eq!(
        dir.set_label(
            &key(Kind::Pod, "web"),
            "istio.io/dataplane-mode",
            Some("none")
        )
        .unwrap(),
        None
    );
    dir.set_label(&key(Kind::Pod, "web"), "istio.io/dataplane-mode", None)
        .unwrap();
    let objects = validate_manifest_text("shop.yaml", &read(&dir, "shop.yaml")).unwrap();
    let crate::store::Object::Pod(pod) = &objects[1] else {
        panic!()
    };
    assert!(!pod.labels.contains_key("istio.io/dataplane-mode"));
}

#[test]
fn labelling_an_undeclared_namespace_creates_its_manifest() {
    let (_root, dir) = fixture();
    let path = dir
        .set_label(
            &ObjectKey::namespace("shop"),
            "istio.io/dataplane-mode",
            Some("ambient"),
        )
        .unwrap()
        .unwrap();
    let objects =
        validate_manifest_text("ns.yaml", &std::fs::read_to_string(&path).unwrap()).unwrap();
    let crate::store::Object::Namespace(ns) = &objects[0] else {
        panic!()
    };
    assert_eq!(ns.labels["istio.io/dataplane-mode"], "ambient");
    // Later label changes edit that manifest.
    dir.set_label(
        &ObjectKey::namespace("shop"),
        "istio.io/use-waypoint",
        Some("waypoint"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("istio.io/use-waypoint: waypoint"), "{text}");
    assert!(matches!(
        dir.set_label(&key(Kind::Service, "absent"), "a", Some("b")),
        Err(ManifestDirError::NotFound { .. })
    ));
    assert!(matches!(
        dir.set_label(&ObjectKey::namespace("shop"), "a", Some("has space")),
        Err(ManifestDirError::BadLabel { .. })
    ));
}

#[test]
fn files_that_cannot_be_split_safely_are_not_edited() {
    let (_root, dir) = fixture();
    let text = format!("%YAML 1.1\n---\n{}", service("cart"));
    dir.write_file("shop.yaml", &text).unwrap();
    let err = dir.delete(&key(Kind::Service, "cart")).unwrap_err();
    assert!(
        matches!(err, ManifestDirError::Unsplittable { .. }),
        "{err}"
    );
    assert_eq!(read(&dir, "shop.yaml"), text);
}
