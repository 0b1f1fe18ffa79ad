//! Start-up wiring of the controller: open the state, start the store, translate every new
//! desired state, and serve gRPC (ADS + CA) and the status API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ipnet::IpNet;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use ztunnel::identity::SpiffeId;

use crate::auth::{Caller, ProxyKind, Tokens};
use crate::ca::{
    CaMetrics, CaOptions, CertificateAuthority, CertificateService, IdentityPlacement,
};
use crate::grpc::{self, ServingIdentity};
use crate::status::{ModelReport, StatusApi};
use crate::store::watcher::free_in_background;
use crate::store::{DesiredState, Store, StoreConfig, StoreMetrics};
use crate::translate::{TranslateConfig, Translator};
use crate::xds::{AdsMetrics, AdsService, ProxyRegistry, ResourceSnapshot};

/// The default gRPC address (ADS and CA), Istio's secure xDS port.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:15012";

/// The default status API address: local only; it reveals the mesh's layout.
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:15014";

/// The trust bundle proxies use to verify the controller and each other, in the state dir.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// Names the controller's serving certificate is valid for, by default: what the lab and
/// in-cluster proxies dial, and Istio's name for its control plane.
pub const DEFAULT_SERVING_NAMES: [&str; 4] = [
    "controller",
    "mesh-controller.mesh-system.svc",
    "istiod.istio-system.svc",
    "localhost",
];

/// Validity of the controller's own serving certificate; it is re-issued at every start.
const SERVING_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How often the token table is checked for tokens issued since the last look.
const TOKEN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the controller needs to start.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The manifest directory.
    pub manifest_dir: PathBuf,
    /// The state directory: CA, tokens, VIPs, pod status.
    pub state_dir: PathBuf,
    /// Where gRPC (ADS + CA) listens.
    pub grpc_addr: SocketAddr,
    /// Where the status API listens.
    pub status_addr: SocketAddr,
    /// Also serve the status API on this Unix socket (the lab's tools use it).
    pub status_socket: Option<PathBuf>,
    /// CIDR of allocated service VIPs.
    pub service_cidr: IpNet,
    /// Certificate lifetimes.
    pub ca: CaOptions,
    /// Trust domain, root namespace and naming of the translation.
    pub translate: TranslateConfig,
    /// DNS names in the serving certificate.
    pub serving_names: Vec<String>,
}

/// A running controller.
pub struct Controller {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound status API address.
    pub status_addr: SocketAddr,
    /// The mesh's trust bundle (PEM).
    pub roots_pem: String,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Controller {
    /// Opens the state, starts every task and binds both ports (port 0 picks a free port).
    pub async fn start(config: ControllerConfig) -> anyhow::Result<Self> {
        crate::fs::create_private_dir(&config.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}",
                config.state_dir.display()
            )
        })?;
        let mut registry = Registry::with_prefix("");
        let ca = CertificateAuthority::load_or_create(
            &config.state_dir.join("ca"),
            &config.translate.trust_domain,
            config.ca.clone(),
        )?;
        let roots_pem = ca.roots_pem().concat();
        crate::fs::write_atomically(
            &config.state_dir.join(ROOT_CERT_FILE),
            roots_pem.as_bytes(),
            0o644,
        )
        .context("cannot write the trust bundle")?;
        let serving = serving_identity(&ca, &config)?;
        let ca = Arc::new(ca);

        let store_metrics = StoreMetrics::register(&mut registry);
        let mut store_config = StoreConfig::new(&config.manifest_dir, &config.state_dir);
        store_config.service_cidr = config.service_cidr;
        let store = Store::start(store_config, store_metrics)?;
        let desired = store.subscribe();
        let desired_for_status = desired.clone();

        let tokens = Tokens::load(&config.state_dir)?;
        let (tokens_tx, tokens_rx) = watch::channel(Arc::new(tokens));
        let (snapshots_tx, snapshots_rx) = watch::channel(Arc::new(ResourceSnapshot::default()));
        let (model_tx, model_rx) = watch::channel(Arc::new(ModelReport::default()));
        let proxies = ProxyRegistry::default();
        let ads = AdsService::new(
            tokens_rx.clone(),
            snapshots_rx,
            proxies.clone(),
            AdsMetrics::register(&mut registry),
        );
        let placement = Arc::new(StorePlacement(desired.clone()));
        let ca_service =
            CertificateService::new(ca, tokens_rx, placement, CaMetrics::register(&mut registry));

        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_addr))?;
        let status_listener = TcpListener::bind(config.status_addr)
            .await
            .with_context(|| {
                format!("cannot listen for the status API on {}", config.status_addr)
            })?;
        let grpc_addr = grpc_listener.local_addr()?;
        let status_addr = status_listener.local_addr()?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(publish_translations(
            desired,
            config.translate.clone(),
            snapshots_tx,
            model_tx,
            store,
            shutdown_rx.clone(),
        ));
        tasks.spawn(reload_tokens(
            config.state_dir.clone(),
            tokens_tx,
            shutdown_rx.clone(),
        ));
        let grpc_stop = stopped(shutdown_rx.clone());
        tasks.spawn(async move {
            grpc::serve(grpc_listener, serving, ads, ca_service, grpc_stop)
                .await
                .context("the gRPC server failed")
        });
        let api = StatusApi {
            proxies,
            model: model_rx,
            metrics: Arc::new(registry),
            desired: desired_for_status,
            translate: config.translate.clone(),
        };
        if let Some(path) = &config.status_socket {
            let _ = std::fs::remove_file(path);
            let unix = tokio::net::UnixListener::bind(path).with_context(|| {
                format!("cannot listen for the status API on {}", path.display())
            })?;
            let api = api.clone();
            let unix_stop = stopped(shutdown_rx.clone());
            tasks.spawn(async move {
                api.serve_unix(unix, unix_stop)
                    .await
                    .context("the status API socket failed")
            });
        }
        let status_stop = stopped(shutdown_rx);
        tasks.spawn(async move {
            api.serve(status_listener, status_stop)
                .await
                .context("the status API failed")
        });
        info!(%grpc_addr, %status_addr, manifests = %config.manifest_dir.display(), "controller started");
        Ok(Self {
            grpc_addr,
            status_addr,
            roots_pem,
            shutdown,
            tasks,
        })
    }

    /// Runs until a task fails or `signal` completes, then stops everything.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let result = tokio::select! {
            () = signal => Ok(()),
            Some(done) = self.tasks.join_next() => match done {
                Ok(Ok(())) => Err(anyhow::anyhow!("a controller task ended unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a controller task panicked: {e}")),
            },
        };
        self.stop().await;
        result
    }

    /// Stops serving and waits for the tasks to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// Issues the controller's serving certificate from its own CA.
fn serving_identity(
    ca: &CertificateAuthority,
    config: &ControllerConfig,
) -> anyhow::Result<ServingIdentity> {
    let mut ips = vec![config.grpc_addr.ip()];
    if ips[0].is_unspecified() {
        ips = vec!["127.0.0.1".parse()?];
    }
    let issued = ca.issue_serving_certificate(&config.serving_names, &ips, SERVING_CERT_TTL)?;
    Ok(ServingIdentity {
        cert_chain_pem: issued.cert_chain_pem,
        key_pem: issued.key_pem,
    })
}

/// Translates every new desired state and publishes the resources and the report. Keeps the
/// store alive for as long as it runs. Returns on shutdown: dropping the snapshot sender is
/// what tells every ADS stream to end, so the gRPC server can finish its graceful shutdown.
async fn publish_translations(
    mut desired: watch::Receiver<Arc<DesiredState>>,
    config: TranslateConfig,
    snapshots: watch::Sender<Arc<ResourceSnapshot>>,
    model: watch::Sender<Arc<ModelReport>>,
    _store: Store,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut translator = Translator::new(config);
    loop {
        let state = desired.borrow_and_update().clone();
        let (back, translation) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let rejected: Vec<String> = state.rejected.iter().map(ToString::to_string).collect();
            let translation = translator.translate(state);
            debug!(
                generation = translation.snapshot.generation,
                incremental = translation.incremental,
                elapsed = ?started.elapsed(),
                "desired state translated"
            );
            (translator, (translation, rejected))
        })
        .await?;
        translator = back;
        let (translation, rejected) = translation;
        let generation = translation.snapshot.generation;
        for w in &translation.warnings {
            warn!(object = %w.object, "{}", w.message);
        }
        let replaced = snapshots.send_replace(translation.snapshot);
        model.send_replace(Arc::new(ModelReport {
            generation,
            rejected,
            warnings: translation.warnings,
        }));
        // Often the last reference to the old snapshot.
        free_in_background(replaced);
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            changed = desired.changed() => if changed.is_err() {
                return Ok(());
            },
        }
    }
}

/// Picks up tokens issued while the controller runs (e.g. a node added to the lab).
async fn reload_tokens(
    state_dir: PathBuf,
    tokens: watch::Sender<Arc<Tokens>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut seen = modified(&state_dir);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            () = tokio::time::sleep(TOKEN_RELOAD_INTERVAL) => {}
        }
        let now = modified(&state_dir);
        if now == seen {
            continue;
        }
        seen = now;
        match Tokens::load(&state_dir) {
            Ok(table) => {
                info!("token table reloaded");
                tokens.send_replace(Arc::new(table));
            }
            Err(e) => {
                warn!(error = %e, "token table not reloaded; the previous one stays in force")
            }
        }
    }
}

fn modified(state_dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(state_dir.join(crate::auth::TOKENS_FILE))
        .and_then(|m| m.modified())
        .ok()
}

/// Answers the CA's placement question from the desired state.
struct StorePlacement(watch::Receiver<Arc<DesiredState>>);

impl IdentityPlacement for StorePlacement {
    fn may_hold(&self, caller: &Caller, identity: &SpiffeId) -> bool {
        let state = self.0.borrow();
        let (node, namespace, account) = (
            &*caller.node,
            identity.namespace(),
            identity.service_account(),
        );
        match caller.kind {
            ProxyKind::Ztunnel => state.node_runs_identity(node, namespace, account),
            ProxyKind::Waypoint => state.node_runs_waypoint_identity(node, namespace, account),
        }
    }
}
