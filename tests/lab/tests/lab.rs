//! The lab end to end, without ztunnels: pods on two nodes talk directly and through a service
//! VIP, resolve names from their hosts file, restart when they exit, go away with their
//! manifest; `down` leaves nothing behind. Needs root (see `common`).

mod common;

use std::path::Path;

use common::{
    Lab, SETTLE_TIMEOUT, assert_nothing_remains, assert_success, echo_server_command, lab_pids,
    wait_until, yaml_list,
};

const ECHO_PORT: u16 = 9000;

fn apps_manifest() -> String {
    let server = yaml_list(&echo_server_command(ECHO_PORT));
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: default
  labels: {{app: echo}}
spec:
  nodeName: node-2
  containers:
  - name: echo
    image: ignored
    command: {server}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
spec:
  nodeName: node-1
  containers:
  - name: sleep
    image: ignored
    command: [sleep, '3600']
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: default
spec:
  selector: {{app: echo}}
  ports:
  - port: 80
    targetPort: {ECHO_PORT}
"
    )
}

const FLAKY_MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: flaky
  namespace: other
spec:
  containers:
  - name: fail
    image: ignored
    command: [sh, -c, 'echo flaky ran; exit 3']
";

#[test]
fn pods_talk_across_nodes_and_through_services_and_down_leaves_nothing() {
    let lab = Lab::up("a", 2);
    lab.apply("apps.yaml", &apps_manifest());
    // The lab has no way out: no namespace of it has a default route, except pods towards
    // their own node.
    let record = lab.record();
    let infrastructure = [record.controller_netns.clone(), lab.name.switch_netns()];
    for netns in record
        .nodes
        .iter()
        .map(|n| n.netns.clone())
        .chain(infrastructure)
    {
        let routes = std::process::Command::new("ip")
            .args(["-n", &netns, "route", "show", "default"])
            .output()
            .unwrap();
        assert!(
            routes.stdout.is_empty(),
            "{netns} has a default route: {}",
            String::from_utf8_lossy(&routes.stdout)
        );
    }
    let server = lab.wait_for_pod("default", "server");
    let client = lab.wait_for_pod("default", "client");
    assert_eq!(
        (server.node.as_str(), client.node.as_str()),
        ("node-2", "node-1")
    );
    assert!(server.ip.to_string().starts_with("10.244.2."), "{server:?}");
    assert!(client.ip.to_string().starts_with("10.244.1."), "{client:?}");

    // Across nodes, by pod IP. The server may still be binding: retry for a while.
    let direct = wait_until("the server echoes", SETTLE_TIMEOUT, || {
        let reply = lab.echo(
            "default/client",
            &server.ip.to_string(),
            ECHO_PORT,
            "direct-1",
        );
        reply.contains("direct-1").then_some(reply)
    });
    assert_eq!(direct.trim(), "direct-1");

    // Through the service VIP, by every name a pod may use; the client is outside the mesh.
    for name in [
        "echo",
        "echo.default",
        "echo.default.svc",
        "echo.default.svc.cluster.local",
    ] {
        let marker = format!("via-{}", name.replace('.', "-"));
        let reply = wait_until(&format!("{name}:80 answers"), SETTLE_TIMEOUT, || {
            let reply = lab.echo("default/client", name, 80, &marker);
            reply.contains(&marker).then_some(reply)
        });
        assert_eq!(reply.trim(), marker, "through {name}");
    }
    // The server reaches its own service (the VIP translated back to itself).
    let hairpin = lab.echo("default/server", "echo", 80, "hairpin");
    assert_eq!(hairpin.trim(), "hairpin");

    let hosts = lab.exec("default/client", &["cat", "/etc/hosts"]);
    assert_success("cat /etc/hosts", &hosts);
    let hosts = String::from_utf8_lossy(&hosts.stdout);
    assert!(hosts.contains("echo.default.svc.cluster.local"), "{hosts}");
    assert!(hosts.contains(&format!("{}\tclient", client.ip)), "{hosts}");

    // exec passes exit codes through and names the pods it knows.
    let code = lab.exec("default/client", &["sh", "-c", "exit 3"]);
    assert_eq!(code.status.code(), Some(3));
    let missing = lab.exec("default/nope", &["true"]);
    assert!(!missing.status.success());
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(
        message.contains("no pod default/nope") && message.contains("default/client"),
        "{message}"
    );

    // A container that exits is restarted, and its output is in the pod's log.
    lab.apply("flaky.yaml", FLAKY_MANIFEST);
    wait_until("the flaky pod restarts", SETTLE_TIMEOUT, || {
        lab.pods()
            .find("other", "flaky")
            .filter(|p| p.restarts >= 1)
            .cloned()
    });
    let logs = lab.run(&["logs", "other/flaky"]);
    assert_success("logs", &logs);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("flaky ran"));

    let status = lab.run(&["status"]);
    assert_success("status", &status);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(!status.contains("DEAD"), "{status}");
    assert!(
        status.contains("default/server") && status.contains("node-2"),
        "{status}"
    );

    // A pod whose manifest goes away is removed with its namespace, files and status record.
    std::fs::remove_file(lab.paths.manifests().join("flaky.yaml")).unwrap();
    let flaky_netns = lab
        .pods()
        .find("other", "flaky")
        .map(|p| p.netns.clone())
        .unwrap();
    wait_until("the flaky pod is removed", SETTLE_TIMEOUT, || {
        let gone =
            lab.pods().find("other", "flaky").is_none() && !common::netns_exists(&flaky_netns);
        gone.then_some(())
    });
    assert!(!Path::new("/etc/netns").join(&flaky_netns).exists());
    let record = lab
        .paths
        .controller_state()
        .join("pod-status/other_flaky.json");
    assert!(!record.exists(), "{} remains", record.display());

    let pids = lab_pids(&lab);
    let down = lab.run(&["down"]);
    assert_success("down", &down);
    let report = String::from_utf8_lossy(&down.stdout);
    assert!(report.contains("deleted namespaces"), "{report}");
    assert_nothing_remains(&lab.name, &pids);
    let again = lab.run(&["down"]);
    assert_success("a second down", &again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}
