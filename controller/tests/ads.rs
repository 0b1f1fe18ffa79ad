//! A real controller on loopback (port 0, temporary directories), driven over TLS by the
//! tonic-generated delta ADS and CA clients, as a node proxy would drive it; the status API is
//! read over plain HTTP/1.1.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use controller::app::{Controller, ControllerConfig};
use controller::auth::{ProxyKind, Tokens};
use controller::ca::{CaOptions, IMPERSONATED_IDENTITY};
use controller::translate::TranslateConfig;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::v1::auth::IstioCertificateRequest;
use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;
use mesh_proto::istio::workload::{Address, TunnelProtocol, address};
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Streaming};

/// Upper bound of every wait for something the controller should do.
const WAIT: Duration = Duration::from_secs(10);

/// How long a stream must stay quiet to count as "nothing more was sent". Well above the
/// store's debounce (10 ms) and a translation of a tiny mesh.
const QUIET: Duration = Duration::from_millis(700);

const ADDRESS: &str = mesh_proto::ADDRESS_TYPE_URL;
const AUTHORIZATION: &str = mesh_proto::AUTHORIZATION_TYPE_URL;

const CART_UID: &str = "Kubernetes//Pod/shop/cart-1";
const WEB_UID: &str = "Kubernetes//Pod/shop/web-1";
const CART_SERVICE: &str = "shop/cart.shop.svc.cluster.local";
const CART_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/cart";

// ---------------------------------------------------------------------------------------------
// Manifests.

fn pod(name: &str, app: &str, ip: &str, node: &str, extra_label: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  \
         labels: {{app: {app}{extra_label}}}\nspec:\n  nodeName: {node}\n  serviceAccountName: {app}\n  \
         containers: [{{name: app, image: app}}]\nstatus:\n  podIP: {ip}\n  phase: Running\n"
    )
}

fn cart_pod() -> String {
    pod("cart-1", "cart", "10.0.0.1", "node-1", "")
}

fn web_pod() -> String {
    pod("web-1", "web", "10.0.0.2", "node-2", "")
}

const MESH: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  \
                    labels: {istio.io/dataplane-mode: ambient}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\n\
                    spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{port: 80, targetPort: 8080}]}\n---\n\
                    apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                    metadata: {name: shop-only, namespace: shop}\n\
                    spec: {rules: [{from: [{source: {namespaces: [shop]}}]}]}\n";

// ---------------------------------------------------------------------------------------------
// The controller under test.

struct Harness {
    _root: tempfile::TempDir,
    manifests: PathBuf,
    controller: Option<Controller>,
    /// Tokens of ztunnels on node-1 and node-2.
    node1: String,
    node2: String,
}

impl Harness {
    /// Starts a controller on loopback with the shop mesh: namespace, service `cart`, policy
    /// `shop-only`, pod `cart-1` on node-1 and `web-1` on node-2, each pod in its own file.
    async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let manifests = root.path().join("manifests");
        let state = root.path().join("state");
        std::fs::create_dir_all(&manifests).unwrap();
        controller::fs::create_private_dir(&state).unwrap();
        let mut tokens = Tokens::load(&state).unwrap();
        let node1 = tokens.issue(&state, ProxyKind::Ztunnel, "node-1").unwrap();
        let node2 = tokens.issue(&state, ProxyKind::Ztunnel, "node-2").unwrap();
        let mut harness = Harness {
            _root: root,
            manifests,
            controller: None,
            node1,
            node2,
        };
        harness.write("mesh.yaml", MESH);
        harness.write("cart-1.yaml", &cart_pod());
        harness.write("web-1.yaml", &web_pod());
        let config = ControllerConfig {
            manifest_dir: harness.manifests.clone(),
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
        harness.controller = Some(Controller::start(config).await.unwrap());
        harness.wait_ready().await;
        harness
    }

    fn controller(&self) -> &Controller {
        self.controller.as_ref().expect("the controller runs")
    }

    /// Writes a manifest atomically, as `meshctl` does: a hidden temporary file, then a rename.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests.join(name)).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.manifests.join(name)).unwrap();
    }

    async fn wait_ready(&self) {
        let addr = self.controller().status_addr;
        bounded("the first translation", async {
            loop {
                if http_get(addr, "/ready").await.0 == 200 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    async fn channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.controller().roots_pem))
            .domain_name("controller");
        let endpoint = Endpoint::from_shared(format!("https://{}", self.controller().grpc_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(WAIT);
        bounded("the TLS connection", endpoint.connect())
            .await
            .unwrap()
    }

    /// Opens a delta ADS stream with `authorization: <authorization>` (none when `None`) and
    /// sends `first` on it.
    async fn ads(
        &self,
        authorization: Option<&str>,
        first: DeltaDiscoveryRequest,
    ) -> Result<AdsStream, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel().await);
        let (requests, rx) = mpsc::channel(16);
        requests.send(first).await.unwrap();
        let mut request = Request::new(ReceiverStream::new(rx));
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        let responses = bounded("the ADS call", client.delta_aggregated_resources(request))
            .await?
            .into_inner();
        Ok(AdsStream {
            requests,
            responses,
        })
    }

    /// An ADS stream of the ztunnel of node-1.
    async fn node1_ads(&self, first: DeltaDiscoveryRequest) -> AdsStream {
        self.ads(Some(&bearer(&self.node1)), first).await.unwrap()
    }

    async fn status(&self) -> Value {
        let (code, body) = http_get(self.controller().status_addr, "/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `/status` until `done` holds for it; returns that document.
    async fn status_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                let status = self.status().await;
                if done(&status) {
                    return status;
                }
                last = status;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        waited
            .unwrap_or_else(|_| panic!("{what} did not show in /status within {WAIT:?}: {last:#}"))
    }

    async fn stop(mut self) {
        if let Some(controller) = self.controller.take() {
            controller.stop().await;
        }
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Awaits `future` for at most [`WAIT`].
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

/// A GET over HTTP/1.1 on a fresh connection: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    bounded("an HTTP GET", async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let code = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8(body.to_vec()).unwrap())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The proxy side of a stream.

struct AdsStream {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl AdsStream {
    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    /// The next response, within [`WAIT`].
    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        bounded("a response", self.responses.message())
            .await
            .expect("the stream is healthy")
            .expect("the stream is open")
    }

    /// Asserts that nothing arrives for [`QUIET`].
    async fn assert_quiet(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.responses.message()).await {
            panic!("expected no response, got {message:?}");
        }
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

fn node() -> Node {
    Node {
        id: "ztunnel~10.0.0.100~ztunnel-node-1.istio-system~istio-system.svc.cluster.local".into(),
        ..Default::default()
    }
}

/// A wildcard subscription (the empty first request Istio's ztunnel sends).
fn subscribe(type_url: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: type_url.into(),
        ..Default::default()
    }
}

/// A wildcard subscription of a reconnecting proxy that already has these versions.
fn resubscribe(type_url: &str, versions: &BTreeMap<String, String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        initial_resource_versions: versions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
        ..subscribe(type_url)
    }
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

fn versions(response: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

fn workload_of(
    response: &DeltaDiscoveryResponse,
    name: &str,
) -> mesh_proto::istio::workload::Workload {
    let resource = response
        .resources
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} is not in {:?}", names(response)));
    let body = resource.resource.as_ref().expect("a resource has a body");
    assert_eq!(body.type_url, ADDRESS);
    match Address::decode(body.value.as_slice()).unwrap().r#type {
        Some(address::Type::Workload(w)) => w,
        other => panic!("{name} is not a workload: {other:?}"),
    }
}

fn proxy_type<'a>(status: &'a Value, type_url: &str) -> &'a Value {
    &status["proxies"][0]["types"][type_url]
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn streams_without_a_valid_bearer_token_are_refused() {
    let harness = Harness::start().await;
    let issued = bearer(&harness.node1);
    // (case, authorization metadata, accepted)
    let cases: [(&str, Option<&str>, bool); 6] = [
        ("missing", None, false),
        ("unknown token", Some("Bearer 0123456789abcdef"), false),
        ("not a bearer token", Some("Basic bm9kZS0xOnB3"), false),
        ("empty bearer token", Some("Bearer "), false),
        ("token without scheme", Some(harness.node1.as_str()), false),
        ("issued token", Some(issued.as_str()), true),
    ];
    for (case, authorization, accepted) in cases {
        let result = harness.ads(authorization, subscribe(ADDRESS)).await;
        match result {
            Ok(mut stream) => {
                assert!(accepted, "{case}: the stream was accepted");
                assert!(!stream.recv().await.resources.is_empty(), "{case}");
            }
            Err(status) => {
                assert!(!accepted, "{case}: refused with {status:?}");
                assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
            }
        }
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_wildcard_subscriber_gets_everything_then_only_what_changed() {
    let harness = Harness::start().await;
    let mut stream = harness.node1_ads(subscribe(ADDRESS)).await;
    let first = stream.recv().await;
    assert_eq!(first.type_url, ADDRESS);
    assert_eq!(names(&first), [CART_UID, WEB_UID, CART_SERVICE]);
    assert!(first.removed_resources.is_empty());
    assert!(!first.nonce.is_empty());
    let cart = workload_of(&first, CART_UID);
    assert_eq!(cart.tunnel_protocol(), TunnelProtocol::Hbone);
    assert_eq!(cart.addresses, [vec![10, 0, 0, 1]]);
    assert_eq!(cart.node, "node-1");
    stream.ack(&first).await;
    stream.assert_quiet().await;

    // The policy type on the same stream.
    stream.send(subscribe(AUTHORIZATION)).await;
    let policies = stream.recv().await;
    assert_eq!(policies.type_url, AUTHORIZATION);
    assert_eq!(names(&policies), ["shop/shop-only"]);
    stream.ack(&policies).await;

    // One pod changes on disk: one workload in the delta, nothing else.
    harness.write(
        "web-1.yaml",
        &pod("web-1", "web", "10.0.0.22", "node-2", ", version: v2"),
    );
    let delta = stream.recv().await;
    assert_eq!(delta.type_url, ADDRESS);
    assert_eq!(names(&delta), [WEB_UID]);
    assert!(delta.removed_resources.is_empty());
    let web = workload_of(&delta, WEB_UID);
    assert_eq!(web.addresses, [vec![10, 0, 0, 22]]);
    assert_eq!(web.canonical_revision, "v2");
    assert!(
        delta.system_version_info.parse::<u64>().unwrap()
            > first.system_version_info.parse::<u64>().unwrap()
    );
    stream.ack(&delta).await;
    stream.assert_quiet().await;

    // A pod's manifest goes away: its uid is removed, nothing else is sent.
    harness.remove("web-1.yaml");
    let removal = stream.recv().await;
    assert_eq!(removal.type_url, ADDRESS);
    assert!(removal.resources.is_empty(), "{:?}", names(&removal));
    assert_eq!(removal.removed_resources, [WEB_UID]);
    stream.ack(&removal).await;
    stream.assert_quiet().await;
    harness.stop().await;
}

#[tokio::test]
async fn acks_and_nacks_show_in_the_status_api() {
    let harness = Harness::start().await;
    let mut stream = harness.node1_ads(subscribe(ADDRESS)).await;
    let first = stream.recv().await;
    let generation: u64 = first.system_version_info.parse().unwrap();
    stream.ack(&first).await;
    let status = harness
        .status_until("the ACK", |s| {
            proxy_type(s, ADDRESS)["acked_version"].as_u64() == Some(generation)
        })
        .await;
    let proxy = &status["proxies"][0];
    assert_eq!(status["proxies"].as_array().unwrap().len(), 1);
    assert_eq!(proxy["kind"], "ztunnel");
    assert_eq!(proxy["node"], "node-1");
    assert_eq!(proxy["proxy_id"], node().id.as_str());
    assert_eq!(proxy_type(&status, ADDRESS)["last_nack"], Value::Null);
    assert_eq!(proxy_type(&status, ADDRESS)["pending"], 0);

    harness.write(
        "cart-1.yaml",
        &pod("cart-1", "cart", "10.0.0.11", "node-1", ""),
    );
    let delta = stream.recv().await;
    assert_eq!(names(&delta), [CART_UID]);
    let nacked: u64 = delta.system_version_info.parse().unwrap();
    stream
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS.into(),
            response_nonce: delta.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: Code::InvalidArgument as i32,
                message: "workload Kubernetes//Pod/shop/cart-1: bad address".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let status = harness
        .status_until("the NACK", |s| {
            !proxy_type(s, ADDRESS)["last_nack"].is_null()
        })
        .await;
    let address = proxy_type(&status, ADDRESS);
    assert_eq!(
        address["last_nack"],
        "workload Kubernetes//Pod/shop/cart-1: bad address"
    );
    assert_eq!(address["nacks"], 1);
    assert_eq!(address["sent_version"].as_u64(), Some(nacked));
    assert_eq!(
        address["acked_version"].as_u64(),
        Some(generation),
        "a NACK does not move the acknowledged version"
    );

    // The stream closes: the proxy leaves the list.
    drop(stream);
    harness
        .status_until("the disconnect", |s| {
            s["proxies"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    harness.stop().await;
}

#[tokio::test]
async fn a_reconnecting_proxy_is_sent_only_what_it_lacks() {
    let harness = Harness::start().await;
    let mut stream = harness.node1_ads(subscribe(ADDRESS)).await;
    let first = stream.recv().await;
    let have = versions(&first);
    assert_eq!(have.len(), 3);
    stream.ack(&first).await;
    drop(stream);

    // Everything current: an empty response that says "in sync", then nothing.
    let mut stream = harness.node1_ads(resubscribe(ADDRESS, &have)).await;
    let in_sync = stream.recv().await;
    assert!(in_sync.resources.is_empty(), "{:?}", names(&in_sync));
    assert!(in_sync.removed_resources.is_empty());
    assert!(!in_sync.nonce.is_empty());
    stream.ack(&in_sync).await;
    stream.assert_quiet().await;
    drop(stream);

    // One stale version and one resource that no longer exists.
    let mut stale = have.clone();
    stale.insert(CART_UID.into(), "0000000000000000".into());
    stale.insert(
        "Kubernetes//Pod/shop/gone".into(),
        "1111111111111111".into(),
    );
    let mut stream = harness.node1_ads(resubscribe(ADDRESS, &stale)).await;
    let catch_up = stream.recv().await;
    assert_eq!(names(&catch_up), [CART_UID]);
    assert_eq!(catch_up.resources[0].version, have[CART_UID]);
    assert_eq!(catch_up.removed_resources, ["Kubernetes//Pod/shop/gone"]);
    stream.ack(&catch_up).await;
    stream.assert_quiet().await;
    harness.stop().await;
}

#[tokio::test]
async fn an_invalid_manifest_is_reported_and_the_last_good_state_stays() {
    let harness = Harness::start().await;
    let mut stream = harness.node1_ads(subscribe(ADDRESS)).await;
    let first = stream.recv().await;
    stream.ack(&first).await;

    // A broken edit of a good file, and a new file that is broken from the start.
    harness.write(
        "cart-1.yaml",
        &cart_pod().replace("podIP: 10.0.0.1", "podIP: 10.0.0.999"),
    );
    harness.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: broken\n",
    );
    let status = harness
        .status_until("both rejections", |s| {
            s["rejected"].as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    let rejected: Vec<&str> = status["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        rejected[0].starts_with("manifests/broken.yaml: ") && rejected[0].contains("syntax"),
        "{rejected:?}"
    );
    assert!(
        rejected[1].starts_with("manifests/cart-1.yaml: Pod shop/cart-1: status.podIP: "),
        "{rejected:?}"
    );

    // Connected proxies hear nothing; new ones get the last good state, unchanged.
    stream.assert_quiet().await;
    let mut fresh = harness.node1_ads(subscribe(ADDRESS)).await;
    let served = fresh.recv().await;
    assert_eq!(versions(&served), versions(&first));
    assert_eq!(
        workload_of(&served, CART_UID).addresses,
        [vec![10, 0, 0, 1]]
    );

    // Fixing the file clears its rejection and the fix is pushed.
    harness.write(
        "cart-1.yaml",
        &pod("cart-1", "cart", "10.0.0.12", "node-1", ""),
    );
    let delta = stream.recv().await;
    assert_eq!(names(&delta), [CART_UID]);
    harness
        .status_until("one rejection left", |s| {
            s["rejected"].as_array().is_some_and(|r| r.len() == 1)
        })
        .await;
    harness.stop().await;
}

fn certificate_request(identity: &str) -> IstioCertificateRequest {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let metadata = prost_types::Struct {
        fields: BTreeMap::from([(
            IMPERSONATED_IDENTITY.to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(identity.into())),
            },
        )]),
    };
    IstioCertificateRequest {
        csr,
        validity_duration: 3600,
        metadata: Some(metadata),
    }
}

fn uri_sans(pem: &str) -> Vec<String> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = parsed.parse_x509().unwrap();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN extension");
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_ca_on_the_same_port_issues_only_identities_placed_on_the_callers_node() {
    let harness = Harness::start().await;
    let mut client = IstioCertificateServiceClient::new(harness.channel().await);
    let call = |token: Option<&str>, identity: &str| {
        let mut request = Request::new(certificate_request(identity));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", bearer(token).parse().unwrap());
        }
        request
    };

    // cart-1 runs on node-1 with service account cart.
    let issued = bounded(
        "the CA",
        client.create_certificate(call(Some(&harness.node1), CART_IDENTITY)),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(
        issued.cert_chain.len() >= 2,
        "leaf first, then the roots: {issued:?}"
    );
    assert_eq!(uri_sans(&issued.cert_chain[0]), [CART_IDENTITY]);
    assert_eq!(
        issued.cert_chain.last().unwrap().trim(),
        harness.controller().roots_pem.trim(),
        "the chain ends with the mesh root"
    );

    // (case, token, identity, refusal)
    let refusals = [
        (
            "another node",
            Some(harness.node2.as_str()),
            CART_IDENTITY,
            Code::PermissionDenied,
        ),
        (
            "an identity placed nowhere",
            Some(harness.node1.as_str()),
            "spiffe://cluster.local/ns/shop/sa/ghost",
            Code::PermissionDenied,
        ),
        ("no token", None, CART_IDENTITY, Code::Unauthenticated),
        (
            "unknown token",
            Some("nope"),
            CART_IDENTITY,
            Code::Unauthenticated,
        ),
    ];
    for (case, token, identity, code) in refusals {
        let status = bounded("the CA", client.create_certificate(call(token, identity)))
            .await
            .expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(
            !status.message().is_empty(),
            "{case}: a refusal gives a reason"
        );
    }
    // node-2's own workload is fine for node-2.
    let web = bounded(
        "the CA",
        client.create_certificate(call(
            Some(&harness.node2),
            "spiffe://cluster.local/ns/shop/sa/web",
        )),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        uri_sans(&web.cert_chain[0]),
        ["spiffe://cluster.local/ns/shop/sa/web"]
    );
    harness.stop().await;
}

#[tokio::test]
async fn stopping_the_controller_ends_open_streams_promptly() {
    let mut harness = Harness::start().await;
    let mut stream = harness.node1_ads(subscribe(ADDRESS)).await;
    let first = stream.recv().await;
    stream.ack(&first).await;
    let controller = harness.controller.take().unwrap();
    let started = std::time::Instant::now();
    bounded("the stop", controller.stop()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopping took {:?}: a task ignored the shutdown",
        started.elapsed()
    );
    // The proxy sees its stream end (cleanly or with an error), not silence.
    let end = bounded("the end of the stream", stream.responses.message()).await;
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}
