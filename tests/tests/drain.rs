//! A ztunnel's drain on SIGTERM, end to end: its listeners close, so new connections of the
//! pods it serves are refused (never carried around the tunnel in plaintext); an open
//! connection keeps working until the drain deadline and is closed then; the process exits
//! after the deadline; and the pods stay captured while no tunnel runs (fail closed) until a
//! new ztunnel takes them over. Both sides are drained in turn: the client's node, then the
//! server's.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{Lab, contains, finish, marker, tcp_segments_with_port, text};

/// The drain deadline the lab's ztunnels run with.
const DEADLINE: Duration = Duration::from_secs(5);

/// How far the observed close and exit may run past the deadline (polling, process exit).
const SLACK: Duration = Duration::from_secs(3);

/// A pod of the demo namespace outside the mesh, on node-1: it talks to the server in
/// plaintext, which the server's tunnel admits on its plaintext port (no policy applies).
const OUTSIDER: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: demo, labels: {app: outsider, istio.io/dataplane-mode: none}}
spec:
  nodeName: node-1
  serviceAccountName: outsider
  containers: [{name: app, image: sleep, command: [sleep, "86400"]}]
"#;

#[test]
fn sigterm_drains_a_ztunnel_to_its_deadline_and_it_never_fails_open() {
    let deadline_arg = format!("--ztunnel-arg=--drain-deadline-secs={}", DEADLINE.as_secs());
    let lab = Lab::enrolled("dr", &["client"], &[&deadline_arg]);
    lab.apply(OUTSIDER);
    lab.wait_for_pods(&["demo/outsider"]);
    lab.wait_until(
        "the outsider to reach the server in plaintext",
        Duration::from_secs(30),
        || {
            let out = lab.echo("demo/outsider", "server:9000", "outside");
            out.status.success().then_some(()).ok_or_else(|| text(&out))
        },
    );

    // The client's side: its outbound listener closes; the open tunnel runs to the deadline.
    drain(&lab, "node-1", &["demo/client"]);
    eprintln!("node-1 drained; starting a new ztunnel there");
    let out = lab.lab(&["restart", "ztunnel", "--node", "node-1"]);
    assert!(out.status.success(), "{}", text(&out));
    lab.wait_until(
        "the new ztunnel of node-1 to carry the client's traffic",
        Duration::from_secs(30),
        || {
            let out = lab.echo("demo/client", "server:9000", "after-restart");
            let metrics = lab.node_http(1, 15020, "/metrics");
            let carried = metrics
                .lines()
                .any(|l| l.starts_with("istio_tcp_connections_opened_total{reporter=\"source\""));
            (out.status.success() && carried)
                .then_some(())
                .ok_or_else(|| format!("{}\n{}", text(&out), lab.ztunnel_log("node-1")))
        },
    );

    // The server's side: its HBONE and plaintext listeners close.
    drain(&lab, "node-2", &["demo/client", "demo/outsider"]);

    lab.down_and_check_clean();
}

/// SIGTERMs `node`'s ztunnel with a connection from the client to the server open, and
/// checks the drain: `refused` pods cannot open new connections to the server while it
/// drains nor after it exits, and the client's probes never cross node-1's link in
/// plaintext.
fn drain(lab: &Lab, node: &str, refused: &[&str]) {
    let capture = lab.capture(1);
    let hold = DEADLINE + Duration::from_secs(10);
    let mut held = lab.hold_echo("demo/client", "held", hold.as_millis() as u64);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        still_running(&mut held),
        "the held connection ended before the drain: {}",
        report(held)
    );

    // Taken before the signal goes out, so the times measured from it are never too short.
    let sigterm = Instant::now();
    let pid = lab.signal("ztunnel", Some(node), "TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        mesh_lab::process::is_alive(pid),
        "the ztunnel of {node} exited at once instead of draining:\n{}",
        lab.ztunnel_log(node)
    );
    assert!(
        still_running(&mut held),
        "the open connection was cut when the drain started, not at the deadline: {}\n{}",
        report(held),
        lab.ztunnel_log(node)
    );
    let number: u8 = node.trim_start_matches("node-").parse().unwrap();
    let readiness = lab.node_http(number, 15021, "/healthz/ready");
    assert!(
        readiness.contains(" 503 ") && readiness.contains("draining"),
        "{node}'s readiness while draining: {readiness}"
    );
    let mut probes = refused_probes(lab, refused, "draining");

    // Wait for both ends: the held connection closed, the process gone.
    let mut closed_after = None;
    let mut exited_after = None;
    while closed_after.is_none() || exited_after.is_none() {
        if closed_after.is_none() && !still_running(&mut held) {
            closed_after = Some(sigterm.elapsed());
        }
        if exited_after.is_none() && !mesh_lab::process::is_alive(pid) {
            exited_after = Some(sigterm.elapsed());
        }
        assert!(
            sigterm.elapsed() < hold,
            "{node}'s drain did not end by {hold:?}: connection closed after {closed_after:?}, \
             process exited after {exited_after:?}\n{}",
            lab.ztunnel_log(node)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (closed_after, exited_after) = (closed_after.unwrap(), exited_after.unwrap());
    let held_report = report(held);
    eprintln!(
        "{node}: open connection closed {closed_after:?} and process exited {exited_after:?} \
         after SIGTERM (deadline {DEADLINE:?}); the held client said {held_report}"
    );
    let window = DEADLINE..DEADLINE + SLACK;
    assert!(
        window.contains(&closed_after),
        "the open connection closed {closed_after:?} after SIGTERM, not at the {DEADLINE:?} \
         deadline: {held_report}\n{}",
        lab.ztunnel_log(node)
    );
    assert!(
        window.contains(&exited_after),
        "the ztunnel exited {exited_after:?} after SIGTERM, not at the {DEADLINE:?} deadline\n{}",
        lab.ztunnel_log(node)
    );
    assert!(
        held_report.contains("\"ok\":false"),
        "the held connection outlived the ztunnel: {held_report}"
    );
    let log = lab.ztunnel_log(node);
    assert!(
        log.contains("draining") && log.contains("ztunnel stopped"),
        "{node}'s log does not show the drain:\n{log}"
    );

    // Gone, the tunnel leaves the pods captured: still refused, never around it.
    probes.extend(refused_probes(lab, refused, "stopped"));
    let bytes = finish(capture);
    for probe in &probes {
        assert!(
            !contains(&bytes, probe),
            "{probe} crossed node-1's link in plaintext while {node}'s ztunnel was draining or gone"
        );
    }
    // The outsider's attempts go to the app port by design; the mesh client's never do.
    if !refused.contains(&"demo/outsider") {
        assert_eq!(
            tcp_segments_with_port(&bytes, 9000),
            0,
            "traffic to the app port crossed node-1's link outside the tunnel"
        );
    }
}

/// One connection attempt from each pod to the server, each of which must fail; returns the
/// markers the mesh's own clients sent (they must never appear in plaintext).
fn refused_probes(lab: &Lab, pods: &[&str], phase: &str) -> Vec<String> {
    let mut markers = Vec::new();
    for pod in pods {
        let probe = marker(phase);
        let out = lab.echo(pod, "server:9000", &probe);
        assert!(
            !out.status.success(),
            "{pod} opened a new connection to the server while a ztunnel was {phase}: {}",
            text(&out)
        );
        if *pod != "demo/outsider" {
            markers.push(probe);
        }
    }
    markers
}

fn still_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// What the held client printed (its JSON report), once it has ended; kills it first if not.
fn report(mut child: Child) -> String {
    if still_running(&mut child) {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("the held client ends");
    text(&out)
}
