//! `waypoint-standalone`: the waypoint's L7 engine on a plaintext listener, with a fixed
//! route table, so that it can be measured beside another proxy doing the same work
//! (tests/bench/waypoint.sh runs it beside Envoy).
//!
//! Everything from the tunnel's bytes on is the waypoint's own code, as the binary wires it
//! (`waypoint::app`): each accepted TCP connection is handed to `Inbound::serve_tunnel` (the
//! protocol sniff, hyper's HTTP/1.1 or HTTP/2 server with the waypoint's limits, the whole
//! layer stack: telemetry, normalization, L7 policy, routing, faults, mirrors, deadlines,
//! retries, P2C balancing with outlier detection), and requests leave through the
//! waypoint's pooled `HttpClient`. What is left out is HBONE on both sides: the connection
//! arrives as plain TCP instead of a CONNECT stream inside mutual TLS, and the endpoints are
//! dialed with plain TCP (`TcpConnector`, as for endpoints outside the mesh) instead of
//! HBONE. The full path with HBONE is measured in the lab.
//!
//! The route table is the benchmark's: service `reviews` (bound to this waypoint) splits
//! requests by weight between `reviews-v1` and `reviews-v2`, one endpoint each, and retries
//! a failed attempt (5xx, connect failure, reset) up to `--retries` times. It is fed through
//! the same resource handlers the xDS client feeds, as protobuf, so it is compiled and
//! indexed exactly as one pushed by the controller.
//!
//! Logging is the waypoint binary's (`RUST_LOG`, default `info`, which writes one access-log
//! line per request to stderr through the same queued writer; `RUST_LOG=info,access=off`
//! turns that off).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use mesh_proto::istio::workload as wl;
use mesh_proto::mesh::waypoint::v1 as wp;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use waypoint::balance::{Balancer, BalancerMetrics, OutlierSettings};
use waypoint::config::{ConfigStore, WaypointName};
use waypoint::inbound::{Inbound, InboundMetrics, InboundParts, InboundSettings, WaypointBinding};
use waypoint::proxy::{Peer, build};
use waypoint::telemetry::{AccessLog, AccessLogSettings, RequestMetrics};
use waypoint::upstream::{ClientSettings, HttpClient, TcpConnector};
use ztunnel::identity::SpiffeId;
use ztunnel::state::{DiscoveryStore, MeshDefaults};
use ztunnel::xds::{NamedResource, ResourceHandler, ResourceUpdate};

const NS: &str = "bench";
const GATEWAY: &str = "waypoint";
const SERVICE_PORT: u16 = 80;
/// The VIP of `reviews`: only a key in the discovery state (connections arrive on the
/// listener), kept in the loopback range all the same.
const VIP: [u8; 4] = [127, 0, 1, 1];

#[derive(Parser, Debug)]
#[command(
    name = "waypoint-standalone",
    about = "The waypoint's L7 engine on a plaintext listener with a fixed 2-backend route table"
)]
struct Args {
    /// Where to accept HTTP/1.1 and HTTP/2 (prior knowledge); loopback only.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// The endpoint of `reviews-v1` (plain HTTP).
    #[arg(long)]
    v1: SocketAddr,
    /// The endpoint of `reviews-v2` (plain HTTP).
    #[arg(long)]
    v2: SocketAddr,
    /// Weights of v1 and v2, as `V1,V2`.
    #[arg(long, value_delimiter = ',', default_values_t = [90, 10])]
    weights: Vec<u32>,
    /// Retries after the first attempt (on 5xx, connect failure and reset).
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Data-path worker threads (the waypoint's `--worker-threads`).
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for addr in [args.listen, args.v1, args.v2] {
        if !addr.ip().is_loopback() {
            bail!("{addr} is not a loopback address: this benchmark proxy stays on loopback");
        }
    }
    if args.weights.len() != 2 {
        bail!("--weights takes two numbers, V1,V2");
    }
    if args.v1.ip() == args.v2.ip() {
        bail!(
            "give v1 and v2 different addresses (e.g. 127.0.0.11 and 127.0.0.12): discovery knows a workload by its IP"
        );
    }
    let _set_level = ztunnel::admin::init_logging(false);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .thread_name("data")
        .enable_all()
        .build()
        .context("cannot start the data runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let (discovery, config) = route_table(&args)?;
    let mut registry = Registry::default();
    let client = HttpClient::new(TcpConnector, ClientSettings::default());
    let balancer = Arc::new(Balancer::new(
        OutlierSettings::default(),
        BalancerMetrics::new(&mut registry),
    ));
    // Never finished: the process runs until it is killed, as in the benchmark.
    let (access_log, _writer) = AccessLog::start(
        &AccessLogSettings::stderr(false),
        Box::new(std::io::stderr()),
        &mut registry,
    )
    .context("cannot start the access-log writer")?;
    let (_drain_tx, drain) = watch::channel(false);
    let inbound = Inbound::new(InboundParts {
        binding: WaypointBinding {
            service: Some((NS.into(), host(GATEWAY).into())),
            addresses: Vec::new(),
        },
        discovery: discovery.subscribe(),
        config: config.subscribe(),
        stack: build(
            client.clone(),
            balancer.clone(),
            RequestMetrics::new(&mut registry).with_access_log(access_log),
        ),
        client,
        balancer,
        metrics: InboundMetrics::new(&mut registry),
        settings: InboundSettings::default(),
        drain,
    });
    // What a ztunnel's CONNECT would name: the service's VIP and port.
    let vip = SocketAddr::from((VIP, SERVICE_PORT));
    let destination = inbound
        .admit(vip)
        .map_err(|r| anyhow::anyhow!("the route table does not admit {vip}: {}", r.reason()))?;
    let client_identity = SpiffeId::new("cluster.local", NS, "client")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, v1 = %args.v1, v2 = %args.v2, weights = ?args.weights, retries = args.retries, "waypoint-standalone serving");
    loop {
        let (tcp, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let peer = Peer {
            identity: client_identity.clone(),
            address: peer_addr,
        };
        let (inbound, destination) = (inbound.clone(), destination.clone());
        tokio::spawn(async move { inbound.serve_tunnel(tcp, peer, vip, destination).await });
    }
}

fn host(name: &str) -> String {
    format!("{name}.{NS}.svc.cluster.local")
}

/// The discovery state and the routes, applied through the xDS resource handlers.
fn route_table(args: &Args) -> anyhow::Result<(DiscoveryStore, ConfigStore)> {
    let mut discovery = DiscoveryStore::new(MeshDefaults::default());
    let mut addresses = vec![(
        format!("{NS}/{}", host("reviews")),
        service("reviews", VIP, true),
    )];
    for (version, endpoint, vip) in [
        ("v1", args.v1, [127, 0, 1, 2]),
        ("v2", args.v2, [127, 0, 1, 3]),
    ] {
        let name = format!("reviews-{version}");
        addresses.push((format!("{NS}/{}", host(&name)), service(&name, vip, false)));
        addresses.push((name.clone(), workload(&name, endpoint)));
    }
    let resources = addresses
        .into_iter()
        .map(|(name, address)| NamedResource {
            name,
            body: wl::Address {
                r#type: Some(address),
            }
            .encode_to_vec(),
        })
        .collect();
    let rejected = discovery.apply(
        mesh_proto::ADDRESS_TYPE_URL,
        ResourceUpdate {
            resources,
            removed: Vec::new(),
        },
    );
    if !rejected.is_empty() {
        bail!("discovery rejected the benchmark's addresses: {rejected:?}");
    }

    let mut config = ConfigStore::new(WaypointName {
        gateway: format!("{NS}/{GATEWAY}").into(),
    });
    let backend = |name: &str, weight: u32| wp::Backend {
        hostname: host(name),
        port: SERVICE_PORT.into(),
        weight,
    };
    let route = wp::RouteConfiguration {
        name: format!("{NS}/reviews"),
        namespace: NS.into(),
        parents: vec![wp::ParentRef {
            target: Some(wp::parent_ref::Target::Service(host("reviews"))),
            port: SERVICE_PORT.into(),
        }],
        hostnames: Vec::new(),
        rules: vec![wp::Rule {
            backends: vec![
                backend("reviews-v1", args.weights[0]),
                backend("reviews-v2", args.weights[1]),
            ],
            retry: Some(wp::RetryPolicy {
                attempts: args.retries,
                codes: vec![500, 502, 503, 504],
                backoff: None,
                retry_on_connect_failure: true,
                retry_on_reset: true,
            }),
            ..Default::default()
        }],
    };
    let rejected = config.apply(
        mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
        ResourceUpdate {
            resources: vec![NamedResource {
                name: route.name.clone(),
                body: route.encode_to_vec(),
            }],
            removed: Vec::new(),
        },
    );
    if !rejected.is_empty() {
        bail!("the waypoint rejected the benchmark's route: {rejected:?}");
    }
    Ok((discovery, config))
}

/// A service with one port (80 -> 80), bound to this waypoint when `bound`.
fn service(name: &str, vip: [u8; 4], bound: bool) -> wl::address::Type {
    let waypoint = bound.then(|| wl::GatewayAddress {
        destination: Some(wl::gateway_address::Destination::Hostname(
            wl::NamespacedHostname {
                namespace: NS.into(),
                hostname: host(GATEWAY),
            },
        )),
        hbone_mtls_port: 15008,
    });
    wl::address::Type::Service(wl::Service {
        name: name.into(),
        namespace: NS.into(),
        hostname: host(name),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: vip.to_vec(),
        }],
        ports: vec![wl::Port {
            service_port: SERVICE_PORT.into(),
            target_port: SERVICE_PORT.into(),
        }],
        waypoint,
        ..Default::default()
    })
}

/// The one endpoint of service `name`, outside the mesh (plain TCP), at `endpoint`.
fn workload(name: &str, endpoint: SocketAddr) -> wl::address::Type {
    let address = match endpoint.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    wl::address::Type::Workload(wl::Workload {
        uid: name.into(),
        name: name.into(),
        namespace: NS.into(),
        addresses: vec![address],
        service_account: name.into(),
        workload_name: name.into(),
        canonical_name: "reviews".into(),
        canonical_revision: name.into(),
        services: BTreeMap::from([(
            format!("{NS}/{}", host(name)),
            wl::PortList {
                ports: vec![wl::Port {
                    service_port: SERVICE_PORT.into(),
                    target_port: endpoint.port().into(),
                }],
            },
        )]),
        ..Default::default()
    })
}
