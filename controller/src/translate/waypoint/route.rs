//! HTTPRoute -> `mesh.waypoint.v1.RouteConfiguration`.

use std::cmp::Reverse;
use std::time::Duration;

use mesh_proto::mesh::waypoint::v1 as wire;
use wire::{header_match, parent_ref, path_match, path_modifier, query_param_match};

use super::fault::fault_injection;
use super::proto_duration;
use crate::store::http_route::GATEWAY_API_GROUP;
use crate::store::{
    BackendRef, DesiredState, HeaderModifier, HttpRoute, NamespacedName, ParentRef, PathMatch,
    PathModifier, RouteFilter, RouteMatch, RouteRetry, RouteRule, RouteTimeouts, ValueMatch,
};
use crate::translate::{TranslateConfig, Warning};

/// Retries after the first attempt when a route's `retry` leaves `attempts` out, as Istio's
/// default retry policy.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// What one route's translation needs, and where its warnings go.
pub(super) struct RouteTranslation<'a> {
    pub(super) state: &'a DesiredState,
    pub(super) config: &'a TranslateConfig,
    pub(super) route: &'a HttpRoute,
    pub(super) warnings: &'a mut Vec<Warning>,
}

impl RouteTranslation<'_> {
    fn warn(&mut self, message: String) {
        self.warnings.push(Warning {
            object: format!("HTTPRoute {}/{}", self.route.namespace, self.route.name),
            message,
        });
    }

    /// The route as the waypoint applies it; `None` when it attaches to nothing the mesh has.
    pub(super) fn configuration(mut self) -> Option<wire::RouteConfiguration> {
        let route = self.route;
        let parents: Vec<wire::ParentRef> = route
            .parent_refs
            .iter()
            .enumerate()
            .filter_map(|(i, parent)| self.parent(&format!("spec.parentRefs[{i}]"), parent))
            .collect();
        if parents.is_empty() {
            self.warn(
                "no parent is a waypoint Gateway or a Service of the mesh: the route applies \
                 nowhere"
                    .into(),
            );
            return None;
        }
        let fault = fault_injection(&route.annotations, |key, error| {
            self.warn(format!(
                "metadata.annotations[{key:?}]: {error}; the route applies without this fault"
            ));
        });
        let rules: Vec<wire::Rule> = route
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| self.rule(&format!("spec.rules[{i}]"), rule, fault.as_ref()))
            .collect();
        Some(wire::RouteConfiguration {
            name: format!("{}/{}", route.namespace, route.name),
            namespace: route.namespace.to_string(),
            parents,
            hostnames: route.hostnames.clone(),
            rules: by_precedence(&route.rules, rules),
        })
    }

    fn parent(&mut self, at: &str, parent: &ParentRef) -> Option<wire::ParentRef> {
        let name = NamespacedName::new(parent.namespace.clone(), parent.name.as_str());
        let (target, port) = match (parent.group.as_str(), parent.kind.as_str()) {
            ("" | "core", "Service") => {
                let port = self.service_parent(at, &name, parent)?;
                let hostname = self.config.hostname(&name.namespace, &name.name);
                (parent_ref::Target::Service(hostname), port)
            }
            (GATEWAY_API_GROUP, "Gateway") => {
                self.gateway_parent(at, &name, parent)?;
                (parent_ref::Target::Gateway(name.to_string()), 0)
            }
            (group, kind) => {
                self.warn(format!(
                    "{at}: a parent of kind {kind} (group {group:?}) is not supported: a route \
                     attaches to a waypoint Gateway or a Service; this parent is ignored"
                ));
                return None;
            }
        };
        Some(wire::ParentRef {
            target: Some(target),
            port,
        })
    }

    /// Checks a Service parent; gives the port the route is restricted to (0: every port).
    fn service_parent(
        &mut self,
        at: &str,
        name: &NamespacedName,
        parent: &ParentRef,
    ) -> Option<u32> {
        let Some(service) = self.state.services.get(name) else {
            self.warn(format!(
                "{at}: Service {name} does not exist; this parent is ignored"
            ));
            return None;
        };
        let port = match (parent.port, &parent.section_name) {
            (Some(port), _) => service.ports.iter().find(|p| p.port == port),
            (None, Some(section)) => service
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(section.as_str())),
            (None, None) => None,
        };
        let restricted = parent.port.is_some() || parent.section_name.is_some();
        if restricted && port.is_none() {
            let wanted = parent.port.map_or_else(
                || {
                    format!(
                        "named {:?}",
                        parent.section_name.as_deref().unwrap_or_default()
                    )
                },
                |port| port.to_string(),
            );
            self.warn(format!(
                "{at}: Service {name} has no port {wanted}; this parent is ignored"
            ));
            return None;
        }
        if self.state.service_waypoint(service).is_none() {
            self.warn(format!(
                "{at}: Service {name} is not bound to a waypoint (istio.io/use-waypoint): the \
                 route takes effect once it is"
            ));
        }
        Some(port.map_or(0, |p| p.port.into()))
    }

    /// Checks a Gateway parent: it must be a waypoint, and a port or section must name one of
    /// its listeners. Every listener of a waypoint carries all its traffic, so the route then
    /// covers every port.
    fn gateway_parent(
        &mut self,
        at: &str,
        name: &NamespacedName,
        parent: &ParentRef,
    ) -> Option<()> {
        let Some(gateway) = self.state.waypoint(name) else {
            self.warn(format!(
                "{at}: {name} is not a Gateway of class istio-waypoint; this parent is ignored"
            ));
            return None;
        };
        let listener_ok = gateway.listeners.iter().any(|l| {
            parent.port.is_none_or(|port| port == l.port)
                && parent.section_name.as_ref().is_none_or(|s| *s == l.name)
        });
        if !listener_ok {
            self.warn(format!(
                "{at}: Gateway {name} has no listener with this port and section name; this \
                 parent is ignored"
            ));
            return None;
        }
        Some(())
    }

    /// One rule without its matches (those are placed by precedence afterwards).
    fn rule(
        &mut self,
        at: &str,
        rule: &RouteRule,
        fault: Option<&wire::FaultInjection>,
    ) -> wire::Rule {
        let mut out = wire::Rule {
            backends: rule
                .backend_refs
                .iter()
                .enumerate()
                .filter_map(|(i, b)| self.backend(&format!("{at}.backendRefs[{i}]"), b))
                .collect(),
            timeouts: timeouts(&rule.timeouts),
            retry: rule.retry.as_ref().map(retry),
            fault: fault.cloned(),
            ..Default::default()
        };
        for (i, filter) in rule.filters.iter().enumerate() {
            self.filter(&format!("{at}.filters[{i}]"), filter, &mut out);
        }
        let forwards = out.redirect.is_none();
        if forwards && out.backends.is_empty() && !rule.backend_refs.is_empty() {
            self.warn(format!(
                "{at}: no backend of this rule resolves: its requests are answered with 500"
            ));
        }
        out
    }

    /// Applies one filter of a rule to its wire form.
    fn filter(&mut self, at: &str, filter: &RouteFilter, out: &mut wire::Rule) {
        match filter {
            RouteFilter::RequestHeaderModifier(m) => {
                merge_headers(out.request_headers.get_or_insert_default(), m);
            }
            RouteFilter::ResponseHeaderModifier(m) => {
                merge_headers(out.response_headers.get_or_insert_default(), m);
            }
            RouteFilter::RequestRedirect(r) => {
                out.redirect = Some(wire::Redirect {
                    scheme: r.scheme.clone().unwrap_or_default(),
                    hostname: r.hostname.clone().unwrap_or_default(),
                    path: r.path.as_ref().map(path_modifier),
                    port: r.port.map_or(0, u32::from),
                    status_code: r.status_code.into(),
                });
            }
            RouteFilter::UrlRewrite(r) => {
                out.rewrite = Some(wire::UrlRewrite {
                    hostname: r.hostname.clone().unwrap_or_default(),
                    path: r.path.as_ref().map(path_modifier),
                });
            }
            RouteFilter::RequestMirror(m) => {
                let at = format!("{at}.requestMirror.backendRef");
                if let Some(backend) = self.backend(&at, &m.backend) {
                    out.mirrors.push(wire::Mirror {
                        backend: Some(backend),
                        percent: m.percent.into(),
                    });
                }
            }
        }
    }

    /// A backend as a service hostname and port; `None`, with a warning, when it does not
    /// resolve. Its share of the traffic then goes to the rule's other backends.
    fn backend(&mut self, at: &str, backend: &BackendRef) -> Option<wire::Backend> {
        let name = NamespacedName::new(backend.namespace.clone(), backend.name.as_str());
        let is_service = matches!(backend.group.as_str(), "" | "core") && backend.kind == "Service";
        if !is_service {
            self.warn(format!(
                "{at}: a backend of kind {} (group {:?}) is not supported: backends are Services; \
                 this backend is dropped",
                backend.kind, backend.group
            ));
            return None;
        }
        let Some(service) = self.state.services.get(&name) else {
            self.warn(format!(
                "{at}: Service {name} does not exist; this backend is dropped"
            ));
            return None;
        };
        let port = backend.port?;
        if !service.ports.iter().any(|p| p.port == port) {
            self.warn(format!(
                "{at}: Service {name} has no port {port}; this backend is dropped"
            ));
            return None;
        }
        Some(wire::Backend {
            hostname: self.config.hostname(&name.namespace, &name.name),
            port: port.into(),
            weight: backend.weight,
        })
    }
}

/// Orders the rules by the Gateway API's match precedence: each match of each rule is ranked
/// (see [`precedence`]), ties keep the route's order, and neighbouring matches of the same rule
/// share one wire rule. A rule whose matches land apart is split, which changes nothing for the
/// waypoint: the first rule with a matching match wins.
fn by_precedence(rules: &[RouteRule], translated: Vec<wire::Rule>) -> Vec<wire::Rule> {
    let mut ranked: Vec<(usize, &RouteMatch)> = rules
        .iter()
        .enumerate()
        .flat_map(|(i, rule)| rule.matches.iter().map(move |m| (i, m)))
        .collect();
    ranked.sort_by_key(|(_, m)| Reverse(precedence(m)));
    let mut out: Vec<(usize, wire::Rule)> = Vec::with_capacity(ranked.len());
    for (index, m) in ranked {
        match out.last_mut() {
            Some((last, rule)) if *last == index => rule.matches.push(route_match(m)),
            _ => {
                let mut rule = translated[index].clone();
                rule.matches = vec![route_match(m)];
                out.push((index, rule));
            }
        }
    }
    out.into_iter().map(|(_, rule)| rule).collect()
}

/// The rank of a match, highest first, as Istio orders HTTPRoute matches: exact paths, then
/// regular expressions, then prefixes; longer paths first; then a method, more headers, more
/// query parameters.
fn precedence(m: &RouteMatch) -> (u8, usize, bool, usize, usize) {
    let (kind, path) = match &m.path {
        PathMatch::Exact(p) => (3, p),
        PathMatch::RegularExpression(p) => (2, p),
        PathMatch::Prefix(p) => (1, p),
    };
    (
        kind,
        path.len(),
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

fn route_match(m: &RouteMatch) -> wire::RouteMatch {
    let path = match &m.path {
        PathMatch::Exact(p) => path_match::Kind::Exact(p.clone()),
        PathMatch::Prefix(p) => path_match::Kind::Prefix(p.clone()),
        PathMatch::RegularExpression(p) => path_match::Kind::Regex(p.clone()),
    };
    wire::RouteMatch {
        path: Some(wire::PathMatch { kind: Some(path) }),
        headers: m
            .headers
            .iter()
            .map(|h| wire::HeaderMatch {
                name: h.name.clone(),
                value: Some(value_match(
                    h,
                    header_match::Value::Regex,
                    header_match::Value::Exact,
                )),
            })
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| wire::QueryParamMatch {
                name: q.name.clone(),
                value: Some(value_match(
                    q,
                    query_param_match::Value::Regex,
                    query_param_match::Value::Exact,
                )),
            })
            .collect(),
        method: m.method.clone().unwrap_or_default(),
    }
}

fn value_match<V>(m: &ValueMatch, regex: fn(String) -> V, exact: fn(String) -> V) -> V {
    if m.regular_expression {
        regex(m.value.clone())
    } else {
        exact(m.value.clone())
    }
}

fn merge_headers(out: &mut wire::HeaderModifier, m: &HeaderModifier) {
    let headers = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .map(|(name, value)| wire::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect::<Vec<_>>()
    };
    out.set.extend(headers(&m.set));
    out.add.extend(headers(&m.add));
    out.remove.extend(m.remove.iter().cloned());
}

fn path_modifier(m: &PathModifier) -> wire::PathModifier {
    let kind = match m {
        PathModifier::ReplaceFullPath(p) => path_modifier::Kind::Full(p.clone()),
        PathModifier::ReplacePrefixMatch(p) => path_modifier::Kind::Prefix(p.clone()),
    };
    wire::PathModifier { kind: Some(kind) }
}

/// Timeouts; a zero duration means none, as in the Gateway API.
fn timeouts(t: &RouteTimeouts) -> Option<wire::Timeouts> {
    let set = |d: Option<Duration>| d.filter(|d| !d.is_zero()).map(proto_duration);
    let out = wire::Timeouts {
        request: set(t.request),
        backend_request: set(t.backend_request),
    };
    (out.request.is_some() || out.backend_request.is_some()).then_some(out)
}

/// Retries. The Gateway API leaves retrying failed connections and resets to the
/// implementation; this mesh retries them whenever a rule asks for retries.
fn retry(r: &RouteRetry) -> wire::RetryPolicy {
    wire::RetryPolicy {
        attempts: r.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
        codes: r.codes.iter().map(|&c| c.into()).collect(),
        backoff: r.backoff.map(proto_duration),
        retry_on_connect_failure: true,
        retry_on_reset: true,
    }
}
