//! L7 authorization: the policies that govern the destination (the waypoint's own and the
//! service's) decide; a denied request is answered 403 and counted at the edge.

use http::{Request, Response};
use tracing::info;

use super::{Handler, ProxyError, RequestContext};
use crate::body::Body;
use crate::policy::{Decision, PolicyRequest, evaluate};
use crate::telemetry::RequestMetrics;

/// See the module documentation.
pub struct Authorize<H> {
    inner: H,
    metrics: RequestMetrics,
}

impl<H> Authorize<H> {
    /// Wraps `inner`; dry-run denials are counted in `metrics`.
    pub fn new(inner: H, metrics: RequestMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl<H: Handler> Handler for Authorize<H> {
    async fn handle(
        &self,
        request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        if let Some(decision) = decide(&request, cx) {
            if let Some(denial) = decision.dry_run_denied {
                self.metrics.dry_run_denials.inc();
                let trace_id = cx.trace.as_ref().map(|t| t.trace_id_hex());
                info!(%denial, trace_id = trace_id.as_deref(), "dry-run policy would deny this request");
            }
            if let Some(denial) = decision.denied {
                return Err(ProxyError::Denied(denial));
            }
        }
        self.inner.handle(request, cx).await
    }
}

/// The decision of the policies that govern the request's destination; `None` when no
/// policy does.
fn decide(request: &Request<Body>, cx: &RequestContext) -> Option<Decision> {
    let mut policies = cx
        .config
        .policies
        .for_service(&cx.destination.service.hostname)
        .peekable();
    policies.peek()?;
    let host = cx
        .authority
        .as_ref()
        .map(|a| a.host().to_ascii_lowercase())
        .unwrap_or_default();
    Some(evaluate(
        policies,
        &PolicyRequest {
            peer: &cx.peer.identity,
            method: request.method(),
            path: request.uri().path(),
            host: &host,
            port: cx.destination.port,
            headers: request.headers(),
        },
    ))
}
