//! The ADS client task: connect, subscribe, apply and (N)ACK, reconnect with backoff.

use std::future::Future;
use std::sync::Arc;

use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::config::{
    CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_RESPONSE_BYTES, XdsConfig,
};
use super::metrics::XdsMetrics;
use super::subscriptions::Subscriptions;
use super::{ResourceHandler, XdsError, error_chain};

/// Requests queued on a stream before the client waits for the transport: the initial
/// subscriptions plus a few (N)ACKs.
const REQUEST_QUEUE: usize = 16;

/// Where the client is in its connect loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Dialing the controller or waiting for it to accept the stream.
    Connecting,
    /// The stream is open.
    Connected,
    /// Waiting out the backoff after a failure.
    Disconnected,
}

/// What the client reports about itself (readiness, admin).
#[derive(Clone, Debug)]
pub struct XdsStatus {
    /// Where the connect loop is.
    pub connection: ConnectionState,
    /// Every subscribed type has had its first response. Stays true across reconnects: the
    /// last known state keeps serving.
    pub synced: bool,
    /// Why the last stream ended, if one did.
    pub last_error: Option<Arc<XdsError>>,
}

/// The delta ADS client. Build it, take its [`status`](Self::status) receiver, then spawn
/// [`run`](Self::run).
pub struct AdsClient {
    config: XdsConfig,
    endpoint: Endpoint,
    handler: Box<dyn ResourceHandler>,
    subscriptions: Subscriptions,
    metrics: XdsMetrics,
    status: watch::Sender<XdsStatus>,
}

impl AdsClient {
    /// Checks the configuration (address, TLS) and prepares the client; nothing is dialed
    /// until [`run`](Self::run).
    pub fn new(
        config: XdsConfig,
        handler: Box<dyn ResourceHandler>,
        metrics: XdsMetrics,
    ) -> Result<Self, XdsError> {
        let endpoint = endpoint(&config)?;
        let subscriptions = Subscriptions::new(handler.type_urls());
        let (status, _) = watch::channel(XdsStatus {
            connection: ConnectionState::Connecting,
            synced: false,
            last_error: None,
        });
        Ok(Self {
            config,
            endpoint,
            handler,
            subscriptions,
            metrics,
            status,
        })
    }

    /// A receiver of the client's status; `borrow().synced` is the readiness signal.
    pub fn status(&self) -> watch::Receiver<XdsStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` completes: keeps one stream open, reconnecting with backoff.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut backoff = Backoff::new(self.config.backoff);
        tokio::pin!(shutdown);
        loop {
            self.status
                .send_modify(|s| s.connection = ConnectionState::Connecting);
            let error = tokio::select! {
                error = self.stream(&mut backoff) => error,
                () = &mut shutdown => break,
            };
            self.metrics.set_connected(false);
            self.metrics.reconnect(error.metric_label());
            let delay = backoff.next_delay();
            warn!(%error, retry_in = ?delay, "no ADS stream to the controller; the last known configuration keeps serving");
            self.status.send_modify(|s| {
                s.connection = ConnectionState::Disconnected;
                s.last_error = Some(Arc::new(error));
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => break,
            }
        }
        self.metrics.set_connected(false);
        info!("ADS client stopped");
    }

    /// One stream, from dial to its end; returns why it ended.
    async fn stream(&mut self, backoff: &mut Backoff) -> XdsError {
        let (requests, mut responses) = match self.open().await {
            Ok(stream) => stream,
            Err(error) => return error,
        };
        info!(address = %self.config.address, "ADS stream open");
        self.metrics.set_connected(true);
        self.status
            .send_modify(|s| s.connection = ConnectionState::Connected);
        loop {
            let response = match responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return XdsError::StreamClosed,
                Err(status) => {
                    return XdsError::StreamFailed {
                        code: status.code(),
                        message: status.message().to_string(),
                    };
                }
            };
            // The controller answered: the next failure starts a fresh run of backoff.
            backoff.reset();
            let reply = self.apply(response);
            if requests.send(reply).await.is_err() {
                return XdsError::StreamClosed;
            }
        }
    }

    /// Dials, subscribes and waits for the controller to accept the stream.
    async fn open(
        &mut self,
    ) -> Result<
        (
            mpsc::Sender<DeltaDiscoveryRequest>,
            Streaming<DeltaDiscoveryResponse>,
        ),
        XdsError,
    > {
        let address = &self.config.address;
        let token = self.bearer()?;
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| XdsError::Connect {
                address: address.clone(),
                detail: error_chain(&e),
            })?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let initial = self.subscriptions.initial_requests(self.node());
        let (requests, queue) = mpsc::channel(REQUEST_QUEUE.max(initial.len()));
        for request in initial {
            // Cannot fail: the queue is sized for the initial requests and nothing reads yet.
            let _ = requests.try_send(request);
        }
        let mut request = tonic::Request::new(ReceiverStream::new(queue));
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", token);
        }
        match client.delta_aggregated_resources(request).await {
            Ok(response) => Ok((requests, response.into_inner())),
            Err(status) => Err(refused(address, status)),
        }
    }

    fn apply(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let (upserts, removals) = (response.resources.len(), response.removed_resources.len());
        let applied = self.subscriptions.apply(self.handler.as_mut(), response);
        self.metrics
            .applied(&applied.type_url, applied.rejections.len());
        match &applied.reply.error_detail {
            Some(nack) => warn!(
                type_url = applied.type_url,
                message = nack.message,
                "NACK: resources rejected"
            ),
            None => debug!(type_url = applied.type_url, upserts, removals, "ACK"),
        }
        if !self.status.borrow().synced && self.subscriptions.synced() {
            info!("initial ADS sync complete");
            self.status.send_modify(|s| s.synced = true);
        }
        applied.reply
    }

    /// The `authorization` metadata, read from the token file now so rotations apply.
    fn bearer(&self) -> Result<Option<MetadataValue<tonic::metadata::Ascii>>, XdsError> {
        let Some(path) = &self.config.token_file else {
            return Ok(None);
        };
        // A few bytes from a local file, once per connection: not worth a blocking-pool hop.
        let token = std::fs::read_to_string(path).map_err(|source| XdsError::Token {
            path: path.clone(),
            source,
        })?;
        let token = token.trim();
        let bad = || XdsError::BadToken { path: path.clone() };
        if token.is_empty() {
            return Err(bad());
        }
        MetadataValue::try_from(format!("Bearer {token}"))
            .map(Some)
            .map_err(|_| bad())
    }

    fn node(&self) -> Node {
        let node_name = prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(
                self.config.node_name.to_string(),
            )),
        };
        Node {
            id: self.config.proxy_id.clone(),
            metadata: Some(prost_types::Struct {
                fields: [("NODE_NAME".to_string(), node_name)].into(),
            }),
            ..Default::default()
        }
    }
}

fn refused(address: &str, status: tonic::Status) -> XdsError {
    let (address, message) = (address.to_string(), status.message().to_string());
    match status.code() {
        tonic::Code::Unauthenticated => XdsError::Unauthenticated { address, message },
        code => XdsError::Refused {
            address,
            code,
            message,
        },
    }
}

/// The tonic endpoint for the configured address and TLS settings.
fn endpoint(config: &XdsConfig) -> Result<Endpoint, XdsError> {
    let address_error = |detail: String| XdsError::Address {
        address: config.address.clone(),
        detail,
    };
    let mut endpoint = Endpoint::from_shared(config.address.clone())
        .map_err(|e| address_error(error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        let tls_config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.roots_pem))
            .domain_name(tls.server_name.clone())
            .timeout(CONNECT_TIMEOUT);
        endpoint = endpoint.tls_config(tls_config).map_err(|e| XdsError::Tls {
            detail: error_chain(&e),
        })?;
    } else if config.address.starts_with("https://") {
        return Err(address_error(
            "https:// needs TLS settings (a trust bundle)".to_string(),
        ));
    }
    Ok(endpoint)
}
