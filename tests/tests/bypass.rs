//! Waypoint bypass protection end to end, beyond what `waypoint.rs` checks (a direct dial
//! refused): `ztunnel --no-bypass-protection` lets a direct pod-IP dial through, and binding
//! a service to a waypoint closes direct connections to its pods that are already open.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{Lab, text};

const NS: &str = "shop";
const CLIENT: &str = "shop/client";

/// `reviews` (bound to the waypoint when `bound`) and `ratings` (never bound), one pod each on
/// node-2, serving HTTP on 8080 and a TCP echo on 9000; an enrolled client on node-1.
fn app(bound: bool) -> String {
    let mut yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}, labels: {{app: client}}}}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers: [{{name: app, command: [sleep, "86400"]}}]
"#
    );
    for (name, labels) in [
        (
            "reviews",
            if bound {
                "{istio.io/use-waypoint: waypoint}"
            } else {
                "{}"
            },
        ),
        ("ratings", "{}"),
    ] {
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {{app: {name}}}}}
spec:
  nodeName: node-2
  serviceAccountName: {name}
  containers: [{{name: app, command: [testapp, serve, --http, "8080", --tcp-echo, "9000"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}, labels: {labels}}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: echo, port: 9000, targetPort: 9000}}
"#
        ));
    }
    yaml
}

/// Brings up a lab with the app and a waypoint for `shop`, and waits until every pod runs.
fn lab_with_app(tag: &str, options: &[&str], bound: bool) -> Lab {
    let lab = Lab::up_with(tag, 2, options);
    lab.apply(&app(bound));
    meshctl_ok(&lab, &["waypoint", "apply", "-n", NS]);
    lab.wait_for_pods(&["shop/waypoint-0", "shop/reviews", "shop/ratings", CLIENT]);
    lab.wait_for_protocol(NS, "HBONE");
    lab
}

fn meshctl_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.meshctl(args);
    assert!(out.status.success(), "meshctl {args:?}: {}", text(&out));
    text(&out)
}

/// How many connections node-2's tunnel admitted to `reviews` from service account `sa`.
fn admitted_to_reviews(lab: &Lab, sa: &str) -> f64 {
    let principal = format!("source_principal=\"spiffe://cluster.local/ns/shop/sa/{sa}\"");
    lab.node_http(2, 15020, "/metrics")
        .lines()
        .filter(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains(&principal)
                && l.contains("destination_workload=\"reviews\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until a request from the client to `http://reviews/` is answered by way of the
/// waypoint: node-2's tunnel admitted a connection to reviews from the waypoint's identity.
fn wait_for_reviews_through_the_waypoint(lab: &Lab) {
    lab.wait_until(
        "requests to reviews to arrive through the waypoint",
        Duration::from_secs(60),
        || {
            let summary =
                lab.try_http_load(CLIENT, "http://reviews/", &["--timeout-ms", "3000"])?;
            (summary["ok"] == 1 && admitted_to_reviews(lab, "waypoint") > 0.0)
                .then_some(())
                .ok_or_else(|| format!("{summary}\n{}", tail(&lab.ztunnel_log("node-2"), 20)))
        },
    );
}

const INBOUND_BYPASS: &str =
    r#"ztunnel_connection_failures_total{direction="inbound",reason="bypassed_waypoint"}"#;

fn pod_ip(lab: &Lab, pod: &str) -> String {
    lab.pod(pod)["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("{pod} has no address"))
        .to_string()
}

#[test]
fn without_bypass_protection_a_direct_pod_ip_dial_reaches_a_bound_service() {
    let lab = lab_with_app("bo", &["--ztunnel-arg=--no-bypass-protection"], true);
    wait_for_reviews_through_the_waypoint(&lab);

    let ip = pod_ip(&lab, "shop/reviews");
    let before = admitted_to_reviews(&lab, "client");
    let direct = lab.http_load(
        CLIENT,
        &format!("http://{ip}:8080/"),
        &["--count", "5", "--timeout-ms", "3000"],
    );
    assert_eq!(
        direct["ok"], 5,
        "with protection off a direct dial must get through: {direct}"
    );
    // It went through the tunnels as the client (not around them, not via the waypoint),
    // and nothing was refused.
    assert!(
        admitted_to_reviews(&lab, "client") > before,
        "node-2's tunnel did not admit the client's direct connection:\n{}",
        tail(&lab.ztunnel_log("node-2"), 30)
    );
    assert_eq!(lab.ztunnel_metric(2, INBOUND_BYPASS), 0.0);

    lab.down_and_check_clean();
}

#[test]
fn binding_a_service_to_a_waypoint_closes_open_connections_that_bypass_it() {
    let lab = lab_with_app("bb", &[], false);
    let reviews_ip = pod_ip(&lab, "shop/reviews");
    lab.wait_until(
        "the client to reach reviews and ratings over the mesh",
        Duration::from_secs(30),
        || {
            for target in ["reviews:9000", "ratings:9000"] {
                let out = lab.echo(CLIENT, target, "probe");
                if !out.status.success() {
                    return Err(format!("{target}: {}", text(&out)));
                }
            }
            Ok(())
        },
    );
    lab.wait_until(
        "the waypoint to connect to the controller",
        Duration::from_secs(30),
        || {
            let status = meshctl_ok(&lab, &["waypoint", "status", "-n", NS]);
            status
                .contains("Running; connected to the controller")
                .then_some(())
                .ok_or(status)
        },
    );

    // Open while reviews is not bound: by its pod address, and by its service (direct too,
    // since no waypoint serves it yet); and to ratings, which stays unbound.
    let hold = Duration::from_secs(40);
    let hold_ms = hold.as_millis() as u64;
    let mut by_ip = lab.hold_echo_to(CLIENT, &format!("{reviews_ip}:9000"), "by-ip", hold_ms);
    let mut by_service = lab.hold_echo_to(CLIENT, "reviews:9000", "by-service", hold_ms);
    let mut unbound = lab.hold_echo_to(CLIENT, "ratings:9000", "unbound", hold_ms);
    std::thread::sleep(Duration::from_secs(2));
    for (what, held) in [
        ("by ip", &mut by_ip),
        ("by service", &mut by_service),
        ("to ratings", &mut unbound),
    ] {
        assert!(
            still_running(held),
            "the connection {what} ended before the binding"
        );
    }
    let before = lab.ztunnel_metric(2, INBOUND_BYPASS);

    let bound = Instant::now();
    meshctl_ok(
        &lab,
        &[
            "label",
            "service",
            "reviews",
            "-n",
            NS,
            "istio.io/use-waypoint=waypoint",
        ],
    );
    for (what, held) in [("by ip", &mut by_ip), ("by service", &mut by_service)] {
        while still_running(held) {
            assert!(
                bound.elapsed() < Duration::from_secs(20),
                "the connection {what} is still open 20 s after reviews was bound to the \
                 waypoint\n{}",
                tail(&lab.ztunnel_log("node-2"), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!(
        "both direct connections closed {:?} after the binding",
        bound.elapsed()
    );
    let by_ip = report(by_ip);
    let by_service = report(by_service);
    for (what, report) in [("by ip", &by_ip), ("by service", &by_service)] {
        assert!(
            report.contains("\"ok\":false"),
            "the connection {what} ended without an error: {report}"
        );
    }
    assert!(
        still_running(&mut unbound),
        "the connection to ratings, which no waypoint serves, was closed too: {}",
        report(unbound)
    );
    let log = lab.ztunnel_log("node-2");
    assert!(
        log.contains("did not come through the waypoint that now serves its destination"),
        "node-2's tunnel does not say why it closed them:\n{}",
        tail(&log, 30)
    );
    let counted = lab.ztunnel_metric(2, INBOUND_BYPASS) - before;
    assert!(
        counted >= 2.0,
        "{counted} revoked connections counted as bypassed_waypoint, 2 expected"
    );

    // The service works through its waypoint; a new direct dial is refused.
    wait_for_reviews_through_the_waypoint(&lab);
    let direct = lab.http_load(
        CLIENT,
        &format!("http://{reviews_ip}:8080/"),
        &["--timeout-ms", "3000"],
    );
    assert_eq!(direct["errors"], 1, "a direct dial got through: {direct}");

    let _ = unbound.kill();
    let _ = unbound.wait();
    lab.down_and_check_clean();
}

fn still_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// What a held client printed, once it has ended; kills it first if not.
fn report(mut child: Child) -> String {
    if still_running(&mut child) {
        let _ = child.kill();
    }
    text(&child.wait_with_output().expect("the held client ends"))
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
