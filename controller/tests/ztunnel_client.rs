//! The tunnel's delta ADS client against the real controller: TLS checked with the
//! controller's trust bundle and name, bearer-token authentication, the first sync,
//! incremental updates and removals, a refused token, and a controller restart.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use controller::app::{Controller, ControllerConfig, DEFAULT_SERVING_NAMES, ROOT_CERT_FILE};
use controller::auth::{ProxyKind, Tokens};
use controller::ca::CaOptions;
use controller::translate::TranslateConfig;
use prometheus_client::registry::Registry;
use tempfile::TempDir;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use ztunnel::state::{DiscoverySnapshot, DiscoveryStore, MeshDefaults, Tunnel};
use ztunnel::xds::{
    AdsClient, BackoffConfig, ConnectionState, ControllerTls, XdsConfig, XdsError, XdsMetrics,
    XdsStatus,
};

/// How long the controller may take to translate and push.
const PATIENCE: Duration = Duration::from_secs(20);

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  \
                         labels: {istio.io/dataplane-mode: ambient}\n";

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: echo-0\n  namespace: shop\n  \
                   labels: {app: echo}\nspec:\n  nodeName: node-1\n  serviceAccountName: echo\n  \
                   containers:\n  - name: app\n    image: app\n\
                   status:\n  podIP: 10.1.0.5\n  phase: Running\n";

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: shop\n\
                       spec: {selector: {app: echo}, ports: [{port: 80, targetPort: 8080}]}\n";

const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  \
                      name: allow-shop\n  namespace: shop\n\
                      spec: {action: ALLOW, rules: [{from: [{source: {namespaces: [shop]}}]}]}\n";

/// A controller's directories and a token issued for `node-1`.
struct Setup {
    dir: TempDir,
    token: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        for (file, body) in [
            ("ns.yaml", NAMESPACE),
            ("pod.yaml", POD),
            ("svc.yaml", SERVICE),
            ("policy.yaml", POLICY),
        ] {
            std::fs::write(manifests.join(file), body).unwrap();
        }
        let state = dir.path().join("state");
        controller::fs::create_private_dir(&state).unwrap();
        let token = Tokens::load(&state)
            .unwrap()
            .issue(&state, ProxyKind::Ztunnel, "node-1")
            .unwrap();
        Self { dir, token }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    async fn controller(&self, grpc_addr: SocketAddr) -> Controller {
        let config = ControllerConfig {
            manifest_dir: self.dir.path().join("manifests"),
            state_dir: self.state(),
            grpc_addr,
            status_addr: "127.0.0.1:0".parse().unwrap(),
            status_socket: None,
            service_cidr: "10.96.0.0/16".parse().unwrap(),
            ca: CaOptions::default(),
            translate: TranslateConfig::default(),
            serving_names: DEFAULT_SERVING_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        Controller::start(config).await.unwrap()
    }

    /// A token file holding `token`.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    }
}

/// A running tunnel-side client.
struct Client {
    snapshots: watch::Receiver<Arc<DiscoverySnapshot>>,
    status: watch::Receiver<XdsStatus>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Client {
    fn start(grpc_addr: SocketAddr, state: &Path, token_file: PathBuf) -> Self {
        let mut config = XdsConfig::new(
            format!("https://{grpc_addr}"),
            ztunnel::xds::proxy_id("ztunnel", "10.0.0.1".parse().unwrap(), "node-1"),
            "node-1",
        );
        config.tls = Some(ControllerTls::from_file(&state.join(ROOT_CERT_FILE)).unwrap());
        config.token_file = Some(token_file);
        config.backoff = BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
        };
        let store = DiscoveryStore::new(MeshDefaults::default());
        let snapshots = store.subscribe();
        let client = AdsClient::new(
            config,
            Box::new(store),
            XdsMetrics::new(&mut Registry::default()),
        )
        .unwrap();
        let status = client.status();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(client.run(async {
            let _ = stopped.await;
        }));
        Self {
            snapshots,
            status,
            stop,
            task,
        }
    }

    async fn snapshot_where(
        &mut self,
        what: &str,
        done: impl FnMut(&Arc<DiscoverySnapshot>) -> bool,
    ) -> Arc<DiscoverySnapshot> {
        match tokio::time::timeout(PATIENCE, self.snapshots.wait_for(done)).await {
            Ok(snapshot) => snapshot.unwrap().clone(),
            Err(_) => panic!(
                "no snapshot with {what}; status {:?}",
                *self.status.borrow()
            ),
        }
    }

    async fn status_where(
        &mut self,
        what: &str,
        done: impl FnMut(&XdsStatus) -> bool,
    ) -> XdsStatus {
        let waited = tokio::time::timeout(PATIENCE, self.status.wait_for(done))
            .await
            .map(|s| s.unwrap().clone());
        waited.unwrap_or_else(|_| panic!("status never became {what}: {:?}", *self.status.borrow()))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn syncs_updates_and_survives_a_controller_restart() {
    let setup = Setup::new();
    let controller = setup.controller("127.0.0.1:0".parse().unwrap()).await;
    let grpc_addr = controller.grpc_addr;
    let mut client = Client::start(
        grpc_addr,
        &setup.state(),
        setup.token_file("token", &setup.token),
    );

    client
        .status_where("synced", |s| {
            s.synced && s.connection == ConnectionState::Connected
        })
        .await;
    let snapshot = client
        .snapshot_where("the pod, its service and the policy", |s| {
            s.workload_by_ip(ip("10.1.0.5")).is_some()
                && s.services().count() == 1
                && s.policy("shop/allow-shop").is_some()
        })
        .await;
    let workload = snapshot.workload_by_ip(ip("10.1.0.5")).unwrap();
    assert_eq!(
        workload.identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/echo"
    );
    assert_eq!(workload.tunnel, Tunnel::Hbone);
    assert_eq!(&*workload.node, "node-1");
    let service = snapshot
        .service_by_hostname("shop", "echo.shop.svc.cluster.local")
        .unwrap();
    let vip = service.vips[0].ip;
    assert!(
        "10.96.0.0/16"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&vip),
        "VIP {vip}"
    );
    assert_eq!(snapshot.service_by_vip(vip).unwrap().key, service.key);
    let endpoints: Vec<(String, u16)> = snapshot
        .endpoints_on_port(&service, 80)
        .map(|(w, port)| (w.name.to_string(), port))
        .collect();
    assert_eq!(endpoints, [("echo-0".to_string(), 8080)]);
    let policies: Vec<&str> = snapshot
        .policies_for(&workload)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(policies, ["allow-shop"]);

    std::fs::remove_file(setup.dir.path().join("manifests/pod.yaml")).unwrap();
    client
        .snapshot_where("the pod removed", |s| {
            s.workload_by_ip(ip("10.1.0.5")).is_none()
        })
        .await;

    controller.stop().await;
    let status = client
        .status_where("disconnected", |s| {
            s.connection == ConnectionState::Disconnected
        })
        .await;
    assert!(
        status.synced,
        "readiness holds while the controller is away"
    );
    assert!(
        client.snapshots.borrow().service_by_vip(vip).is_some(),
        "the last known state keeps serving"
    );

    std::fs::write(setup.dir.path().join("manifests/pod.yaml"), POD).unwrap();
    let restarted = setup.controller(grpc_addr).await;
    client
        .status_where("reconnected", |s| {
            s.connection == ConnectionState::Connected
        })
        .await;
    let snapshot = client
        .snapshot_where("the pod back", |s| {
            s.workload_by_ip(ip("10.1.0.5")).is_some()
        })
        .await;
    assert_eq!(
        snapshot.service_by_vip(vip).unwrap().key,
        service.key,
        "the VIP survives the restart"
    );
    client.stop().await;
    restarted.stop().await;
}

#[tokio::test]
async fn a_token_the_controller_did_not_issue_is_refused() {
    let setup = Setup::new();
    let controller = setup.controller("127.0.0.1:0".parse().unwrap()).await;
    let token_file = setup.token_file("forged", "0123456789abcdef");
    let mut client = Client::start(controller.grpc_addr, &setup.state(), token_file);
    let status = client
        .status_where("refused", |s| s.last_error.is_some())
        .await;
    let error = status.last_error.unwrap();
    assert!(
        matches!(*error, XdsError::Unauthenticated { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not one this controller issued"),
        "{error}"
    );
    assert!(!status.synced);
    assert_eq!(client.snapshots.borrow().workloads().count(), 0);
    client.stop().await;
    controller.stop().await;
}
