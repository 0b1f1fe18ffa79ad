//! The identity matrix at the TLS layer, over in-memory pipes.

use std::io;
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::test_ca::{TestCa, Validity, client_config_without_certificate};
use super::*;

const TD: &str = "cluster.local";

struct Outcome {
    /// The client identity as the server saw it, or why the server refused.
    server: Result<SpiffeId, io::Error>,
    /// The server identity as the client saw it, or why the client refused.
    client: Result<SpiffeId, io::Error>,
}

/// Runs one handshake and a one-byte exchange, so that a TLS 1.3 client learns of a
/// rejection that the server sends after the client thinks it is done.
async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server).accept(a).await?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
        assert_eq!(conn.server_name(), None, "HBONE clients must not send SNI");
        let id = peer_identity(conn).map_err(io::Error::other)?;
        tls.write_all(b"x").await?;
        tls.flush().await?;
        Ok(id)
    };
    let client_side = async move {
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let mut tls = TlsConnector::from(client).connect(name, b).await?;
        let id = peer_identity(tls.get_ref().1).map_err(io::Error::other)?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok(id)
    };
    let (server, client) = tokio::join!(server_side, client_side);
    Outcome { server, client }
}

fn mesh_server_verifier(ca: &TestCa, expected: SpiffeId) -> Arc<verifier::MeshServerVerifier> {
    let algorithms = crypto_provider().signature_verification_algorithms;
    Arc::new(verifier::MeshServerVerifier::new(
        ca.bundle(),
        vec![expected],
        algorithms,
    ))
}

/// The rogue root copies the real root's name, so webpki finds a candidate issuer whose
/// signature does not verify; either verdict means "not from the mesh roots".
fn assert_untrusted(why: &str) {
    assert!(
        why.contains("UnknownIssuer") || why.contains("BadSignature"),
        "{why}"
    );
}

fn reason(result: &Result<SpiffeId, io::Error>) -> String {
    match result {
        Ok(id) => panic!("handshake succeeded with {id}"),
        Err(e) => describe_handshake_error(e),
    }
}

#[tokio::test]
async fn mutual_tls_names_both_identities() {
    let ca = TestCa::new(TD);
    let (client_id, server_id) = (ca.id("shop", "cart"), ca.id("shop", "db"));
    let server = server_config(&ca.leaf(&server_id), &ca.bundle()).unwrap();
    let client =
        client_config(&ca.leaf(&client_id), &ca.bundle(), vec![server_id.clone()]).unwrap();
    let outcome = handshake(server, client).await;
    assert_eq!(outcome.server.unwrap(), client_id);
    assert_eq!(outcome.client.unwrap(), server_id);
}

#[tokio::test]
async fn server_refuses_client_from_untrusted_root() {
    let (ca, rogue) = (TestCa::new(TD), TestCa::new(TD));
    let server_id = ca.id("shop", "db");
    let server = server_config(&ca.leaf(&server_id), &ca.bundle()).unwrap();
    let client = client_config(
        &rogue.leaf(&ca.id("shop", "cart")),
        &ca.bundle(),
        vec![server_id],
    );
    let outcome = handshake(server, client.unwrap()).await;
    assert_untrusted(&reason(&outcome.server));
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn client_refuses_server_from_untrusted_root() {
    let (ca, rogue) = (TestCa::new(TD), TestCa::new(TD));
    let server_id = ca.id("shop", "db");
    let server = server_config(&rogue.leaf(&server_id), &rogue.bundle()).unwrap();
    let client = client_config(
        &ca.leaf(&ca.id("shop", "cart")),
        &ca.bundle(),
        vec![server_id],
    );
    let outcome = handshake(server, client.unwrap()).await;
    assert_untrusted(&reason(&outcome.client));
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn server_refuses_client_of_another_trust_domain() {
    let ca = TestCa::new(TD);
    let server_id = ca.id("shop", "db");
    let foreign = SpiffeId::new("evil.example", "shop", "cart").unwrap();
    let server = server_config(&ca.leaf(&server_id), &ca.bundle()).unwrap();
    let client = client_config(&ca.leaf(&foreign), &ca.bundle(), vec![server_id]).unwrap();
    let outcome = handshake(server, client).await;
    let why = reason(&outcome.server);
    assert!(
        why.contains("spiffe://evil.example/ns/shop/sa/cart") && why.contains("cluster.local"),
        "{why}"
    );
    assert!(matches!(
        verification_failure(outcome.server.as_ref().unwrap_err()),
        Some(TlsError::ForeignTrustDomain { .. })
    ));
}

#[tokio::test]
async fn client_refuses_unexpected_server_identity() {
    let ca = TestCa::new(TD);
    let (expected, actual) = (ca.id("shop", "db"), ca.id("shop", "impostor"));
    let server = server_config(&ca.leaf(&actual), &ca.bundle()).unwrap();
    let client = client_config(
        &ca.leaf(&ca.id("shop", "cart")),
        &ca.bundle(),
        vec![expected],
    );
    let outcome = handshake(server, client.unwrap()).await;
    let why = reason(&outcome.client);
    assert!(
        why.contains("presented spiffe://cluster.local/ns/shop/sa/impostor")
            && why.contains("[spiffe://cluster.local/ns/shop/sa/db]"),
        "{why}"
    );
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = TestCa::new(TD);
    let (client_id, server_id) = (ca.id("shop", "cart"), ca.id("shop", "db"));
    for validity in [Validity::Expired, Validity::NotYetValid] {
        // A stale client certificate.
        let server = server_config(&ca.leaf(&server_id), &ca.bundle()).unwrap();
        let stale = ca.leaf_with(&client_id, validity);
        let client = client_config(&stale, &ca.bundle(), vec![server_id.clone()]).unwrap();
        let outcome = handshake(server, client).await;
        let why = reason(&outcome.server);
        assert!(
            why.contains("expired") || why.contains("not valid yet"),
            "{validity:?}: {why}"
        );

        // A stale server certificate.
        let server = server_config(&ca.leaf_with(&server_id, validity), &ca.bundle()).unwrap();
        let client = client_config(&ca.leaf(&client_id), &ca.bundle(), vec![server_id.clone()]);
        let outcome = handshake(server, client.unwrap()).await;
        let why = reason(&outcome.client);
        assert!(
            why.contains("expired") || why.contains("not valid yet"),
            "{validity:?}: {why}"
        );
    }
}

#[tokio::test]
async fn server_refuses_client_without_certificate() {
    let ca = TestCa::new(TD);
    let server_id = ca.id("shop", "db");
    let server = server_config(&ca.leaf(&server_id), &ca.bundle()).unwrap();
    let client = client_config_without_certificate(&ca.bundle(), server_id);
    let outcome = handshake(server, client).await;
    assert!(
        reason(&outcome.server).contains("peer sent no certificates"),
        "{}",
        reason(&outcome.server)
    );
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn tls12_clients_are_refused() {
    let ca = TestCa::new(TD);
    let server_id = ca.id("shop", "db");
    let server = server_config(&ca.leaf(&server_id), &ca.bundle()).unwrap();
    let modern = client_config(
        &ca.leaf(&ca.id("shop", "cart")),
        &ca.bundle(),
        vec![server_id.clone()],
    );
    let modern = modern.unwrap();
    let mut legacy = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(mesh_server_verifier(&ca, server_id))
        .with_client_cert_resolver(modern.client_auth_cert_resolver.clone());
    legacy.enable_sni = false;
    let outcome = handshake(server, Arc::new(legacy)).await;
    assert!(outcome.server.is_err());
    assert!(outcome.client.is_err());
}

#[test]
fn certificate_must_name_its_identity_and_match_its_key() {
    let ca = TestCa::new(TD);
    let (cart, db) = (ca.id("shop", "cart"), ca.id("shop", "db"));
    let (chain, key) = ca.leaf_pem(&cart, Validity::Current);
    let (_, other_key) = ca.leaf_pem(&db, Validity::Current);

    let loaded = WorkloadCertificate::from_pem(&cart, chain.as_bytes(), key.as_bytes()).unwrap();
    assert_eq!(loaded.identity(), &cart);
    assert_eq!(loaded.chain().len(), 1);
    assert!(loaded.not_before() < std::time::SystemTime::now());
    assert!(loaded.not_after() > std::time::SystemTime::now());
    assert!(!format!("{loaded:?}").contains("PRIVATE"));

    let wrong_id = WorkloadCertificate::from_pem(&db, chain.as_bytes(), key.as_bytes());
    assert!(matches!(wrong_id, Err(TlsError::IdentityMismatch { .. })));
    let wrong_key = WorkloadCertificate::from_pem(&cart, chain.as_bytes(), other_key.as_bytes());
    assert!(matches!(wrong_key, Err(TlsError::KeyMismatch { .. })));
    let no_chain = WorkloadCertificate::from_pem(&cart, b"", key.as_bytes());
    assert!(matches!(no_chain, Err(TlsError::EmptyChain { .. })));
}

#[test]
fn certificate_without_spiffe_san_is_refused() {
    let params = rcgen::CertificateParams::new(vec!["db.shop.svc".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    assert!(matches!(
        spiffe_id_of(cert.der()),
        Err(TlsError::MissingSpiffeId)
    ));
}

#[test]
fn bundles_and_client_configs_validate_their_inputs() {
    assert!(matches!(
        TrustBundle::new(TD, vec![]),
        Err(TlsError::EmptyBundle { .. })
    ));
    assert!(matches!(
        TrustBundle::new("Not A Domain", vec![]),
        Err(TlsError::BadTrustDomain { .. })
    ));
    let ca = TestCa::new(TD);
    let cert = ca.leaf(&ca.id("shop", "cart"));
    assert!(matches!(
        client_config(&cert, &ca.bundle(), vec![]),
        Err(TlsError::NoExpectedIdentity)
    ));
}
