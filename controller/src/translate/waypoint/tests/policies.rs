//! AuthorizationPolicy -> L7Policy.

use super::*;

fn exact_pattern(s: &str) -> wire::Pattern {
    wire::Pattern {
        kind: Some(pattern::Kind::Exact(s.into())),
    }
}

fn l7(
    name: &str,
    target: policy_target::Kind,
    action: l7_policy::Action,
    rules: Vec<wire::PolicyRule>,
) -> wire::L7Policy {
    wire::L7Policy {
        name: name.into(),
        namespace: "shop".into(),
        target: Some(wire::PolicyTarget { kind: Some(target) }),
        action: action as i32,
        rules,
        dry_run: false,
    }
}

#[test]
fn policies_targeting_a_waypoint_or_its_services_go_to_the_waypoint() {
    let get_rule = wire::PolicyRule {
        to: vec![wire::Operation {
            methods: vec![exact_pattern("GET")],
            ..Default::default()
        }],
        ..Default::default()
    };
    let get = "rules: [{to: [{operation: {methods: [GET]}}]}]";
    let decoded = translate_docs(&[
        policy(
            "on-gateway",
            &format!(
                "{{targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: wp}}], {get}}}"
            ),
        ),
        policy(
            "on-service",
            &format!(
                "{{targetRefs: [{{kind: Service, group: \"\", name: cart}}], action: DENY, {get}}}"
            ),
        ),
        policy(
            "on-both",
            &format!(
                "{{targetRefs: [{{kind: Service, group: \"\", name: cart}}, \
                {{kind: Gateway, group: gateway.networking.k8s.io, name: wp}}, {{kind: Service, group: \"\", name: reviews}}], {get}}}"
            ),
        ),
        policy(
            "on-l4",
            &format!("{{targetRefs: [{{kind: Service, group: \"\", name: reviews}}], {get}}}"),
        ),
        policy(
            "selector",
            "{selector: {matchLabels: {app: cart}}, rules: [{}]}",
        ),
    ]);
    let gateway = || policy_target::Kind::Gateway("shop/wp".into());
    let cart = || policy_target::Kind::Service(host("cart"));
    let allow = l7_policy::Action::Allow;
    let expected = BTreeMap::from([
        (
            "shop/on-both:gateway/wp".to_string(),
            l7(
                "shop/on-both:gateway/wp",
                gateway(),
                allow,
                vec![get_rule.clone()],
            ),
        ),
        (
            "shop/on-both:service/cart".to_string(),
            l7(
                "shop/on-both:service/cart",
                cart(),
                allow,
                vec![get_rule.clone()],
            ),
        ),
        (
            "shop/on-gateway".to_string(),
            l7("shop/on-gateway", gateway(), allow, vec![get_rule.clone()]),
        ),
        (
            "shop/on-service".to_string(),
            l7(
                "shop/on-service",
                cart(),
                l7_policy::Action::Deny,
                vec![get_rule],
            ),
        ),
    ]);
    assert_eq!(decoded.policies, expected);
}

#[test]
fn each_policy_field_becomes_its_l7_field() {
    let rule_of = |rule: &str| {
        let spec = format!(
            "{{targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: wp}}], rules: [{rule}]}}"
        );
        let decoded = translate_docs(&[policy("p", &spec)]);
        assert_eq!(decoded.warnings(), [], "{rule}");
        decoded.policies["shop/p"].rules.clone()
    };
    let kind = |k| wire::Pattern { kind: Some(k) };
    let source = rule_of(
        "{from: [{source: {principals: [cluster.local/ns/shop/sa/web, \"*/sa/admin\"], \
          notPrincipals: [\"cluster.local/*\"], namespaces: [shop], notNamespaces: [\"*\"]}}]}",
    );
    assert_eq!(
        source,
        [wire::PolicyRule {
            from: vec![wire::Source {
                principals: vec![
                    exact_pattern("cluster.local/ns/shop/sa/web"),
                    kind(pattern::Kind::Suffix("/sa/admin".into())),
                ],
                not_principals: vec![kind(pattern::Kind::Prefix("cluster.local/".into()))],
                namespaces: vec![exact_pattern("shop")],
                not_namespaces: vec![kind(pattern::Kind::Any(true))],
            }],
            ..Default::default()
        }]
    );
    let operation = rule_of(
        "{to: [{operation: {methods: [GET], notMethods: [DELETE], paths: [\"/api/*\"], \
          notPaths: [/admin], hosts: [\"*.example.com\"], notHosts: [evil.example.com], \
          ports: [\"80\"], notPorts: [8080]}}]}",
    );
    assert_eq!(
        operation,
        [wire::PolicyRule {
            to: vec![wire::Operation {
                methods: vec![exact_pattern("GET")],
                not_methods: vec![exact_pattern("DELETE")],
                paths: vec![kind(pattern::Kind::Prefix("/api/".into()))],
                not_paths: vec![exact_pattern("/admin")],
                hosts: vec![kind(pattern::Kind::Suffix(".example.com".into()))],
                not_hosts: vec![exact_pattern("evil.example.com")],
                ports: vec![80],
                not_ports: vec![8080],
            }],
            ..Default::default()
        }]
    );
    let conditions = rule_of(
        "{from: [{source: {namespaces: [shop]}}, {source: {namespaces: [web]}}], \
          when: [{key: \"request.headers[x-user]\", values: [tester], notValues: [\"bot*\"]}, \
                 {key: source.principal, values: [cluster.local/ns/shop/sa/web]}, \
                 {key: destination.port, notValues: [\"8080\"]}]}",
    );
    let from = |ns: &str| wire::Source {
        namespaces: vec![exact_pattern(ns)],
        principals: vec![exact_pattern("cluster.local/ns/shop/sa/web")],
        ..Default::default()
    };
    assert_eq!(
        conditions,
        [wire::PolicyRule {
            from: vec![from("shop"), from("web")],
            to: vec![wire::Operation {
                not_ports: vec![8080],
                ..Default::default()
            }],
            when: vec![wire::HeaderCondition {
                name: "x-user".into(),
                values: vec![exact_pattern("tester")],
                not_values: vec![kind(pattern::Kind::Prefix("bot".into()))],
            }],
        }]
    );
}

#[test]
fn what_a_waypoint_cannot_check_fails_closed() {
    let target = "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]";
    let rules = "rules: [{from: [{source: {ipBlocks: [10.0.0.0/8], namespaces: [shop]}}]}, \
                 {when: [{key: source.namespace, values: [a]}], from: [{source: {namespaces: [b]}}]}, \
                 {to: [{operation: {methods: [GET]}}]}]";
    let decoded = translate_docs(&[
        policy("allow", &format!("{{{target}, {rules}}}")),
        policy("deny", &format!("{{{target}, action: DENY, {rules}}}")),
    ]);
    let get = wire::PolicyRule {
        to: vec![wire::Operation {
            methods: vec![exact_pattern("GET")],
            ..Default::default()
        }],
        ..Default::default()
    };
    let namespaces = |ns: &str| wire::PolicyRule {
        from: vec![wire::Source {
            namespaces: vec![exact_pattern(ns)],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        decoded.policies["shop/allow"].rules,
        std::slice::from_ref(&get),
        "ALLOW rules that need more allow nothing"
    );
    assert_eq!(
        decoded.policies["shop/deny"].rules,
        [namespaces("shop"), namespaces("b"), get],
        "DENY rules lose what cannot be checked"
    );
    let expected = [
        (
            "AuthorizationPolicy shop/allow",
            "spec.rules[0] uses source.ipBlocks, which a waypoint cannot check: the rule allows nothing",
        ),
        (
            "AuthorizationPolicy shop/allow",
            "spec.rules[1] uses when source.namespace, which a waypoint cannot check: the rule allows nothing",
        ),
        (
            "AuthorizationPolicy shop/deny",
            "spec.rules[0] uses source.ipBlocks, which a waypoint cannot check: that part is left out, so the rule denies more than written",
        ),
        (
            "AuthorizationPolicy shop/deny",
            "spec.rules[1] uses when source.namespace, which a waypoint cannot check: that part is left out, so the rule denies more than written",
        ),
    ];
    assert_eq!(decoded.warnings(), expected);
}

#[test]
fn dry_run_and_empty_rules_are_kept() {
    let doc = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: quiet\n  \
               namespace: shop\n  annotations: {istio.io/dry-run: \"true\"}\n\
               spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}], action: DENY}\n";
    let decoded = translate_docs(&[doc.to_string()]);
    let mut expected = l7(
        "shop/quiet",
        policy_target::Kind::Gateway("shop/wp".into()),
        l7_policy::Action::Deny,
        vec![],
    );
    expected.dry_run = true;
    assert_eq!(decoded.policies["shop/quiet"], expected);
}
