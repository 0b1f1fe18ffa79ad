//! Request handling as composable layers.
//!
//! Every layer is a struct that implements [`Handler`] by doing its part and calling the
//! layer it wraps. The stack, outermost first:
//!
//! | layer | file | answers itself with |
//! | --- | --- | --- |
//! | [`Edge`] | `edge.rs` | every error, classified once: status, metric label, flag, log line |
//! | [`Normalize`] | `normalize.rs` | 400 for a path or authority it cannot normalize |
//! | [`Authorize`] | `authorize.rs` | 403 when L7 policy denies |
//! | [`RouteLayer`] | `route.rs` | 404 (no match), redirects, 500 (no backend) |
//! | [`Fault`] | `fault.rs` | injected delays and aborts |
//! | [`Mirror`] | `mirror.rs` | nothing; sends copies on the side |
//! | [`Deadline`] | `deadline.rs` | 504 when `timeouts.request` passes |
//! | [`Retry`] | `retry.rs` | 504 when `timeouts.backendRequest` passes on the last attempt |
//! | [`Balance`] | `balance.rs` | 503 when no endpoint may take the request |
//! | [`Forward`] | `forward.rs` | 503 when the endpoint cannot be reached |
//!
//! An HTTP/1.1 upgrade (WebSocket) passes the same layers; on `101` the edge joins the two
//! connections as a byte relay until they close, idle out or the drain deadline passes
//! (`upgrade.rs`, [`crate::relay`], settings given with [`Edge::with_upgrades`]).
//!
//! What a layer learns for the layers below it (the matched rule, the chosen backend, the
//! endpoints tried) travels in the [`RequestContext`]. [`build`] assembles the stack.

mod authorize;
mod balance;
mod context;
mod deadline;
mod edge;
mod error;
mod fault;
mod forward;
mod mirror;
mod normalize;
mod retry;
mod route;
mod upgrade;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};

use crate::balance::Balancer;
use crate::body::Body;
use crate::telemetry::RequestMetrics;
use crate::upstream::{Connector, HttpClient};

pub use authorize::Authorize;
pub use balance::Balance;
pub use context::{BackendTarget, Destination, Peer, RequestContext};
pub use deadline::Deadline;
pub use edge::Edge;
pub use error::{Blame, ProxyError};
pub use fault::Fault;
pub use forward::Forward;
pub use mirror::Mirror;
pub use normalize::Normalize;
pub use retry::{MAX_BUFFERED_BODY, MAX_RETRY_BACKOFF, Retry};
pub use route::RouteLayer;

/// One layer of request handling.
pub trait Handler: Send + Sync + 'static {
    /// Handles `request`, reading and updating `cx`.
    fn handle<'a>(
        &'a self,
        request: Request<Body>,
        cx: &'a mut RequestContext,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a;
}

impl<H: Handler> Handler for Arc<H> {
    fn handle<'a>(
        &'a self,
        request: Request<Body>,
        cx: &'a mut RequestContext,
    ) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a {
        (**self).handle(request, cx)
    }
}

/// The layers that send a request to its backend; shared by the main path and mirrors.
pub type Dispatch<C> = Arc<Balance<C>>;

/// The whole stack over connector `C`.
pub type Stack<C> =
    Edge<Normalize<Authorize<RouteLayer<Fault<Mirror<Deadline<Retry<Dispatch<C>>>, C>>>>>>;

/// Assembles the stack: requests go out through `client`, endpoints are chosen by
/// `balancer`, and every request is recorded in `metrics`.
pub fn build<C: Connector>(
    client: HttpClient<C>,
    balancer: Arc<Balancer>,
    metrics: RequestMetrics,
) -> Stack<C> {
    let dispatch: Dispatch<C> = Arc::new(Balance::new(balancer, Forward::new(client)));
    let send = Deadline::new(Retry::new(dispatch.clone()));
    Edge::new(
        Normalize::new(Authorize::new(
            RouteLayer::new(Fault::new(Mirror::new(send, dispatch))),
            metrics.clone(),
        )),
        metrics,
    )
}
