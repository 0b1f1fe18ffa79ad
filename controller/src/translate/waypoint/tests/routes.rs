//! HTTPRoute -> RouteConfiguration.

use super::*;

struct RuleCase {
    name: &'static str,
    rules: String,
    expected: Vec<wire::Rule>,
}

fn run_rule_cases(cases: Vec<RuleCase>) {
    for case in cases {
        let decoded = translate_docs(&[cart_route(&case.rules)]);
        assert_eq!(decoded.warnings(), [], "{}", case.name);
        assert_eq!(
            decoded.route("shop/cart").rules,
            case.expected,
            "{}",
            case.name
        );
    }
}

#[test]
fn a_route_names_its_parents_hostnames_and_namespace() {
    let spec = "{parentRefs: [{group: \"\", kind: Service, name: cart, port: 8080}, \
                {group: \"\", kind: Service, name: cart, sectionName: http}, {name: wp}], \
                hostnames: [cart.example.com], rules: [{backendRefs: [{name: cart-v1, port: 80}]}]}";
    let decoded = translate_docs(&[route_with("split", &[], spec)]);
    assert_eq!(decoded.warnings(), []);
    let service = |port| wire::ParentRef {
        target: Some(parent_ref::Target::Service(host("cart"))),
        port,
    };
    let gateway = wire::ParentRef {
        target: Some(parent_ref::Target::Gateway("shop/wp".into())),
        port: 0,
    };
    let expected = wire::RouteConfiguration {
        name: "shop/split".into(),
        namespace: "shop".into(),
        parents: vec![service(8080), service(80), gateway],
        hostnames: vec!["cart.example.com".into()],
        rules: vec![to_v1(vec![prefix("/")])],
    };
    assert_eq!(decoded.route("shop/split"), &expected);
}

#[test]
fn each_match_type_becomes_its_wire_match() {
    let one = |m: &str, expected: wire::RouteMatch| RuleCase {
        name: "match",
        rules: format!("[{{matches: [{m}], backendRefs: [{V1}]}}]"),
        expected: vec![to_v1(vec![expected])],
    };
    let headers = |value| wire::RouteMatch {
        headers: vec![wire::HeaderMatch {
            name: "x-user".into(),
            value: Some(value),
        }],
        ..prefix("/")
    };
    let query = |value| wire::RouteMatch {
        query_params: vec![wire::QueryParamMatch {
            name: "v".into(),
            value: Some(value),
        }],
        ..prefix("/")
    };
    run_rule_cases(vec![
        RuleCase {
            name: "no matches: every path",
            rules: format!("[{{backendRefs: [{V1}]}}]"),
            expected: vec![to_v1(vec![prefix("/")])],
        },
        one("{path: {type: Exact, value: /a}}", exact("/a")),
        one("{path: {value: /api}}", prefix("/api")),
        one(
            "{path: {type: RegularExpression, value: \"/v[0-9]+\"}}",
            path(path_match::Kind::Regex("/v[0-9]+".into())),
        ),
        one(
            "{headers: [{name: x-user, value: tester}]}",
            headers(header_match::Value::Exact("tester".into())),
        ),
        one(
            "{headers: [{type: RegularExpression, name: x-user, value: \"t.*\"}]}",
            headers(header_match::Value::Regex("t.*".into())),
        ),
        one(
            "{queryParams: [{name: v, value: \"2\"}]}",
            query(query_param_match::Value::Exact("2".into())),
        ),
        one(
            "{queryParams: [{type: RegularExpression, name: v, value: \"[12]\"}]}",
            query(query_param_match::Value::Regex("[12]".into())),
        ),
        one(
            "{method: POST}",
            wire::RouteMatch {
                method: "POST".into(),
                ..prefix("/")
            },
        ),
    ]);
}

#[test]
fn rules_are_ordered_by_match_precedence() {
    let rule = |name: &str, matches| wire::Rule {
        matches,
        backends: vec![backend(name, 80, 1)],
        ..Default::default()
    };
    let with_method = wire::RouteMatch {
        method: "GET".into(),
        ..prefix("/api")
    };
    let with_header = wire::RouteMatch {
        headers: vec![wire::HeaderMatch {
            name: "x-user".into(),
            value: Some(header_match::Value::Exact("tester".into())),
        }],
        ..prefix("/api")
    };
    run_rule_cases(vec![
        RuleCase {
            name: "exact before longer prefix before shorter prefix",
            rules: "[{matches: [{path: {value: /}}], backendRefs: [{name: cart-v1, port: 80}]}, \
                    {matches: [{path: {value: /api}}], backendRefs: [{name: cart-v2, port: 80}]}, \
                    {matches: [{path: {type: Exact, value: /}}], backendRefs: [{name: reviews, port: 9080}]}]"
                .into(),
            expected: vec![
                wire::Rule {
                    matches: vec![exact("/")],
                    backends: vec![backend("reviews", 9080, 1)],
                    ..Default::default()
                },
                rule("cart-v2", vec![prefix("/api")]),
                rule("cart-v1", vec![prefix("/")]),
            ],
        },
        RuleCase {
            name: "a header match (the tester goes to v2) before the catch-all of the same path",
            rules: "[{matches: [{path: {value: /api}}], backendRefs: [{name: cart-v1, port: 80}]}, \
                    {matches: [{path: {value: /api}, headers: [{name: x-user, value: tester}]}], \
                     backendRefs: [{name: cart-v2, port: 80}]}]"
                .into(),
            expected: vec![
                rule("cart-v2", vec![with_header]),
                rule("cart-v1", vec![prefix("/api")]),
            ],
        },
        RuleCase {
            name: "a method match before a bare one; ties keep the written order",
            rules: "[{matches: [{path: {value: /api}}], backendRefs: [{name: cart-v1, port: 80}]}, \
                    {matches: [{path: {value: /api}}], backendRefs: [{name: reviews, port: 9080}]}, \
                    {matches: [{path: {value: /api}, method: GET}], backendRefs: [{name: cart-v2, port: 80}]}]"
                .into(),
            expected: vec![
                rule("cart-v2", vec![with_method]),
                rule("cart-v1", vec![prefix("/api")]),
                wire::Rule {
                    matches: vec![prefix("/api")],
                    backends: vec![backend("reviews", 9080, 1)],
                    ..Default::default()
                },
            ],
        },
        RuleCase {
            name: "a rule whose matches land apart is split; neighbours stay together",
            rules: "[{matches: [{path: {type: Exact, value: /a}}, {path: {type: Exact, value: /b}}, \
                     {path: {value: /}}], backendRefs: [{name: cart-v1, port: 80}]}, \
                    {matches: [{path: {value: /api}}], backendRefs: [{name: cart-v2, port: 80}]}]"
                .into(),
            expected: vec![
                rule("cart-v1", vec![exact("/a"), exact("/b")]),
                rule("cart-v2", vec![prefix("/api")]),
                rule("cart-v1", vec![prefix("/")]),
            ],
        },
    ]);
}

#[test]
fn weighted_backends_keep_their_weights() {
    let split = |weights: &str, expected: Vec<wire::Backend>| RuleCase {
        name: "split",
        rules: format!("[{{backendRefs: {weights}}}]"),
        expected: vec![wire::Rule {
            matches: vec![prefix("/")],
            backends: expected,
            ..Default::default()
        }],
    };
    run_rule_cases(vec![
        split(
            "[{name: cart-v1, port: 80, weight: 90}, {name: cart-v2, port: 80, weight: 10}]",
            vec![backend("cart-v1", 80, 90), backend("cart-v2", 80, 10)],
        ),
        split(
            "[{name: cart-v1, port: 80, weight: 0}, {name: cart-v2, port: 80, weight: 100}]",
            vec![backend("cart-v1", 80, 0), backend("cart-v2", 80, 100)],
        ),
        split(
            "[{name: cart-v1, port: 80}, {name: cart-v2, port: 80}]",
            vec![backend("cart-v1", 80, 1), backend("cart-v2", 80, 1)],
        ),
        split(
            "[{name: echo, namespace: infra, port: 80}]",
            vec![backend("echo.infra", 80, 1)],
        ),
        split("[]", vec![]),
    ]);
}

#[test]
fn filters_become_modifiers_redirects_rewrites_and_mirrors() {
    let with = |filters: &str, rule: wire::Rule| RuleCase {
        name: "filters",
        rules: format!("[{{filters: {filters}, backendRefs: [{V1}]}}]"),
        expected: vec![wire::Rule {
            matches: vec![prefix("/")],
            backends: vec![backend("cart-v1", 80, 1)],
            ..rule
        }],
    };
    let modifier = wire::HeaderModifier {
        set: vec![header("x-set", "1")],
        add: vec![header("x-add", "2")],
        remove: vec!["x-gone".into()],
    };
    let modifier_yaml = "{set: [{name: x-set, value: \"1\"}], add: [{name: x-add, value: \"2\"}], \
                         remove: [x-gone]}";
    let full = |p: &str| wire::PathModifier {
        kind: Some(path_modifier::Kind::Full(p.into())),
    };
    run_rule_cases(vec![
        with(
            &format!("[{{type: RequestHeaderModifier, requestHeaderModifier: {modifier_yaml}}}]"),
            wire::Rule {
                request_headers: Some(modifier.clone()),
                ..Default::default()
            },
        ),
        with(
            &format!("[{{type: ResponseHeaderModifier, responseHeaderModifier: {modifier_yaml}}}]"),
            wire::Rule {
                response_headers: Some(modifier),
                ..Default::default()
            },
        ),
        with(
            "[{type: RequestRedirect, requestRedirect: {hostname: new.example.com}}]",
            wire::Rule {
                redirect: Some(wire::Redirect {
                    hostname: "new.example.com".into(),
                    status_code: 302,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        with(
            "[{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443, statusCode: 301, \
              path: {type: ReplaceFullPath, replaceFullPath: /new}}}]",
            wire::Rule {
                redirect: Some(wire::Redirect {
                    scheme: "https".into(),
                    hostname: String::new(),
                    path: Some(full("/new")),
                    port: 8443,
                    status_code: 301,
                }),
                ..Default::default()
            },
        ),
        with(
            "[{type: URLRewrite, urlRewrite: {hostname: internal, \
              path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]",
            wire::Rule {
                rewrite: Some(wire::UrlRewrite {
                    hostname: "internal".into(),
                    path: Some(wire::PathModifier {
                        kind: Some(path_modifier::Kind::Prefix("/v2".into())),
                    }),
                }),
                ..Default::default()
            },
        ),
        with(
            "[{type: RequestMirror, requestMirror: {backendRef: {name: cart-v2, port: 80}}}, \
              {type: RequestMirror, requestMirror: {backendRef: {name: reviews, port: 9080}, percent: 25}}]",
            wire::Rule {
                mirrors: vec![
                    wire::Mirror {
                        backend: Some(backend("cart-v2", 80, 1)),
                        percent: 100.0,
                    },
                    wire::Mirror {
                        backend: Some(backend("reviews", 9080, 1)),
                        percent: 25.0,
                    },
                ],
                ..Default::default()
            },
        ),
    ]);
}

#[test]
fn timeouts_and_retries_are_written_with_their_defaults() {
    let with = |fields: &str, rule: wire::Rule| RuleCase {
        name: "timeouts and retries",
        rules: format!("[{{backendRefs: [{V1}], {fields}}}]"),
        expected: vec![wire::Rule {
            matches: vec![prefix("/")],
            backends: vec![backend("cart-v1", 80, 1)],
            ..rule
        }],
    };
    let retry = |attempts, codes: Vec<u32>, backoff: Option<Duration>| wire::RetryPolicy {
        attempts,
        codes,
        backoff: backoff.map(duration),
        retry_on_connect_failure: true,
        retry_on_reset: true,
    };
    run_rule_cases(vec![
        with(
            "timeouts: {request: 2s, backendRequest: 500ms}",
            wire::Rule {
                timeouts: Some(wire::Timeouts {
                    request: Some(duration(Duration::from_secs(2))),
                    backend_request: Some(duration(Duration::from_millis(500))),
                }),
                ..Default::default()
            },
        ),
        with(
            "timeouts: {request: 0s, backendRequest: 1s}",
            wire::Rule {
                timeouts: Some(wire::Timeouts {
                    request: None,
                    backend_request: Some(duration(Duration::from_secs(1))),
                }),
                ..Default::default()
            },
        ),
        with("timeouts: {request: 0s}", wire::Rule::default()),
        with(
            "retry: {attempts: 3, codes: [503, 500], backoff: 100ms}",
            wire::Rule {
                retry: Some(retry(3, vec![503, 500], Some(Duration::from_millis(100)))),
                ..Default::default()
            },
        ),
        with(
            "retry: {codes: [503]}",
            wire::Rule {
                retry: Some(retry(2, vec![503], None)),
                ..Default::default()
            },
        ),
        with(
            "retry: {attempts: 0}",
            wire::Rule {
                retry: Some(retry(0, vec![], None)),
                ..Default::default()
            },
        ),
    ]);
}

/// Annotations, the fault every rule gets, and the warnings.
type FaultCase = (
    &'static [(&'static str, &'static str)],
    Option<wire::FaultInjection>,
    Vec<String>,
);

#[test]
fn fault_annotations_are_parsed_or_reported() {
    let delay = |ms, percent| wire::FaultDelay {
        delay: Some(duration(Duration::from_millis(ms))),
        percent,
    };
    let abort = |http_status, percent| wire::FaultAbort {
        http_status,
        percent,
    };
    let fault = |delay, abort| Some(wire::FaultInjection { delay, abort });
    let unusable = |key: &str, why: &str| {
        format!("metadata.annotations[{key:?}]: {why}; the route applies without this fault")
    };
    let cases: Vec<FaultCase> = vec![
        (&[], None, vec![]),
        (
            &[("mesh.dev/fault-delay", "100ms:10")],
            fault(Some(delay(100, 10.0)), None),
            vec![],
        ),
        (
            &[("mesh.dev/fault-abort", "503:50")],
            fault(None, Some(abort(503, 50.0))),
            vec![],
        ),
        (
            &[
                ("mesh.dev/fault-delay", "1s"),
                ("mesh.dev/fault-abort", "500:0.5%"),
            ],
            fault(Some(delay(1000, 100.0)), Some(abort(500, 0.5))),
            vec![],
        ),
        (
            &[
                ("mesh.dev/fault-delay", "soon:10"),
                ("mesh.dev/fault-abort", "503:50"),
            ],
            fault(None, Some(abort(503, 50.0))),
            vec![unusable(
                "mesh.dev/fault-delay",
                "invalid value \"soon\": a duration is one to four <number><unit> parts with \
                 units h, m, s or ms, such as 10s, 1m30s or 500ms",
            )],
        ),
        (
            &[("mesh.dev/fault-abort", "700:10")],
            None,
            vec![unusable(
                "mesh.dev/fault-abort",
                "status \"700\" must be a number from 200 to 599, such as 503",
            )],
        ),
        (
            &[("mesh.dev/fault-delay", "10ms:150")],
            None,
            vec![unusable(
                "mesh.dev/fault-delay",
                "share \"150\" must be a percentage from 0 to 100, such as 10 or 0.5",
            )],
        ),
        (
            &[("mesh.dev/fault-delays", "10ms"), ("other.io/x", "y")],
            None,
            vec![unusable(
                "mesh.dev/fault-delays",
                "unknown annotation; this mesh reads mesh.dev/fault-delay (\"<duration>[:<percent>]\", \
                 e.g. \"100ms:10\") and mesh.dev/fault-abort (\"<status>[:<percent>]\", e.g. \"503:50\")",
            )],
        ),
    ];
    for (annotations, expected, warnings) in cases {
        let spec = format!(
            "{{parentRefs: [{{name: wp}}], rules: [{{backendRefs: [{V1}]}}, \
             {{matches: [{{path: {{type: Exact, value: /x}}}}], backendRefs: [{V1}]}}]}}"
        );
        let decoded = translate_docs(&[route_with("faulty", annotations, &spec)]);
        let route = decoded.route("shop/faulty");
        for rule in &route.rules {
            assert_eq!(
                rule.fault, expected,
                "{annotations:?}: every rule has the fault"
            );
        }
        let messages: Vec<&str> = decoded.warnings().into_iter().map(|(_, m)| m).collect();
        assert_eq!(messages, warnings, "{annotations:?}");
    }
}

#[test]
fn fault_values_parse_strictly() {
    assert_eq!(parse_delay(" 2s : 25 ").unwrap().percent, 25.0);
    assert_eq!(
        parse_abort("429").unwrap(),
        wire::FaultAbort {
            http_status: 429,
            percent: 100.0
        }
    );
    for bad in ["503:", "503:NaN", "503:-1", "503:inf", "abc:10", "5030", ""] {
        assert!(parse_abort(bad).is_err(), "{bad:?}");
    }
    assert!(matches!(
        parse_delay("10:5"),
        Err(FaultAnnotationError::Delay(_))
    ));
}

#[test]
fn missing_references_are_reported_and_the_rest_is_kept() {
    let spec = "{parentRefs: [{group: \"\", kind: Service, name: cart}, {group: \"\", kind: Service, name: gone}, \
                {name: not-a-waypoint}, {group: \"\", kind: Service, name: reviews}, \
                {group: \"\", kind: Service, name: cart, port: 9999}], \
                rules: [{matches: [{path: {value: /a}}], backendRefs: [{name: cart-v1, port: 80, weight: 90}, \
                         {name: cart-v3, port: 80, weight: 10}]}, \
                        {matches: [{path: {value: /b}}], backendRefs: [{name: cart-v2, port: 81}]}, \
                        {matches: [{path: {value: /c}}], backendRefs: [{name: cart-v2, port: 80}], \
                         filters: [{type: RequestMirror, requestMirror: {backendRef: {name: gone, port: 80}}}]}]}";
    let decoded = translate_docs(&[
        route_with("cart", &[], spec),
        route_with(
            "orphan",
            &[],
            "{parentRefs: [{name: nowhere}], rules: [{backendRefs: [{name: cart-v1, port: 80}]}]}",
        ),
    ]);
    let route = decoded.route("shop/cart");
    let targets: Vec<_> = route
        .parents
        .iter()
        .map(|p| p.target.clone().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            parent_ref::Target::Service(host("cart")),
            parent_ref::Target::Service(host("reviews")),
        ]
    );
    let forward = |p: &str, backends| wire::Rule {
        matches: vec![prefix(p)],
        backends,
        ..Default::default()
    };
    assert_eq!(
        route.rules,
        [
            forward("/a", vec![backend("cart-v1", 80, 90)]),
            forward("/b", vec![]),
            forward("/c", vec![backend("cart-v2", 80, 1)]),
        ]
    );
    assert!(
        !decoded.routes.contains_key("shop/orphan"),
        "no parent resolves"
    );
    let expected = [
        (
            "HTTPRoute shop/cart",
            "spec.parentRefs[1]: Service shop/gone does not exist; this parent is ignored",
        ),
        (
            "HTTPRoute shop/cart",
            "spec.parentRefs[2]: shop/not-a-waypoint is not a Gateway of class istio-waypoint; this parent is ignored",
        ),
        (
            "HTTPRoute shop/cart",
            "spec.parentRefs[3]: Service shop/reviews is not bound to a waypoint (istio.io/use-waypoint): the route takes effect once it is",
        ),
        (
            "HTTPRoute shop/cart",
            "spec.parentRefs[4]: Service shop/cart has no port 9999; this parent is ignored",
        ),
        (
            "HTTPRoute shop/cart",
            "spec.rules[0].backendRefs[1]: Service shop/cart-v3 does not exist; this backend is dropped",
        ),
        (
            "HTTPRoute shop/cart",
            "spec.rules[1].backendRefs[0]: Service shop/cart-v2 has no port 81; this backend is dropped",
        ),
        (
            "HTTPRoute shop/cart",
            "spec.rules[1]: no backend of this rule resolves: its requests are answered with 500",
        ),
        (
            "HTTPRoute shop/cart",
            "spec.rules[2].filters[0].requestMirror.backendRef: Service shop/gone does not exist; this backend is dropped",
        ),
        (
            "HTTPRoute shop/orphan",
            "spec.parentRefs[0]: shop/nowhere is not a Gateway of class istio-waypoint; this parent is ignored",
        ),
        (
            "HTTPRoute shop/orphan",
            "no parent is a waypoint Gateway or a Service of the mesh: the route applies nowhere",
        ),
    ];
    assert_eq!(decoded.warnings(), expected);
}
