//! End to end through a waypoint in a lab: the controller deploys the waypoint for a Gateway,
//! the lab gives its pod a token, the ztunnels send a bound service's traffic to it, and its
//! routes, redirects, rewrites, mirrors, retries, timeouts, faults and L7 policy apply,
//! WebSocket-style upgrades and gRPC statuses pass and are counted; the endpoints' ztunnels
//! refuse traffic that did not come through it.
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
/// per version), `flaky` (two replicas failing 30 % of requests), `web` (one pod, on ports 80
/// and 8080) and `shadow` (one pod, the target of `web`'s mirror), both logging every request
/// they answer; `reviews`, `reviews-v1`, `flaky` and `web` are bound to the waypoint. An
/// enrolled client, and a client outside the mesh.
fn app() -> String {
    let mut yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}, labels: {{istio.io/dataplane-mode: ambient}}}}
"#
    );
    // What `web` and `shadow` saw is read from their logs (`request_log`).
    let logged = r#", env: [{name: RUST_LOG, value: "info,request=debug"}]"#;
    for (name, labels, replicas, flags, env) in [
        (
            "reviews-v1",
            "{app: reviews, version: v1}",
            2,
            "--version, v1",
            "",
        ),
        (
            "reviews-v2",
            "{app: reviews, version: v2}",
            1,
            "--version, v2",
            "",
        ),
        (
            "flaky",
            "{app: flaky}",
            2,
            "--version, flaky, --fail-rate, \"0.3\"",
            "",
        ),
        ("web", "{app: web}", 1, "--version, web", logged),
        ("shadow", "{app: shadow}", 1, "--version, shadow", logged),
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
      containers: [{{name: app, command: [testapp, serve, --http, "8080", {flags}]{env}}}]
"#
        ));
    }
    let http = "{name: http, port: 80, targetPort: 8080}";
    let both =
        "{name: http, port: 80, targetPort: 8080}, {name: http-alt, port: 8080, targetPort: 8080}";
    for (name, selector, bound, ports) in [
        ("reviews", "{app: reviews}", true, http),
        ("reviews-v1", "{app: reviews, version: v1}", true, http),
        ("reviews-v2", "{app: reviews, version: v2}", false, http),
        ("flaky", "{app: flaky}", true, http),
        ("web", "{app: web}", true, both),
        ("shadow", "{app: shadow}", false, http),
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
  ports: [{ports}]
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
    yaml.push_str(&web_route());
    yaml
}

/// The route of `web`, on both its ports: `/mirrored` copied to `shadow`; `/old` redirected
/// with every field set, `/moved` with only the path; `/api/v1` rewritten to `/v2` on another
/// host, `/legacy` to `/current`; the rest to `web` unchanged.
fn web_route() -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: {NS}}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /mirrored}}}}]
    filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}}}}}]
    backendRefs: [{{name: web, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: shop.example
        port: 8443
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}
        statusCode: 301
  - matches: [{{path: {{type: PathPrefix, value: /moved}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: /here}}}}
  - matches: [{{path: {{type: PathPrefix, value: /api/v1}}}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: api.internal
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{{name: web, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /legacy}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /current}}}}}}]
    backendRefs: [{{name: web, port: 80}}]
  - backendRefs: [{{name: web, port: 80}}]
"#
    )
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
        "shop/web-0",
        "shop/shadow-0",
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

    let checks: [Check; 17] = [
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
        (
            "redirect",
            redirects_answer_with_the_location_and_reach_no_backend,
        ),
        (
            "rewrite",
            rewrites_reach_the_backend_with_the_new_path_and_host,
        ),
        (
            "mirror",
            mirrors_copy_every_request_and_only_the_primary_answers,
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

/// An HTTP/1.1 response as the client pod received it.
struct Exchange {
    status: u16,
    /// Header names in lower case, values as sent.
    headers: Vec<(String, String)>,
    body: String,
    /// The whole response, for failure messages.
    raw: String,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The reply of the testapp that answered: what it saw of the request.
    fn reply(&self) -> Value {
        self.body
            .lines()
            .find_map(|line| serde_json::from_str(line).ok())
            .unwrap_or_else(|| panic!("no reply in the response:\n{}", self.raw))
    }
}

/// One `GET path` from the client pod to `host:port`, written and read as raw HTTP/1.1 so that
/// nothing is followed or hidden (a redirect's `Location`, say). `Err` when no response came.
fn exchange(lab: &Lab, host: &str, port: u16, path: &str) -> Result<Exchange, String> {
    let authority = match port {
        80 => host.to_string(),
        _ => format!("{host}:{port}"),
    };
    let script = r#"exec 3<>/dev/tcp/$1/$2 &&
        printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$3" "$4" >&3 &&
        timeout 10 cat <&3"#;
    let port_text = port.to_string();
    let out = lab.exec(
        CLIENT,
        &[
            "bash", "-c", script, "exchange", host, &port_text, path, &authority,
        ],
    );
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Err(format!(
            "no HTTP response from {authority}{path}: {}",
            text(&out)
        ));
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1)?.parse().ok())
        .ok_or_else(|| format!("no status line:\n{raw}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let body = body.to_string();
    Ok(Exchange {
        status,
        headers,
        body,
        raw,
    })
}

fn must_exchange(lab: &Lab, host: &str, port: u16, path: &str) -> Exchange {
    exchange(lab, host, port, path).unwrap_or_else(|e| panic!("{e}\n{}", waypoint_log(lab)))
}

/// The lines of a pod's request log (`web` and `shadow` log every request they answer)
/// whose path is `path`.
fn requests_logged(lab: &Lab, pod: &str, path: &str) -> Vec<String> {
    let needle = format!(" path={path} ");
    text(&lab.lab(&["logs", pod]))
        .lines()
        .filter(|line| line.contains(" answered ") && line.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Polls until `web`'s route is in force (its path-only redirect answers), so that the checks
/// that use it count exactly.
fn wait_for_web_route(lab: &Lab) {
    lab.wait_until("web's route to apply", Duration::from_secs(30), || {
        let answer = exchange(lab, "web", 80, "/moved")?;
        (answer.status == 302)
            .then_some(())
            .ok_or_else(|| format!("{}\n{}", answer.raw, waypoint_log(lab)))
    });
}

/// The waypoint answers redirects itself: every field set gives the configured status and a
/// `Location` with the new scheme, host, port and prefix, the query kept; a path alone keeps
/// the request's host and the port the client used (the service port, Gateway API's listener
/// port), with 302. No backend sees a redirected request.
fn redirects_answer_with_the_location_and_reach_no_backend(lab: &Lab) {
    wait_for_web_route(lab);
    let marker = common::marker("redirect");
    let moved = must_exchange(lab, "web", 80, &format!("/old/{marker}?page=2"));
    assert_eq!(moved.status, 301, "{}", moved.raw);
    let expected = format!("https://shop.example:8443/new/{marker}?page=2");
    assert_eq!(
        moved.header("location"),
        Some(expected.as_str()),
        "{}",
        moved.raw
    );
    for (port, expected) in [(80, "http://web/here"), (8080, "http://web:8080/here")] {
        let found = must_exchange(lab, "web", port, &format!("/moved/{marker}"));
        assert_eq!(found.status, 302, "port {port}: {}", found.raw);
        assert_eq!(
            found.header("location"),
            Some(expected),
            "port {port}: {}",
            found.raw
        );
    }
    // A request that reaches `web` after the redirects: once it is logged, so would they be.
    let after = format!("/after/{marker}");
    let answer = must_exchange(lab, "web", 80, &after);
    assert_eq!(answer.status, 200, "{}", answer.raw);
    lab.wait_until(
        "web to log the request sent after the redirects",
        Duration::from_secs(10),
        || {
            let logged = requests_logged(lab, "shop/web-0", &after);
            (logged.len() == 1)
                .then_some(())
                .ok_or_else(|| format!("{logged:?}"))
        },
    );
    let log = text(&lab.lab(&["logs", "shop/web-0"]));
    let reached: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(&marker) && !line.contains(&after))
        .collect();
    assert!(
        reached.is_empty(),
        "redirected requests reached the backend: {reached:#?}"
    );
}

/// Rewrites change what the backend sees: `/api/v1/<m>?q=1` arrives as `/v2/<m>?q=1` for host
/// `api.internal`; `/legacy/<m>` as `/current` with the client's host; `/api/v10/<m>` is not
/// under the prefix `/api/v1` (prefixes match whole segments) and arrives unchanged.
fn rewrites_reach_the_backend_with_the_new_path_and_host(lab: &Lab) {
    wait_for_web_route(lab);
    let marker = common::marker("rewrite");
    let seen = |port, path: &str| {
        let answer = must_exchange(lab, "web", port, path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.raw);
        let reply = answer.reply();
        assert_eq!(reply["version"], "web", "{path}: {reply}");
        reply
    };
    let prefixed = seen(80, &format!("/api/v1/{marker}?q=1"));
    assert_eq!(prefixed["path"], format!("/v2/{marker}"), "{prefixed}");
    assert_eq!(prefixed["query"], "q=1", "{prefixed}");
    assert_eq!(prefixed["host"], "api.internal", "{prefixed}");
    let full = seen(8080, &format!("/legacy/{marker}"));
    assert_eq!(full["path"], "/current", "{full}");
    assert_eq!(full["host"], "web:8080", "{full}");
    let elsewhere = seen(80, &format!("/api/v10/{marker}"));
    assert_eq!(
        elsewhere["path"],
        format!("/api/v10/{marker}"),
        "{elsewhere}"
    );
    assert_eq!(elsewhere["host"], "web", "{elsewhere}");
}

/// Every request to `/mirrored` reaches `web` and a copy of it `shadow`, marked with
/// `Host: web-shadow` as Envoy marks copies; the client gets `web`'s answers only.
fn mirrors_copy_every_request_and_only_the_primary_answers(lab: &Lab) {
    const COUNT: usize = 20;
    wait_for_web_route(lab);
    let path = format!("/mirrored/{}", common::marker("mirror"));
    let summary = lab.http_load(
        CLIENT,
        &format!("http://web{path}"),
        &["--count", &COUNT.to_string(), "--concurrency", "4"],
    );
    assert_eq!(summary["ok"], COUNT, "{summary}");
    assert_eq!(
        count(&summary, "by_version", "web"),
        COUNT as u64,
        "an answer came from elsewhere than web: {summary}"
    );
    lab.wait_until("shadow to log every copy", Duration::from_secs(10), || {
        let copies = requests_logged(lab, "shop/shadow-0", &path).len();
        (copies >= COUNT)
            .then_some(())
            .ok_or_else(|| format!("{copies} of {COUNT} copies\n{}", waypoint_log(lab)))
    });
    let copies = requests_logged(lab, "shop/shadow-0", &path);
    assert_eq!(copies.len(), COUNT, "{copies:#?}");
    assert!(
        copies.iter().all(|line| line.contains(" host=web-shadow ")),
        "{copies:#?}"
    );
    let originals = requests_logged(lab, "shop/web-0", &path);
    assert_eq!(originals.len(), COUNT, "{originals:#?}");
    assert!(
        originals.iter().all(|line| line.contains(" host=web ")),
        "{originals:#?}"
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
