//! Bad input through `meshctl apply`: refused with a message naming file, object and field,
//! and nothing else changes.

mod common;

use common::{Lab, demo_app, text};

const BROKEN: &str = r#"apiVersion: v1
kind: Service
metadata: {name: broken, namespace: demo}
spec:
  selector: {app: server}
  ports: [{name: http, port: 70000, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: odd, namespace: demo}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["not a principal"]}}]
"#;

#[test]
fn a_broken_manifest_is_refused_with_a_clear_message_and_nothing_changes() {
    let lab = Lab::up("bi", 1);
    let app = demo_app("demo", &[]).replace("node-2", "node-1");
    lab.apply(&app);
    lab.wait_for_pods(&["demo/server"]);
    let before = text(&lab.meshctl(&["get", "services", "-A", "-o", "json"]));
    let files_before = manifest_files(&lab);

    let path = lab.state().join("broken.yaml");
    std::fs::write(&path, BROKEN).unwrap();
    let out = lab.meshctl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(!out.status.success(), "a broken manifest must be refused");
    let message = text(&out);
    for expected in [
        "broken.yaml",
        "Service demo/broken",
        "spec.ports[0].port",
        "AuthorizationPolicy demo/odd",
        "principals",
        "nothing was applied",
    ] {
        assert!(
            message.contains(expected),
            "the refusal does not mention {expected:?}:\n{message}"
        );
    }
    assert_eq!(manifest_files(&lab), files_before, "nothing may be written");
    let after = text(&lab.meshctl(&["get", "services", "-A", "-o", "json"]));
    assert_eq!(before, after, "the served state changed");
    let status = text(&lab.meshctl(&["proxy-status"]));
    assert!(
        !status.contains("rejected:"),
        "a refused apply leaves no rejection behind:\n{status}"
    );
}

fn manifest_files(lab: &Lab) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(lab.state().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}
