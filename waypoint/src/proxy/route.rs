//! Routing: selects the rule (404 when routes apply and none matches), answers redirects,
//! picks the backend by weight (500 when the rule has none), and applies the rule's request
//! edits and rewrites on the way in and its response edits on the way out.

use std::sync::Arc;

use http::header::LOCATION;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use ztunnel::state::{DiscoverySnapshot, ServiceInfo};

use super::{BackendTarget, Handler, ProxyError, RequestContext};
use crate::body::{self, Body};
use crate::config::{Backend, Rule};
use crate::routing::{
    RequestHead, RouteChoice, Selection, apply_header_modifier, choose_backend, redirect_location,
    rewrite_path, select,
};

/// See the module documentation.
pub struct RouteLayer<H> {
    inner: H,
}

impl<H> RouteLayer<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Self { inner }
    }
}

impl<H: Handler> Handler for RouteLayer<H> {
    async fn handle(
        &self,
        mut request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let selection = {
            let head = RequestHead {
                method: request.method(),
                path: request.uri().path(),
                query: request.uri().query(),
                headers: request.headers(),
            };
            select(
                &cx.config.routes,
                &cx.destination.service.hostname,
                cx.destination.port,
                &head,
            )
        };
        let destination = &cx.destination;
        let choice = match selection {
            Selection::Default => return self.inner.handle(request, cx).await,
            Selection::NoRoute => {
                return Err(ProxyError::NoRoute {
                    service: destination.service.hostname.clone(),
                    port: destination.port,
                });
            }
            Selection::Matched(choice) => choice,
        };
        cx.route = Some(choice.clone());
        let rule = choice.rule.clone();
        if rule.redirect.is_some() {
            let mut response = redirect(&rule, &choice, &request, cx);
            apply_header_modifier(&rule.response_headers, response.headers_mut());
            return Ok(response);
        }
        let backend =
            choose_backend(&rule, &mut rand::rng()).ok_or_else(|| ProxyError::NoBackend {
                route: rule.route.clone(),
                rule: rule.name.clone(),
            })?;
        cx.backend = Some(resolve_backend(&cx.discovery, backend)?);
        apply_header_modifier(&rule.request_headers, request.headers_mut());
        rewrite(&rule, &choice, &mut request, cx)?;
        let mut response = self.inner.handle(request, cx).await?;
        apply_header_modifier(&rule.response_headers, response.headers_mut());
        Ok(response)
    }
}

/// The service port a backend names. The hostname's namespace is read from its
/// `<name>.<namespace>.svc.` form, and is the route's otherwise.
pub(crate) fn resolve_backend(
    snapshot: &DiscoverySnapshot,
    backend: &Backend,
) -> Result<BackendTarget, ProxyError> {
    let unknown = || ProxyError::UnknownBackend {
        hostname: backend.hostname.clone(),
        port: backend.port,
    };
    let service =
        lookup_service(snapshot, &backend.hostname, &backend.namespace).ok_or_else(unknown)?;
    if !service.ports.contains_key(&backend.port) {
        return Err(unknown());
    }
    Ok(BackendTarget {
        service,
        port: backend.port,
    })
}

fn lookup_service(
    snapshot: &DiscoverySnapshot,
    hostname: &str,
    namespace: &str,
) -> Option<Arc<ServiceInfo>> {
    let mut labels = hostname.split('.');
    if let (Some(_), Some(ns), Some("svc")) = (labels.next(), labels.next(), labels.next())
        && let Some(service) = snapshot.service_by_hostname(ns, hostname)
    {
        return Some(service);
    }
    snapshot.service_by_hostname(namespace, hostname)
}

fn redirect(
    rule: &Rule,
    choice: &RouteChoice,
    request: &Request<Body>,
    cx: &RequestContext,
) -> Response<Body> {
    let redirect = rule.redirect.as_ref().expect("checked by the caller");
    let authority = cx.authority.as_ref().map_or("", Authority::as_str);
    let location = redirect_location(
        redirect,
        request.uri().scheme_str().unwrap_or("http"),
        authority,
        cx.destination.port,
        request.uri().path(),
        request.uri().query(),
        choice.matched_prefix.as_deref(),
    );
    let mut response = Response::new(body::empty());
    *response.status_mut() = redirect.status;
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

fn rewrite(
    rule: &Rule,
    choice: &RouteChoice,
    request: &mut Request<Body>,
    cx: &mut RequestContext,
) -> Result<(), ProxyError> {
    let Some(rewrite) = &rule.rewrite else {
        return Ok(());
    };
    if let Some(hostname) = &rewrite.hostname {
        cx.authority =
            Some(Authority::try_from(hostname.as_bytes()).map_err(|_| ProxyError::BadAuthority)?);
    }
    if let Some(modifier) = &rewrite.path {
        let mut target = rewrite_path(
            modifier,
            request.uri().path(),
            choice.matched_prefix.as_deref(),
        );
        if let Some(query) = request.uri().query() {
            target.push('?');
            target.push_str(query);
        }
        let path = PathAndQuery::try_from(target).map_err(|_| ProxyError::BadAuthority)?;
        *request.uri_mut() = Uri::from(path);
    }
    Ok(())
}
