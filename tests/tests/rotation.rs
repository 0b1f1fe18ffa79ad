//! Certificates with a short lifetime rotate under a long-lived stream without breaking it.

mod common;

use std::time::{Duration, Instant};

use common::{Lab, text};

/// Lifetime of the workload certificates in this test; they renew at half of it.
const TTL_SECS: u64 = 16;

/// The serial of the client's certificate, from node-1's admin endpoint.
fn client_serial(lab: &Lab) -> Option<String> {
    let dump = lab.node_http(1, 15000, "/config_dump");
    let body = dump
        .split_once("\r\n\r\n")
        .map_or(dump.as_str(), |(_, b)| b);
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json["certificates"]
        .as_array()?
        .iter()
        .find(|c| c["identity"] == "spiffe://cluster.local/ns/demo/sa/client")
        .and_then(|c| c["serial"].as_str().map(str::to_string))
}

#[test]
fn short_lived_certificates_rotate_under_a_long_lived_stream() {
    let ttl = TTL_SECS.to_string();
    let lab = Lab::enrolled("ro", &["client"], &["--cert-ttl-secs", &ttl]);
    lab.wait_until("the client's certificate", Duration::from_secs(10), || {
        client_serial(&lab)
            .map(|_| ())
            .ok_or_else(|| "no certificate yet".to_string())
    });
    let first = client_serial(&lab).expect("the client has a certificate");

    // One connection held well past the first certificate's expiry, echoing every 100 ms.
    let hold_ms = (TTL_SECS + 6) * 1000;
    let started = Instant::now();
    let held = lab.hold_echo("demo/client", "long-lived", hold_ms);

    lab.wait_until(
        "the client's certificate to rotate",
        Duration::from_secs(TTL_SECS + 10),
        || match client_serial(&lab) {
            Some(serial) if serial != first => Ok(()),
            other => Err(format!("serial still {other:?}")),
        },
    );
    let out = held.wait_with_output().expect("the held client ends");
    assert!(
        out.status.success(),
        "the stream broke across the rotation after {:?}: {}",
        started.elapsed(),
        text(&out)
    );
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("{}"),
    )
    .expect("echo prints JSON");
    assert!(
        summary["rounds"].as_u64().unwrap_or(0) > (TTL_SECS * 5),
        "too few rounds: {summary}"
    );

    // New connections use the new certificate and still work.
    let out = lab.echo("demo/client", "server:9000", "after-rotation");
    assert!(out.status.success(), "{}", text(&out));
}
