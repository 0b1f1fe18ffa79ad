//! What the server answers: who it is and what it saw, with the configured or requested
//! status and delay. One [`Responder`] is shared by every connection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use serde::{Deserialize, Serialize};

use super::AppIdentity;
use super::overrides::Overrides;
use crate::grpc;
use crate::sampling::Sampler;

/// The largest request body the server reads; larger ones get 413.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// The path that always answers 200 at once, for readiness probes.
pub const HEALTH_PATH: &str = "/healthz";

/// The response header naming the pod that answered, on every response.
pub const POD_HEADER: &str = "x-testapp-pod";

/// The response header naming the version that answered, on every response.
pub const VERSION_HEADER: &str = "x-testapp-version";

/// The log target of the debug line written for every answered request.
pub const REQUEST_LOG_TARGET: &str = "request";

/// The body of every response from the server.
pub type ReplyBody = BoxBody<Bytes, Infallible>;

/// The JSON document the server answers with (and, for gRPC, the one message it returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// `$POD_NAME` of the answering pod.
    pub pod: String,
    /// `$POD_NAMESPACE` of the answering pod.
    pub namespace: String,
    /// The version label (`--version` or `$APP_VERSION`).
    pub version: String,
    /// The request method.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The request query, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The request headers; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The address of the connection's peer, `ip:port`.
    pub peer: String,
    /// The `Host` header, or the HTTP/2 `:authority`.
    pub host: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    /// The status the server answered with.
    pub status: u16,
    /// The size of the request body.
    pub body_bytes: usize,
}

/// The configured faults: a share of failures and a delay for every response.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// The share of requests (0..=1) answered with 503.
    pub fail_rate: f64,
    /// How long every response waits.
    pub delay: Duration,
}

/// How one request is answered, once its body is read.
#[derive(Debug)]
struct Decision {
    status: StatusCode,
    delay: Duration,
    body_bytes: usize,
    /// The `grpc-status` the request asked for, if any.
    grpc_status: Option<u32>,
}

/// Answers requests on behalf of one app instance.
#[derive(Debug)]
pub struct Responder {
    identity: AppIdentity,
    faults: Faults,
    sampler: Sampler,
    pod_header: Option<HeaderValue>,
    version_header: Option<HeaderValue>,
}

impl Responder {
    /// A responder for `identity` with `faults`, drawing failures from `sampler`.
    pub fn new(identity: AppIdentity, faults: Faults, sampler: Sampler) -> Self {
        let pod_header = HeaderValue::from_str(&identity.pod).ok();
        let version_header = HeaderValue::from_str(&identity.version).ok();
        Self {
            identity,
            faults,
            sampler,
            pod_header,
            version_header,
        }
    }

    /// Answers one request that arrived on a connection from `peer`.
    pub async fn respond<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<ReplyBody>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let is_grpc = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(grpc::is_grpc_content_type);
        let mut reply = self.reply_for(&parts, peer);
        let response = if parts.uri.path() == HEALTH_PATH {
            self.json_response(&reply)
        } else {
            match self.decide(&parts, body).await {
                Ok(decision) => {
                    tokio::time::sleep(decision.delay).await;
                    reply.status = decision.status.as_u16();
                    reply.body_bytes = decision.body_bytes;
                    if is_grpc {
                        let code = decision
                            .grpc_status
                            .unwrap_or_else(|| grpc::status_for_http(reply.status));
                        self.grpc_response(&reply, code)
                    } else {
                        self.json_response(&reply)
                    }
                }
                Err((status, message)) => self.error_response(status, &message),
            }
        };
        // What reached a backend whose answers nobody reads (a mirror's copies) is known only
        // here; tests turn this on for such a pod with `RUST_LOG=info,request=debug`.
        tracing::debug!(
            target: REQUEST_LOG_TARGET,
            method = %reply.method,
            path = %reply.path,
            query = reply.query.as_deref().unwrap_or_default(),
            host = %reply.host,
            status = response.status().as_u16(),
            "answered"
        );
        self.stamp(response)
    }

    /// Reads the body and works out the status and delay; `Err` is a request the server refuses.
    async fn decide<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Decision, (StatusCode, String)>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let overrides = Overrides::from_query(parts.uri.query())
            .map_err(|error| (StatusCode::BAD_REQUEST, error.to_string()))?;
        let body_bytes = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => collected.to_bytes().len(),
            Err(error) if error.is::<LengthLimitError>() => {
                let message = format!("request body is larger than {MAX_REQUEST_BODY} bytes");
                return Err((StatusCode::PAYLOAD_TOO_LARGE, message));
            }
            Err(error) => return Err((StatusCode::BAD_REQUEST, format!("reading body: {error}"))),
        };
        let status = overrides.status.unwrap_or_else(|| {
            if self.sampler.hit(self.faults.fail_rate) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        });
        Ok(Decision {
            status,
            delay: overrides.delay.unwrap_or(self.faults.delay),
            body_bytes,
            grpc_status: overrides.grpc_status,
        })
    }

    fn reply_for(&self, parts: &http::request::Parts, peer: SocketAddr) -> Reply {
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let host = parts
            .headers
            .get(HOST)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .or_else(|| parts.uri.authority().map(|authority| authority.to_string()))
            .unwrap_or_default();
        Reply {
            pod: self.identity.pod.to_string(),
            namespace: self.identity.namespace.to_string(),
            version: self.identity.version.to_string(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers,
            peer: peer.to_string(),
            host,
            protocol: format!("{:?}", parts.version),
            status: StatusCode::OK.as_u16(),
            body_bytes: 0,
        }
    }

    fn json_response(&self, reply: &Reply) -> Response<ReplyBody> {
        let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
        let mut body = serde_json::to_vec(reply).unwrap_or_default();
        body.push(b'\n');
        build(status, "application/json", Full::from(body).boxed(), None)
    }

    /// gRPC failures travel in trailers over HTTP 200, as gRPC servers send them.
    fn grpc_response(&self, reply: &Reply, code: u32) -> Response<ReplyBody> {
        let message = if code == grpc::STATUS_OK {
            grpc::encode_message(&serde_json::to_vec(reply).unwrap_or_default())
        } else {
            Bytes::new()
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from(code));
        if code != grpc::STATUS_OK {
            let text = format!(
                "testapp answered with gRPC status {code} (HTTP status {})",
                reply.status
            );
            if let Ok(value) = HeaderValue::from_str(&text) {
                trailers.insert("grpc-message", value);
            }
        }
        build(
            StatusCode::OK,
            grpc::CONTENT_TYPE,
            Full::new(message).boxed(),
            Some(trailers),
        )
    }

    fn error_response(&self, status: StatusCode, message: &str) -> Response<ReplyBody> {
        let mut body = serde_json::to_vec(&serde_json::json!({
            "pod": &*self.identity.pod,
            "version": &*self.identity.version,
            "error": message,
        }))
        .unwrap_or_default();
        body.push(b'\n');
        build(status, "application/json", Full::from(body).boxed(), None)
    }

    /// Adds the headers naming the pod and version that answered.
    pub(super) fn stamp(&self, mut response: Response<ReplyBody>) -> Response<ReplyBody> {
        let headers = response.headers_mut();
        if let Some(pod) = &self.pod_header {
            headers.insert(POD_HEADER, pod.clone());
        }
        if let Some(version) = &self.version_header {
            headers.insert(VERSION_HEADER, version.clone());
        }
        response
    }
}

fn build(
    status: StatusCode,
    content_type: &'static str,
    body: ReplyBody,
    trailers: Option<HeaderMap>,
) -> Response<ReplyBody> {
    let body = match trailers {
        Some(trailers) => body
            .with_trailers(std::future::ready(Some(Ok(trailers))))
            .boxed(),
        None => body,
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests;
