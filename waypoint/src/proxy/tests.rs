//! The layer stack end to end over loopback: real HTTP backends, discovery and routes fed
//! through the resource handlers, plain TCP in place of HBONE.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use mesh_proto::mesh::waypoint::v1 as wp;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::balance::OutlierSettings;
use crate::body;
use crate::testing::*;

/// Sums the samples of metric `name` whose labels contain every one of `filters`.
fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A world with service `front` (bound to the waypoint, port 80) and one backend service per
/// name in `versions` (port 80), each with one workload.
async fn world_with(versions: &[&'static str]) -> (World, HashMap<&'static str, Backend>) {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let mut backends = HashMap::new();
    for (i, name) in versions.iter().enumerate() {
        world.service(name, [10, 96, 1, i as u8 + 1], &[80], false);
        let backend = Backend::start(world.next_ip(), name, ok()).await;
        world.workload(&format!("{name}-0"), name, 80, backend.addr, true);
        backends.insert(*name, backend);
    }
    (world, backends)
}

fn served_by(headers: &http::HeaderMap) -> &str {
    headers
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn without_routes_requests_go_to_the_destination_service() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let backend = Backend::start(world.next_ip(), "front", ok()).await;
    world.workload("front-0", "front", 80, backend.addr, true);
    let proxy = world.proxy();
    let (status, headers, body) = proxy.get("front", 80, "/hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served_by(&headers), "front");
    assert_eq!(body, "front:0");
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen[0].uri.path(), "/hello");
    assert_eq!(seen[0].headers["host"], "front.shop.svc.cluster.local:80");
    assert!(
        seen[0].headers.contains_key("traceparent"),
        "a trace is started"
    );
}

#[tokio::test]
async fn path_matches_exact_prefix_and_regex() {
    let (mut world, _backends) = world_with(&["v1", "v2", "v3"]).await;
    use wp::path_match::Kind;
    let rejected = world.route(route(
        "paths",
        "front",
        vec![
            rule(
                vec![path(Kind::Exact("/exact".into()))],
                vec![to("v1", 80, 1)],
            ),
            rule(
                vec![path(Kind::Prefix("/api/".into()))],
                vec![to("v2", 80, 1)],
            ),
            rule(
                vec![path(Kind::Regex("/items/[0-9]+".into()))],
                vec![to("v3", 80, 1)],
            ),
        ],
    ));
    assert!(rejected.is_empty(), "{rejected:?}");
    let proxy = world.proxy();
    for (path, expected) in [
        ("/exact", Some("v1")),
        ("/exact/more", None),
        ("/api", Some("v2")),
        ("/api/users", Some("v2")),
        ("/apix", None),
        ("/items/42", Some("v3")),
        ("/items/42/x", None),
        ("/items/abc", None),
        ("/api/../exact", Some("v1")),
    ] {
        let (status, headers, _) = proxy.get("front", 80, path).await;
        match expected {
            Some(version) => {
                assert_eq!(status, StatusCode::OK, "{path}");
                assert_eq!(served_by(&headers), version, "{path}");
            }
            None => assert_eq!(status, StatusCode::NOT_FOUND, "{path}"),
        }
    }
    assert_eq!(proxy.metrics.failures("no_route"), 4);
}

/// Path, method, headers, and the version expected to answer.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn header_query_and_method_matches() {
    let (mut world, _backends) = world_with(&["v1", "v2", "v3", "v4"]).await;
    let header = |name: &str, value: wp::header_match::Value| wp::RouteMatch {
        headers: vec![wp::HeaderMatch {
            name: name.into(),
            value: Some(value),
        }],
        ..Default::default()
    };
    let query = wp::RouteMatch {
        query_params: vec![wp::QueryParamMatch {
            name: "version".into(),
            value: Some(wp::query_param_match::Value::Exact("three".into())),
        }],
        ..Default::default()
    };
    let method = wp::RouteMatch {
        method: "POST".into(),
        ..Default::default()
    };
    world.route(route(
        "matches",
        "front",
        vec![
            rule(
                vec![header(
                    "X-Tester",
                    wp::header_match::Value::Exact("yes".into()),
                )],
                vec![to("v2", 80, 1)],
            ),
            rule(
                vec![header(
                    "x-user",
                    wp::header_match::Value::Regex("(alice|bob)".into()),
                )],
                vec![to("v2", 80, 1)],
            ),
            rule(vec![query], vec![to("v3", 80, 1)]),
            rule(vec![method], vec![to("v4", 80, 1)]),
            rule(vec![], vec![to("v1", 80, 1)]),
        ],
    ));
    let proxy = world.proxy();
    let send = |path: &str, method: &str, headers: &[(&str, &str)]| {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "front");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body::empty()).unwrap();
        let proxy = proxy.clone();
        async move { proxy.send_as(client_identity(), "front", 80, request).await }
    };
    let cases: [Case<'_>; 8] = [
        ("/", "GET", &[], "v1"),
        ("/", "GET", &[("x-tester", "yes")], "v2"),
        ("/", "GET", &[("x-tester", "no")], "v1"),
        ("/", "GET", &[("x-user", "bob")], "v2"),
        ("/", "GET", &[("x-user", "bobby")], "v1"),
        ("/?a=1&version=three", "GET", &[], "v3"),
        ("/?version=threes", "GET", &[], "v1"),
        ("/", "POST", &[], "v4"),
    ];
    for (path, method, headers, expected) in cases {
        let (status, response, _) = send(path, method, headers).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            served_by(&response),
            expected,
            "{method} {path} {headers:?}"
        );
    }
}

#[tokio::test]
async fn the_most_specific_match_wins_across_routes() {
    let (mut world, _backends) = world_with(&["v1", "v2"]).await;
    use wp::path_match::Kind;
    // "a-catch-all" sorts first by name, but an exact path is more specific.
    world.route(route(
        "a-catch-all",
        "front",
        vec![rule(
            vec![path(Kind::Prefix("/".into()))],
            vec![to("v1", 80, 1)],
        )],
    ));
    world.route(route(
        "b-special",
        "front",
        vec![rule(
            vec![path(Kind::Exact("/special".into()))],
            vec![to("v2", 80, 1)],
        )],
    ));
    let proxy = world.proxy();
    assert_eq!(served_by(&proxy.get("front", 80, "/special").await.1), "v2");
    assert_eq!(served_by(&proxy.get("front", 80, "/other").await.1), "v1");
}

#[tokio::test]
async fn a_90_10_split_lands_within_three_points_and_0_100_moves_everything() {
    let (mut world, backends) = world_with(&["v1", "v2"]).await;
    world.route(route(
        "split",
        "front",
        vec![rule(vec![], vec![to("v1", 80, 90), to("v2", 80, 10)])],
    ));
    let proxy = world.proxy();
    for _ in 0..2000 {
        assert_eq!(proxy.get("front", 80, "/").await.0, StatusCode::OK);
    }
    let v1 = backends["v1"].hits() as f64 / 2000.0;
    assert!((0.87..=0.93).contains(&v1), "v1 got {v1}");

    world.route(route(
        "split",
        "front",
        vec![rule(vec![], vec![to("v1", 80, 0), to("v2", 80, 100)])],
    ));
    let proxy = world.proxy();
    let before = backends["v1"].hits();
    for _ in 0..200 {
        assert_eq!(served_by(&proxy.get("front", 80, "/").await.1), "v2");
    }
    assert_eq!(backends["v1"].hits(), before);
}

#[tokio::test]
async fn all_zero_weights_answer_500() {
    let (mut world, _backends) = world_with(&["v1"]).await;
    world.route(route(
        "zero",
        "front",
        vec![rule(vec![], vec![to("v1", 80, 0)])],
    ));
    let (status, _, _) = world.proxy().get("front", 80, "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

fn retry_policy(attempts: u32, codes: &[u32]) -> wp::RetryPolicy {
    wp::RetryPolicy {
        attempts,
        codes: codes.to_vec(),
        backoff: Some(millis(1)),
        retry_on_connect_failure: true,
        retry_on_reset: true,
    }
}

#[tokio::test]
async fn three_retries_turn_a_30_percent_failing_backend_into_99_percent_success() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let rng = Arc::new(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(7)));
    let flaky: Behaviour = Arc::new(move |_, _| {
        let fail = rng.lock().unwrap().random_bool(0.3);
        let status = if fail {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (status, Duration::ZERO)
    });
    let backend = Backend::start(world.next_ip(), "front", flaky).await;
    world.workload("front-0", "front", 80, backend.addr, true);
    let mut retrying = rule(vec![], vec![to("front", 80, 1)]);
    retrying.retry = Some(retry_policy(3, &[503]));
    world.route(route("retry", "front", vec![retrying]));
    let proxy = world.proxy();
    let mut ok = 0;
    for _ in 0..2000 {
        if proxy.get("front", 80, "/").await.0 == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(ok >= 1980, "{ok} of 2000 succeeded");
    assert!(
        backend.hits() > 2400,
        "failed attempts were retried ({} attempts)",
        backend.hits()
    );
    // Without retries the same backend fails about 30 % of requests.
    let mut plain = World::new();
    plain.service("front", [10, 96, 0, 1], &[80], true);
    plain.workload("front-0", "front", 80, backend.addr, true);
    let proxy = plain.proxy();
    let mut failed = 0;
    for _ in 0..500 {
        if proxy.get("front", 80, "/").await.0 != StatusCode::OK {
            failed += 1;
        }
    }
    assert!(
        (100..=200).contains(&failed),
        "{failed} of 500 failed without retries"
    );
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let backend = Backend::start(world.next_ip(), "front", ok()).await;
    world.workload("front-0", "front", 80, backend.addr, true);
    // A workload whose port nobody listens on.
    let dead = {
        let listener = std::net::TcpListener::bind((world.next_ip(), 0)).unwrap();
        listener.local_addr().unwrap()
    };
    world.workload("front-1", "front", 80, dead, true);
    let mut retrying = rule(vec![], vec![to("front", 80, 1)]);
    retrying.retry = Some(retry_policy(1, &[]));
    world.route(route("retry", "front", vec![retrying]));
    let proxy = world.proxy();
    for _ in 0..20 {
        assert_eq!(proxy.get("front", 80, "/").await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn request_timeout_answers_504_in_time() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let slow: Behaviour = Arc::new(|_, _| (StatusCode::OK, Duration::from_secs(10)));
    let backend = Backend::start(world.next_ip(), "front", slow).await;
    world.workload("front-0", "front", 80, backend.addr, true);
    let mut timed = rule(vec![], vec![to("front", 80, 1)]);
    timed.timeouts = Some(wp::Timeouts {
        request: Some(millis(200)),
        backend_request: None,
    });
    world.route(route("timeout", "front", vec![timed]));
    let proxy = world.proxy();
    let started = Instant::now();
    let (status, _, body) = proxy.get("front", 80, "/").await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "upstream request timeout\n");
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(proxy.metrics.failures("request_timeout"), 1);
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_the_retry_succeeds() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let first_slow: Behaviour = Arc::new(|_, n| {
        (
            StatusCode::OK,
            if n == 0 {
                Duration::from_secs(10)
            } else {
                Duration::ZERO
            },
        )
    });
    let backend = Backend::start(world.next_ip(), "front", first_slow).await;
    world.workload("front-0", "front", 80, backend.addr, true);
    let mut timed = rule(vec![], vec![to("front", 80, 1)]);
    timed.timeouts = Some(wp::Timeouts {
        request: Some(millis(5000)),
        backend_request: Some(millis(100)),
    });
    timed.retry = Some(retry_policy(1, &[504]));
    world.route(route("timeout", "front", vec![timed]));
    let proxy = world.proxy();
    let started = Instant::now();
    assert_eq!(proxy.get("front", 80, "/").await.0, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(backend.hits(), 2);
}

fn policy(name: &str, action: wp::l7_policy::Action, rules: Vec<wp::PolicyRule>) -> wp::L7Policy {
    wp::L7Policy {
        name: format!("{NS}/{name}"),
        namespace: NS.into(),
        target: Some(wp::PolicyTarget {
            kind: Some(wp::policy_target::Kind::Service(host("front"))),
        }),
        action: action as i32,
        rules,
        dry_run: false,
    }
}

fn pattern(kind: wp::pattern::Kind) -> wp::Pattern {
    wp::Pattern { kind: Some(kind) }
}

#[tokio::test]
async fn l7_deny_answers_403_while_other_paths_pass() {
    let (mut world, backends) = world_with(&["v1"]).await;
    world.route(route(
        "all",
        "front",
        vec![rule(vec![], vec![to("v1", 80, 1)])],
    ));
    let deny_admin = wp::PolicyRule {
        to: vec![wp::Operation {
            paths: vec![pattern(wp::pattern::Kind::Prefix("/admin".into()))],
            ..Default::default()
        }],
        ..Default::default()
    };
    let rejected = world.policy(policy(
        "deny-admin",
        wp::l7_policy::Action::Deny,
        vec![deny_admin],
    ));
    assert!(rejected.is_empty(), "{rejected:?}");
    let proxy = world.proxy();
    for path in ["/admin", "/admin/users", "/%61dmin", "/public/../admin"] {
        let (status, _, body) = proxy.get("front", 80, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body, "RBAC: access denied\n");
    }
    assert_eq!(proxy.get("front", 80, "/public").await.0, StatusCode::OK);
    assert_eq!(
        backends["v1"].hits(),
        1,
        "denied requests never reach the backend"
    );
    assert_eq!(proxy.metrics.failures("denied"), 4);
    let text = proxy.metrics_text();
    assert_eq!(
        metric_sum(
            &text,
            "istio_requests_total",
            &["response_code=\"403\"", "reporter=\"waypoint\""]
        ),
        4.0
    );
}

#[tokio::test]
async fn allow_policies_admit_only_matching_sources() {
    let (mut world, _backends) = world_with(&["v1"]).await;
    world.route(route(
        "all",
        "front",
        vec![rule(vec![], vec![to("v1", 80, 1)])],
    ));
    let from_frontend = wp::PolicyRule {
        from: vec![wp::Source {
            principals: vec![pattern(wp::pattern::Kind::Exact(
                "cluster.local/ns/shop/sa/frontend".into(),
            ))],
            ..Default::default()
        }],
        to: vec![wp::Operation {
            methods: vec![pattern(wp::pattern::Kind::Exact("GET".into()))],
            ..Default::default()
        }],
        ..Default::default()
    };
    world.policy(policy(
        "allow-frontend",
        wp::l7_policy::Action::Allow,
        vec![from_frontend],
    ));
    let proxy = world.proxy();
    assert_eq!(proxy.get("front", 80, "/").await.0, StatusCode::OK);
    let stranger = ztunnel::identity::SpiffeId::new("cluster.local", "other", "app").unwrap();
    let (status, _, _) = proxy
        .send_as(stranger, "front", 80, get("front", "/"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let post = Request::post("/")
        .header("host", "front")
        .body(body::empty())
        .unwrap();
    assert_eq!(
        proxy.send_as(client_identity(), "front", 80, post).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn fault_injection_aborts_and_delays_the_configured_share() {
    let (mut world, backends) = world_with(&["v1"]).await;
    let mut faulty = rule(vec![], vec![to("v1", 80, 1)]);
    faulty.fault = Some(wp::FaultInjection {
        delay: Some(wp::FaultDelay {
            delay: Some(millis(1)),
            percent: 30.0,
        }),
        abort: Some(wp::FaultAbort {
            http_status: 418,
            percent: 50.0,
        }),
    });
    world.route(route("faults", "front", vec![faulty]));
    let proxy = world.proxy();
    let mut aborted = 0;
    for _ in 0..1000 {
        let (status, _, _) = proxy.get("front", 80, "/").await;
        if status == StatusCode::IM_A_TEAPOT {
            aborted += 1;
        }
    }
    assert!((420..=580).contains(&aborted), "{aborted} of 1000 aborted");
    assert_eq!(backends["v1"].hits(), 1000 - aborted);
    let text = proxy.metrics_text();
    let delayed = metric_sum(&text, "istio_requests_total", &["response_flags=\"DI"]);
    assert!(
        (240.0..=360.0).contains(&delayed),
        "{delayed} of 1000 delayed"
    );
    let flagged = metric_sum(&text, "istio_requests_total", &["FI\""]);
    assert_eq!(flagged, aborted as f64);
}

#[tokio::test(start_paused = true)]
async fn a_fault_delay_holds_the_request() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let mut delayed = rule(vec![], vec![to("front", 80, 1)]);
    delayed.fault = Some(wp::FaultInjection {
        delay: Some(wp::FaultDelay {
            delay: Some(millis(5000)),
            percent: 100.0,
        }),
        abort: Some(wp::FaultAbort {
            http_status: 503,
            percent: 100.0,
        }),
    });
    world.route(route("delay", "front", vec![delayed]));
    let proxy = world.proxy();
    let started = Instant::now();
    assert_eq!(
        proxy.get("front", 80, "/").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn p2c_spreads_load_over_endpoints() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let mut backends = Vec::new();
    for i in 0..3 {
        let backend = Backend::start(world.next_ip(), "front", ok()).await;
        world.workload(&format!("front-{i}"), "front", 80, backend.addr, true);
        backends.push(backend);
    }
    let proxy = world.proxy();
    for _ in 0..600 {
        assert_eq!(proxy.get("front", 80, "/").await.0, StatusCode::OK);
    }
    for backend in &backends {
        assert!(backend.hits() > 120, "uneven spread: {}", backend.hits());
    }
}

#[tokio::test]
async fn p2c_prefers_the_endpoint_with_fewer_requests_in_flight() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let slow: Behaviour = Arc::new(|_, _| (StatusCode::OK, Duration::from_millis(300)));
    let slow_backend = Backend::start(world.next_ip(), "slow", slow).await;
    let fast_backend = Backend::start(world.next_ip(), "fast", ok()).await;
    world.workload("front-slow", "front", 80, slow_backend.addr, true);
    world.workload("front-fast", "front", 80, fast_backend.addr, true);
    let proxy = world.proxy();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(
            async move { proxy.get("front", 80, "/").await.0 },
        ));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert!(
        slow_backend.hits() <= 10,
        "the busy endpoint got {} requests",
        slow_backend.hits()
    );
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_then_tries_it_again() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let failing: Behaviour = Arc::new(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO));
    let bad = Backend::start(world.next_ip(), "bad", failing).await;
    let good = Backend::start(world.next_ip(), "good", ok()).await;
    world.workload("front-bad", "front", 80, bad.addr, true);
    world.workload("front-good", "front", 80, good.addr, true);
    let settings = OutlierSettings {
        consecutive_failures: 5,
        base_ejection: Duration::from_secs(2),
        max_ejection: Duration::from_secs(10),
    };
    let proxy = world.proxy_with(settings);
    for _ in 0..100 {
        proxy.get("front", 80, "/").await;
    }
    assert_eq!(bad.hits(), 5, "ejected after five failures in a row");
    assert_eq!(good.hits(), 95);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for _ in 0..100 {
        proxy.get("front", 80, "/").await;
    }
    assert_eq!(
        bad.hits(),
        10,
        "tried again after the ejection, and ejected again (for twice as long)"
    );
    let text = proxy.metrics_text();
    assert_eq!(
        metric_sum(&text, "waypoint_outlier_ejections_total", &[]),
        2.0
    );
}

#[tokio::test]
async fn no_healthy_endpoint_answers_503() {
    let mut world = World::new();
    world.service("front", [10, 96, 0, 1], &[80], true);
    let backend = Backend::start(world.next_ip(), "front", ok()).await;
    world.workload("front-0", "front", 80, backend.addr, false);
    let proxy = world.proxy();
    let (status, _, body) = proxy.get("front", 80, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no healthy upstream\n");
    assert_eq!(backend.hits(), 0);
    assert_eq!(proxy.metrics.failures("no_healthy_endpoint"), 1);
    let text = proxy.metrics_text();
    assert_eq!(
        metric_sum(
            &text,
            "istio_requests_total",
            &["response_code=\"503\"", "response_flags=\"UH\""]
        ),
        1.0
    );
}

#[tokio::test]
async fn redirects_rewrites_and_header_edits() {
    let (mut world, backends) = world_with(&["v1"]).await;
    use wp::path_match::Kind;
    let mut moved = rule(vec![path(Kind::Prefix("/old".into()))], vec![]);
    moved.redirect = Some(wp::Redirect {
        scheme: "https".into(),
        hostname: "example.com".into(),
        path: Some(wp::PathModifier {
            kind: Some(wp::path_modifier::Kind::Prefix("/new".into())),
        }),
        port: 0,
        status_code: 301,
    });
    let mut rewritten = rule(
        vec![path(Kind::Prefix("/api".into()))],
        vec![to("v1", 80, 1)],
    );
    rewritten.rewrite = Some(wp::UrlRewrite {
        hostname: "internal.example".into(),
        path: Some(wp::PathModifier {
            kind: Some(wp::path_modifier::Kind::Prefix("/v2".into())),
        }),
    });
    let header = |name: &str, value: &str| wp::Header {
        name: name.into(),
        value: value.into(),
    };
    rewritten.request_headers = Some(wp::HeaderModifier {
        set: vec![header("x-set", "1")],
        add: vec![header("x-add", "2")],
        remove: vec!["x-remove".into()],
    });
    rewritten.response_headers = Some(wp::HeaderModifier {
        set: vec![header("x-served-by", "rewritten")],
        ..Default::default()
    });
    world.route(route("edits", "front", vec![moved, rewritten]));
    let proxy = world.proxy();

    let (status, headers, _) = proxy.get("front", 80, "/old/page?q=1").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "https://example.com/new/page?q=1");

    let request = Request::get("/api/users?id=7")
        .header("host", "front")
        .header("x-remove", "gone")
        .header("x-add", "1")
        .body(body::empty())
        .unwrap();
    let (status, headers, _) = proxy.send_as(client_identity(), "front", 80, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served_by(&headers), "rewritten");
    let seen = backends["v1"].seen.lock().unwrap();
    let head = &seen[0];
    assert_eq!(head.uri.to_string(), "/v2/users?id=7");
    assert_eq!(head.headers["host"], "internal.example");
    assert_eq!(head.headers["x-set"], "1");
    assert_eq!(head.headers.get_all("x-add").iter().count(), 2);
    assert!(!head.headers.contains_key("x-remove"));
}

#[tokio::test]
async fn mirrors_get_a_copy_and_their_answers_are_ignored() {
    let (mut world, backends) = world_with(&["v1", "shadow"]).await;
    let mut mirrored = rule(vec![], vec![to("v1", 80, 1)]);
    mirrored.mirrors = vec![wp::Mirror {
        backend: Some(to("shadow", 80, 1)),
        percent: 100.0,
    }];
    world.route(route("mirror", "front", vec![mirrored]));
    let proxy = world.proxy();
    let request = Request::post("/upload")
        .header("host", "front")
        .body(body::full("payload"))
        .unwrap();
    let (status, headers, body) = proxy.send_as(client_identity(), "front", 80, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served_by(&headers), "v1");
    assert_eq!(body, "v1:7", "the primary got the whole body");
    for _ in 0..100 {
        if backends["shadow"].hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = backends["shadow"].seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["host"], "front-shadow");
}

#[tokio::test]
async fn telemetry_has_istio_labels_sizes_and_a_propagated_trace() {
    let (mut world, backends) = world_with(&["v1"]).await;
    world.route(route(
        "all",
        "front",
        vec![rule(vec![], vec![to("v1", 80, 1)])],
    ));
    let proxy = world.proxy();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::post("/")
        .header("host", "front")
        .header("traceparent", incoming)
        .body(body::full("0123456789"))
        .unwrap();
    assert_eq!(
        proxy
            .send_as(client_identity(), "front", 80, request)
            .await
            .0,
        StatusCode::OK
    );
    let seen = backends["v1"].seen.lock().unwrap();
    let sent = seen[0].headers["traceparent"].to_str().unwrap();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"),
        "{sent}"
    );
    assert!(
        !sent.contains("00f067aa0ba902b7"),
        "a new span id for this hop"
    );
    drop(seen);
    let text = proxy.metrics_text();
    let labels = [
        "reporter=\"waypoint\"",
        "response_code=\"200\"",
        "destination_service=\"v1.shop.svc.cluster.local\"",
        "destination_workload=\"v1-0\"",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/frontend\"",
        "request_protocol=\"http\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    assert_eq!(metric_sum(&text, "istio_requests_total", &labels), 1.0);
    assert_eq!(
        metric_sum(&text, "istio_request_duration_milliseconds_count", &labels),
        1.0
    );
    assert_eq!(metric_sum(&text, "istio_request_bytes_sum", &labels), 10.0);
    assert_eq!(
        metric_sum(&text, "istio_response_bytes_sum", &labels),
        5.0,
        "\"v1:10\""
    );
}
