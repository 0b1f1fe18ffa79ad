//! The waypoint on the real wire: a client opens HBONE (mutual TLS, HTTP/2 CONNECT to
//! `VIP:port`) to the waypoint's `HboneServer`; the waypoint routes the request and opens
//! HBONE under its own identity to the endpoint's HBONE server, which dials the app.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use ztunnel::hbone::{
    ClientMetrics, ClientSettings as HboneSettings, ConnectDecision, ConnectHandler,
    ConnectRequest, HboneClient, HboneServer, Rejection, ServerConfigSelector, ServerMetrics,
    ServerSettings, TunnelRequest,
};
use ztunnel::identity::SpiffeId;
use ztunnel::tls::server_config;

use crate::balance::{Balancer, BalancerMetrics, OutlierSettings};
use crate::inbound::{Inbound, InboundMetrics, InboundParts, InboundSettings, WaypointBinding};
use crate::proxy::build;
use crate::telemetry::RequestMetrics;
use crate::testing::*;
use crate::upstream::{ClientSettings, HboneConnector, HttpClient};

/// The endpoint side: an HBONE server that records who connected to what, then dials it.
struct EndpointTunnel {
    seen: Arc<Mutex<Vec<(SocketAddr, SpiffeId)>>>,
}

impl ConnectHandler for EndpointTunnel {
    async fn connect(&self, request: &ConnectRequest) -> ConnectDecision {
        self.seen
            .lock()
            .unwrap()
            .push((request.authority, request.peer_identity.clone()));
        match TcpStream::connect(request.authority).await {
            Ok(app) => ConnectDecision::Accept(Box::new(app)),
            Err(e) => ConnectDecision::Reject(Rejection::Unavailable(e.to_string().into())),
        }
    }
}

async fn hbone_server<H: ConnectHandler>(
    handler: H,
    address: SocketAddr,
    config: ServerConfigSelector,
) -> SocketAddr {
    let listener = TcpListener::bind(address).await.unwrap();
    let bound = listener.local_addr().unwrap();
    let server = HboneServer::new(
        handler,
        config,
        ServerSettings::default(),
        ServerMetrics::new(&mut Registry::default()),
    );
    tokio::spawn(server.serve(listener, std::future::pending()));
    bound
}

#[tokio::test]
async fn a_request_crosses_the_waypoint_over_hbone_both_ways() {
    let ca = TestCa::new();
    let waypoint_id = SpiffeId::new("cluster.local", NS, "waypoint").unwrap();
    let app_id = SpiffeId::new("cluster.local", NS, "front-0").unwrap();
    let client_id = client_identity();

    let mut world = World::new();
    world.hbone = true;
    world.service("front", [10, 96, 0, 1], &[80], true);
    let endpoint_ip = world.next_ip();
    let app = Backend::start(endpoint_ip, "front", ok()).await;
    world.workload("front-0", "front", 80, app.addr, true);

    // The endpoint's HBONE server, on the endpoint's address.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app_config = server_config(&ca.leaf(&app_id), &ca.bundle()).unwrap();
    let endpoint_hbone = hbone_server(
        EndpointTunnel { seen: seen.clone() },
        SocketAddr::new(endpoint_ip, 0),
        Arc::new(move |_| Some(app_config.clone())),
    )
    .await;

    // The waypoint: its HBONE server in front of the layer stack, HBONE to endpoints.
    let waypoint_cert = Arc::new(ca.leaf(&waypoint_id));
    let hbone = HboneClient::new(
        HboneSettings::default(),
        ClientMetrics::new(&mut Registry::default()),
    );
    let connector = HboneConnector::new(
        hbone,
        ca.bundle(),
        Arc::new(move || Some(waypoint_cert.clone())),
    )
    .with_hbone_port(endpoint_hbone.port());
    let mut registry = Registry::default();
    let metrics = RequestMetrics::new(&mut registry);
    let balancer = Arc::new(Balancer::new(
        OutlierSettings::default(),
        BalancerMetrics::new(&mut registry),
    ));
    let client = HttpClient::new(connector, ClientSettings::default());
    let (_drain_tx, drain) = watch::channel(false);
    let inbound = Inbound::new(InboundParts {
        binding: WaypointBinding {
            service: Some((NS.into(), WAYPOINT_HOST.into())),
            addresses: Vec::new(),
        },
        discovery: world.discovery.subscribe(),
        config: world.config.subscribe(),
        stack: build(client.clone(), balancer.clone(), metrics),
        client,
        balancer,
        metrics: InboundMetrics::new(&mut registry),
        settings: InboundSettings::default(),
        drain,
    });
    let waypoint_config = server_config(&ca.leaf(&waypoint_id), &ca.bundle()).unwrap();
    let waypoint_addr = hbone_server(
        inbound,
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(move |_| Some(waypoint_config.clone())),
    )
    .await;

    // A client workload's tunnel to the waypoint, addressed to the service VIP.
    let client = HboneClient::new(
        HboneSettings::default(),
        ClientMetrics::new(&mut Registry::default()),
    );
    let mut tunnel = client
        .connect(TunnelRequest {
            source: ca.leaf(&client_id),
            trust: ca.bundle(),
            destination: waypoint_addr,
            expected_identities: vec![waypoint_id.clone()],
            authority: "10.96.0.1:80".parse().unwrap(),
            headers: http::HeaderMap::new(),
        })
        .await
        .unwrap();
    tunnel
        .write_all(b"GET /through HTTP/1.1\r\nHost: front.shop.svc.cluster.local\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tunnel.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("x-served-by: front"), "{response}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, app.addr, "authority endpoint_ip:target_port");
    assert_eq!(
        seen[0].1, waypoint_id,
        "the waypoint dials under its own identity"
    );
}
