//! L4 policy end to end: ALLOW by principal, DENY by namespace over ALLOW, and a policy applied
//! while a connection is open closing it.

mod common;

use std::time::{Duration, Instant};

use common::{Lab, text};

fn allow_only(principal: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-one, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["{principal}"]}}}}]
"#
    )
}

const DENY_NAMESPACE: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-demo, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {namespaces: ["demo"]}}]
"#;

#[test]
fn allow_by_principal_admits_one_client_and_deny_by_namespace_wins() {
    let lab = Lab::enrolled("pa", &["alice", "bob"], &[]);
    lab.apply(&allow_only("cluster.local/ns/demo/sa/alice"));
    lab.wait_until("bob to be refused", Duration::from_secs(30), || {
        let bob = lab.echo("demo/bob", "server:9000", "hello");
        (!bob.status.success())
            .then_some(())
            .ok_or_else(|| "bob still gets through".to_string())
    });
    let alice = lab.echo("demo/alice", "server:9000", "hello");
    assert!(
        alice.status.success(),
        "alice is allowed by principal: {}",
        text(&alice)
    );
    assert!(
        lab.ztunnel_log("node-2")
            .contains("connection denied by policy"),
        "the server's tunnel logs the denial"
    );
    let metrics = lab.node_http(2, 15020, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("ztunnel_connection_failures_total")
                && l.contains("reason=\"policy_denied\"")),
        "denials are counted:\n{metrics}"
    );

    // A DENY on the clients' namespace wins over the ALLOW that still names alice.
    lab.apply(DENY_NAMESPACE);
    lab.wait_until("alice to be refused too", Duration::from_secs(30), || {
        let alice = lab.echo("demo/alice", "server:9000", "hello");
        (!alice.status.success())
            .then_some(())
            .ok_or_else(|| "alice still gets through".to_string())
    });
}

#[test]
fn a_policy_applied_while_a_connection_is_open_closes_it() {
    let lab = Lab::enrolled("po", &["alice", "bob"], &[]);
    // bob holds a connection for up to 20 s, sending every 100 ms.
    let mut held = lab.hold_echo("demo/bob", "held", 20000);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        held.try_wait().expect("poll").is_none(),
        "the held connection ended before the policy"
    );

    let applied = Instant::now();
    lab.apply(&allow_only("cluster.local/ns/demo/sa/alice"));
    let deadline = applied + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = held.try_wait().expect("poll") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = held.kill();
            panic!("the open connection was not closed within 15 s of the policy");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = held.wait_with_output().expect("collect output");
    assert!(
        !status.success(),
        "the held connection should have failed: {}",
        text(&out)
    );
    assert!(
        lab.ztunnel_log("node-2").contains("policy now denies it"),
        "the tunnel logs why it closed the connection"
    );
}
