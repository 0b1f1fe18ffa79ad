//! The certificate service driven in process, through the generated trait, with a fake
//! placement: which identity runs on which node.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use prost_types::{Struct, Value, value::Kind};
use tokio::sync::watch;
use tonic::{Code, Request};

use super::*;
use crate::ca::fixtures::*;
use crate::ca::{CaOptions, CertificateAuthority};

const PAYMENTS: &str = "spiffe://cluster.local/ns/shop/sa/payments";

/// Placement from a fixed list of (node, identity) pairs.
struct FakePlacement(HashSet<(String, String)>);

impl IdentityPlacement for FakePlacement {
    fn may_hold(&self, caller: &Caller, identity: &SpiffeId) -> bool {
        self.0
            .contains(&(caller.node.to_string(), identity.to_string()))
    }
}

struct Harness {
    service: CertificateService,
    metrics: CaMetrics,
    roots: Vec<String>,
    node1_token: String,
    _dir: tempfile::TempDir,
}

/// A CA, tokens for ztunnels on node-1 and node-2, `cart` placed on node-1 and `payments` on
/// node-2.
fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(
        &dir.path().join("ca"),
        "cluster.local",
        CaOptions::default(),
    )
    .unwrap();
    let roots = ca.roots_pem().to_vec();
    let mut tokens = Tokens::default();
    let node1_token = tokens
        .issue(dir.path(), ProxyKind::Ztunnel, "node-1")
        .unwrap();
    tokens
        .issue(dir.path(), ProxyKind::Ztunnel, "node-2")
        .unwrap();
    let (_tx, tokens) = watch::channel(Arc::new(tokens));
    let placement = FakePlacement(HashSet::from([
        ("node-1".to_string(), CART.to_string()),
        ("node-2".to_string(), PAYMENTS.to_string()),
    ]));
    let mut registry = Registry::default();
    let metrics = CaMetrics::register(&mut registry);
    let service =
        CertificateService::new(Arc::new(ca), tokens, Arc::new(placement), metrics.clone());
    Harness {
        service,
        metrics,
        roots,
        node1_token,
        _dir: dir,
    }
}

fn body(csr: &str, impersonated: Option<&str>, validity_s: i64) -> IstioCertificateRequest {
    let metadata = impersonated.map(|id| Struct {
        fields: BTreeMap::from([(
            IMPERSONATED_IDENTITY.to_string(),
            Value {
                kind: Some(Kind::StringValue(id.to_string())),
            },
        )]),
    });
    IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: validity_s,
        metadata,
    }
}

fn request(token: Option<&str>, body: IstioCertificateRequest) -> Request<IstioCertificateRequest> {
    let mut request = Request::new(body);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn call(h: &Harness, req: Request<IstioCertificateRequest>) -> Result<Vec<String>, Status> {
    h.service
        .create_certificate(req)
        .await
        .map(|r| r.into_inner().cert_chain)
}

#[tokio::test]
async fn a_ztunnel_obtains_the_identity_of_a_workload_on_its_node() {
    let h = harness();
    let (csr, _) = csr_for(CART);
    let chain = call(
        &h,
        request(Some(&h.node1_token), body(&csr, Some(CART), 3600)),
    )
    .await
    .unwrap();
    assert_eq!(chain.len(), 2);
    verify_with_webpki(&chain, &h.roots).unwrap();
    let der = der(&chain[0]);
    let leaf = parse(&der);
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600 + crate::ca::CLOCK_SKEW.as_secs() as i64);
    assert_eq!(h.metrics.issued(), 1);
}

#[tokio::test]
async fn without_impersonation_the_identity_comes_from_the_csr() {
    let h = harness();
    let (csr, _) = csr_for(CART);
    let chain = call(&h, request(Some(&h.node1_token), body(&csr, None, 0)))
        .await
        .unwrap();
    verify_with_webpki(&chain, &h.roots).unwrap();

    let (csr, _) = csr_for(PAYMENTS);
    let status = call(&h, request(Some(&h.node1_token), body(&csr, None, 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn a_workload_on_another_node_cannot_be_impersonated() {
    let h = harness();
    let (csr, _) = csr_for(PAYMENTS);
    let status = call(
        &h,
        request(Some(&h.node1_token), body(&csr, Some(PAYMENTS), 0)),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("node-1"), "{}", status.message());
    assert!(status.message().contains(PAYMENTS), "{}", status.message());
    assert_eq!(h.metrics.refused(RefusalReason::NotOnNode), 1);
    assert_eq!(h.metrics.issued(), 0);
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_unauthenticated() {
    let h = harness();
    let (csr, _) = csr_for(CART);
    for token in [None, Some("not-a-token")] {
        let status = call(&h, request(token, body(&csr, Some(CART), 0)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    assert_eq!(h.metrics.refused(RefusalReason::Unauthenticated), 2);
}

#[tokio::test]
async fn bad_csrs_and_identities_are_invalid_arguments() {
    let h = harness();
    let (cart_csr, _) = csr_for(CART);
    let (payments_csr, _) = csr_for(PAYMENTS);
    let foreign = "spiffe://example.org/ns/shop/sa/cart";
    let (foreign_csr, _) = csr_for(foreign);
    let cases = [
        (
            "garbage CSR",
            body("garbage", Some(CART), 0),
            RefusalReason::InvalidCsr,
        ),
        (
            "garbage CSR, no metadata",
            body("garbage", None, 0),
            RefusalReason::InvalidCsr,
        ),
        (
            "CSR for another SAN",
            body(&payments_csr, Some(CART), 0),
            RefusalReason::InvalidCsr,
        ),
        (
            "wrong trust domain",
            body(&foreign_csr, Some(foreign), 0),
            RefusalReason::WrongTrustDomain,
        ),
        (
            "not a SPIFFE id",
            body(&cart_csr, Some("cart"), 0),
            RefusalReason::InvalidIdentity,
        ),
    ];
    for (case, body, reason) in cases {
        let status = call(&h, request(Some(&h.node1_token), body))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(!status.message().is_empty(), "{case}");
        assert!(h.metrics.refused(reason) >= 1, "{case}");
    }

    let mut not_a_string = body(&cart_csr, None, 0);
    not_a_string.metadata = Some(Struct {
        fields: BTreeMap::from([(
            IMPERSONATED_IDENTITY.to_string(),
            Value {
                kind: Some(Kind::NumberValue(1.0)),
            },
        )]),
    });
    let status = call(&h, request(Some(&h.node1_token), not_a_string))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
