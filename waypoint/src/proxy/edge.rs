//! The outermost layer: starts the trace hop and the request record, and turns every error
//! of the layers below into a response, once, here: status code, failure counter (reason
//! and who caused it), response flag, and the access-log line (written by the record).

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::{Handler, ProxyError, RequestContext, upgrade};
use crate::body::{self, Body, CountingBody};
use crate::relay::RelaySettings;
use crate::telemetry::{RecordingBody, RequestMetrics, RequestRecord, TraceContext, grpc_status};

/// See the module documentation.
pub struct Edge<H> {
    inner: H,
    metrics: RequestMetrics,
    /// How upgraded connections end when neither side closes them.
    relays: RelaySettings,
    /// Becomes `true` when the waypoint starts draining.
    drain: watch::Receiver<bool>,
}

impl<H: Handler> Edge<H> {
    /// Wraps `inner`, recording into `metrics`; upgraded connections get the default
    /// timeouts and no drain until [`Edge::with_upgrades`].
    pub fn new(inner: H, metrics: RequestMetrics) -> Self {
        Self {
            inner,
            metrics,
            relays: RelaySettings::default(),
            // A drain that never comes: the sender is dropped at once.
            drain: watch::channel(false).1,
        }
    }

    /// The same edge, with upgraded connections ended by `relays`' idle timeout, and by its
    /// drain deadline once `drain` turns `true`.
    pub fn with_upgrades(mut self, relays: RelaySettings, drain: watch::Receiver<bool>) -> Self {
        self.relays = relays;
        self.drain = drain;
        self
    }

    /// Handles one request; never fails: errors become responses.
    pub async fn serve(
        &self,
        mut request: Request<Body>,
        cx: &mut RequestContext,
    ) -> Response<Body> {
        // Taken before the layers see the request: hyper completes the client's upgrade
        // only while this handle lives, and copies of the request would not carry it.
        cx.upgrade = upgrade::requested(&request, cx.version);
        let downstream_upgrade = cx
            .upgrade
            .is_some()
            .then(|| hyper::upgrade::on(&mut request));
        let trace = TraceContext::from_headers(request.headers(), &mut rand::rng());
        let mut record = self.start_record(&request, cx, &trace);
        // Debug, not info: the fmt layer formats an enabled span's fields when it is created,
        // a cost per request; events at info and above that concern a request carry the
        // trace id themselves, and the tunnel's span names the connection.
        let span = tracing::debug_span!(
            "request",
            trace_id = %record.trace_id,
            dst.service = %cx.destination.service.hostname,
            src.identity = %cx.peer.identity,
        );
        cx.trace = Some(trace);
        let received = cx.request_bytes.clone();
        let request = request.map(|body| CountingBody::new(body, received).boxed_unsync());
        let result = self.inner.handle(request, cx).instrument(span).await;
        record.attempts = cx.attempts;
        record.endpoint = cx.endpoint.clone();
        record.route = cx
            .route
            .as_ref()
            .map(|r| (r.rule.route.clone(), r.rule.name.clone()));
        if let Some(backend) = &cx.backend {
            record.service = backend.service.clone();
        }
        let mut flags = cx.flags.clone();
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                flags.push(error.response_flag());
                self.metrics
                    .failure(error.metric_label(), error.blame().as_str());
                record.error = Some((error.to_string(), error.blame().as_str()));
                error_response(&error)
            }
        };
        record.status = response.status().as_u16();
        if record.protocol == "grpc" {
            // A trailers-only response; otherwise the body's trailers say it (RecordingBody).
            record.grpc_status = grpc_status(response.headers());
        }
        record.flags = if flags.is_empty() {
            "-".into()
        } else {
            flags.join(",")
        };
        if let Some(downstream) = downstream_upgrade
            && response.status() == http::StatusCode::SWITCHING_PROTOCOLS
        {
            let drain = self.drain.clone();
            return upgrade::join(response, downstream, record, self.relays, drain);
        }
        response.map(|body| RecordingBody::wrap(body, record))
    }

    fn start_record(
        &self,
        request: &Request<Body>,
        cx: &RequestContext,
        trace: &TraceContext,
    ) -> RequestRecord {
        let mut record = RequestRecord::start(
            self.metrics.clone(),
            cx.started,
            cx.peer.identity.clone(),
            cx.destination.service.clone(),
        );
        record.source = cx
            .discovery
            .workload_by_ip(cx.peer.address.ip())
            .filter(|w| w.identity == cx.peer.identity);
        record.method = request.method().clone();
        record.version = cx.version.as_str();
        let grpc = request
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        record.protocol = if grpc { "grpc" } else { "http" };
        record.trace_id = trace.trace_id_hex();
        record.request_bytes = cx.request_bytes.clone();
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            // Only the access-log line needs them.
            return record;
        }
        record.path = request.uri().path().to_string();
        record.authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or_default()
            .to_string();
        record
    }
}

/// The response for a request the waypoint answers itself.
fn error_response(error: &ProxyError) -> Response<Body> {
    let mut response = Response::new(body::full(error.public_message()));
    *response.status_mut() = error.status();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
