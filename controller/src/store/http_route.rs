//! Gateway API `HTTPRoute`: the routing a waypoint applies. Decoded leniently (unknown fields are
//! ignored), checked as the Gateway API's CRD validation checks it, and flattened with the
//! API's defaults filled in (a rule without matches matches every path, weights default to 1).

use std::sync::Arc;
use std::time::Duration;

use super::kube_syntax::{Labels, check_dns_subdomain, port_number};
use super::object::{NamespacedName, metadata_labels};
use super::rejection::{FieldProblem, Findings, Problem};

mod filter;
mod raw;

pub use filter::{HeaderModifier, Mirror, PathModifier, Redirect, Rewrite, RouteFilter};

use filter::route_filter;
pub(crate) use raw::RawHttpRoute;
use raw::{RawBackendRef, RawMatch, RawNameValue, RawParentRef, RawRetry, RawRule, RawTimeouts};

/// The API group of Gateway API objects; the default group of a parent reference.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// An HTTP route of the desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The route name.
    pub name: Arc<str>,
    /// Labels of the route.
    pub labels: Labels,
    /// Annotations of the route; the mesh reads its fault injection settings from them.
    pub annotations: Labels,
    /// Host names the route answers for; empty means every host.
    pub hostnames: Vec<String>,
    /// What the route attaches to: waypoint Gateways, or Services (mesh routing).
    pub parent_refs: Vec<ParentRef>,
    /// The rules, in order.
    pub rules: Vec<RouteRule>,
}

/// A parent of a route, with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    /// API group: `gateway.networking.k8s.io` by default, empty for a Service.
    pub group: String,
    /// `Gateway` by default, or `Service`.
    pub kind: String,
    /// The parent's name.
    pub name: String,
    /// The parent's namespace: the route's own unless given.
    pub namespace: Arc<str>,
    /// Only this port of the parent, if given.
    pub port: Option<u16>,
    /// Only this listener of the parent, if given.
    pub section_name: Option<String>,
}

/// One rule of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// Alternatives; a request matching any of them takes the rule. Never empty: a rule written
    /// without matches gets the API's default, every path.
    pub matches: Vec<RouteMatch>,
    /// Filters applied to matching requests, in order.
    pub filters: Vec<RouteFilter>,
    /// Where matching requests go, split by weight.
    pub backend_refs: Vec<BackendRef>,
    /// Timeouts; `None` leaves the proxy's default. A zero duration disables the timeout.
    pub timeouts: RouteTimeouts,
    /// Retries, when configured.
    pub retry: Option<RouteRetry>,
}

/// A request match: every given part must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    /// The path match (`PathPrefix /` when not written).
    pub path: PathMatch,
    /// Header matches.
    pub headers: Vec<ValueMatch>,
    /// Query parameter matches.
    pub query_params: Vec<ValueMatch>,
    /// The HTTP method, if restricted.
    pub method: Option<String>,
}

/// How the request path is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The exact path.
    Exact(String),
    /// A path prefix, on `/`-separated segment boundaries.
    Prefix(String),
    /// A regular expression.
    RegularExpression(String),
}

/// A header or query parameter match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueMatch {
    /// The header or parameter name.
    pub name: String,
    /// The value (or regular expression).
    pub value: String,
    /// Whether `value` is a regular expression rather than an exact value.
    pub regular_expression: bool,
}

/// A backend of a rule, with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendRef {
    /// API group; empty (core) for a Service.
    pub group: String,
    /// `Service` by default.
    pub kind: String,
    /// The backend's name.
    pub name: String,
    /// The backend's namespace: the route's own unless given.
    pub namespace: Arc<str>,
    /// The service port; required for a Service.
    pub port: Option<u16>,
    /// The relative weight (1 by default, 0 sends nothing).
    pub weight: u32,
}

/// `timeouts` of a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// The whole request, retries included.
    pub request: Option<Duration>,
    /// One try to the backend.
    pub backend_request: Option<Duration>,
}

/// `retry` of a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteRetry {
    /// HTTP status codes that are retried.
    pub codes: Vec<u16>,
    /// The most retries, when given.
    pub attempts: Option<u32>,
    /// The wait between tries, when given.
    pub backoff: Option<Duration>,
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Makes the store's HttpRoute from a decoded manifest, checking every field.
pub(crate) fn http_route_from_manifest(
    raw: RawHttpRoute,
    id: NamespacedName,
) -> Result<HttpRoute, Vec<FieldProblem>> {
    let mut findings = Findings::default();
    let labels = metadata_labels(&raw.metadata, &mut findings);
    let spec = raw.spec.unwrap_or_default();
    let hostnames = spec.hostnames;
    for (i, host) in hostnames.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        findings.take(format!("spec.hostnames[{i}]"), check_dns_subdomain(bare));
    }
    let parent_refs = spec
        .parent_refs
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| parent_ref(r, &id, &format!("spec.parentRefs[{i}]"), &mut findings))
        .collect();
    let rules = spec
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| route_rule(r, &id, &format!("spec.rules[{i}]"), &mut findings))
        .collect();
    findings.finish(HttpRoute {
        namespace: id.namespace,
        name: id.name,
        labels,
        annotations: raw.metadata.annotations.unwrap_or_default(),
        hostnames,
        parent_refs,
        rules,
    })
}

/// A required field: the value, or a `Missing` problem at `field`.
fn required<T>(value: Option<T>, field: String, findings: &mut Findings) -> Option<T> {
    if value.is_none() {
        findings.push(field, Problem::Missing);
    }
    value
}

fn optional_port(port: Option<i64>, field: String, findings: &mut Findings) -> Option<u16> {
    port.and_then(|p| findings.take(field, port_number(p)))
}

fn parent_ref(
    raw: RawParentRef,
    id: &NamespacedName,
    at: &str,
    findings: &mut Findings,
) -> Option<ParentRef> {
    let name = required(
        raw.name.filter(|n| !n.is_empty()),
        format!("{at}.name"),
        findings,
    );
    let port = optional_port(raw.port, format!("{at}.port"), findings);
    Some(ParentRef {
        group: raw.group.unwrap_or_else(|| GATEWAY_API_GROUP.to_string()),
        kind: raw.kind.unwrap_or_else(|| "Gateway".to_string()),
        name: name?,
        namespace: raw
            .namespace
            .map_or_else(|| id.namespace.clone(), Arc::from),
        port,
        section_name: raw.section_name,
    })
}

fn backend_ref(
    raw: RawBackendRef,
    id: &NamespacedName,
    at: &str,
    findings: &mut Findings,
) -> Option<BackendRef> {
    let name = required(
        raw.name.filter(|n| !n.is_empty()),
        format!("{at}.name"),
        findings,
    );
    let kind = raw.kind.unwrap_or_else(|| "Service".to_string());
    let port = optional_port(raw.port, format!("{at}.port"), findings);
    if kind == "Service" && raw.port.is_none() {
        findings.push(format!("{at}.port"), Problem::Missing);
    }
    let weight = match raw.weight {
        None => 1,
        Some(w) => findings
            .take(
                format!("{at}.weight"),
                u32::try_from(w)
                    .ok()
                    .filter(|w| *w <= 1_000_000)
                    .ok_or_else(|| Problem::invalid_number(w, "a weight is between 0 and 1000000")),
            )
            .unwrap_or(0),
    };
    Some(BackendRef {
        group: raw.group.unwrap_or_default(),
        kind,
        name: name?,
        namespace: raw
            .namespace
            .map_or_else(|| id.namespace.clone(), Arc::from),
        port,
        weight,
    })
}

fn route_rule(raw: RawRule, id: &NamespacedName, at: &str, findings: &mut Findings) -> RouteRule {
    let mut matches: Vec<RouteMatch> = raw
        .matches
        .into_iter()
        .enumerate()
        .map(|(i, m)| route_match(m, &format!("{at}.matches[{i}]"), findings))
        .collect();
    if matches.is_empty() {
        matches.push(RouteMatch {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        });
    }
    let filters: Vec<RouteFilter> = raw
        .filters
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| route_filter(f, id, &format!("{at}.filters[{i}]"), findings))
        .collect();
    let redirects = filters
        .iter()
        .any(|f| matches!(f, RouteFilter::RequestRedirect(_)));
    let rewrites = filters
        .iter()
        .any(|f| matches!(f, RouteFilter::UrlRewrite(_)));
    if redirects && rewrites {
        findings.push(
            format!("{at}.filters"),
            Problem::invalid(
                "RequestRedirect and URLRewrite",
                "a rule may use only one of them",
            ),
        );
    }
    let backend_refs = raw
        .backend_refs
        .into_iter()
        .enumerate()
        .filter_map(|(i, b)| backend_ref(b, id, &format!("{at}.backendRefs[{i}]"), findings))
        .collect();
    RouteRule {
        matches,
        filters,
        backend_refs,
        timeouts: raw
            .timeouts
            .map(|t| timeouts(t, &format!("{at}.timeouts"), findings))
            .unwrap_or_default(),
        retry: raw
            .retry
            .map(|r| retry(r, &format!("{at}.retry"), findings)),
    }
}

fn route_match(raw: RawMatch, at: &str, findings: &mut Findings) -> RouteMatch {
    let path = match raw.path {
        None => PathMatch::Prefix("/".into()),
        Some(path) => {
            let value = path.value.unwrap_or_else(|| "/".to_string());
            let kind = path.type_.unwrap_or_else(|| "PathPrefix".to_string());
            let absolute = || {
                if value.starts_with('/') {
                    Ok(())
                } else {
                    Err(Problem::invalid(
                        &value,
                        "an Exact or PathPrefix path starts with '/'",
                    ))
                }
            };
            match kind.as_str() {
                "Exact" => findings
                    .take(format!("{at}.path.value"), absolute())
                    .map(|()| PathMatch::Exact(value.clone())),
                "PathPrefix" => findings
                    .take(format!("{at}.path.value"), absolute())
                    .map(|()| PathMatch::Prefix(value.clone())),
                "RegularExpression" => Some(PathMatch::RegularExpression(value.clone())),
                other => {
                    findings.push(
                        format!("{at}.path.type"),
                        Problem::invalid(other, "must be Exact, PathPrefix or RegularExpression"),
                    );
                    None
                }
            }
            .unwrap_or(PathMatch::Prefix("/".into()))
        }
    };
    let method = raw.method;
    if let Some(method) = &method
        && !METHODS.contains(&method.as_str())
    {
        findings.push(
            format!("{at}.method"),
            Problem::invalid(method, format!("must be one of {}", METHODS.join(", "))),
        );
    }
    RouteMatch {
        path,
        headers: value_matches(raw.headers, &format!("{at}.headers"), findings),
        query_params: value_matches(raw.query_params, &format!("{at}.queryParams"), findings),
        method,
    }
}

fn value_matches(raw: Vec<RawNameValue>, at: &str, findings: &mut Findings) -> Vec<ValueMatch> {
    let mut result = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let at = format!("{at}[{i}]");
        let regular_expression = match entry.type_.as_deref() {
            None | Some("Exact") => false,
            Some("RegularExpression") => true,
            Some(other) => {
                findings.push(
                    format!("{at}.type"),
                    Problem::invalid(other, "must be Exact or RegularExpression"),
                );
                false
            }
        };
        let name = required(
            entry.name.filter(|n| !n.is_empty()),
            format!("{at}.name"),
            findings,
        );
        let value = required(entry.value, format!("{at}.value"), findings);
        if let (Some(name), Some(value)) = (name, value) {
            result.push(ValueMatch {
                name,
                value,
                regular_expression,
            });
        }
    }
    result
}

fn timeouts(raw: RawTimeouts, at: &str, findings: &mut Findings) -> RouteTimeouts {
    let request = raw
        .request
        .and_then(|d| findings.take(format!("{at}.request"), parse_gateway_duration(&d)));
    let backend_request = raw
        .backend_request
        .and_then(|d| findings.take(format!("{at}.backendRequest"), parse_gateway_duration(&d)));
    if let (Some(request), Some(backend)) = (request, backend_request)
        && !request.is_zero()
        && backend > request
    {
        findings.push(
            format!("{at}.backendRequest"),
            Problem::invalid(backend, "must not be longer than the request timeout"),
        );
    }
    RouteTimeouts {
        request,
        backend_request,
    }
}

fn retry(raw: RawRetry, at: &str, findings: &mut Findings) -> RouteRetry {
    let codes = raw
        .codes
        .into_iter()
        .enumerate()
        .filter_map(|(i, code)| {
            let valid = u16::try_from(code).ok().filter(|c| (400..=599).contains(c));
            findings.take(
                format!("{at}.codes[{i}]"),
                valid.ok_or_else(|| {
                    Problem::invalid_number(code, "a retried status code is between 400 and 599")
                }),
            )
        })
        .collect();
    let attempts = raw.attempts.and_then(|a| {
        findings.take(
            format!("{at}.attempts"),
            u32::try_from(a).map_err(|_| Problem::invalid_number(a, "must be 0 or more")),
        )
    });
    let backoff = raw
        .backoff
        .and_then(|d| findings.take(format!("{at}.backoff"), parse_gateway_duration(&d)));
    RouteRetry {
        codes,
        attempts,
        backoff,
    }
}

/// Parses a Gateway API duration: one to four `<number><unit>` parts, units `h`, `m`, `s`, `ms`,
/// numbers of at most five digits (`10s`, `1h30m`, `500ms`, `0s`).
pub fn parse_gateway_duration(text: &str) -> Result<Duration, Problem> {
    let bad = || {
        Problem::invalid(
            text,
            "a duration is one to four <number><unit> parts with units h, m, s or ms, such as \
             10s, 1m30s or 500ms",
        )
    };
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(number).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_gateway_api_format() {
        let cases = [
            ("10s", Some(Duration::from_secs(10))),
            ("1h30m", Some(Duration::from_secs(5400))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1m1s1ms", Some(Duration::from_millis(61_001))),
            ("0s", Some(Duration::ZERO)),
            ("", None),
            ("10", None),
            ("1.5s", None),
            ("123456s", None),
            ("1h1h1h1h1h", None),
            ("-1s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_gateway_duration(text).ok(), expected, "{text}");
        }
    }
}
