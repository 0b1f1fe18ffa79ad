//! The innermost layer: sends the request to the chosen endpoint with the HTTP client, in
//! the version the client spoke, and relays the response without hop-by-hop headers (an
//! upgrade's `Connection` and `Upgrade` are put back, on the request and on a `101`).

use http::uri::Authority;
use http::{Request, Response};

use super::normalize::strip_hop_by_hop;
use super::{ProxyError, RequestContext, upgrade};
use crate::body::{self, Body};
use crate::upstream::{Connector, HttpClient, UpstreamTarget};

/// See the module documentation.
pub struct Forward<C> {
    client: HttpClient<C>,
}

impl<C: Connector> Forward<C> {
    /// Sends through `client`.
    pub fn new(client: HttpClient<C>) -> Self {
        Self { client }
    }

    /// Sends `request` to `target`.
    pub async fn send(
        &self,
        target: &UpstreamTarget,
        mut request: Request<Body>,
        cx: &RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        if let Some(protocol) = &cx.upgrade {
            upgrade::insert_headers(request.headers_mut(), protocol.clone());
        }
        let authority = match &cx.authority {
            Some(authority) => authority.clone(),
            None => {
                Authority::try_from(format!("{}:{}", target.service.hostname, cx.backend().port))
                    .map_err(|_| ProxyError::BadAuthority)?
            }
        };
        let response = self
            .client
            .send(target, cx.version, &authority, request)
            .await?;
        let mut response = response.map(body::boxed);
        let switched = (cx.upgrade.is_some()
            && response.status() == http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| response.headers().get(http::header::UPGRADE).cloned())
            .flatten();
        strip_hop_by_hop(response.headers_mut());
        if let Some(protocol) = switched {
            upgrade::insert_headers(response.headers_mut(), protocol);
        }
        Ok(response)
    }
}
