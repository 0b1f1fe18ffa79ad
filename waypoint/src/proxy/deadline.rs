//! The overall deadline (`timeouts.request`): from the request's arrival until its response
//! is complete, across all attempts. Past it the client gets 504, or, once the response has
//! started, the response body ends with an error.

use http::{Request, Response};

use super::{Handler, ProxyError, RequestContext};
use crate::body::{Body, DeadlineBody};

/// See the module documentation.
pub struct Deadline<H> {
    inner: H,
}

impl<H> Deadline<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Self { inner }
    }
}

impl<H: Handler> Handler for Deadline<H> {
    async fn handle(
        &self,
        request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let Some(timeout) = cx.route.as_ref().and_then(|r| r.rule.timeouts.request) else {
            return self.inner.handle(request, cx).await;
        };
        let deadline = cx.started + timeout;
        cx.deadline = Some(deadline);
        match tokio::time::timeout_at(deadline, self.inner.handle(request, cx)).await {
            Ok(result) => {
                result.map(|response| response.map(|body| DeadlineBody::wrap(body, deadline)))
            }
            Err(_) => Err(ProxyError::RequestTimeout { timeout }),
        }
    }
}
