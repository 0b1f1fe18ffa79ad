//! Start-up wiring of the tunnel: two runtimes (the data path's, multi-threaded; and a small
//! control runtime for xDS and the operator endpoints, so neither adds latency to the other),
//! the discovery client, the certificate manager, the pod manager and the enrollment API.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::admin::{self, AdminState, Endpoints, LogLevelSetter};
use crate::cert_manager::{
    CertificateManager, CertificateMetrics, ControllerCa, ControllerCaConfig,
};
use crate::hbone::{ClientMetrics, ServerMetrics};
use crate::inpod::EnrollmentServer;
use crate::proxy::{
    BoxedSource, ConnectionCount, ConnectionMetrics, ConnectionTracker, PodManager, ProxyContext,
    ProxySettings,
};
use crate::state::{DiscoveryStore, MeshDefaults};
use crate::tls::TrustBundle;
use crate::xds::{AdsClient, ControllerTls, XdsConfig, XdsMetrics, proxy_id};

/// Enrollment events queued before the agent waits.
const ENROLLMENT_QUEUE: usize = 64;

/// Everything the tunnel needs to start.
#[derive(Clone, Debug)]
pub struct ZtunnelConfig {
    /// The node this tunnel serves.
    pub node: String,
    /// The node's address, for the proxy id only.
    pub node_ip: IpAddr,
    /// The controller's gRPC address (`host:port`).
    pub controller: String,
    /// The name in the controller's serving certificate.
    pub controller_name: String,
    /// The mesh trust bundle (PEM file).
    pub root_cert: PathBuf,
    /// The node's bearer token (file).
    pub token_file: PathBuf,
    /// The trust domain of the mesh.
    pub trust_domain: String,
    /// Where the node agent's enrollment API listens.
    pub enrollment_socket: PathBuf,
    /// Admin endpoint address (keep it on loopback).
    pub admin_addr: SocketAddr,
    /// Metrics endpoint address.
    pub metrics_addr: SocketAddr,
    /// Readiness endpoint address.
    pub readiness_addr: SocketAddr,
    /// Validity asked for workload certificates.
    pub cert_validity: Duration,
    /// Data-path worker threads.
    pub worker_threads: usize,
    /// Data-path settings.
    pub proxy: ProxySettings,
}

/// Runs the tunnel until SIGTERM or Ctrl-C, then drains.
pub fn run(config: ZtunnelConfig, set_log_level: LogLevelSetter) -> anyhow::Result<()> {
    let data = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.max(1))
        .thread_name("data")
        .enable_all()
        .build()
        .context("cannot start the data-path runtime")?;
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;

    let roots_pem = std::fs::read_to_string(&config.root_cert).with_context(|| {
        format!(
            "cannot read the mesh trust bundle {}",
            config.root_cert.display()
        )
    })?;
    let token = std::fs::read_to_string(&config.token_file)
        .with_context(|| format!("cannot read the node token {}", config.token_file.display()))?;
    let trust = TrustBundle::from_pem(&config.trust_domain, roots_pem.as_bytes())
        .context("the mesh trust bundle is not usable")?;
    let mut registry = Registry::default();

    // Discovery: the client runs on the control runtime; the data path reads snapshots.
    let store = DiscoveryStore::new(MeshDefaults {
        trust_domain: config.trust_domain.as_str().into(),
        ..MeshDefaults::default()
    });
    let discovery = store.subscribe();
    let mut xds_config = XdsConfig::new(
        format!("https://{}", config.controller),
        proxy_id("ztunnel", config.node_ip, &config.node),
        &config.node,
    );
    xds_config.tls = Some(ControllerTls {
        roots_pem: roots_pem.clone(),
        server_name: config.controller_name.clone(),
    });
    xds_config.token_file = Some(config.token_file.clone());
    let xds_metrics = XdsMetrics::new(&mut registry);
    let client =
        control.block_on(async { AdsClient::new(xds_config, Box::new(store), xds_metrics) })?;
    let xds_status = client.status();

    let mut ca_config = ControllerCaConfig::new(
        format!("https://{}", config.controller),
        roots_pem,
        token.trim(),
    );
    ca_config.domain_name = config.controller_name.clone();
    ca_config.validity = config.cert_validity;
    let ca = control.block_on(async { ControllerCa::new(&ca_config) })?;
    let certs =
        CertificateManager::new(BoxedSource::new(ca), CertificateMetrics::new(&mut registry));

    let ctx = Arc::new(ProxyContext {
        node: config.node.as_str().into(),
        discovery: discovery.clone(),
        certs: certs.clone(),
        trust,
        metrics: ConnectionMetrics::register(&mut registry),
        client_metrics: ClientMetrics::new(&mut registry),
        server_metrics: ServerMetrics::new(&mut registry),
        tracker: ConnectionTracker::default(),
        accepted: ConnectionCount::default(),
        settings: config.proxy.clone(),
    });
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (events_tx, events) = mpsc::channel(ENROLLMENT_QUEUE);
    let (manager, pods) = PodManager::new(ctx);
    let enrollment =
        data.block_on(async { EnrollmentServer::bind(&config.enrollment_socket, events_tx) })?;

    let state = AdminState {
        discovery,
        xds: xds_status,
        certs,
        pods,
        metrics: Arc::new(registry),
        set_log_level,
        draining: shutdown.clone(),
    };
    // The operator endpoints outlive the drain: they stop when the data path is done.
    let (endpoints_stop_tx, endpoints_stop) = watch::channel(false);
    let control_shutdown = shutdown.clone();
    control.spawn(async move {
        let mut stop = control_shutdown.clone();
        client
            .run(async move { crate::proxy::stopped(&mut stop).await })
            .await;
    });
    for (addr, endpoints, what) in [
        (config.admin_addr, Endpoints::Admin, "admin"),
        (config.metrics_addr, Endpoints::Metrics, "metrics"),
        (config.readiness_addr, Endpoints::Readiness, "readiness"),
    ] {
        let listener = control.block_on(admin::bind(addr, what))?;
        control.spawn(admin::serve(
            listener,
            state.clone(),
            endpoints,
            endpoints_stop.clone(),
        ));
    }

    info!(node = %config.node, controller = %config.controller, enrollment = %config.enrollment_socket.display(), "ztunnel started");
    data.block_on(async move {
        let mut stop = shutdown.clone();
        let server = tokio::spawn(async move {
            enrollment
                .serve(async move { crate::proxy::stopped(&mut stop).await })
                .await
        });
        let pods = tokio::spawn(manager.run(events, shutdown));
        shutdown_signal().await;
        info!("shutting down: draining connections");
        let _ = shutdown_tx.send(true);
        let _ = server.await;
        let _ = pods.await;
    });
    let _ = endpoints_stop_tx.send(true);
    control.shutdown_timeout(Duration::from_secs(2));
    info!("ztunnel stopped");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C: when a proxy starts draining.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
