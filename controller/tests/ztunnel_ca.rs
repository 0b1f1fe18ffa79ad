//! The ztunnel's certificate client (`ztunnel::cert_manager::ControllerCa`, behind the
//! `CertificateManager`) against a real controller on loopback (port 0, temporary
//! directories): it obtains certificates for workloads placed on its own node, they work for
//! mesh mTLS, and identities of other nodes' workloads are refused.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use controller::app::{Controller, ControllerConfig};
use controller::auth::{ProxyKind, Tokens};
use controller::ca::{CLOCK_SKEW, CaOptions};
use controller::translate::TranslateConfig;
use prometheus_client::registry::Registry;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use ztunnel::cert_manager::{
    CertError, CertificateManager, CertificateMetrics, CertificateSource, ControllerCa,
    ControllerCaConfig, FetchError,
};
use ztunnel::identity::SpiffeId;
use ztunnel::tls::{TrustBundle, WorkloadCertificate, client_config, peer_identity, server_config};

/// Upper bound of every wait for something the controller should do.
const WAIT: Duration = Duration::from_secs(10);

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// The shop namespace in the mesh; `cart-1` on node-1 and `web-1` on node-2.
const MESH: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  \
                    labels: {istio.io/dataplane-mode: ambient}\n";

fn pod(name: &str, service_account: &str, ip: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  \
         labels: {{app: {service_account}}}\nspec:\n  nodeName: {node}\n  \
         serviceAccountName: {service_account}\n  containers: [{{name: app, image: app}}]\n\
         status:\n  podIP: {ip}\n  phase: Running\n"
    )
}

/// A running controller and the tokens of the ztunnels of node-1 and node-2.
struct Mesh {
    _root: tempfile::TempDir,
    controller: Controller,
    node1: String,
    node2: String,
}

impl Mesh {
    async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let manifests = root.path().join("manifests");
        let state = root.path().join("state");
        std::fs::create_dir_all(&manifests).unwrap();
        controller::fs::create_private_dir(&state).unwrap();
        let mut tokens = Tokens::load(&state).unwrap();
        let node1 = tokens.issue(&state, ProxyKind::Ztunnel, "node-1").unwrap();
        let node2 = tokens.issue(&state, ProxyKind::Ztunnel, "node-2").unwrap();
        write(&manifests, "mesh.yaml", MESH);
        write(
            &manifests,
            "cart-1.yaml",
            &pod("cart-1", "cart", "10.0.0.1", "node-1"),
        );
        write(
            &manifests,
            "web-1.yaml",
            &pod("web-1", "web", "10.0.0.2", "node-2"),
        );
        let config = ControllerConfig {
            manifest_dir: manifests,
            state_dir: state,
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            status_addr: "127.0.0.1:0".parse().unwrap(),
            status_socket: None,
            service_cidr: controller::store::vip::DEFAULT_SERVICE_CIDR
                .parse()
                .unwrap(),
            ca: CaOptions::default(),
            translate: TranslateConfig::default(),
            serving_names: vec!["controller".into()],
        };
        let controller = Controller::start(config).await.unwrap();
        let mesh = Self {
            _root: root,
            controller,
            node1,
            node2,
        };
        mesh.wait_ready().await;
        mesh
    }

    /// The CA client of a ztunnel holding `token`, as the ztunnel configures it.
    fn ca(&self, token: &str) -> ControllerCa {
        let config = ControllerCaConfig::new(
            format!("https://{}", self.controller.grpc_addr),
            self.controller.roots_pem.clone(),
            token,
        );
        ControllerCa::new(&config).expect("a valid CA client configuration")
    }

    fn bundle(&self) -> TrustBundle {
        TrustBundle::from_pem("cluster.local", self.controller.roots_pem.as_bytes()).unwrap()
    }

    /// Waits until the first translation is published, so that placement is known.
    async fn wait_ready(&self) {
        let addr = self.controller.status_addr;
        bounded("the first translation", async {
            loop {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream
                    .write_all(b"GET /ready HTTP/1.1\r\nHost: status\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut response = String::new();
                let _ = stream.read_to_string(&mut response).await;
                if response.starts_with("HTTP/1.1 200") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// An mTLS handshake between `client` and `server` with the mesh's configurations; returns the
/// identity each side saw.
async fn handshake(
    client: &WorkloadCertificate,
    server: &WorkloadCertificate,
    bundle: &TrustBundle,
) -> (SpiffeId, SpiffeId) {
    let server_cfg = server_config(server, bundle).unwrap();
    let client_cfg = client_config(client, bundle, vec![server.identity().clone()]).unwrap();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let accept = TlsAcceptor::from(server_cfg).accept(server_io);
    let connect =
        TlsConnector::from(client_cfg).connect(ServerName::try_from("mesh").unwrap(), client_io);
    let (accepted, connected) =
        bounded("the handshake", async { tokio::join!(accept, connect) }).await;
    let (accepted, connected) = (
        accepted.expect("server side"),
        connected.expect("client side"),
    );
    (
        peer_identity(accepted.get_ref().1).unwrap(),
        peer_identity(connected.get_ref().1).unwrap(),
    )
}

#[tokio::test]
async fn a_ztunnel_obtains_certificates_for_its_own_workloads_only() {
    let mesh = Mesh::start().await;
    let (cart, web) = (id(CART), id(WEB));

    // node-1 through the manager, as the ztunnel runs it; a one-hour validity is asked for.
    let mut config = ControllerCaConfig::new(
        format!("https://{}", mesh.controller.grpc_addr),
        mesh.controller.roots_pem.clone(),
        mesh.node1.clone(),
    );
    config.validity = Duration::from_secs(3600);
    let node1 = CertificateManager::new(
        ControllerCa::new(&config).unwrap(),
        CertificateMetrics::new(&mut Registry::default()),
    );
    let cart_cert: Arc<WorkloadCertificate> =
        bounded("cart's certificate", node1.fetch_or_wait(&cart))
            .await
            .expect("node-1 runs cart-1");
    assert_eq!(cart_cert.identity(), &cart);
    let lifetime = cart_cert
        .not_after()
        .duration_since(cart_cert.not_before())
        .unwrap();
    assert_eq!(
        lifetime,
        Duration::from_secs(3600) + CLOCK_SKEW,
        "the requested validity is honoured"
    );

    // node-1 may not obtain web, which runs on node-2.
    let refused = bounded("the refusal", mesh.ca(&mesh.node1).fetch(&web))
        .await
        .expect_err("web runs on node-2");
    assert!(
        matches!(refused, FetchError::PermissionDenied { .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("node-1"), "{refused}");
    let error = bounded("the refusal", node1.fetch_or_wait(&web))
        .await
        .expect_err("the manager reports the refusal");
    assert!(matches!(error, CertError::Unavailable { .. }), "{error:?}");

    // An unknown token is refused as such.
    let unknown = bounded("the refusal", mesh.ca("not-a-token").fetch(&cart))
        .await
        .expect_err("unknown token");
    assert!(
        matches!(unknown, FetchError::Unauthenticated { .. }),
        "{unknown:?}"
    );

    // node-2 obtains web (default validity); both certificates work for mesh mTLS.
    let web_cert = bounded("web's certificate", mesh.ca(&mesh.node2).fetch(&web))
        .await
        .expect("node-2 runs web-1");
    let (client_seen_by_server, server_seen_by_client) =
        handshake(&web_cert, &cart_cert, &mesh.bundle()).await;
    assert_eq!(client_seen_by_server, web);
    assert_eq!(server_seen_by_client, cart);

    mesh.controller.stop().await;
}
