//! Puts a request in the form the other layers and the endpoint expect: a normalized path
//! (so that policy and routes see `/admin` however it was spelled), a known authority, no
//! hop-by-hop headers, and this hop's `traceparent`.

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Request, Response, Uri};

use super::{Handler, ProxyError, RequestContext};
use crate::body::Body;
use crate::routing::normalize_path;

/// Headers that describe one connection, not the request (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// See the module documentation.
pub struct Normalize<H> {
    inner: H,
}

impl<H> Normalize<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Self { inner }
    }
}

impl<H: Handler> Handler for Normalize<H> {
    async fn handle(
        &self,
        mut request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        // The authority first: an HTTP/2 request carries it in the URI that is replaced next.
        cx.authority = Some(authority(&request, cx)?);
        if let Some(uri) = normalized_uri(request.uri())? {
            *request.uri_mut() = uri;
        }
        strip_hop_by_hop(request.headers_mut());
        if let Some(trace) = &cx.trace {
            request
                .headers_mut()
                .insert(ztunnel::hbone::TRACEPARENT, trace.traceparent());
        }
        self.inner.handle(request, cx).await
    }
}

/// The origin-form URI with the normalized path, when normalization changed the path.
fn normalized_uri(uri: &Uri) -> Result<Option<Uri>, ProxyError> {
    let path = uri.path();
    let normalized = normalize_path(path)?;
    if normalized == path {
        return Ok(None);
    }
    let mut target = normalized.into_owned();
    if let Some(query) = uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let path = PathAndQuery::try_from(target).map_err(|_| ProxyError::BadAuthority)?;
    Ok(Some(Uri::from(path)))
}

/// The request's authority: `:authority` (HTTP/2) or `Host` (HTTP/1.1), or the destination
/// service when the client sent neither.
fn authority(request: &Request<Body>, cx: &RequestContext) -> Result<Authority, ProxyError> {
    if let Some(authority) = request.uri().authority() {
        return Ok(authority.clone());
    }
    match request.headers().get(header::HOST) {
        Some(host) => Authority::try_from(host.as_bytes()).map_err(|_| ProxyError::BadAuthority),
        None => {
            let fallback = format!(
                "{}:{}",
                cx.destination.service.hostname, cx.destination.port
            );
            Authority::try_from(fallback).map_err(|_| ProxyError::BadAuthority)
        }
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names. `TE:
/// trailers` stays: gRPC needs it end to end.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
}
