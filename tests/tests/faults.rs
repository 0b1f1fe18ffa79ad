//! Faults end to end: the controller stopped while traffic flows, a ztunnel restarted.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Lab, text};

const DENY_CLIENT: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]
"#;

#[test]
fn traffic_goes_on_while_the_controller_is_away_and_changes_apply_when_it_is_back() {
    let lab = Lab::enrolled("fc", &["client"], &[]);
    let held = lab.hold_echo("demo/client", "held", 6000);

    let controller = lab.pid_of("controller");
    let killed = Command::new("kill")
        .args(["-9", &controller.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    // New connections to known services keep working from the last known state.
    for _ in 0..3 {
        let out = lab.echo("demo/client", "server:9000", "while-away");
        assert!(
            out.status.success(),
            "a new connection failed while the controller was away: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = held.wait_with_output().expect("the held client ends");
    assert!(
        out.status.success(),
        "the open connection broke while the controller was away: {}",
        text(&out)
    );

    // A change made meanwhile (written to the manifests) applies once the controller is back.
    lab.apply(DENY_CLIENT);
    let out = lab.echo("demo/client", "server:9000", "not-yet");
    assert!(
        out.status.success(),
        "nothing can apply a policy while the controller is away: {}",
        text(&out)
    );
    let out = lab.lab(&["restart", "controller"]);
    assert!(out.status.success(), "{}", text(&out));
    lab.wait_until(
        "the DENY to apply after the controller returns",
        Duration::from_secs(60),
        || {
            let out = lab.echo("demo/client", "server:9000", "after");
            (!out.status.success())
                .then_some(())
                .ok_or_else(|| "still allowed".to_string())
        },
    );
}

#[test]
fn a_restarted_ztunnel_serves_new_connections_within_seconds() {
    let lab = Lab::enrolled("fz", &["client"], &[]);
    let before = lab.pid_of("ztunnel node-1");
    let out = lab.lab(&["restart", "ztunnel", "--node", "node-1"]);
    assert!(out.status.success(), "{}", text(&out));
    let restarted = Instant::now();
    assert_ne!(
        lab.pid_of("ztunnel node-1"),
        before,
        "the ztunnel process was replaced"
    );
    lab.wait_until(
        "new connections after the restart",
        Duration::from_secs(15),
        || {
            let out = lab.echo("demo/client", "server:9000", "after-restart");
            out.status.success().then_some(()).ok_or_else(|| text(&out))
        },
    );
    let took = restarted.elapsed();
    // Through the mesh, not around it: the new tunnel reports it.
    lab.wait_until(
        "the new tunnel to carry the connection",
        Duration::from_secs(10),
        || {
            let out = lab.echo("demo/client", "server:9000", "via-tunnel");
            let log = lab.ztunnel_log("node-1");
            let tail: String = log.lines().rev().take(50).collect::<Vec<_>>().join("\n");
            (out.status.success()
                && tail.contains("reporter=\"source\"")
                && tail.contains("mutual_tls"))
            .then_some(())
            .ok_or(tail)
        },
    );
    eprintln!("new connections worked {took:?} after the ztunnel restart");
}
