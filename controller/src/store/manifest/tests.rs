use super::*;
use crate::store::authorization::{PolicyAction, StringMatch};
use crate::store::http_route::{PathMatch, RouteFilter};
use crate::store::service::TargetPort;

const FILE: &str = "manifests/shop.yaml";

fn rejections(text: &str) -> Vec<String> {
    match validate_manifest_text(FILE, text) {
        Ok(objects) => panic!("expected a rejection, got {objects:?}"),
        Err(rejections) => rejections.iter().map(ToString::to_string).collect(),
    }
}

fn objects(text: &str) -> Vec<Object> {
    match validate_manifest_text(FILE, text) {
        Ok(objects) => objects,
        Err(rejections) => panic!("unexpected rejections: {rejections:#?}"),
    }
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: cart\n  namespace: shop\n";
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n";
const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                      metadata:\n  name: allow\n  namespace: shop\n";
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                     metadata:\n  name: cart\n  namespace: shop\n";

/// Every class of bad input names the file, the object (or document) and the field.
#[test]
fn every_bad_input_names_file_object_and_field() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "syntax",
            "apiVersion: v1\nkind: Service\nmetadata: {name: cart\n".into(),
            "manifests/shop.yaml: document 0: YAML syntax error: ",
        ),
        (
            "unknown kind",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".into(),
            "manifests/shop.yaml: document 0: kind: unknown kind \"ConfigMap\" in apiVersion \"v1\"",
        ),
        (
            "unknown apiVersion",
            "apiVersion: apps/v2\nkind: Deployment\nmetadata: {name: x}\n".into(),
            "manifests/shop.yaml: document 0: kind: unknown kind \"Deployment\" in apiVersion \"apps/v2\"",
        ),
        (
            "not an object",
            "- just\n- a list\n".into(),
            "manifests/shop.yaml: document 0: the document is not a Kubernetes object",
        ),
        (
            "missing kind",
            "apiVersion: v1\nmetadata: {name: x}\n".into(),
            "manifests/shop.yaml: document 0: kind: required field is missing",
        ),
        (
            "missing name",
            "apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\n".into(),
            "manifests/shop.yaml: Service in document 0: metadata.name: required field is missing",
        ),
        (
            "bad name",
            "apiVersion: v1\nkind: Service\nmetadata: {name: Cart}\n".into(),
            "manifests/shop.yaml: Service default/Cart: metadata.name: invalid value \"Cart\"",
        ),
        (
            "missing field",
            format!("{POD}spec: {{serviceAccountName: web}}\n"),
            "manifests/shop.yaml: Pod shop/web: spec.containers: required field is missing",
        ),
        (
            "wrong type",
            format!("{SERVICE}spec:\n  ports:\n  - port: eighty\n"),
            "manifests/shop.yaml: Service shop/cart: spec.ports[0].port: wrong type: invalid type: \
             string \"eighty\"",
        ),
        (
            "bad port",
            format!("{SERVICE}spec:\n  ports:\n  - port: -3\n"),
            "manifests/shop.yaml: Service shop/cart: spec.ports[0].port: invalid value -3: a port \
             must be between 1 and 65535",
        ),
        (
            "bad selector",
            format!("{SERVICE}spec:\n  selector: {{app: has space}}\n"),
            "manifests/shop.yaml: Service shop/cart: spec.selector[\"app\"]: invalid value \"has space\"",
        ),
        (
            "headless",
            format!("{SERVICE}spec: {{clusterIP: None}}\n"),
            "manifests/shop.yaml: Service shop/cart: spec.clusterIP: invalid value \"None\": headless",
        ),
        (
            "bad cluster IP",
            format!("{SERVICE}spec: {{clusterIP: 10.96.0.300}}\n"),
            "manifests/shop.yaml: Service shop/cart: spec.clusterIP: invalid value \"10.96.0.300\"",
        ),
        (
            "bad label value",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio.io/dataplane-mode: ambiant}\n".into(),
            "manifests/shop.yaml: Namespace shop: metadata.labels[\"istio.io/dataplane-mode\"]: invalid value \"ambiant\"",
        ),
        (
            "bad CIDR",
            format!("{POLICY}spec:\n  rules:\n  - from:\n    - source: {{ipBlocks: [10.0.0.0/33]}}\n"),
            "manifests/shop.yaml: AuthorizationPolicy shop/allow: spec.rules[0].from[0].source.ipBlocks[0]: \
             invalid value \"10.0.0.0/33\"",
        ),
        (
            "bad principal",
            format!("{POLICY}spec:\n  rules:\n  - from:\n    - source: {{principals: [cart]}}\n"),
            "manifests/shop.yaml: AuthorizationPolicy shop/allow: spec.rules[0].from[0].source.principals[0]: \
             invalid value \"cart\": a principal is <trust-domain>/ns/<namespace>/sa/<service-account>",
        ),
        (
            "bad action",
            format!("{POLICY}spec: {{action: REJECT}}\n"),
            "manifests/shop.yaml: AuthorizationPolicy shop/allow: spec.action: invalid value \"REJECT\"",
        ),
        (
            "bad condition",
            format!("{POLICY}spec:\n  rules:\n  - when:\n    - {{key: source.ip, values: [nope]}}\n"),
            "manifests/shop.yaml: AuthorizationPolicy shop/allow: spec.rules[0].when[0].values[0]: invalid value \"nope\"",
        ),
        (
            "deployment selector",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\nspec:\n  \
             selector: {matchLabels: {app: cart}}\n  template:\n    metadata: {labels: {app: web}}\n    \
             spec: {containers: [{name: app}]}\n".into(),
            "manifests/shop.yaml: Deployment shop/cart: spec.selector: invalid value",
        ),
        (
            "gateway listener",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: shop}\n\
             spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, protocol: HBONE}]\n".into(),
            "manifests/shop.yaml: Gateway shop/waypoint: spec.listeners[0].port: required field is missing",
        ),
        (
            "route duration",
            format!("{ROUTE}spec:\n  rules:\n  - timeouts: {{request: '10'}}\n"),
            "manifests/shop.yaml: HTTPRoute shop/cart: spec.rules[0].timeouts.request: invalid value \"10\"",
        ),
        (
            "route filter",
            format!("{ROUTE}spec:\n  rules:\n  - filters: [{{type: ExtensionRef}}]\n"),
            "manifests/shop.yaml: HTTPRoute shop/cart: spec.rules[0].filters[0].type: invalid value \"ExtensionRef\"",
        ),
        (
            "route backend port",
            format!("{ROUTE}spec:\n  rules:\n  - backendRefs: [{{name: cart}}]\n"),
            "manifests/shop.yaml: HTTPRoute shop/cart: spec.rules[0].backendRefs[0].port: required field is missing",
        ),
    ];
    for (name, text, expected) in cases {
        let messages = rejections(&text);
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{name}: expected a message starting with\n  {expected}\ngot\n  {messages:#?}"
        );
    }
}

#[test]
fn every_problem_of_an_object_is_reported_at_once() {
    let text = format!(
        "{SERVICE}spec:\n  selector: {{app: has space}}\n  ports:\n  - {{name: a, port: 0}}\n  - {{port: 80}}\n"
    );
    let messages = rejections(&text);
    assert_eq!(messages.len(), 3, "{messages:#?}");
}

#[test]
fn multi_document_files_give_every_object_and_skip_empty_documents() {
    let text = format!(
        "---\n# the namespace\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n---\n\
         {SERVICE}spec: {{ports: [{{port: 80}}]}}\n---\n{POD}spec: {{containers: [{{name: app}}]}}\n"
    );
    let keys: Vec<String> = objects(&text).iter().map(|o| o.key().to_string()).collect();
    assert_eq!(
        keys,
        ["Namespace shop", "Service shop/cart", "Pod shop/web"]
    );
}

#[test]
fn one_bad_document_does_not_hide_the_others() {
    let text = format!(
        "{SERVICE}spec: {{ports: [{{port: 0}}]}}\n---\n{POD}spec: {{containers: [{{name: app}}]}}\n"
    );
    let parsed = parse_manifest_text(FILE.into(), &text);
    assert!(!parsed.failed());
    assert_eq!(parsed.documents.len(), 2);
    assert!(parsed.documents[0].result.is_err());
    assert_eq!(
        parsed.documents[0].key,
        Some(ObjectKey::namespaced(Kind::Service, "shop", "cart"))
    );
    assert!(parsed.documents[1].result.is_ok());
}

#[test]
fn duplicates_in_one_text_are_rejected() {
    let text = format!("{SERVICE}---\n{SERVICE}");
    let messages = rejections(&text);
    assert!(
        messages[0].contains("already defined in manifests/shop.yaml (document 0)"),
        "{messages:?}"
    );
}

#[test]
fn unknown_fields_and_nulls_are_ignored() {
    let text = format!(
        "{SERVICE}  annotations: null\n  someFutureField: 1\nspec:\n  ports: [{{port: 80, madeUp: x}}]\n  selector: null\n"
    );
    assert_eq!(objects(&text).len(), 1);
}

#[test]
fn core_kinds_are_flattened_with_defaults() {
    let text = format!(
        "{POD}  labels: {{app: web}}\nspec:\n  nodeName: node-1\n  containers:\n  - name: app\n    \
         command: [sleep]\n    args: ['10']\n    env: [{{name: A, value: b}}]\n    ports: [{{containerPort: 8080, name: http}}]\n\
         status: {{podIP: 10.0.1.5, phase: Running}}\n---\n{SERVICE}spec:\n  clusterIP: 10.96.5.5\n  \
         selector: {{app: web}}\n  ports:\n  - {{name: http, port: 80, targetPort: http, appProtocol: http}}\n  \
         - {{name: grpc, port: 81, targetPort: 9090, protocol: UDP}}\n"
    );
    let objects = objects(&text);
    let Object::Pod(pod) = &objects[0] else {
        panic!()
    };
    assert_eq!(&*pod.service_account, "default");
    assert_eq!(pod.node.as_deref(), Some("node-1"));
    assert_eq!(pod.ip, Some("10.0.1.5".parse().unwrap()));
    assert_eq!(pod.phase.as_deref(), Some("Running"));
    assert_eq!(pod.uid, crate::store::workload::derived_uid("shop", "web"));
    let container = &pod.containers[0];
    assert_eq!(
        (container.command.as_slice(), container.args.as_slice()),
        (&["sleep".to_string()][..], &["10".to_string()][..])
    );
    assert_eq!(container.env[0].value, "b");
    assert_eq!(container.ports[0].port, 8080);
    let Object::Service(service) = &objects[1] else {
        panic!()
    };
    assert_eq!(service.cluster_ip, Some("10.96.5.5".parse().unwrap()));
    assert_eq!(
        service.ports[0].target_port,
        TargetPort::Name("http".into())
    );
    assert_eq!(service.ports[0].app_protocol.as_deref(), Some("http"));
    assert_eq!(service.ports[1].target_port, TargetPort::Number(9090));
    assert_eq!(service.ports[1].protocol, "UDP");
}

#[test]
fn authorization_policies_keep_what_users_write() {
    let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow\n  \
         namespace: shop\n  annotations: {istio.io/dry-run: 'true'}\nspec:\n  selector: {matchLabels: {app: cart}}\n  \
         action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/shop/sa/web, '*']\n        \
         notNamespaces: [dev*]\n        ipBlocks: [10.0.0.1, 10.1.0.0/16]\n    to:\n    - operation: {ports: ['8080', 9090], methods: [GET], paths: ['/api/*']}\n    \
         when:\n    - {key: 'request.headers[x-user]', values: [admin]}\n";
    let Object::AuthorizationPolicy(policy) = &objects(text)[0] else {
        panic!()
    };
    assert!(policy.dry_run);
    assert_eq!(policy.action, PolicyAction::Deny);
    let source = &policy.rules[0].from[0];
    assert_eq!(
        source.principals[0],
        StringMatch::Exact("cluster.local/ns/shop/sa/web".into())
    );
    assert_eq!(source.principals[1], StringMatch::Any);
    assert_eq!(source.not_namespaces[0], StringMatch::Prefix("dev".into()));
    assert_eq!(source.ip_blocks[0].to_string(), "10.0.0.1/32");
    let operation = &policy.rules[0].to[0];
    assert_eq!(operation.ports, [8080, 9090]);
    assert_eq!(operation.paths[0], StringMatch::Prefix("/api/".into()));
    assert_eq!(policy.rules[0].when[0].key, "request.headers[x-user]");
}

#[test]
fn gateways_and_routes_are_flattened_with_api_defaults() {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: waypoint, namespace: shop}}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n---\n\
         {ROUTE}spec:\n  parentRefs: [{{name: cart, kind: Service, group: ''}}]\n  rules:\n  - matches: [{{path: {{type: Exact, value: /v2}}}}]\n    \
         filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-v, value: '2'}}]}}}}]\n    \
         backendRefs: [{{name: cart-v2, port: 80, weight: 90}}, {{name: cart-v1, port: 80}}]\n    \
         timeouts: {{request: 10s, backendRequest: 2s}}\n    retry: {{codes: [503], attempts: 3, backoff: 100ms}}\n  - backendRefs: [{{name: cart, port: 80}}]\n"
    );
    let objects = objects(&text);
    let Object::Gateway(gateway) = &objects[0] else {
        panic!()
    };
    assert!(gateway.is_waypoint);
    assert_eq!(gateway.listeners[0].port, 15008);
    let Object::HttpRoute(route) = &objects[1] else {
        panic!()
    };
    assert_eq!(route.parent_refs[0].kind, "Service");
    assert_eq!(&*route.parent_refs[0].namespace, "shop");
    let rule = &route.rules[0];
    assert_eq!(rule.matches[0].path, PathMatch::Exact("/v2".into()));
    assert!(
        matches!(&rule.filters[0], RouteFilter::RequestHeaderModifier(m) if m.set == [("x-v".to_string(), "2".to_string())])
    );
    assert_eq!(
        (rule.backend_refs[0].weight, rule.backend_refs[1].weight),
        (90, 1)
    );
    assert_eq!(
        rule.timeouts.request,
        Some(std::time::Duration::from_secs(10))
    );
    assert_eq!(rule.retry.as_ref().unwrap().attempts, Some(3));
    assert_eq!(
        route.rules[1].matches[0].path,
        PathMatch::Prefix("/".into())
    );
}

#[test]
fn gateways_of_other_classes_are_kept_but_not_waypoints() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge}\n\
                spec:\n  gatewayClassName: istio\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";
    let Object::Gateway(gateway) = &objects(text)[0] else {
        panic!()
    };
    assert!(!gateway.is_waypoint);
    assert_eq!(&*gateway.namespace, "default");
}
