//! Attempts against endpoints: the per-attempt deadline (`timeouts.backendRequest`) and the
//! rule's retry policy.
//!
//! An attempt is retried, while attempts remain, when its response status is one of the
//! policy's codes, when it timed out and 504 is one of them, when no connection could be
//! made (`retry_on_connect_failure`), or when the endpoint reset it before responding
//! (`retry_on_reset`). Each retry waits a jittered, exponentially growing backoff (base
//! from the policy, at most [`MAX_RETRY_BACKOFF`]) and goes to another endpoint when there
//! is one (the balance layer skips endpoints already tried). A request whose last attempt
//! failed after retries gets the `URX` flag.
//!
//! Retrying needs the request body more than once, so it is read into memory first, up to
//! [`MAX_BUFFERED_BODY`]; a longer body is sent once, without retries.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use rand::Rng;
use tokio::time::Instant;
use tracing::debug;

use super::{Handler, ProxyError, RequestContext};
use crate::body::{Body, BufferedBody, Buffering, DeadlineBody, buffer};
use crate::config::RetryPolicy;
use crate::upstream::ForwardError;

/// The largest request body kept in memory for retries and mirrors.
///
/// Large enough for API payloads and gRPC messages (Envoy's default buffer limit is 1 MiB),
/// small enough that a burst of concurrent uploads cannot exhaust the waypoint's memory.
pub const MAX_BUFFERED_BODY: u64 = 1024 * 1024;

/// The longest wait between two attempts, however many there were (Envoy: 10x the base).
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// See the module documentation.
pub struct Retry<H> {
    inner: H,
}

impl<H> Retry<H> {
    /// Wraps `inner`.
    pub fn new(inner: H) -> Self {
        Self { inner }
    }
}

impl<H: Handler> Handler for Retry<H> {
    async fn handle(
        &self,
        request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let rule = cx.route.as_ref().map(|r| r.rule.clone());
        let per_try = rule.as_ref().and_then(|r| r.timeouts.backend_request);
        // An upgraded connection cannot be replayed: an upgrade is sent once.
        let policy = rule
            .as_ref()
            .and_then(|r| r.retry.clone())
            .filter(|p| p.attempts > 0 && cx.upgrade.is_none());
        let Some(policy) = policy else {
            return self.attempt(request, per_try, cx).await;
        };
        let (parts, body) = request.into_parts();
        let buffered = match cx.buffered.clone() {
            Some(buffered) => buffered,
            None => match buffer(body, super::MAX_BUFFERED_BODY).await {
                Ok(Buffering::Complete(buffered)) => buffered,
                Ok(Buffering::TooLarge(body)) => {
                    debug!("request body too large to retry; sending it once");
                    return self
                        .attempt(Request::from_parts(parts, body), per_try, cx)
                        .await;
                }
                Err(error) => return Err(ProxyError::RequestBody(error.to_string())),
            },
        };
        self.with_retries(&parts, &buffered, &policy, per_try, cx)
            .await
    }
}

impl<H: Handler> Retry<H> {
    async fn with_retries(
        &self,
        parts: &http::request::Parts,
        body: &BufferedBody,
        policy: &RetryPolicy,
        per_try: Option<Duration>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let mut retry = 0;
        loop {
            let result = self.attempt(copy(parts, body), per_try, cx).await;
            if retry >= policy.attempts || !should_retry(policy, &result) {
                if retry > 0
                    && !matches!(&result, Ok(r) if !policy.codes.contains(&r.status().as_u16()))
                {
                    cx.flags.push("URX");
                }
                return result;
            }
            let delay = backoff(policy.backoff, retry, &mut rand::rng());
            debug!(attempt = retry + 1, ?delay, outcome = %describe(&result), "retrying");
            drop(result);
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// One attempt, bounded by the per-attempt deadline when there is one.
    async fn attempt(
        &self,
        request: Request<Body>,
        per_try: Option<Duration>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        cx.attempts += 1;
        let Some(timeout) = per_try else {
            return self.inner.handle(request, cx).await;
        };
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.inner.handle(request, cx)).await {
            Ok(result) => {
                result.map(|response| response.map(|body| DeadlineBody::wrap(body, deadline)))
            }
            Err(_) => Err(ProxyError::AttemptTimeout {
                endpoint: cx
                    .tried
                    .last()
                    .copied()
                    .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                timeout,
            }),
        }
    }
}

/// A fresh request with the same head and body.
fn copy(parts: &http::request::Parts, body: &BufferedBody) -> Request<Body> {
    let mut request = Request::new(body.replay());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

fn should_retry(policy: &RetryPolicy, result: &Result<Response<Body>, ProxyError>) -> bool {
    match result {
        Ok(response) => policy.codes.contains(&response.status().as_u16()),
        Err(ProxyError::AttemptTimeout { .. }) => {
            policy.codes.contains(&StatusCode::GATEWAY_TIMEOUT.as_u16())
        }
        Err(ProxyError::Upstream(error)) if error.is_connect_failure() => policy.on_connect_failure,
        Err(ProxyError::Upstream(ForwardError::Reset { .. })) => policy.on_reset,
        Err(_) => false,
    }
}

/// Exponential backoff with "equal jitter": half of the step is fixed, half random, so
/// retries neither synchronize nor collapse to zero.
fn backoff(base: Duration, retry: u32, rng: &mut impl Rng) -> Duration {
    let step = base
        .saturating_mul(1 << retry.min(16))
        .min(MAX_RETRY_BACKOFF.max(base));
    let half = step / 2;
    half + half.mul_f64(rng.random::<f64>())
}

fn describe(result: &Result<Response<Body>, ProxyError>) -> String {
    match result {
        Ok(response) => response.status().to_string(),
        Err(error) => error.to_string(),
    }
}
