//! Start-up wiring of the waypoint, in the tunnel's shape (`ztunnel::app`): two runtimes (the
//! data path's, multi-threaded; and a one-thread control runtime for xDS, the CA client and
//! the operator endpoints, so neither adds latency to the other), one delta ADS stream with
//! [`WaypointResources`], a certificate manager for the waypoint's own identity, the HBONE
//! server on 15008 in front of the layer stack, and HBONE to endpoints under that identity.
//!
//! The waypoint is an ordinary pod: its listeners and its outbound sockets live in its own
//! network namespace, and no ztunnel captures it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tracing::{info, warn};
use ztunnel::admin::LogLevelSetter;
use ztunnel::app::shutdown_signal;
use ztunnel::cert_manager::{
    CertificateManager, CertificateMetrics, ControllerCa, ControllerCaConfig,
};
use ztunnel::hbone::{
    ClientMetrics, ClientSettings as HboneSettings, HboneClient, HboneServer, ServerMetrics,
    ServerSettings,
};
use ztunnel::identity::SpiffeId;
use ztunnel::proxy::{BoxedSource, Certificates, rotating_server_config, stopped};
use ztunnel::state::{DiscoverySnapshot, DiscoveryStore, MeshDefaults};
use ztunnel::tls::TrustBundle;
use ztunnel::xds::{AdsClient, ControllerTls, XdsConfig, XdsMetrics, proxy_id};

use crate::admin::{self, AdminState, Endpoints};
use crate::balance::{Balancer, BalancerMetrics, OutlierSettings};
use crate::config::{ConfigSnapshot, ConfigStore, WaypointName, WaypointResources};
use crate::inbound::{Inbound, InboundMetrics, InboundParts, InboundSettings, WaypointBinding};
use crate::proxy::build;
use crate::relay::RelaySettings;
use crate::telemetry::{AccessLog, AccessLogSettings, RequestMetrics};
use crate::upstream::{ClientSettings, HboneConnector, HttpClient};

/// Everything the waypoint needs to start.
#[derive(Clone, Debug)]
pub struct WaypointConfig {
    /// The waypoint's Gateway name (its Service has the same name).
    pub name: String,
    /// The Gateway's namespace.
    pub namespace: String,
    /// The service account the waypoint runs as: its identity.
    pub service_account: String,
    /// This pod's name, for the proxy id.
    pub pod_name: String,
    /// This pod's address: the proxy id, and how workload-addressed bindings name us.
    pub pod_ip: Option<IpAddr>,
    /// The node the pod runs on; the token is bound to it.
    pub node: String,
    /// The controller's gRPC address (`host:port`).
    pub controller: String,
    /// The name in the controller's serving certificate.
    pub controller_name: String,
    /// The mesh trust bundle (PEM file).
    pub root_cert: PathBuf,
    /// The waypoint's bearer token (file).
    pub token_file: PathBuf,
    /// The trust domain of the mesh.
    pub trust_domain: String,
    /// The suffix of service hostnames (`svc.cluster.local`).
    pub domain_suffix: String,
    /// Where HBONE from the ztunnels arrives.
    pub hbone_addr: SocketAddr,
    /// Admin endpoint address (keep it on loopback).
    pub admin_addr: SocketAddr,
    /// Metrics endpoint address.
    pub metrics_addr: SocketAddr,
    /// Readiness endpoint address.
    pub readiness_addr: SocketAddr,
    /// Validity asked for the waypoint's certificate.
    pub cert_validity: Duration,
    /// Data-path worker threads.
    pub worker_threads: usize,
    /// How long open tunnels, proxied TCP and upgraded connections may run on after SIGTERM.
    pub drain_deadline: Duration,
    /// How long a byte relay (a connection proxied as opaque TCP, or an upgraded one) may
    /// carry no byte either way before both sides are closed; zero: never.
    pub tcp_idle_timeout: Duration,
    /// Log as JSON lines; the access log's writer formats its lines the same way.
    pub log_json: bool,
}

impl WaypointConfig {
    /// The identity the waypoint serves under.
    pub fn identity(&self) -> anyhow::Result<SpiffeId> {
        SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account)
            .context("the waypoint's identity is not a valid SPIFFE id")
    }

    /// The Gateway as `namespace/name`: how routes and policies name the waypoint.
    fn binding_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// How bindings name this waypoint: its Service's hostname, and its pod address.
    fn binding(&self) -> WaypointBinding {
        let hostname = format!("{}.{}.{}", self.name, self.namespace, self.domain_suffix);
        WaypointBinding {
            service: Some((self.namespace.as_str().into(), hostname.into())),
            addresses: self.pod_ip.into_iter().collect(),
        }
    }
}

/// The credentials read at start: the trust bundle and the bearer token.
struct Credentials {
    roots_pem: String,
    token: String,
    trust: TrustBundle,
}

impl Credentials {
    fn read(config: &WaypointConfig) -> anyhow::Result<Self> {
        let roots_pem = std::fs::read_to_string(&config.root_cert).with_context(|| {
            format!(
                "cannot read the mesh trust bundle {}",
                config.root_cert.display()
            )
        })?;
        let token = std::fs::read_to_string(&config.token_file).with_context(|| {
            format!(
                "cannot read the waypoint's token {}",
                config.token_file.display()
            )
        })?;
        let trust = TrustBundle::from_pem(&config.trust_domain, roots_pem.as_bytes())
            .context("the mesh trust bundle is not usable")?;
        Ok(Self {
            roots_pem,
            token: token.trim().to_string(),
            trust,
        })
    }
}

/// What the control runtime feeds: discovery, routes and policies, the waypoint's certificate.
struct ControlPlane {
    client: AdsClient,
    discovery: watch::Receiver<Arc<DiscoverySnapshot>>,
    routes: watch::Receiver<Arc<ConfigSnapshot>>,
    certs: Certificates,
}

/// Runs the waypoint until SIGTERM or Ctrl-C, then drains.
pub fn run(config: WaypointConfig, set_log_level: LogLevelSetter) -> anyhow::Result<()> {
    let data = runtime("data", config.worker_threads)?;
    let control = runtime("control", 1)?;
    let identity = config.identity()?;
    let credentials = Credentials::read(&config)?;
    let mut registry = Registry::default();
    let plane = control.block_on(control_plane(
        &config,
        &credentials,
        &identity,
        &mut registry,
    ))?;
    let listener = data
        .block_on(TcpListener::bind(config.hbone_addr))
        .with_context(|| format!("cannot listen for HBONE on {}", config.hbone_addr))?;

    let (access_log, access_log_writer) = AccessLog::start(
        &AccessLogSettings::stderr(config.log_json),
        Box::new(std::io::stderr()),
        &mut registry,
    )
    .context("cannot start the access-log writer")?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let server = {
        let _data = data.enter();
        let inbound = inbound(
            &plane,
            &credentials.trust,
            &identity,
            &config,
            shutdown.clone(),
            access_log,
            &mut registry,
        );
        HboneServer::new(
            inbound,
            rotating_server_config(plane.certs.clone(), identity.clone(), credentials.trust),
            ServerSettings {
                drain_deadline: config.drain_deadline,
                ..ServerSettings::default()
            },
            ServerMetrics::new(&mut registry),
        )
    };
    let state = AdminState {
        identity: identity.clone(),
        binding: config.binding(),
        discovery: plane.discovery,
        config: plane.routes,
        xds: plane.client.status(),
        certs: plane.certs,
        metrics: Arc::new(registry),
        set_log_level,
    };
    let mut stop = shutdown.clone();
    let client = plane.client;
    control.spawn(async move { client.run(async move { stopped(&mut stop).await }).await });
    serve_operator_endpoints(&control, &config, &state, &shutdown)?;

    info!(%identity, gateway = %config.binding_name(), hbone = %config.hbone_addr, controller = %config.controller, "waypoint started");
    data.block_on(async move {
        let mut stop = shutdown.clone();
        let serving = tokio::spawn(server.serve(listener, async move { stopped(&mut stop).await }));
        shutdown_signal().await;
        info!("shutting down: draining tunnels");
        let _ = shutdown_tx.send(true);
        let _ = serving.await;
    });
    control.shutdown_timeout(Duration::from_secs(2));
    // Requests still held by tasks (upgraded connections past the deadline) are recorded as
    // the runtime drops them; then the access log's queue closes and its last lines go out.
    drop(data);
    if !access_log_writer.finish(Duration::from_secs(2)) {
        warn!("the access log's last lines were not all written");
    }
    info!("waypoint stopped");
    Ok(())
}

/// A multi-threaded runtime with `workers` threads named `name`.
fn runtime(name: &str, workers: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {name} runtime"))
}

/// The stores the ADS stream feeds, the ADS client, and the certificate manager with the
/// waypoint's identity asked for. Runs on the control runtime.
async fn control_plane(
    config: &WaypointConfig,
    credentials: &Credentials,
    identity: &SpiffeId,
    registry: &mut Registry,
) -> anyhow::Result<ControlPlane> {
    let store = DiscoveryStore::new(MeshDefaults {
        trust_domain: config.trust_domain.as_str().into(),
        ..MeshDefaults::default()
    });
    let routes = ConfigStore::new(WaypointName {
        gateway: config.binding_name().into(),
    });
    let (discovery, routes_rx) = (store.subscribe(), routes.subscribe());
    let resources = WaypointResources {
        discovery: store,
        config: routes,
    };
    let client = ads_client(config, credentials, resources, registry)?;
    let certs = certificates(config, credentials, registry)?;
    certs.ensure(identity);
    Ok(ControlPlane {
        client,
        discovery,
        routes: routes_rx,
        certs,
    })
}

/// The ADS client: one stream carrying addresses, routes and L7 policies.
fn ads_client(
    config: &WaypointConfig,
    credentials: &Credentials,
    resources: WaypointResources,
    registry: &mut Registry,
) -> anyhow::Result<AdsClient> {
    let ip = config.pod_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let pod = format!("{}.{}", config.pod_name, config.namespace);
    let mut xds_config = XdsConfig::new(
        format!("https://{}", config.controller),
        proxy_id("waypoint", ip, &pod),
        &config.node,
    );
    xds_config.tls = Some(ControllerTls {
        roots_pem: credentials.roots_pem.clone(),
        server_name: config.controller_name.clone(),
    });
    xds_config.token_file = Some(config.token_file.clone());
    let client = AdsClient::new(xds_config, Box::new(resources), XdsMetrics::new(registry))?;
    Ok(client)
}

/// The certificate manager of the waypoint's identity, fed by the controller's CA. Needs
/// the control runtime.
fn certificates(
    config: &WaypointConfig,
    credentials: &Credentials,
    registry: &mut Registry,
) -> anyhow::Result<Certificates> {
    let mut ca_config = ControllerCaConfig::new(
        format!("https://{}", config.controller),
        credentials.roots_pem.clone(),
        credentials.token.clone(),
    );
    ca_config.domain_name = config.controller_name.clone();
    ca_config.validity = config.cert_validity;
    let ca = ControllerCa::new(&ca_config)?;
    Ok(CertificateManager::new(
        BoxedSource::new(ca),
        CertificateMetrics::new(registry),
    ))
}

/// The inbound handler: the layer stack over HBONE to endpoints, presenting the waypoint's
/// current certificate on every dial. HTTP connections drain on `drain`; byte relays
/// (proxied TCP, upgraded connections) idle out after `config`'s TCP idle timeout and are
/// closed at its drain deadline.
fn inbound(
    plane: &ControlPlane,
    trust: &TrustBundle,
    identity: &SpiffeId,
    config: &WaypointConfig,
    drain: watch::Receiver<bool>,
    access_log: AccessLog,
    registry: &mut Registry,
) -> Inbound<HboneConnector> {
    let hbone = HboneClient::new(HboneSettings::default(), ClientMetrics::new(registry));
    let (certs, identity) = (plane.certs.clone(), identity.clone());
    let connector = HboneConnector::new(
        hbone,
        trust.clone(),
        Arc::new(move || certs.current(&identity)),
    );
    let client = HttpClient::new(connector, ClientSettings::default());
    let balancer = Arc::new(Balancer::new(
        OutlierSettings::default(),
        BalancerMetrics::new(registry),
    ));
    let metrics = RequestMetrics::new(registry).with_access_log(access_log);
    // One value for both kinds of relay.
    let relays = RelaySettings {
        idle_timeout: config.tcp_idle_timeout,
        drain_deadline: config.drain_deadline,
    };
    Inbound::new(InboundParts {
        binding: config.binding(),
        discovery: plane.discovery.clone(),
        config: plane.routes.clone(),
        stack: build(client.clone(), balancer.clone(), metrics)
            .with_upgrades(relays, drain.clone()),
        client,
        balancer,
        metrics: InboundMetrics::new(registry),
        settings: InboundSettings {
            relays,
            ..InboundSettings::default()
        },
        drain,
    })
}

/// Binds the admin, metrics and readiness endpoints and serves them on the control runtime.
fn serve_operator_endpoints(
    control: &Runtime,
    config: &WaypointConfig,
    state: &AdminState,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for (addr, endpoints, what) in [
        (config.admin_addr, Endpoints::Admin, "admin"),
        (config.metrics_addr, Endpoints::Metrics, "metrics"),
        (config.readiness_addr, Endpoints::Readiness, "readiness"),
    ] {
        let listener = control.block_on(ztunnel::admin::bind(addr, what))?;
        control.spawn(admin::serve(
            listener,
            state.clone(),
            endpoints,
            shutdown.clone(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WaypointConfig {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        WaypointConfig {
            name: "waypoint".into(),
            namespace: "shop".into(),
            service_account: "waypoint".into(),
            pod_name: "waypoint-0".into(),
            pod_ip: Some("10.244.1.6".parse().unwrap()),
            node: "node-1".into(),
            controller: "172.30.0.2:15012".into(),
            controller_name: "controller".into(),
            root_cert: PathBuf::from("root-cert.pem"),
            token_file: PathBuf::from("token"),
            trust_domain: "cluster.local".into(),
            domain_suffix: "svc.cluster.local".into(),
            hbone_addr: any,
            admin_addr: any,
            metrics_addr: any,
            readiness_addr: any,
            cert_validity: Duration::from_secs(3600),
            worker_threads: 1,
            drain_deadline: Duration::from_secs(1),
            tcp_idle_timeout: Duration::from_secs(60),
            log_json: false,
        }
    }

    #[test]
    fn the_waypoint_serves_under_its_service_account_and_is_named_by_its_service() {
        let config = config();
        assert_eq!(
            config.identity().unwrap().to_string(),
            "spiffe://cluster.local/ns/shop/sa/waypoint"
        );
        assert_eq!(config.binding_name(), "shop/waypoint");
        let binding = config.binding();
        let (namespace, hostname) = binding.service.unwrap();
        assert_eq!(
            (&*namespace, &*hostname),
            ("shop", "waypoint.shop.svc.cluster.local")
        );
        assert_eq!(binding.addresses, ["10.244.1.6".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn missing_credentials_are_named_in_the_error() {
        let error = Credentials::read(&config()).err().unwrap();
        assert!(
            format!("{error:#}").contains("cannot read the mesh trust bundle root-cert.pem"),
            "{error:#}"
        );
    }
}
