//! The filters of an HTTPRoute rule: header changes, redirects, rewrites and mirrors.

use std::collections::BTreeSet;

use super::raw::{
    RawFilter, RawHeaderModifier, RawMirror, RawNameValue, RawPathModifier, RawRedirect, RawRewrite,
};
use super::{BackendRef, backend_ref, optional_port, required};
use crate::store::object::NamespacedName;
use crate::store::rejection::{Findings, Problem};

/// A filter of a route rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteFilter {
    /// Changes request headers.
    RequestHeaderModifier(HeaderModifier),
    /// Changes response headers.
    ResponseHeaderModifier(HeaderModifier),
    /// Answers with a redirect instead of forwarding.
    RequestRedirect(Redirect),
    /// Rewrites host and path before forwarding.
    UrlRewrite(Rewrite),
    /// Sends a copy of the request to another backend.
    RequestMirror(Mirror),
}

/// Header changes: set replaces, add appends, remove deletes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Headers set to a value, replacing any present.
    pub set: Vec<(String, String)>,
    /// Headers added, keeping any present.
    pub add: Vec<(String, String)>,
    /// Header names removed.
    pub remove: Vec<String>,
}

/// A redirect answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`, when changed.
    pub scheme: Option<String>,
    /// The host name, when changed.
    pub hostname: Option<String>,
    /// The path, when changed.
    pub path: Option<PathModifier>,
    /// The port, when changed.
    pub port: Option<u16>,
    /// The status code (302 by default).
    pub status_code: u16,
}

/// A rewrite before forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The host name, when changed.
    pub hostname: Option<String>,
    /// The path, when changed.
    pub path: Option<PathModifier>,
}

/// How a redirect or rewrite changes the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part matched by a `PathPrefix` match.
    ReplacePrefixMatch(String),
}

/// A request mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Where the copy goes.
    pub backend: BackendRef,
    /// The share of requests mirrored, in percent (100 by default).
    pub percent: u32,
}

pub(super) fn route_filter(
    raw: RawFilter,
    id: &NamespacedName,
    at: &str,
    findings: &mut Findings,
) -> Option<RouteFilter> {
    let kind = required(raw.type_, format!("{at}.type"), findings)?;
    // Each filter type carries its settings in the field of the (camel-cased) same name.
    let field = match kind.as_str() {
        "RequestHeaderModifier" => "requestHeaderModifier",
        "ResponseHeaderModifier" => "responseHeaderModifier",
        "RequestRedirect" => "requestRedirect",
        "URLRewrite" => "urlRewrite",
        "RequestMirror" => "requestMirror",
        other => {
            let why = "must be RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, \
                       URLRewrite or RequestMirror";
            findings.push(format!("{at}.type"), Problem::invalid(other, why));
            return None;
        }
    };
    let at = format!("{at}.{field}");
    let filter = match field {
        "requestHeaderModifier" => raw
            .request_header_modifier
            .map(|m| RouteFilter::RequestHeaderModifier(header_modifier(m, &at, findings))),
        "responseHeaderModifier" => raw
            .response_header_modifier
            .map(|m| RouteFilter::ResponseHeaderModifier(header_modifier(m, &at, findings))),
        "requestRedirect" => raw
            .request_redirect
            .map(|r| RouteFilter::RequestRedirect(redirect(r, &at, findings))),
        "urlRewrite" => raw
            .url_rewrite
            .map(|r| RouteFilter::UrlRewrite(rewrite(r, &at, findings))),
        _ => match raw.request_mirror {
            Some(m) => return mirror(m, id, &at, findings).map(RouteFilter::RequestMirror),
            None => None,
        },
    };
    if filter.is_none() {
        findings.push(at, Problem::Missing);
    }
    filter
}

fn header_modifier(raw: RawHeaderModifier, at: &str, findings: &mut Findings) -> HeaderModifier {
    let mut pairs = |list: Vec<RawNameValue>, field: &str| -> Vec<(String, String)> {
        let mut seen = BTreeSet::new();
        let mut result = Vec::new();
        for (i, entry) in list.into_iter().enumerate() {
            let at = format!("{at}.{field}[{i}]");
            let name = required(
                entry.name.filter(|n| !n.is_empty()),
                format!("{at}.name"),
                findings,
            );
            let value = required(entry.value, format!("{at}.value"), findings);
            let (Some(name), Some(value)) = (name, value) else {
                continue;
            };
            if !seen.insert(name.to_ascii_lowercase()) {
                findings.push(
                    format!("{at}.name"),
                    Problem::invalid(&name, "the header is listed twice"),
                );
            }
            result.push((name, value));
        }
        result
    };
    let set = pairs(raw.set, "set");
    let add = pairs(raw.add, "add");
    HeaderModifier {
        set,
        add,
        remove: raw.remove,
    }
}

fn path_modifier(raw: RawPathModifier, at: &str, findings: &mut Findings) -> Option<PathModifier> {
    match raw.type_.as_deref() {
        Some("ReplaceFullPath") => required(
            raw.replace_full_path,
            format!("{at}.replaceFullPath"),
            findings,
        )
        .map(PathModifier::ReplaceFullPath),
        Some("ReplacePrefixMatch") => required(
            raw.replace_prefix_match,
            format!("{at}.replacePrefixMatch"),
            findings,
        )
        .map(PathModifier::ReplacePrefixMatch),
        Some(other) => {
            findings.push(
                format!("{at}.type"),
                Problem::invalid(other, "must be ReplaceFullPath or ReplacePrefixMatch"),
            );
            None
        }
        None => {
            findings.push(format!("{at}.type"), Problem::Missing);
            None
        }
    }
}

fn redirect(raw: RawRedirect, at: &str, findings: &mut Findings) -> Redirect {
    if let Some(scheme) = &raw.scheme
        && scheme != "http"
        && scheme != "https"
    {
        findings.push(
            format!("{at}.scheme"),
            Problem::invalid(scheme, "must be http or https"),
        );
    }
    let status_code = match raw.status_code {
        None => 302,
        Some(code @ (301 | 302 | 303 | 307 | 308)) => code as u16,
        Some(code) => {
            findings.push(
                format!("{at}.statusCode"),
                Problem::invalid_number(code, "must be 301, 302, 303, 307 or 308"),
            );
            302
        }
    };
    Redirect {
        scheme: raw.scheme,
        hostname: raw.hostname,
        path: raw
            .path
            .and_then(|p| path_modifier(p, &format!("{at}.path"), findings)),
        port: optional_port(raw.port, format!("{at}.port"), findings),
        status_code,
    }
}

fn rewrite(raw: RawRewrite, at: &str, findings: &mut Findings) -> Rewrite {
    Rewrite {
        hostname: raw.hostname,
        path: raw
            .path
            .and_then(|p| path_modifier(p, &format!("{at}.path"), findings)),
    }
}

fn mirror(
    raw: RawMirror,
    id: &NamespacedName,
    at: &str,
    findings: &mut Findings,
) -> Option<Mirror> {
    let percent = match (raw.percent, raw.fraction) {
        (Some(p), _) => findings
            .take(
                format!("{at}.percent"),
                u32::try_from(p)
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| Problem::invalid_number(p, "a percentage is between 0 and 100")),
            )
            .unwrap_or(100),
        (None, Some(fraction)) => {
            let denominator = fraction.denominator.unwrap_or(100);
            if denominator <= 0 || fraction.numerator < 0 || fraction.numerator > denominator {
                findings.push(
                    format!("{at}.fraction"),
                    Problem::invalid_number(
                        format!("{}/{denominator}", fraction.numerator),
                        "needs 0 <= numerator <= denominator and a positive denominator",
                    ),
                );
                100
            } else {
                (fraction.numerator * 100 / denominator) as u32
            }
        }
        (None, None) => 100,
    };
    let backend = required(raw.backend_ref, format!("{at}.backendRef"), findings)?;
    let backend = backend_ref(backend, id, &format!("{at}.backendRef"), findings)?;
    Some(Mirror { backend, percent })
}
