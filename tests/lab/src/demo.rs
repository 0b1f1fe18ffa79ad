//! `meshctl lab demo`: the guided tour. It builds a two-node lab, deploys a server and two
//! clients, shows their traffic in plaintext, enrolls the namespace, shows the same traffic
//! over mTLS (the identity the server's tunnel saw, and a capture of the node link with no
//! plaintext in it), applies an L4 policy that refuses one client, prints the proxy status
//! and the connection metrics, and tears everything down unless `--keep`.
//!
//! Every line it prints is something it observed; a step that does not behave as the tour
//! says stops the demo with the evidence.

use std::time::Duration;

use crate::drive::{
    Capture, DriveError, LabDriver, contains, demo_manifests, tcp_segments_with_port, text,
};

/// The namespace the demo deploys into.
const NAMESPACE: &str = "demo";

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error("the demo expected {expected}, but observed: {observed}")]
    Unexpected { expected: String, observed: String },
}

fn unexpected(expected: &str, observed: impl Into<String>) -> DemoError {
    DemoError::Unexpected {
        expected: expected.to_string(),
        observed: observed.into(),
    }
}

fn step(n: u8, title: &str) {
    println!("\n== {n}. {title}");
}

fn say(line: impl AsRef<str>) {
    println!("   {}", line.as_ref());
}

/// Runs the tour on a new lab; removes it at the end unless `keep`.
pub fn run(lab: &LabDriver, keep: bool) -> Result<(), DemoError> {
    step(1, "A lab with two nodes: a controller, a ztunnel per node");
    let up = lab.lab(&["up", "--nodes", "2"])?;
    if !up.status.success() {
        return Err(unexpected("the lab to come up", text(&up)));
    }
    say(format!("lab {} is up", lab.name.as_str()));
    let result = tour(lab);
    if keep {
        println!(
            "\nThe lab stays up (--keep). Try: meshctl get workloads -A; meshctl lab status; meshctl lab down"
        );
    } else {
        step(8, "Tear down");
        let down = lab.lab(&["down"])?;
        say(if down.status.success() {
            "every process, namespace and file of the lab is removed"
        } else {
            "down failed; run `meshctl lab down`"
        });
    }
    result
}

fn tour(lab: &LabDriver) -> Result<(), DemoError> {
    step(
        2,
        "Deploy a server on node-2 and two clients (web, batch) on node-1",
    );
    lab.apply(&demo_manifests(
        &lab.bin_dir.join("testapp"),
        NAMESPACE,
        &["web", "batch"],
    ))?;
    lab.wait_for_pods(&["demo/server", "demo/web", "demo/batch"])?;
    for line in lab.meshctl_ok(&["get", "pods", "-n", NAMESPACE])?.lines() {
        say(line);
    }

    step(3, "Before the mesh: plaintext on the node link");
    let plain = format!("plaintext-{}", std::process::id());
    let bytes = probe(lab, "demo/web", &plain)?;
    say(format!("web -> server:9000 echoed {plain:?}"));
    if !contains(&bytes, &plain) {
        return Err(unexpected(
            "to see the plaintext payload on node-1's link",
            "it was not in the capture",
        ));
    }
    say(format!(
        "capture of node-1's link: {plain:?} is readable in the packets"
    ));

    step(
        4,
        "Enroll: meshctl label namespace demo istio.io/dataplane-mode=ambient",
    );
    lab.meshctl_ok(&[
        "label",
        "namespace",
        NAMESPACE,
        "istio.io/dataplane-mode=ambient",
    ])?;
    lab.wait_for_protocol(NAMESPACE, "HBONE")?;
    for line in lab
        .meshctl_ok(&["get", "workloads", "-n", NAMESPACE, "-o", "wide"])?
        .lines()
    {
        say(line);
    }
    let secret = format!("secret-{}", std::process::id());
    lab.wait_until("traffic over the mesh", Duration::from_secs(30), || {
        let out = lab
            .echo("demo/web", "server:9000", "warm-up")
            .map_err(|e| e.to_string())?;
        let log = lab
            .log("ztunnel", Some("node-2"))
            .map_err(|e| e.to_string())?;
        (out.status.success() && log.contains("security=\"mutual_tls\""))
            .then_some(())
            .ok_or_else(|| text(&out))
    })?;
    let bytes = probe(lab, "demo/web", &secret)?;
    say(format!("web -> server:9000 echoed {secret:?}"));
    let restarts: u64 = lab
        .pods()?
        .iter()
        .filter_map(|p| p["restarts"].as_u64())
        .sum();
    say(format!("pod restarts since deployment: {restarts}"));
    let identity = seen_identity(lab)?;
    say(format!(
        "the server's ztunnel saw the client as {identity} over mutual TLS"
    ));
    if contains(&bytes, &secret) {
        return Err(unexpected(
            "no plaintext on the node link",
            "the payload was readable in the capture",
        ));
    }
    say(format!(
        "capture of node-1's link: {secret:?} is not in it; {} TLS segments to or from port 15008, {} to the app port",
        tcp_segments_with_port(&bytes, 15008),
        tcp_segments_with_port(&bytes, 9000)
    ));

    step(5, "An L4 policy: only web may call the server");
    lab.apply(POLICY)?;
    for line in POLICY
        .lines()
        .filter(|l| l.contains("principals") || l.contains("action"))
    {
        say(format!("policy: {}", line.trim()));
    }
    lab.wait_until(
        "the policy to refuse batch",
        Duration::from_secs(30),
        || {
            let out = lab
                .echo("demo/batch", "server:9000", "hello")
                .map_err(|e| e.to_string())?;
            (!out.status.success())
                .then_some(())
                .ok_or_else(|| "batch still gets through".into())
        },
    )?;
    let web = lab.echo("demo/web", "server:9000", "hello")?;
    if !web.status.success() {
        return Err(unexpected("web to pass", text(&web)));
    }
    say("web -> server: allowed");
    say("batch -> server: refused by the policy (counted below as policy_denied)");

    step(6, "meshctl proxy-status");
    for line in lab.meshctl_ok(&["proxy-status"])?.lines() {
        say(line);
    }

    step(
        7,
        "Connection metrics of node-2's ztunnel (reporter=destination)",
    );
    let metrics = lab.node_http(2, 15020, "/metrics")?;
    for line in metrics.lines().filter(|l| {
        (l.starts_with("istio_tcp_connections_opened_total")
            && l.contains("reporter=\"destination\""))
            || (l.starts_with("ztunnel_connection_failures_total") && l.contains("policy_denied"))
    }) {
        say(shorten(line));
    }
    Ok(())
}

/// Echoes `message` from `pod` to the server while capturing node-1's link.
fn probe(lab: &LabDriver, pod: &str, message: &str) -> Result<Vec<u8>, DemoError> {
    lab.wait_until("the server to answer", Duration::from_secs(30), || {
        let out = lab
            .echo(pod, "server:9000", "ping")
            .map_err(|e| e.to_string())?;
        out.status.success().then_some(()).ok_or_else(|| text(&out))
    })?;
    let capture = Capture::start(lab, 1)?;
    let out = lab.echo(pod, "server:9000", message)?;
    let bytes = capture.finish()?;
    if !out.status.success() {
        return Err(unexpected("the echo to succeed", text(&out)));
    }
    Ok(bytes)
}

/// The client identity in node-2's latest inbound access-log line.
fn seen_identity(lab: &LabDriver) -> Result<String, DemoError> {
    let log = lab.log("ztunnel", Some("node-2"))?;
    log.lines()
        .rev()
        .filter(|l| l.contains("reporter=\"destination\""))
        .find_map(|l| {
            let start = l.find("src.identity=")? + "src.identity=".len();
            l[start..].split_whitespace().next().map(str::to_string)
        })
        .ok_or_else(|| unexpected("an inbound access-log line on node-2", "none found"))
}

/// Keeps the labels a reader needs from a metric line.
fn shorten(line: &str) -> String {
    let keep = [
        "source_workload=",
        "destination_workload=",
        "source_principal=",
        "connection_security_policy=",
        "reason=",
    ];
    let Some((name, rest)) = line.split_once('{') else {
        return line.to_string();
    };
    let (labels, value) = rest.rsplit_once('}').unwrap_or((rest, ""));
    let kept: Vec<&str> = labels
        .split(',')
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .collect();
    format!("{name}{{{}}}{value}", kept.join(","))
}

const POLICY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-callers, namespace: demo}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/web"]}}]
"#;
