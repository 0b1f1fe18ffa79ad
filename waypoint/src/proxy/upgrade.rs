//! HTTP/1.1 Upgrade (WebSocket, SPDY, ...) through the waypoint.
//!
//! An upgrade request is handled like any other until its response: routed, authorized,
//! balanced and forwarded, with `Connection: upgrade` and its `Upgrade` header put back on
//! the way out (`Normalize` strips them as hop-by-hop). It is sent once: no retries and no
//! mirrors, since an upgraded connection cannot be replayed. Timeouts bound the wait for the
//! response only; once the endpoint answers `101 Switching Protocols`, the edge joins the
//! client's connection and the endpoint's and copies bytes both ways until either side
//! closes, holding the request's record (one access-log line and `response_code="101"` when
//! the connection ends, with the bytes copied) and the balancer's in-flight count.
//!
//! Upgrade is an HTTP/1.1 mechanism: HTTP/2 forbids the headers, and the waypoint speaks to
//! the endpoint in the client's version, so an upgrade always goes upstream over HTTP/1.1.
//! HTTP/2's extended CONNECT (RFC 8441) is not offered. `Upgrade: h2c` is not an upgrade
//! here: the headers are dropped and the request is served as a plain one, as Envoy does,
//! since an endpoint switching to HTTP/2 would carry later requests past routing and policy.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{Instrument, debug};

use crate::body::{self, Body};
use crate::telemetry::RequestRecord;
use crate::upstream::HttpVersion;

/// The protocol an HTTP/1.1 request asks to upgrade to (its `Upgrade` header), when it asks
/// one the waypoint forwards: `Connection` names `upgrade` and the protocol is not `h2c`.
pub(crate) fn requested(request: &Request<Body>, version: HttpVersion) -> Option<HeaderValue> {
    if version != HttpVersion::Http1 {
        return None;
    }
    let headers = request.headers();
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let h2c = protocol
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (asks && !h2c).then(|| protocol.clone())
}

/// Puts back the hop-by-hop headers of an upgrade to `protocol`.
pub(crate) fn insert_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Answers the client with the endpoint's `101` and joins the two connections in a task of
/// their own; `record` and the endpoint's (empty) response body, which holds the balancer's
/// pick, are kept until the joined connection ends.
pub(crate) fn join(
    mut response: Response<Body>,
    downstream: OnUpgrade,
    record: RequestRecord,
) -> Response<Body> {
    debug_assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    // The endpoint's connection: hyper's client left it in the response's extensions, which
    // every layer keeps (they map the body, never rebuild the response).
    let upstream = hyper::upgrade::on(&mut response);
    let (parts, held) = response.into_parts();
    let span = tracing::debug_span!("upgraded", trace_id = %record.trace_id);
    tokio::spawn(
        async move {
            let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
                Ok(both) => both,
                Err(error) => {
                    debug!(%error, "upgrade not completed");
                    return;
                }
            };
            let (mut downstream, mut upstream) = (TokioIo::new(downstream), TokioIo::new(upstream));
            match ztunnel::hbone::copy_bidirectional(&mut downstream, &mut upstream).await {
                Ok((sent, received)) => {
                    record.add_upgraded_bytes(sent, received);
                    debug!(sent, received, "upgraded connection closed");
                }
                Err(error) => debug!(%error, "upgraded connection ended with an error"),
            }
            drop((held, record));
        }
        .instrument(span),
    );
    Response::from_parts(parts, body::empty())
}
