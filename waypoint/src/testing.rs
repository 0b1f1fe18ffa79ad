//! An in-process world for tests: discovery and configuration fed through the same
//! resource handlers the xDS client uses, backends that are real HTTP servers on loopback
//! (port 0, one loopback IP per workload), and the layer stack over plain TCP.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proto::istio::workload as wl;
use mesh_proto::mesh::waypoint::v1 as wp;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ztunnel::identity::SpiffeId;
use ztunnel::state::{DiscoveryStore, MeshDefaults};
use ztunnel::xds::{NamedResource, ResourceHandler, ResourceUpdate};

use crate::balance::{Balancer, BalancerMetrics, OutlierSettings};
use crate::body::{self, Body};
use crate::config::{ConfigStore, WaypointName};
use crate::inbound::{Inbound, InboundMetrics, InboundParts, InboundSettings, WaypointBinding};
use crate::proxy::{Destination, Peer, RequestContext, Stack, build};
use crate::relay::RelaySettings;
use crate::telemetry::RequestMetrics;
use crate::upstream::{
    BoxedIo, ClientSettings, ConnectError, Connector, HttpClient, HttpVersion, TcpConnector,
    UpstreamTarget,
};

pub(crate) const NS: &str = "shop";
pub(crate) const GATEWAY: &str = "shop/waypoint";
pub(crate) const WAYPOINT_HOST: &str = "waypoint.shop.svc.cluster.local";

/// The hostname of service `name` in the test namespace.
pub(crate) fn host(name: &str) -> String {
    format!("{name}.{NS}.svc.cluster.local")
}

/// What a backend answers: status and a delay, decided per request (with its 0-based
/// number at this backend).
pub(crate) type Behaviour =
    Arc<dyn Fn(&Request<Incoming>, u64) -> (StatusCode, Duration) + Send + Sync>;

/// Always 200 at once.
pub(crate) fn ok() -> Behaviour {
    Arc::new(|_, _| (StatusCode::OK, Duration::ZERO))
}

/// A backend: an HTTP/1.1 + HTTP/2 server answering with its name in `x-served-by` and
/// echoing the request's path, authority and selected headers.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicU64>,
    /// The heads of the requests received.
    pub(crate) seen: Arc<Mutex<Vec<http::request::Parts>>>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub(crate) async fn start(ip: IpAddr, name: &'static str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (task_hits, task_seen) = (hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (hits, seen, behaviour) =
                    (task_hits.clone(), task_seen.clone(), behaviour.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    let (status, delay) = behaviour(&request, n);
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let received = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        seen.lock().unwrap().push(parts);
                        tokio::time::sleep(delay).await;
                        let mut response = Response::new(http_body_util::Full::new(Bytes::from(
                            format!("{name}:{}", received.len()),
                        )));
                        *response.status_mut() = status;
                        response
                            .headers_mut()
                            .insert("x-served-by", http::HeaderValue::from_static(name));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            seen,
            task,
        }
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Services, workloads, routes and policies, fed through the real resource handlers.
pub(crate) struct World {
    pub(crate) discovery: DiscoveryStore,
    pub(crate) config: ConfigStore,
    /// Whether workloads added from now on are reached over HBONE.
    pub(crate) hbone: bool,
    next_ip: u8,
}

impl World {
    pub(crate) fn new() -> Self {
        Self {
            discovery: DiscoveryStore::new(MeshDefaults::default()),
            config: ConfigStore::new(WaypointName {
                gateway: GATEWAY.into(),
            }),
            hbone: false,
            next_ip: 10,
        }
    }

    /// A fresh loopback address for a workload.
    pub(crate) fn next_ip(&mut self) -> IpAddr {
        self.next_ip += 1;
        IpAddr::from([127, 0, 0, self.next_ip])
    }

    /// A service with `vip` and `ports` (service port = target port), bound to the waypoint
    /// when `bound`.
    pub(crate) fn service(&mut self, name: &str, vip: [u8; 4], ports: &[u16], bound: bool) {
        let waypoint = bound.then(|| wl::GatewayAddress {
            destination: Some(wl::gateway_address::Destination::Hostname(
                wl::NamespacedHostname {
                    namespace: NS.into(),
                    hostname: WAYPOINT_HOST.into(),
                },
            )),
            hbone_mtls_port: 15008,
        });
        let service = wl::Service {
            name: name.into(),
            namespace: NS.into(),
            hostname: host(name),
            addresses: vec![wl::NetworkAddress {
                network: String::new(),
                address: vip.to_vec(),
            }],
            ports: ports
                .iter()
                .map(|&p| wl::Port {
                    service_port: p.into(),
                    target_port: p.into(),
                })
                .collect(),
            waypoint,
            ..Default::default()
        };
        let name = format!("{NS}/{}", host(name));
        self.address(&name, wl::address::Type::Service(service));
    }

    /// A workload at `addr` backing `service` on `service_port` (its target port is the
    /// backend's own port).
    pub(crate) fn workload(
        &mut self,
        uid: &str,
        service: &str,
        service_port: u16,
        addr: SocketAddr,
        healthy: bool,
    ) {
        let workload = wl::Workload {
            uid: uid.into(),
            name: uid.into(),
            namespace: NS.into(),
            addresses: vec![match addr.ip() {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            }],
            service_account: uid.into(),
            workload_name: uid.into(),
            canonical_name: service.into(),
            canonical_revision: uid.into(),
            status: if healthy { 0 } else { 1 },
            tunnel_protocol: i32::from(self.hbone),
            services: BTreeMap::from([(
                format!("{NS}/{}", host(service)),
                wl::PortList {
                    ports: vec![wl::Port {
                        service_port: service_port.into(),
                        target_port: addr.port().into(),
                    }],
                },
            )]),
            ..Default::default()
        };
        self.address(uid, wl::address::Type::Workload(workload));
    }

    fn address(&mut self, name: &str, address: wl::address::Type) {
        let body = wl::Address {
            r#type: Some(address),
        }
        .encode_to_vec();
        let rejected = self
            .discovery
            .apply(mesh_proto::ADDRESS_TYPE_URL, update(name, body));
        assert!(rejected.is_empty(), "{rejected:?}");
    }

    /// Applies a route; returns the rejections.
    pub(crate) fn route(&mut self, route: wp::RouteConfiguration) -> Vec<ztunnel::xds::Rejection> {
        let name = route.name.clone();
        self.config.apply(
            mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
            update(&name, route.encode_to_vec()),
        )
    }

    /// Applies a policy; returns the rejections.
    pub(crate) fn policy(&mut self, policy: wp::L7Policy) -> Vec<ztunnel::xds::Rejection> {
        let name = policy.name.clone();
        self.config.apply(
            mesh_proto::L7_POLICY_TYPE_URL,
            update(&name, policy.encode_to_vec()),
        )
    }

    /// The stack over plain TCP, with fresh metrics.
    pub(crate) fn proxy(&self) -> TestProxy {
        self.proxy_with(OutlierSettings::default())
    }

    pub(crate) fn proxy_with(&self, outlier: OutlierSettings) -> TestProxy {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::new(&mut registry);
        let balancer = Arc::new(Balancer::new(outlier, BalancerMetrics::new(&mut registry)));
        let client = HttpClient::new(TcpConnector, ClientSettings::default());
        let stack = build(client.clone(), balancer.clone(), metrics.clone());
        TestProxy {
            stack: Arc::new(stack),
            discovery: self.discovery.subscribe(),
            config: self.config.subscribe(),
            metrics,
            registry: Arc::new(registry),
            balancer,
            client,
        }
    }
}

fn update(name: &str, body: Vec<u8>) -> ResourceUpdate {
    ResourceUpdate {
        resources: vec![NamedResource {
            name: name.into(),
            body,
        }],
        removed: Vec::new(),
    }
}

/// The stack and what it reads, ready to take requests as if from a tunnel.
#[derive(Clone)]
pub(crate) struct TestProxy {
    pub(crate) stack: Arc<Stack<TcpConnector>>,
    pub(crate) discovery: watch::Receiver<Arc<ztunnel::state::DiscoverySnapshot>>,
    pub(crate) config: watch::Receiver<Arc<crate::config::ConfigSnapshot>>,
    pub(crate) metrics: RequestMetrics,
    pub(crate) registry: Arc<Registry>,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) client: HttpClient<TcpConnector>,
}

/// The identity test clients present.
pub(crate) fn client_identity() -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", "frontend").unwrap()
}

impl TestProxy {
    /// Sends `request` to service `name` port `port`, as `peer`, and reads the whole response.
    pub(crate) async fn send_as(
        &self,
        peer: SpiffeId,
        name: &str,
        port: u16,
        request: Request<Body>,
    ) -> (StatusCode, http::HeaderMap, String) {
        let discovery = self.discovery.borrow().clone();
        let config = self.config.borrow().clone();
        let service = discovery
            .service_by_hostname(NS, &host(name))
            .expect("test service");
        let peer = Peer {
            identity: peer,
            address: "127.0.0.2:40000".parse().unwrap(),
        };
        let mut cx = RequestContext::new(
            peer,
            Destination { service, port },
            HttpVersion::Http1,
            discovery,
            config,
        );
        let response = self.stack.serve(request, &mut cx).await;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// A GET of `path` to service `name` port `port`.
    pub(crate) async fn get(
        &self,
        name: &str,
        port: u16,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        self.send_as(client_identity(), name, port, get(name, path))
            .await
    }

    /// The metrics in Prometheus text form.
    pub(crate) fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// The waypoint's inbound handler over this proxy's stack; byte relays (proxied TCP,
    /// upgraded connections) drain with the HTTP connections, with the default timeouts.
    pub(crate) fn inbound(
        &self,
        drain: watch::Receiver<bool>,
    ) -> (Inbound<TcpConnector>, InboundMetrics) {
        self.inbound_with(RelaySettings::default(), drain)
    }

    /// The waypoint's inbound handler over this proxy's stack, its byte relays ended under
    /// `relays`, draining on `drain`.
    pub(crate) fn inbound_with(
        &self,
        relays: RelaySettings,
        drain: watch::Receiver<bool>,
    ) -> (Inbound<TcpConnector>, InboundMetrics) {
        build_inbound(
            self,
            self.client.clone(),
            self.balancer.clone(),
            relays,
            drain,
        )
    }

    /// The waypoint's inbound handler over `connector` rather than TCP, with fresh balancer
    /// state, its byte relays ended under `relays`, draining on `drain`.
    pub(crate) fn inbound_over<C: Connector>(
        &self,
        connector: C,
        relays: RelaySettings,
        drain: watch::Receiver<bool>,
    ) -> (Inbound<C>, InboundMetrics) {
        let client = HttpClient::new(connector, ClientSettings::default());
        let balancer = Arc::new(Balancer::new(
            OutlierSettings::default(),
            BalancerMetrics::new(&mut Registry::default()),
        ));
        build_inbound(self, client, balancer, relays, drain)
    }
}

/// The waypoint's inbound handler over `client`, reading `proxy`'s discovery and config and
/// recording into its metrics.
fn build_inbound<C: Connector>(
    proxy: &TestProxy,
    client: HttpClient<C>,
    balancer: Arc<Balancer>,
    relays: RelaySettings,
    drain: watch::Receiver<bool>,
) -> (Inbound<C>, InboundMetrics) {
    let metrics = InboundMetrics::new(&mut Registry::default());
    let stack = build(client.clone(), balancer.clone(), proxy.metrics.clone())
        .with_upgrades(relays, drain.clone());
    let inbound = Inbound::new(InboundParts {
        binding: WaypointBinding {
            service: Some((NS.into(), WAYPOINT_HOST.into())),
            addresses: Vec::new(),
        },
        discovery: proxy.discovery.clone(),
        config: proxy.config.clone(),
        stack,
        client,
        balancer,
        metrics: metrics.clone(),
        settings: InboundSettings {
            relays,
            ..InboundSettings::default()
        },
        drain,
    });
    (inbound, metrics)
}

/// Endpoints as in-memory pipes, for tests on paused time (where a real socket that is not
/// ready at once lets the clock jump ahead): every stream the waypoint opens is one end of a
/// pipe, and the endpoint's end comes out of the channel with the address dialed.
pub(crate) struct PipeConnector {
    dialed: tokio::sync::mpsc::UnboundedSender<(SocketAddr, tokio::io::DuplexStream)>,
}

impl PipeConnector {
    /// A connector, and where the endpoints' ends of its pipes arrive.
    pub(crate) fn new() -> (
        Self,
        tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, tokio::io::DuplexStream)>,
    ) {
        let (dialed, endpoints) = tokio::sync::mpsc::unbounded_channel();
        (Self { dialed }, endpoints)
    }
}

impl Connector for PipeConnector {
    async fn connect(&self, target: &UpstreamTarget) -> Result<BoxedIo, ConnectError> {
        let (waypoint, endpoint) = tokio::io::duplex(64 * 1024);
        self.dialed
            .send((target.address, endpoint))
            .map_err(|_| ConnectError::Tcp {
                address: target.address,
                source: std::io::ErrorKind::ConnectionRefused.into(),
            })?;
        Ok(Box::new(waypoint))
    }
}

/// A GET of `path` with the service's host.
pub(crate) fn get(name: &str, path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header(http::header::HOST, format!("{}:80", host(name)))
        .body(body::empty())
        .unwrap()
}

/// A route named `shop/<name>` attached to service `service` with `rules`.
pub(crate) fn route(name: &str, service: &str, rules: Vec<wp::Rule>) -> wp::RouteConfiguration {
    wp::RouteConfiguration {
        name: format!("{NS}/{name}"),
        namespace: NS.into(),
        parents: vec![wp::ParentRef {
            target: Some(wp::parent_ref::Target::Service(host(service))),
            port: 0,
        }],
        hostnames: Vec::new(),
        rules,
    }
}

/// A backend reference to service `name` port `port` with `weight`.
pub(crate) fn to(name: &str, port: u16, weight: u32) -> wp::Backend {
    wp::Backend {
        hostname: host(name),
        port: port.into(),
        weight,
    }
}

/// A rule with `matches` forwarding to `backends`.
pub(crate) fn rule(matches: Vec<wp::RouteMatch>, backends: Vec<wp::Backend>) -> wp::Rule {
    wp::Rule {
        matches,
        backends,
        ..Default::default()
    }
}

/// A path match.
pub(crate) fn path(kind: wp::path_match::Kind) -> wp::RouteMatch {
    wp::RouteMatch {
        path: Some(wp::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

/// A protobuf duration of `ms` milliseconds.
pub(crate) fn millis(ms: u64) -> prost_types::Duration {
    prost_types::Duration::try_from(Duration::from_millis(ms)).unwrap()
}

/// A certificate authority for tests: a self-signed root and SPIFFE leaves signed by it, as
/// the controller's CA issues them (ECDSA P-256, client and server auth).
pub(crate) struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn bundle(&self) -> ztunnel::tls::TrustBundle {
        ztunnel::tls::TrustBundle::from_pem("cluster.local", self.issuer.pem().as_bytes()).unwrap()
    }

    pub(crate) fn leaf(&self, identity: &SpiffeId) -> ztunnel::tls::WorkloadCertificate {
        use rcgen::{
            CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ztunnel::tls::WorkloadCertificate::from_pem(
            identity,
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }
}

/// Opens a tunnel to `vip:port` through `inbound`, as `client_identity()`, and serves it as
/// the HBONE server would; the returned end plays the client's side of the tunnel.
pub(crate) async fn open_tunnel(
    inbound: &impl ztunnel::hbone::ConnectHandler,
    vip: [u8; 4],
    port: u16,
) -> tokio::io::DuplexStream {
    use ztunnel::hbone::{ConnectDecision, ConnectRequest};
    let request = ConnectRequest {
        authority: SocketAddr::from((vip, port)),
        peer_identity: client_identity(),
        peer_addr: "127.0.0.2:40000".parse().unwrap(),
        local_addr: "127.0.0.3:15008".parse().unwrap(),
        headers: http::HeaderMap::new(),
    };
    match inbound.connect(&request).await {
        ConnectDecision::Serve(service) => {
            let (client, tunnel) = tokio::io::duplex(64 * 1024);
            tokio::spawn(service(Box::new(tunnel)));
            client
        }
        ConnectDecision::Accept(_) => panic!("the waypoint serves its tunnels itself"),
        ConnectDecision::Reject(rejection) => panic!("rejected: {rejection:?}"),
    }
}

/// Sums the samples of metric `name` whose labels contain every one of `filters`.
pub(crate) fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits up to five seconds for `metric_sum(name, filters)` of `proxy` to reach `expected`
/// (a request is recorded when its response body or upgraded connection is dropped, which
/// may be just after the client saw the end); returns the last sum.
pub(crate) async fn wait_for_metric(
    proxy: &TestProxy,
    name: &str,
    filters: &[&str],
    expected: f64,
) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let sum = metric_sum(&proxy.metrics_text(), name, filters);
        if sum == expected || tokio::time::Instant::now() > deadline {
            return sum;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
