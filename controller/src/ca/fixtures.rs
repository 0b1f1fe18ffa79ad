//! Test fixtures for the CA: requests, a plug-in CA made with rcgen, and chain verification
//! through rustls' webpki, the verifier the proxies use.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CaOptions, CertificateAuthority};

/// The identity most tests sign for; the OpenSSL fixtures in `testdata/` name it too.
pub const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

/// A fresh P-256 key and a PEM CSR asking for `sans`.
pub fn csr_with_sans(sans: Vec<SanType>) -> (String, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key)
}

/// A fresh P-256 key and a PEM CSR asking for the one URI SAN `uri`, as Istio's ztunnel
/// writes it.
pub fn csr_for(uri: &str) -> (String, KeyPair) {
    csr_with_sans(vec![SanType::URI(uri.try_into().unwrap())])
}

/// Opens (or creates) a CA with default options in `dir`.
pub fn ca_in(dir: &Path) -> CertificateAuthority {
    CertificateAuthority::load_or_create(dir, "cluster.local", CaOptions::default()).unwrap()
}

/// Parses one PEM certificate to DER.
pub fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Parses a DER certificate; panics on garbage.
pub fn parse<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    X509Certificate::from_der(der).unwrap().1
}

/// Verifies a leaf-first chain the way an HBONE server verifies a client: webpki, the given
/// roots, client-auth usage.
pub fn verify_with_webpki(chain: &[String], roots: &[String]) -> Result<(), rustls::Error> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(der(root)).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .unwrap();
    let ders: Vec<CertificateDer<'static>> = chain.iter().map(|pem| der(pem)).collect();
    verifier
        .verify_client_cert(&ders[0], &ders[1..], UnixTime::now())
        .map(|_| ())
}

/// Asserts that each certificate of a leaf-first chain is signed by the next one, and that
/// the last one is self-signed.
pub fn assert_each_link_verifies(chain: &[String]) {
    let ders: Vec<_> = chain.iter().map(|pem| der(pem)).collect();
    for pair in ders.windows(2) {
        let (child, parent) = (parse(&pair[0]), parse(&pair[1]));
        assert_eq!(child.issuer(), parent.subject());
        child.verify_signature(Some(parent.public_key())).unwrap();
    }
    let last = parse(ders.last().unwrap());
    last.verify_signature(None).unwrap();
}

/// A CA certificate's parameters: CA:true with `constraints`, keyCertSign.
fn ca_params(common_name: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "cluster.local");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A plug-in CA as an operator would provide it.
pub struct PlugIn {
    /// PEM of the root in `root-cert.pem`.
    pub root_pem: String,
    /// PEM of the intermediate in `ca-cert.pem`.
    pub intermediate_pem: String,
}

/// Writes Istio's four plug-in files into `dir`: a root and an intermediate made with rcgen,
/// `cert-chain.pem` = intermediate + root as Istio's tooling writes it.
pub fn write_plugin(dir: &Path) -> PlugIn {
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root = CertifiedIssuer::self_signed(
        ca_params("Test Root CA", BasicConstraints::Unconstrained),
        root_key,
    )
    .unwrap();
    let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let intermediate_key_pem = intermediate_key.serialize_pem();
    let intermediate = CertifiedIssuer::signed_by(
        ca_params("Test Intermediate CA", BasicConstraints::Constrained(0)),
        intermediate_key,
        &root,
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), intermediate.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), intermediate_key_pem).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", intermediate.pem(), root.pem()),
    )
    .unwrap();
    PlugIn {
        root_pem: root.pem(),
        intermediate_pem: intermediate.pem(),
    }
}

/// Copies one of the OpenSSL-made plug-in layouts of `testdata/` into `dir`.
pub fn copy_testdata_plugin(name: &str, dir: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/ca/testdata")
        .join(name);
    std::fs::create_dir_all(dir).unwrap();
    for file in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
}
