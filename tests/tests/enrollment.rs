//! Enrollment end to end: the same pods, before and after their namespace is labelled, without
//! a restart; over the node link the payload is plaintext before and TLS after.

mod common;

use std::time::Duration;

use common::{Lab, contains, demo_app, finish, marker, tcp_segments_with_port, text};

#[test]
fn labelling_a_namespace_moves_its_traffic_into_mtls_and_back() {
    let lab = Lab::up("en", 2);
    lab.apply(&demo_app("demo", &["client"]));
    lab.wait_for_pods(&["demo/server", "demo/client"]);

    // Before: plaintext through the service VIP, and the marker crosses the node link as is.
    let plain = marker("plain");
    let capture = lab.capture(1);
    lab.wait_until(
        "the echo service to answer",
        Duration::from_secs(30),
        || {
            let out = lab.echo("demo/client", "server:9000", &plain);
            out.status.success().then_some(()).ok_or_else(|| text(&out))
        },
    );
    let bytes = finish(capture);
    assert!(
        contains(&bytes, &plain),
        "the capture must see plaintext before enrollment (else it proves nothing): {} bytes, {} segments to 9000",
        bytes.len(),
        tcp_segments_with_port(&bytes, 9000)
    );

    // Enroll: label the namespace; the pods keep running.
    let out = lab.meshctl(&[
        "label",
        "namespace",
        "demo",
        "istio.io/dataplane-mode=ambient",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    lab.wait_for_protocol("demo", "HBONE");
    let secret = marker("mtls");
    lab.wait_until("traffic over HBONE", Duration::from_secs(30), || {
        let out = lab.echo("demo/client", "server:9000", "probe");
        let log = lab.ztunnel_log("node-2");
        if out.status.success()
            && log.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client")
        {
            Ok(())
        } else {
            Err(format!("{}\n{log}", text(&out)))
        }
    });
    let capture = lab.capture(1);
    let out = lab.echo("demo/client", "server:9000", &secret);
    let bytes = finish(capture);
    assert!(
        out.status.success(),
        "echo over the mesh failed: {}",
        text(&out)
    );
    assert!(
        !contains(&bytes, &secret),
        "the payload crossed the node link in plaintext after enrollment"
    );
    assert!(
        tcp_segments_with_port(&bytes, 15008) > 0,
        "no HBONE (port 15008) traffic was captured on the node link"
    );
    assert_eq!(
        tcp_segments_with_port(&bytes, 9000),
        0,
        "traffic to the app port crossed the node link outside the tunnel"
    );

    // The server's tunnel saw the client's identity and counted the connection as mTLS.
    let metrics = lab.node_http(2, 15020, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_opened_total")
                && l.contains("reporter=\"destination\"")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/demo/sa/client\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")),
        "node-2's metrics do not show the client's mTLS connection:\n{metrics}"
    );

    // No pod was restarted by enrollment.
    for pod in lab.pods() {
        assert_eq!(pod["restarts"], 0, "pod restarted: {pod}");
    }

    // Removing the label returns to plaintext.
    let out = lab.meshctl(&["label", "namespace", "demo", "istio.io/dataplane-mode-"]);
    assert!(out.status.success(), "{}", text(&out));
    lab.wait_for_protocol("demo", "TCP");
    let again = marker("again");
    lab.wait_until("plaintext again", Duration::from_secs(30), || {
        let capture = lab.capture(1);
        let out = lab.echo("demo/client", "server:9000", &again);
        let bytes = finish(capture);
        (out.status.success() && contains(&bytes, &again))
            .then_some(())
            .ok_or_else(|| text(&out))
    });
}
