//! Mirroring: for each of the rule's mirrors, a share of requests is copied to the mirror's
//! backend in a task of its own. The copy's response is read and dropped; its failures are
//! logged at debug level and never reach the client. Copies carry `Host: <host>-shadow`,
//! as Envoy's, so the mirror can tell them apart.

use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use http_body_util::BodyExt;
use tracing::{Instrument, debug};

use super::route::resolve_backend;
use super::{Dispatch, Handler, ProxyError, RequestContext};
use crate::body::{Body, Buffering, buffer};
use crate::routing::in_share;
use crate::upstream::Connector;

/// How long a mirrored request may take when its rule sets no request timeout.
///
/// A copy nobody waits for must still end: a mirror that stops answering would otherwise
/// accumulate tasks and connections.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// See the module documentation.
pub struct Mirror<H, C: Connector> {
    inner: H,
    dispatch: Dispatch<C>,
}

impl<H, C: Connector> Mirror<H, C> {
    /// Wraps `inner`; copies go out through `dispatch`.
    pub fn new(inner: H, dispatch: Dispatch<C>) -> Self {
        Self { inner, dispatch }
    }
}

impl<H: Handler, C: Connector> Handler for Mirror<H, C> {
    async fn handle(
        &self,
        request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        // An upgrade is not mirrored: a copy cannot share the client's upgraded connection.
        let rule = cx.route.as_ref().filter(|_| cx.upgrade.is_none());
        let Some(rule) = rule.map(|r| r.rule.clone()) else {
            return self.inner.handle(request, cx).await;
        };
        let chosen: Vec<_> = rule
            .mirrors
            .iter()
            .filter(|m| in_share(m.percent, &mut rand::rng()))
            .filter_map(|m| match resolve_backend(&cx.discovery, &m.backend) {
                Ok(target) => Some(target),
                Err(error) => {
                    debug!(%error, "mirror skipped");
                    None
                }
            })
            .collect();
        if chosen.is_empty() {
            return self.inner.handle(request, cx).await;
        }
        let (parts, body) = request.into_parts();
        let buffered = match cx.buffered.clone() {
            Some(buffered) => buffered,
            None => match buffer(body, super::MAX_BUFFERED_BODY).await {
                Ok(Buffering::Complete(buffered)) => buffered,
                Ok(Buffering::TooLarge(body)) => {
                    debug!("request body too large to mirror; not mirrored");
                    return self
                        .inner
                        .handle(Request::from_parts(parts, body), cx)
                        .await;
                }
                Err(error) => return Err(ProxyError::RequestBody(error.to_string())),
            },
        };
        let timeout = rule.timeouts.request.unwrap_or(MIRROR_TIMEOUT);
        for target in chosen {
            let mut copy = Request::new(buffered.replay());
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = parts.uri.clone();
            *copy.version_mut() = parts.version;
            *copy.headers_mut() = parts.headers.clone();
            let mut mirror_cx = cx.for_mirror(target);
            mirror_cx.authority = cx.authority.as_ref().and_then(shadow);
            let dispatch = self.dispatch.clone();
            let span =
                tracing::debug_span!("mirror", dst.service = %mirror_cx.backend().service.hostname);
            tokio::spawn(
                async move {
                    let sent = tokio::time::timeout(timeout, async {
                        let response = dispatch.handle(copy, &mut mirror_cx).await?;
                        let _ = response.into_body().collect().await;
                        Ok::<_, ProxyError>(())
                    });
                    match sent.await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => debug!(%error, "mirrored request failed"),
                        Err(_) => debug!(?timeout, "mirrored request timed out"),
                    }
                }
                .instrument(span),
            );
        }
        cx.buffered = Some(buffered.clone());
        self.inner
            .handle(Request::from_parts(parts, buffered.replay()), cx)
            .await
    }
}

/// `host-shadow[:port]`.
fn shadow(authority: &Authority) -> Option<Authority> {
    let text = match authority.port() {
        Some(port) => format!("{}-shadow:{}", authority.host(), port.as_u16()),
        None => format!("{}-shadow", authority.host()),
    };
    Authority::try_from(text).ok()
}
