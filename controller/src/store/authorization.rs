//! Istio's `security.istio.io/v1` AuthorizationPolicy: the fields a user writes, decoded leniently
//! (unknown fields are ignored) and checked as Istio's webhook checks them.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::kube_syntax::{Labels, check_labels, port_number};
use super::object::{NamespacedName, metadata_labels};
use super::rejection::{FieldProblem, Findings, Problem};

mod raw;

pub(crate) use raw::RawAuthorizationPolicy;
use raw::{PortText, RawCondition, RawOperation, RawRule, RawSource, RawTargetRef};

/// The annotation that makes a policy evaluated and logged but not enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// An authorization policy of the desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    /// The namespace; a policy in the root namespace applies mesh-wide (translation decides).
    pub namespace: Arc<str>,
    /// The policy name.
    pub name: Arc<str>,
    /// `spec.selector.matchLabels`: the workloads it applies to; `None` means the namespace.
    pub selector: Option<Labels>,
    /// `spec.targetRefs` (and the older `spec.targetRef`): the gateways or services it binds to.
    pub target_refs: Vec<PolicyTargetRef>,
    /// What a match does.
    pub action: PolicyAction,
    /// The extension provider of a CUSTOM policy.
    pub provider: Option<String>,
    /// The rules; a request matching any rule matches the policy.
    pub rules: Vec<PolicyRule>,
    /// `istio.io/dry-run: "true"`: evaluate and log only.
    pub dry_run: bool,
}

/// What a matching policy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyAction {
    /// Allow matching requests; with ALLOW policies present, others are denied.
    Allow,
    /// Deny matching requests; a matching DENY wins.
    Deny,
    /// Audit matching requests.
    Audit,
    /// Delegate to an extension provider.
    Custom,
}

/// A `targetRefs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyTargetRef {
    /// API group (`gateway.networking.k8s.io`, empty for core).
    pub group: String,
    /// `Gateway`, `GatewayClass`, `Service` or `ServiceEntry`.
    pub kind: String,
    /// The target's name, in the policy's namespace.
    pub name: String,
}

/// One rule: every listed part must match (`from` and `to` entries are alternatives).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// Sources; any may match. Empty matches every source.
    pub from: Vec<PolicySource>,
    /// Operations; any may match. Empty matches every operation.
    pub to: Vec<PolicyOperation>,
    /// Extra conditions; all must hold.
    pub when: Vec<PolicyCondition>,
}

/// `rules[].from[].source`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySource {
    /// Peer identities, `<trust-domain>/ns/<ns>/sa/<sa>` or with a leading/trailing `*`.
    pub principals: Vec<StringMatch>,
    /// Peer identities that must not match.
    pub not_principals: Vec<StringMatch>,
    /// Request (JWT) principals.
    pub request_principals: Vec<StringMatch>,
    /// Request principals that must not match.
    pub not_request_principals: Vec<StringMatch>,
    /// Peer namespaces.
    pub namespaces: Vec<StringMatch>,
    /// Peer namespaces that must not match.
    pub not_namespaces: Vec<StringMatch>,
    /// Peer address ranges.
    pub ip_blocks: Vec<IpNet>,
    /// Peer address ranges that must not match.
    pub not_ip_blocks: Vec<IpNet>,
    /// Original client address ranges (from forwarding headers).
    pub remote_ip_blocks: Vec<IpNet>,
    /// Original client address ranges that must not match.
    pub not_remote_ip_blocks: Vec<IpNet>,
}

/// `rules[].to[].operation`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOperation {
    /// Request hosts.
    pub hosts: Vec<StringMatch>,
    /// Hosts that must not match.
    pub not_hosts: Vec<StringMatch>,
    /// Destination ports.
    pub ports: Vec<u16>,
    /// Ports that must not match.
    pub not_ports: Vec<u16>,
    /// HTTP methods.
    pub methods: Vec<StringMatch>,
    /// Methods that must not match.
    pub not_methods: Vec<StringMatch>,
    /// Request paths.
    pub paths: Vec<StringMatch>,
    /// Paths that must not match.
    pub not_paths: Vec<StringMatch>,
}

/// `rules[].when[]`: an attribute condition such as `source.ip` or `request.headers[x]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCondition {
    /// The attribute.
    pub key: String,
    /// Values of which one must match.
    pub values: Vec<String>,
    /// Values none of which may match.
    pub not_values: Vec<String>,
}

/// An Istio string match: exact, `prefix*`, `*suffix`, or `*` (any non-empty value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// The whole value.
    Exact(String),
    /// Values starting with this.
    Prefix(String),
    /// Values ending with this.
    Suffix(String),
    /// Any value that is present.
    Any,
}

impl StringMatch {
    /// Reads Istio's wildcard notation; a `*` anywhere but the ends is refused.
    pub fn parse(text: &str) -> Result<Self, Problem> {
        if text == "*" {
            return Ok(StringMatch::Any);
        }
        let parsed = if let Some(suffix) = text.strip_prefix('*') {
            StringMatch::Suffix(suffix.to_string())
        } else if let Some(prefix) = text.strip_suffix('*') {
            StringMatch::Prefix(prefix.to_string())
        } else {
            StringMatch::Exact(text.to_string())
        };
        let inner = match &parsed {
            StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Suffix(s) => s,
            StringMatch::Any => "",
        };
        if text.is_empty() || inner.contains('*') {
            return Err(Problem::invalid(
                text,
                "must be non-empty, with '*' only as the whole value, first or last character",
            ));
        }
        Ok(parsed)
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Any => !value.is_empty(),
        }
    }
}

/// Reads a principal: an exact one must be `<trust-domain>/ns/<namespace>/sa/<service-account>`.
pub fn parse_principal(text: &str) -> Result<StringMatch, Problem> {
    let parsed = StringMatch::parse(text)?;
    let StringMatch::Exact(exact) = &parsed else {
        return Ok(parsed);
    };
    if exact.starts_with(ztunnel::identity::SPIFFE_SCHEME) {
        return Err(Problem::invalid(
            text,
            "write principals without the spiffe:// scheme: <trust-domain>/ns/<namespace>/sa/<service-account>",
        ));
    }
    let parts: Vec<&str> = exact.split('/').collect();
    let shaped = match parts.as_slice() {
        [td, "ns", ns, "sa", sa] => ztunnel::identity::SpiffeId::new(td, ns, sa).is_ok(),
        _ => false,
    };
    if shaped {
        Ok(parsed)
    } else {
        Err(Problem::invalid(
            text,
            "a principal is <trust-domain>/ns/<namespace>/sa/<service-account> (e.g. \
             cluster.local/ns/shop/sa/cart), '*', or such a name with a leading or trailing '*'",
        ))
    }
}

/// Makes the store's AuthorizationPolicy from a decoded manifest, checking every field.
pub(crate) fn authorization_policy_from_manifest(
    raw: RawAuthorizationPolicy,
    id: NamespacedName,
) -> Result<AuthorizationPolicy, Vec<FieldProblem>> {
    let mut findings = Findings::default();
    metadata_labels(&raw.metadata, &mut findings);
    let dry_run = dry_run(&raw.metadata, &mut findings);
    let spec = raw.spec;
    let selector = spec.selector.map(|s| s.match_labels);
    if let Some(selector) = &selector {
        check_labels(selector, "spec.selector.matchLabels", &mut findings);
    }
    let target_refs = target_refs(spec.target_ref, spec.target_refs, &id, &mut findings);
    if selector.is_some() && !target_refs.is_empty() {
        findings.push(
            "spec.selector",
            Problem::invalid(
                "selector and targetRefs",
                "set only one of spec.selector and spec.targetRefs",
            ),
        );
    }
    let action = action(spec.action.as_deref(), &mut findings);
    let provider = spec.provider.map(|p| p.name).filter(|p| !p.is_empty());
    match (action, &provider) {
        (PolicyAction::Custom, None) => findings.push("spec.provider.name", Problem::Missing),
        (PolicyAction::Custom, Some(_)) | (_, None) => {}
        (_, Some(name)) => findings.push(
            "spec.provider",
            Problem::invalid(name, "a provider is only used with action CUSTOM"),
        ),
    }
    let rules = spec
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| policy_rule(rule, &format!("spec.rules[{i}]"), &mut findings))
        .collect();
    findings.finish(AuthorizationPolicy {
        namespace: id.namespace,
        name: id.name,
        selector,
        target_refs,
        action,
        provider,
        rules,
        dry_run,
    })
}

fn dry_run(meta: &ObjectMeta, findings: &mut Findings) -> bool {
    let Some(value) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
    else {
        return false;
    };
    match value.as_str() {
        "true" | "True" | "TRUE" | "1" | "t" | "T" => true,
        "false" | "False" | "FALSE" | "0" | "f" | "F" => false,
        other => {
            findings.push(
                format!("metadata.annotations[{DRY_RUN_ANNOTATION:?}]"),
                Problem::invalid(other, "must be \"true\" or \"false\""),
            );
            false
        }
    }
}

fn action(text: Option<&str>, findings: &mut Findings) -> PolicyAction {
    match text.unwrap_or("ALLOW") {
        "ALLOW" => PolicyAction::Allow,
        "DENY" => PolicyAction::Deny,
        "AUDIT" => PolicyAction::Audit,
        "CUSTOM" => PolicyAction::Custom,
        other => {
            findings.push(
                "spec.action",
                Problem::invalid(other, "must be ALLOW, DENY, AUDIT or CUSTOM"),
            );
            PolicyAction::Allow
        }
    }
}

fn target_refs(
    single: Option<RawTargetRef>,
    many: Vec<RawTargetRef>,
    id: &NamespacedName,
    findings: &mut Findings,
) -> Vec<PolicyTargetRef> {
    let single = single.map(|r| ("spec.targetRef".to_string(), r));
    let many = many
        .into_iter()
        .enumerate()
        .map(|(i, r)| (format!("spec.targetRefs[{i}]"), r));
    let mut refs = Vec::new();
    for (at, target) in single.into_iter().chain(many) {
        const KINDS: [&str; 4] = ["Gateway", "GatewayClass", "Service", "ServiceEntry"];
        if !KINDS.contains(&target.kind.as_str()) {
            findings.push(
                format!("{at}.kind"),
                Problem::invalid(
                    &target.kind,
                    "must be Gateway, GatewayClass, Service or ServiceEntry",
                ),
            );
        }
        if target.name.is_empty() {
            findings.push(format!("{at}.name"), Problem::Missing);
        }
        if let Some(namespace) = target.namespace.filter(|ns| *ns != *id.namespace) {
            findings.push(
                format!("{at}.namespace"),
                Problem::invalid(
                    namespace,
                    "a policy can only target objects in its own namespace",
                ),
            );
        }
        refs.push(PolicyTargetRef {
            group: target.group,
            kind: target.kind,
            name: target.name,
        });
    }
    refs
}

fn policy_rule(raw: RawRule, at: &str, findings: &mut Findings) -> PolicyRule {
    let from = raw
        .from
        .into_iter()
        .enumerate()
        .map(|(i, from)| {
            let at = format!("{at}.from[{i}].source");
            match from.source {
                Some(source) => policy_source(source, &at, findings),
                None => {
                    findings.push(at, Problem::Missing);
                    PolicySource::default()
                }
            }
        })
        .collect();
    let to = raw
        .to
        .into_iter()
        .enumerate()
        .map(|(i, to)| {
            let at = format!("{at}.to[{i}].operation");
            match to.operation {
                Some(operation) => policy_operation(operation, &at, findings),
                None => {
                    findings.push(at, Problem::Missing);
                    PolicyOperation::default()
                }
            }
        })
        .collect();
    let when = raw
        .when
        .into_iter()
        .enumerate()
        .map(|(i, when)| policy_condition(when, &format!("{at}.when[{i}]"), findings))
        .collect();
    PolicyRule { from, to, when }
}

/// Checks the entries of the lists of one source, operation or condition at `at`, naming each
/// entry's index in the field path.
struct ListCheck<'a> {
    at: &'a str,
    findings: &'a mut Findings,
}

impl ListCheck<'_> {
    fn each<T>(
        &mut self,
        field: &str,
        values: &[String],
        parse: fn(&str) -> Result<T, Problem>,
    ) -> Vec<T> {
        let at = self.at;
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| self.findings.take(format!("{at}.{field}[{i}]"), parse(v)))
            .collect()
    }
}

fn parse_ip_block(text: &str) -> Result<IpNet, Problem> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| Problem::invalid(text, "must be an IP address or a CIDR such as 10.0.0.0/16"))
}

fn policy_source(raw: RawSource, at: &str, findings: &mut Findings) -> PolicySource {
    let mut list = ListCheck { at, findings };
    let source = PolicySource {
        principals: list.each("principals", &raw.principals, parse_principal),
        not_principals: list.each("notPrincipals", &raw.not_principals, parse_principal),
        request_principals: list.each(
            "requestPrincipals",
            &raw.request_principals,
            StringMatch::parse,
        ),
        not_request_principals: list.each(
            "notRequestPrincipals",
            &raw.not_request_principals,
            StringMatch::parse,
        ),
        namespaces: list.each("namespaces", &raw.namespaces, StringMatch::parse),
        not_namespaces: list.each("notNamespaces", &raw.not_namespaces, StringMatch::parse),
        ip_blocks: list.each("ipBlocks", &raw.ip_blocks, parse_ip_block),
        not_ip_blocks: list.each("notIpBlocks", &raw.not_ip_blocks, parse_ip_block),
        remote_ip_blocks: list.each("remoteIpBlocks", &raw.remote_ip_blocks, parse_ip_block),
        not_remote_ip_blocks: list.each(
            "notRemoteIpBlocks",
            &raw.not_remote_ip_blocks,
            parse_ip_block,
        ),
    };
    if source == PolicySource::default() {
        findings.push(
            at,
            Problem::invalid(
                "{}",
                "a source must set at least one field; leave `from` out to match every source",
            ),
        );
    }
    source
}

fn parse_port_text(text: &str) -> Result<u16, Problem> {
    let number = text
        .parse::<i64>()
        .map_err(|_| Problem::invalid(text, "a port must be a number between 1 and 65535"))?;
    port_number(number)
}

fn policy_operation(raw: RawOperation, at: &str, findings: &mut Findings) -> PolicyOperation {
    let ports = |list: Vec<PortText>| list.into_iter().map(|p| p.0).collect::<Vec<_>>();
    let mut list = ListCheck { at, findings };
    let operation = PolicyOperation {
        hosts: list.each("hosts", &raw.hosts, StringMatch::parse),
        not_hosts: list.each("notHosts", &raw.not_hosts, StringMatch::parse),
        ports: list.each("ports", &ports(raw.ports), parse_port_text),
        not_ports: list.each("notPorts", &ports(raw.not_ports), parse_port_text),
        methods: list.each("methods", &raw.methods, StringMatch::parse),
        not_methods: list.each("notMethods", &raw.not_methods, StringMatch::parse),
        paths: list.each("paths", &raw.paths, StringMatch::parse),
        not_paths: list.each("notPaths", &raw.not_paths, StringMatch::parse),
    };
    if operation == PolicyOperation::default() {
        findings.push(
            at,
            Problem::invalid(
                "{}",
                "an operation must set at least one field; leave `to` out to match every operation",
            ),
        );
    }
    operation
}

/// The condition keys Istio knows, the bracketed ones as prefixes.
const CONDITION_KEYS: [&str; 11] = [
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.",
];
const BRACKETED_CONDITION_KEYS: [&str; 2] = ["request.headers[", "request.auth.claims["];

/// A check of one condition value.
type ValueCheck = fn(&str) -> Result<(), Problem>;

fn policy_condition(raw: RawCondition, at: &str, findings: &mut Findings) -> PolicyCondition {
    let key = raw.key.as_str();
    let known = CONDITION_KEYS[..10].contains(&key)
        || key.starts_with(CONDITION_KEYS[10])
        || BRACKETED_CONDITION_KEYS.iter().any(|prefix| {
            key.starts_with(prefix) && key.ends_with(']') && key.len() > prefix.len() + 1
        });
    if key.is_empty() {
        findings.push(format!("{at}.key"), Problem::Missing);
    } else if !known {
        findings.push(
            format!("{at}.key"),
            Problem::invalid(
                key,
                "not a condition Istio knows: use source.ip, remote.ip, source.namespace, \
                 source.principal, request.headers[<name>], request.auth.principal, \
                 request.auth.audiences, request.auth.presenter, request.auth.claims[<claim>], \
                 destination.ip, destination.port or connection.sni",
            ),
        );
    }
    if raw.values.is_empty() && raw.not_values.is_empty() {
        findings.push(
            format!("{at}.values"),
            Problem::invalid(Vec::<String>::new(), "set values or notValues"),
        );
    }
    let check: Option<ValueCheck> = match key {
        "source.ip" | "remote.ip" | "destination.ip" => Some(|v| parse_ip_block(v).map(drop)),
        "destination.port" => Some(|v| parse_port_text(v).map(drop)),
        "source.principal" => Some(|v| parse_principal(v).map(drop)),
        _ => None,
    };
    if let Some(check) = check {
        let mut list = ListCheck { at, findings };
        list.each("values", &raw.values, check);
        list.each("notValues", &raw.not_values, check);
    }
    PolicyCondition {
        key: raw.key,
        values: raw.values,
        not_values: raw.not_values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_must_look_like_identities() {
        let cases = [
            ("cluster.local/ns/shop/sa/cart", true),
            ("*", true),
            ("*/ns/shop/sa/cart", true),
            ("cluster.local/ns/shop/*", true),
            ("cart", false),
            ("spiffe://cluster.local/ns/shop/sa/cart", false),
            ("cluster.local/ns/Shop/sa/cart", false),
            ("cluster.local/ns/*/sa/cart", false),
            ("", false),
        ];
        for (text, ok) in cases {
            assert_eq!(parse_principal(text).is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn string_matches_follow_istio_wildcards() {
        let cases = [
            ("/api/*", "/api/v1", true),
            ("/api/*", "/web", false),
            ("*.local", "cart.local", true),
            ("*", "x", true),
            ("*", "", false),
            ("GET", "GET", true),
            ("GET", "POST", false),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                StringMatch::parse(pattern).unwrap().matches(value),
                expected,
                "{pattern} {value}"
            );
        }
    }
}
