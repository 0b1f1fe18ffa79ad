//! Fault injection from the matched rule: a share of requests is held for a while, and a
//! share is answered with an error status instead of being forwarded (delay first, as
//! Envoy's fault filter). Flags `DI` and `FI` mark them in metrics and logs.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};

use super::{Handler, ProxyError, RequestContext};
use crate::body::{self, Body};
use crate::routing::in_share;

/// See the module documentation.
pub struct Fault<H> {
    inner: H,
}

impl<H> Fault<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Self { inner }
    }
}

impl<H: Handler> Handler for Fault<H> {
    async fn handle(
        &self,
        request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let Some(fault) = cx.route.as_ref().and_then(|r| r.rule.fault.clone()) else {
            return self.inner.handle(request, cx).await;
        };
        // Decided before any await: the thread-local generator must not live across one.
        let delay = fault
            .delay
            .filter(|d| in_share(d.percent, &mut rand::rng()));
        let abort = fault
            .abort
            .filter(|a| in_share(a.percent, &mut rand::rng()));
        if let Some(delay) = delay {
            cx.flags.push("DI");
            tokio::time::sleep(delay.delay).await;
        }
        if let Some(abort) = abort {
            cx.flags.push("FI");
            let mut response = Response::new(body::full("fault filter abort\n"));
            *response.status_mut() = abort.status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return Ok(response);
        }
        self.inner.handle(request, cx).await
    }
}
