//! Request routing: which rule of which route a request follows, and what that rule does to
//! it (header edits, redirects, rewrites, weighted backend choice).
//!
//! The table ([`RouteTable`]) is ordered by Gateway API precedence when it is built, so
//! selection here is "first entry whose match holds". Which entries apply:
//!
//! 1. routes attached to the destination service (GAMMA), for its port;
//! 2. otherwise routes attached to this waypoint's Gateway whose hostnames accept the
//!    destination service's hostname;
//! 3. otherwise none: the request goes to the destination service itself ([`Selection::Default`]),
//!    as Istio's waypoint does for services without routes.
//!
//! When routes apply but none matches, the answer is 404 ([`Selection::NoRoute`]).

mod path;
mod query;
mod rewrite;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::{HeaderMap, Method};
use rand::Rng;

use crate::config::{
    Backend, HeaderMatch, MatchEntry, PathMatch, QueryMatch, RouteMatch, RouteTable, Rule,
    StringMatch,
};

pub use path::{PathError, normalize_path, prefix_matches, replace_prefix};
pub use query::query_param;
pub use rewrite::{apply_header_modifier, redirect_location, rewrite_path};

/// What routing reads of a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The normalized path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The outcome of route selection.
#[derive(Clone, Debug)]
pub enum Selection {
    /// A rule matched.
    Matched(RouteChoice),
    /// Routes apply to the destination but none matched: 404.
    NoRoute,
    /// No route applies: forward to the destination service unchanged.
    Default,
}

/// A matched rule and what its match captured.
#[derive(Clone, Debug)]
pub struct RouteChoice {
    /// The rule to apply.
    pub rule: Arc<Rule>,
    /// The path prefix the match held on (without trailing slash), for prefix rewrites.
    pub matched_prefix: Option<Arc<str>>,
}

/// Selects the rule for a request bound for `service` (its hostname) on `port`.
pub fn select(
    table: &RouteTable,
    service: &str,
    port: u16,
    request: &RequestHead<'_>,
) -> Selection {
    let (routes, check_hostnames) = match table.service_routes(service, port) {
        Some(routes) => (routes, false),
        None => match table.gateway_routes(port) {
            Some(routes) => (routes, true),
            None => return Selection::Default,
        },
    };
    let mut applicable = false;
    for entry in &routes.entries {
        if check_hostnames && !hostname_accepted(&entry.hostnames, service) {
            continue;
        }
        applicable = true;
        if entry.condition().matches(request) {
            return Selection::Matched(choice(entry));
        }
    }
    if applicable {
        Selection::NoRoute
    } else {
        Selection::Default
    }
}

fn choice(entry: &MatchEntry) -> RouteChoice {
    let matched_prefix = match &entry.condition().path {
        Some(PathMatch::Prefix(prefix)) => Some(Arc::from(prefix.as_str())),
        _ => None,
    };
    RouteChoice {
        rule: entry.rule.clone(),
        matched_prefix,
    }
}

/// Whether a route with `hostnames` accepts `host` (exact, or `*.` suffix wildcards).
pub fn hostname_accepted(hostnames: &[Arc<str>], host: &str) -> bool {
    hostnames.is_empty()
        || hostnames.iter().any(|h| match h.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => &**h == host,
        })
}

impl RouteMatch {
    /// Whether every condition set on this match holds for `request`.
    pub fn matches(&self, request: &RequestHead<'_>) -> bool {
        self.method.as_ref().is_none_or(|m| m == request.method)
            && self.path.as_ref().is_none_or(|p| p.matches(request.path))
            && self.headers.iter().all(|h| h.matches(request.headers))
            && self.query.iter().all(|q| q.matches(request.query))
    }
}

impl PathMatch {
    /// Whether `path` (normalized, without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == exact,
            Self::Prefix(prefix) => prefix_matches(prefix, path),
            Self::Regex(regex) => regex.is_match(path),
        }
    }
}

impl StringMatch {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => value == exact,
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

impl HeaderMatch {
    /// Whether the header is present and its value (all values joined by ",") matches.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return false;
        };
        let Ok(first) = first.to_str() else {
            return false;
        };
        match values.next() {
            None => self.value.matches(first),
            Some(second) => {
                let mut joined = first.to_string();
                for value in std::iter::once(second).chain(values) {
                    let Ok(value) = value.to_str() else {
                        return false;
                    };
                    joined.push(',');
                    joined.push_str(value);
                }
                self.value.matches(&joined)
            }
        }
    }
}

impl QueryMatch {
    /// Whether the parameter is present and its first value matches.
    pub fn matches(&self, query: Option<&str>) -> bool {
        query
            .and_then(|q| query_param(q, &self.name))
            .is_some_and(|value| self.value.matches(&value))
    }
}

/// Picks a backend of `rule` by weight; `None` when every weight is zero or none is listed.
pub fn choose_backend<'a>(rule: &'a Rule, rng: &mut impl Rng) -> Option<&'a Backend> {
    if rule.total_weight == 0 {
        return None;
    }
    let mut point = rng.random_range(0..rule.total_weight);
    for backend in &rule.backends {
        let weight = u64::from(backend.weight);
        if point < weight {
            return Some(backend);
        }
        point -= weight;
    }
    None
}

/// Whether a request falls in a `percent` share (0-100).
pub fn in_share(percent: f64, rng: &mut impl Rng) -> bool {
    percent >= 100.0 || (percent > 0.0 && rng.random::<f64>() * 100.0 < percent)
}
