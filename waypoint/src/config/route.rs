//! Compiled routes: one [`Route`] per `RouteConfiguration`, its rules ready to match.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use mesh_proto::mesh::waypoint::v1 as wire;
use regex::Regex;

use super::{ConfigError, ConfigErrors, Problems, port, whole_match_regex};

mod actions;

use actions::{backend, fault, header_modifier, mirror, redirect, retry, rewrite, timeouts};

/// The wait before the first retry when a route gives none: Envoy's default, so a route
/// moved from Istio's waypoint behaves the same.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// One HTTPRoute, validated.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name`; also the resource name.
    pub name: Arc<str>,
    /// The route's namespace; backends without one resolve in it.
    pub namespace: Arc<str>,
    /// What the route attaches to.
    pub parents: Vec<Parent>,
    /// Hostnames the route accepts (lower case; `*.` wildcards), empty for any.
    pub hostnames: Vec<Arc<str>>,
    /// The rules, in the controller's order.
    pub rules: Vec<Arc<Rule>>,
}

/// The object a route attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    /// Traffic addressed to a service (GAMMA).
    Service {
        /// The service's fully qualified hostname.
        hostname: Arc<str>,
        /// Only this service port; 0 for every port.
        port: u16,
    },
    /// Every request through a waypoint Gateway.
    Gateway {
        /// `namespace/name` of the Gateway.
        name: Arc<str>,
        /// Only this destination port; 0 for every port.
        port: u16,
    },
}

/// One rule: conditions, then what to do with a matching request.
#[derive(Debug)]
pub struct Rule {
    /// The route this rule belongs to, for logs and metrics.
    pub route: Arc<str>,
    /// The rule's name, or its index when it has none.
    pub name: Arc<str>,
    /// Alternatives; never empty (an empty list compiles to one match-everything entry).
    pub matches: Vec<RouteMatch>,
    /// Weighted destinations.
    pub backends: Vec<Backend>,
    /// Sum of the backends' weights; 0 means the rule answers 500.
    pub total_weight: u64,
    /// Edits to the forwarded request.
    pub request_headers: HeaderModifier,
    /// Edits to the returned response.
    pub response_headers: HeaderModifier,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// Host and path changes before forwarding.
    pub rewrite: Option<UrlRewrite>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Retries; `None` means one attempt.
    pub retry: Option<RetryPolicy>,
    /// Fire-and-forget copies.
    pub mirrors: Vec<Mirror>,
    /// Injected delays and errors.
    pub fault: Option<Fault>,
}

/// Conditions on one request; every one that is set must hold.
#[derive(Debug)]
pub struct RouteMatch {
    /// `None` matches every path.
    pub path: Option<PathMatch>,
    /// All must hold.
    pub headers: Vec<HeaderMatch>,
    /// All must hold.
    pub query: Vec<QueryMatch>,
    /// `None` matches every method.
    pub method: Option<Method>,
}

/// A condition on the (normalized) request path.
#[derive(Debug)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A prefix by whole segments; stored without a trailing slash ("" for "/").
    Prefix(String),
    /// A whole-path regular expression.
    Regex(Regex),
}

/// A condition on a string value.
#[derive(Debug)]
pub enum StringMatch {
    /// Equal, byte for byte.
    Exact(String),
    /// A whole-value regular expression.
    Regex(Regex),
}

/// A condition on a request header (all values joined with ",").
#[derive(Debug)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// The condition on its value.
    pub value: StringMatch,
}

/// A condition on a query parameter's first value (percent-decoded).
#[derive(Debug)]
pub struct QueryMatch {
    /// The parameter name, compared case-sensitively.
    pub name: String,
    /// The condition on its value.
    pub value: StringMatch,
}

/// A destination service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Fully qualified service hostname.
    pub hostname: Arc<str>,
    /// The namespace to look the service up in when the hostname does not name one.
    pub namespace: Arc<str>,
    /// The service port.
    pub port: u16,
    /// Relative share of traffic.
    pub weight: u32,
}

/// Header edits, applied in the order remove, set, add.
#[derive(Debug, Default)]
pub struct HeaderModifier {
    /// Replace (or add) these.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append these.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Delete these.
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Whether applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A new path.
#[derive(Debug)]
pub enum PathModifier {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix, keeping the rest.
    Prefix(String),
}

/// A redirect answer.
#[derive(Debug)]
pub struct Redirect {
    /// "http" or "https"; `None` keeps the request's.
    pub scheme: Option<&'static str>,
    /// `None` keeps the request's host.
    pub hostname: Option<String>,
    /// `None` keeps the request's path.
    pub path: Option<PathModifier>,
    /// `None` derives it: the scheme's well-known port when `scheme` changes it, else the
    /// port the request arrived on (see `routing::redirect_location`).
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
}

/// Changes to a request before it is forwarded.
#[derive(Debug)]
pub struct UrlRewrite {
    /// New Host/:authority.
    pub hostname: Option<HeaderValue>,
    /// New path.
    pub path: Option<PathModifier>,
}

/// Deadlines of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// From the request's arrival until the response is complete, across all attempts.
    pub request: Option<Duration>,
    /// For each attempt, until its response is complete.
    pub backend_request: Option<Duration>,
}

/// When and how often to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Response status codes that are retried.
    pub codes: Vec<u16>,
    /// Base delay between attempts (grows exponentially, with jitter).
    pub backoff: Duration,
    /// Retry when no connection to the endpoint could be made.
    pub on_connect_failure: bool,
    /// Retry when the endpoint resets the stream before a response.
    pub on_reset: bool,
}

/// A copy of matching requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// Where the copies go.
    pub backend: Backend,
    /// Share of requests copied, 0-100.
    pub percent: f64,
}

/// Deliberate faults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fault {
    /// Hold some requests.
    pub delay: Option<FaultDelay>,
    /// Answer some requests with an error.
    pub abort: Option<FaultAbort>,
}

/// Hold a share of requests.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultDelay {
    /// How long.
    pub delay: Duration,
    /// Share of requests, 0-100.
    pub percent: f64,
}

/// Answer a share of requests with an error.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultAbort {
    /// The status to answer with.
    pub status: StatusCode,
    /// Share of requests, 0-100.
    pub percent: f64,
}

/// Compiles one `RouteConfiguration` named `resource_name`, reporting every problem in it.
pub fn compile_route(
    resource_name: &str,
    wire: &wire::RouteConfiguration,
) -> Result<Route, ConfigErrors> {
    let mut problems = Problems::default();
    if wire.name != resource_name {
        problems.push(ConfigError::NameMismatch {
            expected: wire.name.clone(),
        });
    }
    let name: Arc<str> = resource_name.into();
    let namespace: Arc<str> = wire.namespace.as_str().into();
    let parents: Vec<Parent> = wire
        .parents
        .iter()
        .enumerate()
        .filter_map(|(i, p)| problems.check(parent(p, &format!("parents[{i}]"))))
        .collect();
    let hostnames = wire
        .hostnames
        .iter()
        .map(|h| Arc::from(h.to_ascii_lowercase()))
        .collect();
    let rules: Vec<Arc<Rule>> = wire
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let context = RuleContext {
                route: &name,
                namespace: &namespace,
                field: format!("rules[{i}]"),
                index: i,
            };
            rule(r, &context, &mut problems).map(Arc::new)
        })
        .collect();
    problems.finish(|| Route {
        name,
        namespace,
        parents,
        hostnames,
        rules,
    })
}

fn parent(wire: &wire::ParentRef, field: &str) -> Result<Parent, ConfigError> {
    use wire::parent_ref::Target;
    let port = match wire.port {
        0 => 0,
        value => port(value, format!("{field}.port"))?,
    };
    match &wire.target {
        Some(Target::Service(hostname)) if !hostname.is_empty() => Ok(Parent::Service {
            hostname: hostname.to_ascii_lowercase().into(),
            port,
        }),
        Some(Target::Gateway(name)) if !name.is_empty() => Ok(Parent::Gateway {
            name: name.as_str().into(),
            port,
        }),
        _ => Err(ConfigError::MissingField {
            field: format!("{field}.target"),
        }),
    }
}

struct RuleContext<'a> {
    route: &'a Arc<str>,
    namespace: &'a Arc<str>,
    field: String,
    index: usize,
}

fn rule(wire: &wire::Rule, cx: &RuleContext<'_>, problems: &mut Problems) -> Option<Rule> {
    let before = problems.0.len();
    let field = &cx.field;
    let mut matches: Vec<RouteMatch> = wire
        .matches
        .iter()
        .enumerate()
        .filter_map(|(i, m)| route_match(m, &format!("{field}.matches[{i}]"), problems))
        .collect();
    if wire.matches.is_empty() {
        // Gateway API's default match is the path prefix "/".
        matches.push(RouteMatch {
            path: Some(PathMatch::Prefix(String::new())),
            headers: Vec::new(),
            query: Vec::new(),
            method: None,
        });
    }
    let backends: Vec<Backend> = wire
        .backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            problems.check(backend(b, cx.namespace, &format!("{field}.backends[{i}]")))
        })
        .collect();
    let total_weight = backends.iter().map(|b| u64::from(b.weight)).sum();
    let request_headers = header_modifier(
        wire.request_headers.as_ref(),
        &format!("{field}.request_headers"),
        problems,
    );
    let response_headers = header_modifier(
        wire.response_headers.as_ref(),
        &format!("{field}.response_headers"),
        problems,
    );
    let all_prefix = matches
        .iter()
        .all(|m| matches!(m.path, Some(PathMatch::Prefix(_))));
    let redirect = wire
        .redirect
        .as_ref()
        .and_then(|r| problems.check(redirect(r, all_prefix, &format!("{field}.redirect"))));
    let rewrite = wire
        .rewrite
        .as_ref()
        .and_then(|r| problems.check(rewrite(r, all_prefix, &format!("{field}.rewrite"))));
    let timeouts = wire
        .timeouts
        .as_ref()
        .and_then(|t| problems.check(timeouts(t, &format!("{field}.timeouts"))))
        .unwrap_or_default();
    let retry = wire
        .retry
        .as_ref()
        .and_then(|r| problems.check(retry(r, &format!("{field}.retry"))));
    let mirrors = wire
        .mirrors
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            problems.check(mirror(m, cx.namespace, &format!("{field}.mirrors[{i}]")))
        })
        .collect();
    let fault = wire
        .fault
        .as_ref()
        .and_then(|f| problems.check(fault(f, &format!("{field}.fault"))));
    if problems.0.len() != before {
        return None;
    }
    let name = if wire.name.is_empty() {
        cx.index.to_string()
    } else {
        wire.name.clone()
    };
    Some(Rule {
        route: cx.route.clone(),
        name: name.into(),
        matches,
        backends,
        total_weight,
        request_headers,
        response_headers,
        redirect,
        rewrite,
        timeouts,
        retry,
        mirrors,
        fault,
    })
}

fn route_match(
    wire: &wire::RouteMatch,
    field: &str,
    problems: &mut Problems,
) -> Option<RouteMatch> {
    use wire::path_match::Kind;
    let before = problems.0.len();
    let path = wire.path.as_ref().and_then(|p| match &p.kind {
        Some(Kind::Exact(path)) => problems
            .check(absolute_path(path, &format!("{field}.path.exact")))
            .map(|()| PathMatch::Exact(path.clone())),
        Some(Kind::Prefix(path)) => problems
            .check(absolute_path(path, &format!("{field}.path.prefix")))
            .map(|()| PathMatch::Prefix(path.trim_end_matches('/').to_string())),
        Some(Kind::Regex(pattern)) => problems
            .check(whole_match_regex(pattern, format!("{field}.path.regex")))
            .map(PathMatch::Regex),
        None => None,
    });
    let headers = wire
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| problems.check(header_match(h, &format!("{field}.headers[{i}]"))))
        .collect();
    let query = wire
        .query_params
        .iter()
        .enumerate()
        .filter_map(|(i, q)| problems.check(query_match(q, &format!("{field}.query_params[{i}]"))))
        .collect();
    let method = if wire.method.is_empty() {
        None
    } else {
        problems.check(Method::from_bytes(wire.method.as_bytes()).map_err(|_| {
            ConfigError::BadMethod {
                field: format!("{field}.method"),
                method: wire.method.clone(),
            }
        }))
    };
    (problems.0.len() == before).then_some(RouteMatch {
        path,
        headers,
        query,
        method,
    })
}

fn absolute_path(path: &str, field: &str) -> Result<(), ConfigError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::BadPath {
            field: field.to_string(),
            path: path.to_string(),
        })
    }
}

fn string_match(
    exact: Option<&String>,
    regex: Option<&String>,
    field: &str,
) -> Result<StringMatch, ConfigError> {
    match (exact, regex) {
        (Some(value), _) => Ok(StringMatch::Exact(value.clone())),
        (None, Some(pattern)) => {
            whole_match_regex(pattern, format!("{field}.regex")).map(StringMatch::Regex)
        }
        (None, None) => Err(ConfigError::MissingField {
            field: format!("{field}.value"),
        }),
    }
}

fn header_match(wire: &wire::HeaderMatch, field: &str) -> Result<HeaderMatch, ConfigError> {
    use wire::header_match::Value;
    let name = header_name(&wire.name, &format!("{field}.name"))?;
    let (exact, regex) = match &wire.value {
        Some(Value::Exact(v)) => (Some(v), None),
        Some(Value::Regex(v)) => (None, Some(v)),
        None => (None, None),
    };
    Ok(HeaderMatch {
        name,
        value: string_match(exact, regex, field)?,
    })
}

fn query_match(wire: &wire::QueryParamMatch, field: &str) -> Result<QueryMatch, ConfigError> {
    use wire::query_param_match::Value;
    if wire.name.is_empty() {
        return Err(ConfigError::MissingField {
            field: format!("{field}.name"),
        });
    }
    let (exact, regex) = match &wire.value {
        Some(Value::Exact(v)) => (Some(v), None),
        Some(Value::Regex(v)) => (None, Some(v)),
        None => (None, None),
    };
    Ok(QueryMatch {
        name: wire.name.clone(),
        value: string_match(exact, regex, field)?,
    })
}

pub(crate) fn header_name(name: &str, field: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::BadHeaderName {
        field: field.to_string(),
        name: name.to_string(),
    })
}
