//! End to end through a waypoint in a lab: the controller deploys the waypoint for a Gateway,
//! the lab gives its pod a token, the ztunnels send a bound service's traffic to it, and its
//! routes, retries, timeouts, faults and L7 policy apply, WebSocket-style upgrades and gRPC
//! statuses pass and are counted; the endpoints' ztunnels refuse traffic that did not come
//! through it.
//!
//! One lab serves every check (bringing a lab up is the slow part); each check is its own
//! function and bounds its waits.

mod common;

use std::time::{Duration, Instant};

use common::{Lab, bin_dir, text};
use serde_json::Value;

const NS: &str = "shop";
const CLIENT: &str = "shop/client";
const OUTSIDER: &str = "shop/outsider";

/// The application: `reviews` (two v1 pods and a v2 pod behind one Service, plus a Service
/// per version), `flaky` (two replicas failing 30 % of requests); `reviews`, `reviews-v1` and
/// `flaky` are bound to the waypoint. An enrolled client, and a client outside the mesh.
fn app() -> String {
    let mut yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}, labels: {{istio.io/dataplane-mode: ambient}}}}
"#
    );
    for (name, labels, replicas, flags) in [
        (
            "reviews-v1",
            "{app: reviews, version: v1}",
            2,
            "--version, v1",
        ),
        (
            "reviews-v2",
            "{app: reviews, version: v2}",
            1,
            "--version, v2",
        ),
        (
            "flaky",
            "{app: flaky}",
            2,
            "--version, flaky, --fail-rate, \"0.3\"",
        ),
    ] {
        yaml.push_str(&format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {labels}}}
  template:
    metadata: {{labels: {labels}}}
    spec:
      serviceAccountName: {name}
      containers: [{{name: app, command: [testapp, serve, --http, "8080", {flags}]}}]
"#
        ));
    }
    for (name, selector, bound) in [
        ("reviews", "{app: reviews}", true),
        ("reviews-v1", "{app: reviews, version: v1}", true),
        ("reviews-v2", "{app: reviews, version: v2}", false),
        ("flaky", "{app: flaky}", true),
    ] {
        let labels = if bound {
            "{istio.io/use-waypoint: waypoint}"
        } else {
            "{}"
        };
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NS}, labels: {labels}}}
spec:
  selector: {selector}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#
        ));
    }
    for (name, labels) in [
        ("client", "{app: client}"),
        ("outsider", "{app: outsider, istio.io/dataplane-mode: none}"),
    ] {
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {NS}, labels: {labels}}}
spec:
  nodeName: node-1
  serviceAccountName: {name}
  containers: [{{name: app, command: [sleep, "86400"]}}]
"#
        ));
    }
    yaml.push_str(&format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: flaky, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: flaky, port: 80}}]
  rules:
  - backendRefs: [{{name: flaky, port: 80}}]
    retry: {{attempts: 3, codes: [503], backoff: 1ms}}
"#
    ));
    yaml
}

/// The route of `reviews`: testers to v2, `/slow` to v1 within 500 ms, the rest split by
/// weight; `annotations` is the metadata's annotation map.
fn reviews_route(v1: u32, v2: u32, annotations: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews, namespace: {NS}, annotations: {annotations}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: reviews, port: 80}}]
  rules:
  - matches: [{{headers: [{{name: x-tester, value: "yes"}}]}}]
    backendRefs: [{{name: reviews-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    timeouts: {{request: 500ms}}
    backendRefs: [{{name: reviews-v1, port: 80}}]
  - backendRefs: [{{name: reviews-v1, port: 80, weight: {v1}}}, {{name: reviews-v2, port: 80, weight: {v2}}}]
"#
    )
}

fn count(summary: &Value, field: &str, key: &str) -> u64 {
    summary[field][key].as_u64().unwrap_or(0)
}

/// Requests from the enrolled client to `reviews`.
fn reviews(lab: &Lab, path: &str, options: &[&str]) -> Value {
    lab.http_load(CLIENT, &format!("http://reviews{path}"), options)
}

/// The same, for polling: a client that could not run yet is a detail, not a failure.
fn try_reviews(lab: &Lab, path: &str, options: &[&str]) -> Result<Value, String> {
    lab.try_http_load(CLIENT, &format!("http://reviews{path}"), options)
}

/// Polls until `count(summary, field, key)` of a `reviews` run satisfies `done`.
fn wait_for_reviews(
    lab: &Lab,
    what: &str,
    (path, options): (&str, &[&str]),
    (field, key): (&str, &str),
    done: impl Fn(u64) -> bool,
) {
    lab.wait_until(what, Duration::from_secs(30), || {
        let summary = try_reviews(lab, path, options)?;
        done(count(&summary, field, key))
            .then_some(())
            .ok_or_else(|| format!("{summary}\n{}", waypoint_log(lab)))
    });
}

/// One check of the lab: its name and what it does.
type Check = (&'static str, fn(&Lab));

#[test]
fn a_waypoint_routes_retries_times_out_faults_and_authorizes_and_cannot_be_bypassed() {
    let lab = Lab::up("wp", 2);
    lab.apply(&app());
    lab.apply(&reviews_route(90, 10, "{}"));
    meshctl_ok(&lab, &["waypoint", "apply", "-n", NS]);
    lab.wait_for_pods(&[
        "shop/waypoint-0",
        "shop/reviews-v1-0",
        "shop/reviews-v1-1",
        "shop/reviews-v2-0",
        "shop/flaky-0",
        "shop/flaky-1",
        CLIENT,
        OUTSIDER,
    ]);
    wait_for_reviews(
        &lab,
        "the waypoint to route testers to v2",
        ("/", &["--header", "x-tester: yes", "--count", "5"]),
        ("by_version", "v2"),
        |v2| v2 == 5,
    );

    let checks: [Check; 14] = [
        (
            "meshctl waypoint",
            meshctl_lists_the_waypoint_and_what_it_serves,
        ),
        ("weighted split", weighted_split_lands_within_three_points),
        (
            "operator endpoints",
            the_waypoint_is_ready_and_counts_its_requests,
        ),
        ("header match", testers_reach_only_v2),
        ("gRPC balancing", grpc_calls_are_balanced_per_request),
        ("gRPC status", grpc_status_from_the_trailers_is_counted),
        (
            "upgrade",
            an_upgrade_switches_echoes_and_closes_and_is_counted,
        ),
        ("request timeout", request_timeout_answers_504_in_time),
        ("retries", retries_hide_a_backend_failing_30_percent),
        ("L7 deny", l7_deny_forbids_admin_and_lets_the_rest_pass),
        ("weight shift", moving_the_weights_moves_every_new_request),
        (
            "bypass protection",
            direct_dials_that_bypass_the_waypoint_are_refused,
        ),
        (
            "fault injection",
            fault_injection_aborts_about_the_configured_share,
        ),
        (
            "waypoint deleted",
            without_the_waypoint_traffic_goes_direct_again,
        ),
    ];
    for (name, check) in checks {
        let started = Instant::now();
        check(&lab);
        eprintln!("{name}: passed in {:.1} s", started.elapsed().as_secs_f64());
    }
}

fn meshctl_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.meshctl(args);
    assert!(out.status.success(), "meshctl {args:?}: {}", text(&out));
    text(&out)
}

fn meshctl_lists_the_waypoint_and_what_it_serves(lab: &Lab) {
    let list = meshctl_ok(lab, &["waypoint", "list", "-n", NS]);
    assert!(
        list.contains("waypoint") && list.contains("service") && list.contains("mesh:15008/HBONE"),
        "{list}"
    );
    lab.wait_until(
        "the waypoint's status to show it connected",
        Duration::from_secs(10),
        || {
            let status = meshctl_ok(lab, &["waypoint", "status", "-n", NS]);
            let expected = [
                "waypoint shop/waypoint (for service)",
                "waypoint-0 on node-",
                "Running; connected to the controller",
                "shop/flaky, shop/reviews",
            ];
            expected
                .iter()
                .all(|e| status.contains(e))
                .then_some(())
                .ok_or(status)
        },
    );
}

fn weighted_split_lands_within_three_points(lab: &Lab) {
    let summary = reviews(lab, "/", &["--count", "2000", "--concurrency", "8"]);
    assert_eq!(summary["ok"], 2000, "{summary}");
    let v1 = count(&summary, "by_version", "v1") as f64 / 2000.0;
    assert!(
        (0.87..=0.93).contains(&v1),
        "90/10 landed at {:.1} % v1: {summary}",
        v1 * 100.0
    );
}

/// GETs a path from one of the waypoint's operator endpoints, inside its pod (they listen in
/// its namespace).
fn waypoint_get(lab: &Lab, port: u16, path: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    text(&lab.exec("shop/waypoint-0", &["bash", "-c", &script]))
}

/// The sum of the waypoint's `istio_requests_total` samples whose labels contain every one of
/// `labels` (`name="value"`), and all of its `istio_requests_total` samples (for failure
/// messages).
fn waypoint_requests(lab: &Lab, labels: &[&str]) -> (f64, String) {
    let metrics = waypoint_get(lab, 15020, "/metrics");
    let samples: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{reporter=\"waypoint\""))
        .collect();
    let total = samples
        .iter()
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    (total, samples.join("\n"))
}

/// Polls until the waypoint has counted at least `expected` requests with `labels` (a
/// request is counted when its response, or its upgraded connection, ends).
fn wait_for_waypoint_requests(lab: &Lab, what: &str, labels: &[&str], expected: f64) {
    lab.wait_until(what, Duration::from_secs(10), || {
        let (now, samples) = waypoint_requests(lab, labels);
        (now >= expected)
            .then_some(())
            .ok_or_else(|| format!("{labels:?}: {now}, expected {expected}\n{samples}"))
    });
}

fn the_waypoint_is_ready_and_counts_its_requests(lab: &Lab) {
    let ready = waypoint_get(lab, 15021, "/healthz/ready");
    assert!(ready.starts_with("HTTP/1.0 200"), "{ready}");
    let (answered, samples) = waypoint_requests(lab, &["response_code=\"200\""]);
    assert!(
        answered >= 2000.0,
        "the 2,000 requests of the split are not counted:\n{samples}"
    );
}

fn testers_reach_only_v2(lab: &Lab) {
    let summary = reviews(
        lab,
        "/",
        &[
            "--header",
            "x-tester: yes",
            "--count",
            "200",
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(count(&summary, "by_version", "v2"), 200, "{summary}");
}

/// gRPC calls on one HTTP/2 connection (one tunnel) are spread over both endpoints of
/// `reviews-v1`: the waypoint balances per request, where a tunnel alone would pin one.
fn grpc_calls_are_balanced_per_request(lab: &Lab) {
    let summary = lab.http_load(CLIENT, "http://reviews-v1/", &["--grpc", "--count", "200"]);
    assert_eq!(summary["ok"], 200, "{summary}");
    for pod in ["reviews-v1-0", "reviews-v1-1"] {
        assert!(
            count(&summary, "by_pod", pod) >= 50,
            "{pod} got less than a quarter of the calls: {summary}"
        );
    }
}

/// A gRPC call that ends with NOT_FOUND (5) in its trailers, over HTTP 200, is counted with
/// `grpc_response_status="5"` (the HTTP status alone would map to 0); plain HTTP requests are
/// counted with the label empty.
fn grpc_status_from_the_trailers_is_counted(lab: &Lab) {
    let grpc = [
        "destination_service_name=\"reviews-v1\"",
        "request_protocol=\"grpc\"",
        "response_code=\"200\"",
        "grpc_response_status=\"5\"",
    ];
    let http = [
        "destination_service_name=\"reviews-v1\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "grpc_response_status=\"\"",
    ];
    let (grpc_before, _) = waypoint_requests(lab, &grpc);
    let (http_before, _) = waypoint_requests(lab, &http);
    let calls = lab.http_load(
        CLIENT,
        "http://reviews-v1/testapp.TestApp/Echo?grpc_status=5",
        &["--grpc", "--count", "3"],
    );
    assert_eq!(count(&calls, "grpc_status", "5"), 3, "{calls}");
    assert_eq!(count(&calls, "status", "200"), 3, "{calls}");
    let plain = lab.http_load(CLIENT, "http://reviews-v1/", &["--count", "3"]);
    assert_eq!(plain["ok"], 3, "{plain}");
    wait_for_waypoint_requests(
        lab,
        "the gRPC calls to be counted",
        &grpc,
        grpc_before + 3.0,
    );
    wait_for_waypoint_requests(
        lab,
        "the HTTP requests to be counted",
        &http,
        http_before + 3.0,
    );
    let (_, samples) = waypoint_requests(lab, &[]);
    let labelled_http: Vec<&str> = samples
        .lines()
        .filter(|l| l.contains("request_protocol=\"http\""))
        .filter(|l| !l.contains("grpc_response_status=\"\""))
        .collect();
    assert!(
        labelled_http.is_empty(),
        "plain HTTP with a gRPC status: {labelled_http:?}"
    );
}

/// A WebSocket-style upgrade from the client pod to `reviews-v1` (client -> ztunnel ->
/// waypoint -> ztunnel -> pod): the 101 comes back, a marker is echoed on the upgraded
/// connection, the client's half-close comes back as the server's, and the waypoint counts
/// the connection with `response_code="101"` once it has closed.
fn an_upgrade_switches_echoes_and_closes_and_is_counted(lab: &Lab) {
    let upgraded = [
        "destination_service_name=\"reviews-v1\"",
        "response_code=\"101\"",
    ];
    let (before, _) = waypoint_requests(lab, &upgraded);
    let testapp = bin_dir().join("testapp").display().to_string();
    let marker = common::marker("upgrade");
    let out = lab.exec(
        CLIENT,
        &[
            &testapp,
            "upgrade",
            "http://reviews-v1/chat",
            "--message",
            &marker,
            "--timeout-ms",
            "5000",
        ],
    );
    let report: Value = text(&out)
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("testapp upgrade printed no report: {}", text(&out)));
    let log = || waypoint_log(lab);
    assert!(
        out.status.success() && report["ok"] == true,
        "{report}\n{}",
        log()
    );
    assert_eq!(report["status"], 101, "{report}");
    assert_eq!(report["echoed_bytes"], marker.len(), "{report}");
    assert_eq!(report["closed"], true, "{report}");
    let pod = report["pod"].as_str().unwrap_or_default();
    assert!(pod.starts_with("reviews-v1-"), "{report}");
    wait_for_waypoint_requests(
        lab,
        "the upgraded connection to be counted",
        &upgraded,
        before + 1.0,
    );
}

fn request_timeout_answers_504_in_time(lab: &Lab) {
    let fast = reviews(lab, "/slow", &[]);
    assert_eq!(count(&fast, "status", "200"), 1, "{fast}");
    let slow = reviews(lab, "/slow?delay_ms=3000", &[]);
    assert_eq!(count(&slow, "status", "504"), 1, "{slow}");
    let took = slow["p50_ms"].as_f64().unwrap_or(f64::MAX);
    assert!(
        took < 1500.0,
        "504 after {took} ms; the route's limit is 500 ms"
    );
}

/// Three retries of a backend failing 30 % of requests fail 0.3^4 = 0.81 %: 99.19 % success
/// expected. Over 20,000 requests the 99 % bound is three standard deviations away, so the
/// check is not flaky. They are sent in rounds, each well within a command's time limit.
fn retries_hide_a_backend_failing_30_percent(lab: &Lab) {
    const ROUNDS: u64 = 4;
    const PER_ROUND: u64 = 5000;
    let mut ok = 0;
    let mut summaries = Vec::new();
    for _ in 0..ROUNDS {
        let summary = lab.http_load(
            CLIENT,
            "http://flaky/",
            &["--count", &PER_ROUND.to_string(), "--concurrency", "16"],
        );
        ok += summary["ok"].as_u64().unwrap_or(0);
        summaries.push(summary);
    }
    let share = ok as f64 / (ROUNDS * PER_ROUND) as f64;
    assert!(
        share >= 0.99,
        "{:.2} % succeeded with retries: {summaries:?}",
        share * 100.0
    );
}

fn l7_deny_forbids_admin_and_lets_the_rest_pass(lab: &Lab) {
    lab.apply(&format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: {NS}}}
spec:
  targetRefs: [{{kind: Service, group: "", name: reviews}}]
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin*"]}}}}]}}]
"#
    ));
    wait_for_reviews(
        lab,
        "/admin to be denied",
        ("/admin/users", &[]),
        ("status", "403"),
        |denied| denied == 1,
    );
    let rest = reviews(lab, "/", &["--count", "20"]);
    assert_eq!(rest["ok"], 20, "{rest}");
}

fn moving_the_weights_moves_every_new_request(lab: &Lab) {
    lab.apply(&reviews_route(0, 100, "{}"));
    wait_for_reviews(
        lab,
        "the new weights to apply",
        ("/", &["--count", "50", "--concurrency", "4"]),
        ("by_version", "v2"),
        |v2| v2 == 50,
    );
    let summary = reviews(lab, "/", &["--count", "500", "--concurrency", "8"]);
    assert_eq!(count(&summary, "by_version", "v2"), 500, "{summary}");
}

fn fault_injection_aborts_about_the_configured_share(lab: &Lab) {
    lab.apply(&reviews_route(
        0,
        100,
        r#"{mesh.dev/fault-abort: "503:50"}"#,
    ));
    wait_for_reviews(
        lab,
        "the fault to apply",
        ("/", &["--count", "20"]),
        ("status", "503"),
        |aborted| aborted > 0,
    );
    let summary = reviews(lab, "/", &["--count", "1000", "--concurrency", "8"]);
    let aborted = count(&summary, "status", "503") as f64 / 1000.0;
    assert!(
        (0.43..=0.57).contains(&aborted),
        "{:.1} % aborted, 50 % configured: {summary}",
        aborted * 100.0
    );
}

fn direct_dials_that_bypass_the_waypoint_are_refused(lab: &Lab) {
    let endpoint = lab.pod("shop/reviews-v1-0");
    let ip = endpoint["ip"].as_str().expect("the pod has an address");
    let node: u8 = endpoint["node"]
        .as_str()
        .and_then(|n| n.strip_prefix("node-")?.parse().ok())
        .expect("the pod runs on node-<i>");
    let inbound =
        r#"ztunnel_connection_failures_total{direction="inbound",reason="bypassed_waypoint"}"#;
    let before = lab.ztunnel_metric(node, inbound);
    let direct = lab.http_load(
        CLIENT,
        &format!("http://{ip}:8080/"),
        &["--timeout-ms", "3000"],
    );
    assert_eq!(direct["errors"], 1, "a direct dial got through: {direct}");
    assert!(
        lab.ztunnel_metric(node, inbound) > before,
        "no bypass counted on node-{node}"
    );

    let outside = lab.http_load(OUTSIDER, "http://reviews/", &["--timeout-ms", "3000"]);
    assert_eq!(
        outside["errors"], 1,
        "a plaintext client got through: {outside}"
    );
    let plaintext = (1..=2)
        .map(|n| {
            lab.ztunnel_metric(
                n,
                r#"ztunnel_connection_failures_total{direction="inbound_plaintext",reason="bypassed_waypoint"}"#,
            )
        })
        .sum::<f64>();
    assert!(plaintext >= 1.0, "no plaintext bypass counted");

    let through = reviews(lab, "/", &[]);
    assert_eq!(
        through["ok"], 1,
        "the waypoint itself is let through: {through}"
    );
}

/// Deleting the waypoint unbinds the services: requests go straight to the endpoints, which
/// now accept them, and no route or fault applies. (The L7 policy goes first: without a
/// waypoint to enforce it, a DENY on paths would be enforced at L4 and deny everything.)
fn without_the_waypoint_traffic_goes_direct_again(lab: &Lab) {
    meshctl_ok(
        lab,
        &["delete", "authorizationpolicy", "no-admin", "-n", NS],
    );
    meshctl_ok(lab, &["waypoint", "delete", "-n", NS]);
    // The controller reads the manifest directory a moment after the edit.
    lab.wait_until(
        "the waypoint to leave the list",
        Duration::from_secs(10),
        || {
            let list = meshctl_ok(lab, &["waypoint", "list", "-n", NS]);
            list.contains("No waypoints.").then_some(()).ok_or(list)
        },
    );
    lab.wait_until(
        "the waypoint to drain and stop",
        Duration::from_secs(15),
        || {
            let log = waypoint_log(lab);
            log.contains("waypoint stopped").then_some(()).ok_or(log)
        },
    );
    lab.wait_until(
        "requests to reach reviews without the waypoint",
        Duration::from_secs(30),
        || {
            let summary = try_reviews(lab, "/", &["--count", "50", "--concurrency", "4"])?;
            let v1 = count(&summary, "by_version", "v1");
            (summary["ok"] == 50 && v1 > 0)
                .then_some(())
                .ok_or_else(|| format!("{summary}\n{}", ztunnel_trouble(lab)))
        },
    );
}

/// The ztunnels' warnings and failed connections, for failure messages.
fn ztunnel_trouble(lab: &Lab) -> String {
    ["node-1", "node-2"]
        .iter()
        .map(|node| {
            let log = lab.ztunnel_log(node);
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("WARN") || (l.contains("error=") && !l.contains("error=\"\""))
                })
                .collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            format!("--- ztunnel {node} ---\n{tail}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The end of the waypoint pod's log, for failure messages.
fn waypoint_log(lab: &Lab) -> String {
    let log = text(&lab.lab(&["logs", "shop/waypoint-0"]));
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
