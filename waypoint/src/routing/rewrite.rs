//! What a rule does to a request and its response: header edits, redirects, rewrites.

use http::header::HeaderValue;
use http::{HeaderMap, Uri};

use super::path::replace_prefix;
use crate::config::{HeaderModifier, PathModifier, Redirect};

/// Applies header edits in the order remove, set, add.
pub fn apply_header_modifier(modifier: &HeaderModifier, headers: &mut HeaderMap) {
    for name in &modifier.remove {
        headers.remove(name);
    }
    for (name, value) in &modifier.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &modifier.add {
        headers.append(name.clone(), value.clone());
    }
}

/// The new path for `path` under `modifier`; `matched_prefix` is what the rule's prefix
/// match held on (validation guarantees one for prefix replacements).
pub fn rewrite_path(modifier: &PathModifier, path: &str, matched_prefix: Option<&str>) -> String {
    match modifier {
        PathModifier::Full(full) => full.clone(),
        PathModifier::Prefix(replacement) => {
            replace_prefix(path, matched_prefix.unwrap_or(""), replacement)
        }
    }
}

/// The `Location` of a redirect for a request to `authority` with `path` and `query` that
/// arrived on `listener_port` (the service port the client dialed).
///
/// The port follows the Gateway API: the redirect's own; else, when the redirect changes the
/// scheme, the new scheme's well-known port; else the listener's, so that a redirect of the
/// path alone sends the client back to the port it used. It is left out when it is the
/// well-known port of the location's scheme.
pub fn redirect_location(
    redirect: &Redirect,
    scheme: &str,
    authority: &str,
    listener_port: u16,
    path: &str,
    query: Option<&str>,
    matched_prefix: Option<&str>,
) -> Option<HeaderValue> {
    let scheme = redirect.scheme.unwrap_or(scheme);
    let request_host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(authority, |(host, _)| host);
    let host = redirect.hostname.as_deref().unwrap_or(request_host);
    let path = match &redirect.path {
        Some(modifier) => rewrite_path(modifier, path, matched_prefix),
        None => path.to_string(),
    };
    let port = match (redirect.port, redirect.scheme) {
        (Some(port), _) => Some(port),
        (None, Some(_)) => None,
        (None, None) => Some(listener_port),
    }
    .filter(|port| Some(*port) != well_known_port(scheme));
    let mut location = match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    };
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    // Only a valid URI goes out; a host from the request could be anything.
    location.parse::<Uri>().ok()?;
    HeaderValue::try_from(location).ok()
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}
