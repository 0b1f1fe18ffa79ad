//! The lab's CNI agent with real ztunnels: every pod is announced to its node's ztunnel, again
//! after the ztunnel restarts, and withdrawn when it goes; a pod that opted out is not. Needs root and the ztunnel binary
//! (see `common`).

mod common;

use common::{Lab, SETTLE_TIMEOUT, assert_nothing_remains, assert_success, lab_pids, wait_until};

const PODS: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata:
  name: first
  namespace: shop
spec:
  nodeName: node-1
  containers:
  - name: sleep
    image: ignored
    command: [sleep, '3600']
---
apiVersion: v1
kind: Pod
metadata:
  name: second
  namespace: shop
spec:
  nodeName: node-1
  containers:
  - name: sleep
    image: ignored
    command: [sleep, '3600']
---
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  namespace: shop
  labels: {istio.io/dataplane-mode: none}
spec:
  nodeName: node-1
  containers:
  - name: sleep
    image: ignored
    command: [sleep, '3600']
";

fn captured(lab: &Lab, name: &str) -> Option<bool> {
    lab.pods().find("shop", name).and_then(|p| p.captured)
}

#[test]
fn pods_are_announced_to_their_ztunnel_and_withdrawn() {
    let ztunnel = common::bin_dir().join("ztunnel");
    assert!(
        ztunnel.is_file(),
        "{} is missing: build it first with `cargo build -p ztunnel`",
        ztunnel.display()
    );
    let lab = Lab::up_with_ztunnel("d", 1);
    lab.apply("pods.yaml", PODS);
    for pod in ["first", "second"] {
        lab.wait_for_pod("shop", pod);
        wait_until(
            &format!("ztunnel acknowledges {pod}"),
            SETTLE_TIMEOUT,
            || (captured(&lab, pod) == Some(true)).then_some(()),
        );
    }
    let log = lab.paths.ztunnel_log("node-1");
    let adds = std::fs::read_to_string(&log).unwrap();
    assert!(adds.contains("Kubernetes//Pod/shop/first"), "{adds}");
    lab.wait_for_pod("shop", "opted-out");
    let adds = std::fs::read_to_string(&log).unwrap();
    assert!(
        !adds.contains("Kubernetes//Pod/shop/opted-out"),
        "a pod labelled istio.io/dataplane-mode=none is never handed to the ztunnel: {adds}"
    );

    // A restarted ztunnel gets the full list again.
    assert_success(
        "restart",
        &lab.run(&["restart", "ztunnel", "--node", "node-1"]),
    );
    wait_until(
        "the agent sends the pod list to the new ztunnel",
        SETTLE_TIMEOUT,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.matches("snapshot pods=2").next().map(drop)
        },
    );
    assert_eq!(captured(&lab, "first"), Some(true));

    // A pod that goes is withdrawn before its namespace is deleted.
    lab.apply("pods.yaml", &PODS.replace("name: second", "name: third"));
    wait_until("second is withdrawn", SETTLE_TIMEOUT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("remove uid=Kubernetes//Pod/shop/second")
            .then_some(())
    });
    lab.wait_for_pod("shop", "third");

    let pids = lab_pids(&lab);
    assert_success("down", &lab.run(&["down"]));
    assert_nothing_remains(&lab.name, &pids);
}
