//! `testapp get`: a bounded number of requests over a bounded number of connections, each
//! request with a deadline, every outcome reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, TE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::connection::{ConnectionError, HttpConnection, Protocol};
use super::summary::{Summary, SummaryBuilder};
use crate::grpc;
use crate::server::reply::{POD_HEADER, VERSION_HEADER};
use crate::target::HttpTarget;

/// The per-request deadline when `--timeout-ms` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most requests one run may send.
pub const MAX_REQUESTS: u64 = 1_000_000;
/// The most connections one run may open at once.
pub const MAX_CONCURRENCY: usize = 512;
/// The longest per-request deadline.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest response body read; larger bodies count as errors.
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Up to this many requests, `get` prints a line per request without `--each`.
pub const EACH_LINE_MAX_REQUESTS: u64 = 10;

/// What a load run does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where the requests go.
    pub target: HttpTarget,
    /// How many requests to send.
    pub count: u64,
    /// How many connections send at once (each sends its requests one after another).
    pub concurrency: usize,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
    /// Send gRPC calls (needs HTTP/2).
    pub grpc: bool,
    /// The request method (gRPC always uses POST).
    pub method: Method,
    /// Extra request headers.
    pub headers: HeaderMap,
    /// The deadline of each request, connecting included.
    pub timeout: Duration,
    /// Open a new connection for every request instead of keeping one per worker.
    pub connection_per_request: bool,
}

/// A load configuration that cannot run; all problems are reported together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid get options: {}", problems.join("; "))]
pub struct LoadConfigError {
    /// One sentence per problem.
    pub problems: Vec<String>,
}

impl LoadConfig {
    /// Checks the bounds and reports every problem at once.
    pub fn validate(&self) -> Result<(), LoadConfigError> {
        let mut problems = Vec::new();
        if !(1..=MAX_REQUESTS).contains(&self.count) {
            problems.push(format!(
                "--count {} is not between 1 and {MAX_REQUESTS}",
                self.count
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            let concurrency = self.concurrency;
            problems.push(format!(
                "--concurrency {concurrency} is not between 1 and {MAX_CONCURRENCY}"
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            let (timeout, max) = (self.timeout.as_millis(), MAX_TIMEOUT.as_millis());
            problems.push(format!("--timeout-ms {timeout} is not between 1 and {max}"));
        }
        if self.grpc && self.protocol != Protocol::Http2 {
            problems.push("--grpc needs HTTP/2: add --h2".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadConfigError { problems })
        }
    }
}

/// What happened to one request: the per-request JSON line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The HTTP status; `None` when there was no answer.
    pub status: Option<u16>,
    /// The `grpc-status` of a gRPC call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// The pod that answered, from the reply or the `x-testapp-pod` header.
    pub pod: Option<String>,
    /// The version that answered, from the reply or the `x-testapp-version` header.
    pub version: Option<String>,
    /// From sending (connecting included) to the end of the response body.
    pub latency_ms: f64,
    /// Why there was no answer.
    pub error: Option<String>,
    /// Whether this was a gRPC call.
    #[serde(skip)]
    pub grpc: bool,
}

impl Outcome {
    /// A 2xx answer, and for gRPC also `grpc-status` 0.
    pub fn is_ok(&self) -> bool {
        let http_ok = self
            .status
            .is_some_and(|status| (200..300).contains(&status));
        http_ok && (!self.grpc || self.grpc_status == Some(grpc::STATUS_OK))
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("reading the response body: {0}")]
    Body(String),
    #[error("building the request: {0}")]
    Build(#[from] http::Error),
}

/// Runs the load, calling `each` for every outcome as it arrives, and returns the totals.
/// The caller validates `config` first.
pub async fn run(config: LoadConfig, mut each: impl FnMut(&Outcome)) -> Summary {
    let workers = config
        .concurrency
        .min(usize::try_from(config.count).unwrap_or(usize::MAX));
    let config = Arc::new(config);
    let remaining = Arc::new(AtomicU64::new(config.count));
    let (outcomes_tx, mut outcomes) = mpsc::channel(256);
    for _ in 0..workers {
        tokio::spawn(worker(
            config.clone(),
            remaining.clone(),
            outcomes_tx.clone(),
        ));
    }
    drop(outcomes_tx);
    let mut summary = SummaryBuilder::default();
    while let Some(outcome) = outcomes.recv().await {
        each(&outcome);
        summary.add(&outcome);
    }
    summary.finish()
}

async fn worker(
    config: Arc<LoadConfig>,
    remaining: Arc<AtomicU64>,
    outcomes: mpsc::Sender<Outcome>,
) {
    let mut connection = None;
    let take = || {
        remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    };
    while take() {
        let start = Instant::now();
        let result =
            tokio::time::timeout(config.timeout, request_once(&config, &mut connection)).await;
        let latency_ms = round_ms(start.elapsed());
        let outcome = match result {
            Ok(Ok(outcome)) => Outcome {
                latency_ms,
                ..outcome
            },
            Ok(Err(error)) => failed(&config, latency_ms, error.to_string()),
            Err(_) => failed(
                &config,
                latency_ms,
                format!("no answer within {} ms", config.timeout.as_millis()),
            ),
        };
        // A connection that failed or timed out is in an unknown state: never reuse it.
        if outcome.status.is_none() || config.connection_per_request {
            connection = None;
        }
        if outcomes.send(outcome).await.is_err() {
            return;
        }
    }
}

fn failed(config: &LoadConfig, latency_ms: f64, error: String) -> Outcome {
    Outcome {
        latency_ms,
        error: Some(error),
        grpc: config.grpc,
        ..Outcome::default()
    }
}

async fn request_once(
    config: &LoadConfig,
    slot: &mut Option<HttpConnection>,
) -> Result<Outcome, RequestError> {
    let connection = match slot {
        Some(connection) if connection.is_open() => connection,
        _ => slot.insert(HttpConnection::open(config.target.addr, config.protocol).await?),
    };
    let response = connection.send(build_request(config)?).await?;
    let (parts, body) = response.into_parts();
    let collected = Limited::new(body, MAX_RESPONSE_BODY)
        .collect()
        .await
        .map_err(|error| RequestError::Body(error.to_string()))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    Ok(read_answer(
        config.grpc,
        parts.status,
        &parts.headers,
        &body,
        &trailers,
    ))
}

fn build_request(config: &LoadConfig) -> Result<Request<Full<Bytes>>, http::Error> {
    let target = &config.target;
    let mut builder = match config.protocol {
        Protocol::Http1 => Request::builder()
            .uri(&target.path_and_query)
            .header(HOST, &target.authority),
        Protocol::Http2 => Request::builder().uri(target.absolute_uri()),
    };
    let body = if config.grpc {
        if target.path_and_query == "/" {
            let uri = format!("http://{}{}", target.authority, grpc::DEFAULT_METHOD_PATH);
            builder = builder.uri(uri);
        }
        builder = builder
            .method(Method::POST)
            .header(CONTENT_TYPE, grpc::CONTENT_TYPE)
            .header(TE, "trailers");
        grpc::encode_message(b"{}")
    } else {
        builder = builder.method(config.method.clone());
        Bytes::new()
    };
    let mut request = builder.body(Full::new(body))?;
    let headers = request.headers_mut();
    for name in config.headers.keys() {
        headers.remove(name);
    }
    for (name, value) in &config.headers {
        headers.append(name, value.clone());
    }
    Ok(request)
}

/// Reads who answered from the reply JSON (the gRPC message for calls), falling back to the
/// `x-testapp-*` headers for answers that are not the app's (a proxy's 503, say).
fn read_answer(
    is_grpc: bool,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    trailers: &HeaderMap,
) -> Outcome {
    let document = if is_grpc {
        grpc::decode_first_message(body).ok().flatten()
    } else {
        Some(body)
    };
    let reply: Option<serde_json::Value> =
        document.and_then(|bytes| serde_json::from_slice(bytes).ok());
    let field = |key: &str, header: &str| {
        reply
            .as_ref()
            .and_then(|reply| reply.get(key)?.as_str().map(str::to_owned))
            .or_else(|| header_text(headers.get(header)))
    };
    // A trailers-only gRPC answer carries its status in the headers.
    let grpc_status = is_grpc
        .then(|| {
            trailers
                .get("grpc-status")
                .or_else(|| headers.get("grpc-status"))
        })
        .flatten()
        .and_then(|value| value.to_str().ok()?.parse().ok());
    Outcome {
        status: Some(status.as_u16()),
        grpc_status,
        pod: field("pod", POD_HEADER),
        version: field("version", VERSION_HEADER),
        latency_ms: 0.0,
        error: None,
        grpc: is_grpc,
    }
}

fn header_text(value: Option<&HeaderValue>) -> Option<String> {
    value
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Milliseconds with microsecond precision, so JSON stays short.
fn round_ms(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}
