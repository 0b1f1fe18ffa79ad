//! Endpoint choice for each attempt: the backend's candidates from the discovery snapshot,
//! least-request P2C with outlier detection ([`crate::balance`]), and the attempt's outcome
//! reported back. The chosen endpoint counts as busy until the response body is done.

use std::sync::Arc;

use http::{Request, Response};

use super::{Forward, Handler, ProxyError, RequestContext};
use crate::balance::{Balancer, Outcome, candidates};
use crate::body::{Body, HoldingBody};
use crate::upstream::{Connector, UpstreamTarget};

/// See the module documentation.
pub struct Balance<C: Connector> {
    balancer: Arc<Balancer>,
    forward: Forward<C>,
}

impl<C: Connector> Balance<C> {
    /// Picks endpoints with `balancer` and sends through `forward`.
    pub fn new(balancer: Arc<Balancer>, forward: Forward<C>) -> Self {
        Self { balancer, forward }
    }
}

impl<C: Connector> Handler for Balance<C> {
    async fn handle(
        &self,
        request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let backend = cx.backend();
        let no_endpoint = || ProxyError::NoHealthyEndpoint {
            service: backend.service.hostname.clone(),
            port: backend.port,
        };
        let picked = {
            let candidates = candidates(&cx.discovery, &backend.service, backend.port);
            self.balancer.pick(&candidates, &cx.tried, &mut rand::rng())
        }
        .ok_or_else(no_endpoint)?;
        let target = UpstreamTarget {
            address: picked.candidate.address,
            workload: picked.candidate.workload.clone(),
            service: backend.service.clone(),
        };
        cx.tried.push(target.address);
        cx.endpoint = Some(target.workload.clone());
        let result = self.forward.send(&target, request, cx).await;
        let outcome = match &result {
            Ok(response) if response.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(ProxyError::Upstream(_)) => Outcome::Failure,
            Err(_) => Outcome::Unknown,
        };
        self.balancer.report(&picked, outcome);
        result.map(|response| response.map(|body| HoldingBody::wrap(body, picked)))
    }
}
