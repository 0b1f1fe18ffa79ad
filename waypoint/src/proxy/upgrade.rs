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
//! Once joined, the connection is a byte relay like proxied TCP ([`crate::relay`]): the
//! waypoint closes both sides itself when no byte has moved either way for the idle timeout
//! (flag `SI`, as Envoy's stream idle timeout) or when it is still open at the drain deadline
//! ([`RelaySettings`]). How it ended is counted in
//! `waypoint_upgraded_connections_ended_total{reason}` and, when the waypoint closed it, named
//! in the access-log line's `error`.
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
use tokio::sync::watch;
use tracing::{Instrument, debug};

use crate::body::{self, Body};
use crate::relay::{Ending, RelaySettings, Relayed, relay};
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
/// their own, relayed under `settings` until `drain`'s deadline at the latest; `record` and
/// the endpoint's (empty) response body, which holds the balancer's pick, are kept until the
/// joined connection ends.
pub(crate) fn join(
    mut response: Response<Body>,
    downstream: OnUpgrade,
    mut record: RequestRecord,
    settings: RelaySettings,
    drain: watch::Receiver<bool>,
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
            let downstream = TokioIo::new(downstream);
            let relayed = relay(downstream, TokioIo::new(upstream), settings, drain).await;
            // Both connections are closed by now: `relay` owned them.
            end(&mut record, &relayed);
            drop((held, record));
        }
        .instrument(span)
        // The tunnel's span too (the client's and the service's addresses), for the line
        // that says why the waypoint closed the connection when debug spans are off.
        .in_current_span(),
    );
    Response::from_parts(parts, body::empty())
}

/// Records how an upgraded connection ended.
fn end(record: &mut RequestRecord, relayed: &Relayed) {
    record.add_upgraded_bytes(relayed.sent, relayed.received);
    record.metrics().upgrade_ended(relayed.ending.reason());
    relayed.log("upgraded connection");
    if relayed.ending.by_waypoint() {
        record.error = Some((relayed.ending.to_string(), "proxy"));
    }
    if let Ending::IdleTimeout(_) = relayed.ending {
        record.add_flag("SI");
    }
}
