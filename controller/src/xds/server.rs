//! The gRPC face of delta ADS: authenticates each stream, then runs one task per stream that
//! answers requests and pushes new snapshots.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::Stream;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

use super::connection::{Acknowledgement, AdsConnection, PendingResponse};
use super::registry::ProxyRegistry;
use super::resources::ResourceSnapshot;
use crate::auth::{Caller, Tokens};

/// Built responses queued per stream before the stream task waits for the proxy to read. Small
/// on purpose: a response is built only when there is room for it, so this bounds the memory
/// of a stream whose proxy reads slowly (see `MAX_RESPONSE_BYTES`).
const STREAM_QUEUE: usize = 1;

/// Labels of the per-type counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    type_url: String,
}

/// Labels of the refused-stream counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counters of the ADS server.
#[derive(Clone, Debug, Default)]
pub struct AdsMetrics {
    connected: Gauge,
    pushes: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
}

impl AdsMetrics {
    /// Creates the counters and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "mesh_xds_connected_proxies",
            "Proxies with an open ADS stream",
            m.connected.clone(),
        );
        registry.register(
            "mesh_xds_pushes",
            "ADS responses sent, by type",
            m.pushes.clone(),
        );
        registry.register(
            "mesh_xds_nacks",
            "ADS responses rejected by a proxy, by type",
            m.nacks.clone(),
        );
        registry.register(
            "mesh_xds_refused_streams",
            "ADS streams refused, by reason",
            m.refused.clone(),
        );
        m
    }
}

/// The delta ADS service.
#[derive(Clone)]
pub struct AdsService {
    tokens: Arc<watch::Receiver<Arc<Tokens>>>,
    snapshots: watch::Receiver<Arc<ResourceSnapshot>>,
    registry: ProxyRegistry,
    metrics: AdsMetrics,
    next_stream: Arc<AtomicU64>,
}

impl AdsService {
    /// Serves the snapshots published on `snapshots` to callers holding a token in `tokens`.
    pub fn new(
        tokens: watch::Receiver<Arc<Tokens>>,
        snapshots: watch::Receiver<Arc<ResourceSnapshot>>,
        registry: ProxyRegistry,
        metrics: AdsMetrics,
    ) -> Self {
        Self {
            tokens: Arc::new(tokens),
            snapshots,
            registry,
            metrics,
            next_stream: Arc::new(AtomicU64::new(1)),
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let caller = match self.tokens.borrow().authenticate(request.metadata()) {
            Ok(caller) => caller,
            Err(e) => {
                self.metrics
                    .refused
                    .get_or_create(&ReasonLabel {
                        reason: "unauthenticated",
                    })
                    .inc();
                warn!(error = %e, peer = ?request.remote_addr(), "ADS stream refused");
                return Err(e.into());
            }
        };
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr().map(|a| a.to_string());
        self.registry.connect(id, &caller, peer);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = StreamTask {
            id,
            caller,
            requests: request.into_inner(),
            responses: tx,
            snapshots: self.snapshots.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
        };
        let span = info_span!("ads", id, node = %stream.caller.node, kind = %stream.caller.kind);
        tokio::spawn(stream.run().instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One ADS stream: reads requests, pushes snapshots, records acknowledgements.
struct StreamTask {
    id: u64,
    caller: Caller,
    requests: Streaming<DeltaDiscoveryRequest>,
    responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    snapshots: watch::Receiver<Arc<ResourceSnapshot>>,
    registry: ProxyRegistry,
    metrics: AdsMetrics,
}

impl StreamTask {
    async fn run(mut self) {
        self.metrics.connected.inc();
        info!("proxy connected");
        let mut conn = AdsConnection::default();
        let mut proxy_id = String::new();
        let outcome = loop {
            tokio::select! {
                request = self.requests.message() => match request {
                    Ok(Some(request)) => {
                        if let Some(node) = &request.node {
                            proxy_id.clone_from(&node.id);
                        }
                        // Not marked as seen: this request may bring only one type up to
                        // date (or none, for an ACK); the `changed` branch still sees the
                        // snapshot and brings every other type up to date.
                        let snapshot = self.snapshots.borrow().clone();
                        let (ack, responses) = conn.on_request(request, &snapshot);
                        self.record(ack);
                        if !self.send(responses).await {
                            break "proxy stopped reading";
                        }
                    }
                    Ok(None) => break "proxy closed the stream",
                    Err(_) => break "stream error",
                },
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break "controller shutting down";
                    }
                    let snapshot = self.snapshots.borrow_and_update().clone();
                    let responses = conn.on_snapshot(&snapshot);
                    if !self.send(responses).await {
                        break "proxy stopped reading";
                    }
                }
            }
            self.registry.update(self.id, &proxy_id, conn.status());
        };
        self.registry.disconnect(self.id);
        self.metrics.connected.dec();
        info!(proxy_id, reason = outcome, "proxy disconnected");
    }

    fn record(&self, ack: Option<Acknowledgement>) {
        if let Some(Acknowledgement::Nack {
            type_url,
            version,
            message,
        }) = ack
        {
            warn!(type_url, version, message, "proxy rejected configuration");
            self.metrics
                .nacks
                .get_or_create(&TypeLabel { type_url })
                .inc();
        }
    }

    async fn send(&self, responses: Vec<PendingResponse>) -> bool {
        for response in responses {
            let Ok(room) = self.responses.reserve().await else {
                return false;
            };
            self.metrics
                .pushes
                .get_or_create(&TypeLabel {
                    type_url: response.type_url().to_string(),
                })
                .inc();
            room.send(Ok(response.build()));
        }
        true
    }
}
