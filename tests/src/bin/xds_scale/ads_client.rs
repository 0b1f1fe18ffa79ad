//! One simulated proxy: a delta ADS stream over TLS with a bearer token, subscribed with the
//! wildcard to addresses and authorizations, acknowledging every response at once. It tells
//! the benchmark when its first sync is complete and when a probe pod's workload arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::istio::workload::{Address, address};
use mesh_proto::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::manifests::ExpectedResources;

/// The name the controller's serving certificate is checked against.
const CONTROLLER_NAME: &str = "controller";

/// Upper bound of the TCP and TLS connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response accepted; the controller splits responses at 1 MiB.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// What every client needs to reach the controller.
pub struct ClientConfig {
    pub grpc_addr: SocketAddr,
    pub roots_pem: String,
    pub expected: ExpectedResources,
    /// Workload resource name (uid) -> probe index, for the pods the rounds change.
    pub probes: HashMap<String, usize>,
}

/// What a client reports to the benchmark.
#[derive(Debug)]
pub enum ClientEvent {
    /// At least the expected number of resources of both types arrived, `elapsed` after the
    /// client started connecting; `received` is what arrived (addresses, authorizations).
    Synced {
        elapsed: Duration,
        received: (usize, usize),
    },
    /// A probe pod's workload arrived (and its ACK was queued) with this canonical revision,
    /// in a response of this snapshot generation.
    Probe {
        probe: usize,
        revision: String,
        generation: u64,
        at: Instant,
    },
    /// The stream failed.
    Failed { client: usize, error: String },
}

/// Runs one proxy until its stream ends or the task is aborted.
pub async fn run_client(
    client: usize,
    token: String,
    config: Arc<ClientConfig>,
    events: mpsc::UnboundedSender<ClientEvent>,
) {
    if let Err(e) = stream(client, &token, &config, &events).await {
        let _ = events.send(ClientEvent::Failed {
            client,
            error: format!("{e:#}"),
        });
    }
}

async fn stream(
    client: usize,
    token: &str,
    config: &ClientConfig,
    events: &mpsc::UnboundedSender<ClientEvent>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.roots_pem))
        .domain_name(CONTROLLER_NAME);
    let channel = Endpoint::from_shared(format!("https://{}", config.grpc_addr))?
        .tls_config(tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .context("cannot connect to the controller")?;
    let mut ads = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);

    let node = Node {
        id: format!(
            "ztunnel~10.255.0.{}~bench-{client}.mesh-system~mesh-system.svc.cluster.local",
            client % 250
        ),
        ..Default::default()
    };
    let (requests, outgoing) = mpsc::unbounded_channel();
    for type_url in [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL] {
        let _ = requests.send(DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: type_url.to_string(),
            resource_names_subscribe: vec!["*".to_string()],
            ..Default::default()
        });
    }
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(outgoing));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut responses = ads
        .delta_aggregated_resources(request)
        .await
        .context("the controller refused the stream")?
        .into_inner();

    let mut counts = SyncCount::default();
    while let Some(response) = responses.message().await.context("the stream failed")? {
        let _ = requests.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        });
        let acked_at = Instant::now();
        if counts.add(&response, &config.expected) {
            let _ = events.send(ClientEvent::Synced {
                elapsed: started.elapsed(),
                received: (counts.addresses, counts.authorizations),
            });
        }
        if response.type_url == ADDRESS_TYPE_URL {
            report_probes(&response, config, acked_at, events);
        }
    }
    anyhow::bail!("the controller closed the stream")
}

/// Resources held per type. The controller sends a fresh wildcard subscription every
/// resource exactly once, so counting (rather than remembering 11,000 names per client) is
/// enough to see the end of the first sync.
#[derive(Default)]
struct SyncCount {
    addresses: usize,
    authorizations: usize,
    synced: bool,
}

impl SyncCount {
    /// Adds a response; true the first time both types are complete.
    fn add(&mut self, response: &DeltaDiscoveryResponse, expected: &ExpectedResources) -> bool {
        let count = match response.type_url.as_str() {
            ADDRESS_TYPE_URL => &mut self.addresses,
            AUTHORIZATION_TYPE_URL => &mut self.authorizations,
            _ => return false,
        };
        if !self.synced {
            *count += response.resources.len();
            *count = count.saturating_sub(response.removed_resources.len());
        }
        let done =
            self.addresses >= expected.addresses && self.authorizations >= expected.authorizations;
        let first = done && !self.synced;
        self.synced |= done;
        first
    }
}

fn report_probes(
    response: &DeltaDiscoveryResponse,
    config: &ClientConfig,
    at: Instant,
    events: &mpsc::UnboundedSender<ClientEvent>,
) {
    let generation = response.system_version_info.parse().unwrap_or(0);
    for resource in &response.resources {
        let Some(&probe) = config.probes.get(&resource.name) else {
            continue;
        };
        let Some(body) = &resource.resource else {
            continue;
        };
        let Ok(Address {
            r#type: Some(address::Type::Workload(workload)),
        }) = Address::decode(body.value.as_slice())
        else {
            continue;
        };
        let _ = events.send(ClientEvent::Probe {
            probe,
            revision: workload.canonical_revision,
            generation,
            at,
        });
    }
}
