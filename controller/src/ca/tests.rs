//! Tests of the authority, its on-disk layouts and CSR checks. The gRPC service has its own,
//! in `service/tests.rs`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rcgen::{ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use ztunnel::identity::SpiffeId;

use super::authority::pem_encode;
use super::fixtures::*;
use super::*;

fn cart() -> SpiffeId {
    CART.parse().unwrap()
}

fn validity_secs(pem: &str) -> i64 {
    let der = der(pem);
    let cert = parse(&der);
    cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
}

#[test]
fn a_new_root_is_persisted_owner_only_and_reloaded_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let first = ca_in(&dir);
    assert_eq!(first.source(), CaSource::SelfSignedCreated);

    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(SELF_SIGNED_KEY), 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let second = ca_in(&dir);
    assert_eq!(second.source(), CaSource::SelfSignedLoaded);
    assert_eq!(first.roots_pem(), second.roots_pem());
    // What the restarted CA signs is trusted by holders of the old bundle.
    let (csr, _) = csr_for(CART);
    let issued = second.sign(&csr, &cart(), None).unwrap();
    verify_with_webpki(&issued.chain, first.roots_pem()).unwrap();
}

#[test]
fn the_self_signed_root_is_a_p256_ca_named_after_the_trust_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let [root_pem] = ca.roots_pem() else {
        panic!("one root expected")
    };
    let der = der(root_pem);
    let root = parse(&der);
    assert!(root.is_ca());
    assert!(root.key_usage().unwrap().unwrap().value.key_cert_sign());
    let org: Vec<_> = root
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(org, ["cluster.local"]);
    let spki = root.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    assert_eq!(
        spki.algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap(),
        OID_EC_P256
    );
    let lifetime = validity_secs(root_pem);
    let ten_years = SELF_SIGNED_ROOT_VALIDITY.as_secs() as i64;
    assert_eq!(lifetime, ten_years + CLOCK_SKEW.as_secs() as i64);
}

#[test]
fn the_leaf_names_only_the_identity_and_is_an_mtls_end_entity() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let (csr, key) = csr_for(CART);
    let issued = ca.sign(&csr, &cart(), None).unwrap();
    let der = der(&issued.chain[0]);
    let leaf = parse(&der);

    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names, [GeneralName::URI(CART)]);
    assert!(
        san.critical,
        "the subject is empty, so the SAN must be critical"
    );
    assert_eq!(leaf.subject().iter().count(), 0);
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing);
    assert_eq!(
        leaf.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    assert_eq!(issued.serial, leaf.raw_serial_as_string().replace(':', ""));

    let again = ca.sign(&csr, &cart(), None).unwrap();
    assert_ne!(again.serial, issued.serial, "serials are random");
}

#[test]
fn nothing_but_the_public_key_is_taken_from_the_csr() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(CART.try_into().unwrap())];
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let issued = ca.sign(&csr, &cart(), None).unwrap();
    let der = der(&issued.chain[0]);
    let leaf = parse(&der);
    assert!(!leaf.is_ca());
    assert!(!leaf.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert!(
        !leaf
            .extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .code_signing
    );
    assert_eq!(
        leaf.subject().iter().count(),
        0,
        "the CSR's subject is not copied"
    );
}

#[test]
fn validity_is_the_default_the_request_or_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let (csr, _) = csr_for(CART);
    let skew = CLOCK_SKEW.as_secs() as i64;
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let sign = |ttl| validity_secs(&ca.sign(&csr, &cart(), ttl).unwrap().chain[0]);

    assert_eq!(sign(None), 24 * 3600 + skew);
    assert_eq!(sign(Some(Duration::ZERO)), 24 * 3600 + skew);
    assert_eq!(sign(Some(hours(1))), 3600 + skew);
    assert_eq!(sign(Some(hours(48))), 24 * 3600 + skew);

    let options = CaOptions {
        default_ttl: hours(1),
        max_ttl: hours(2),
    };
    let custom =
        CertificateAuthority::load_or_create(tmp.path(), "cluster.local", options).unwrap();
    let custom_sign = |ttl| validity_secs(&custom.sign(&csr, &cart(), ttl).unwrap().chain[0]);
    assert_eq!(custom_sign(None), 3600 + skew);
    assert_eq!(custom_sign(Some(hours(3))), 2 * 3600 + skew);

    let issued = ca.sign(&csr, &cart(), None).unwrap();
    let der = der(&issued.chain[0]);
    let not_before = parse(&der).validity().not_before.timestamp();
    let now = x509_parser::time::ASN1Time::now().timestamp();
    assert!(
        now - not_before >= skew - 2,
        "not_before lies {skew}s in the past"
    );
}

#[test]
fn options_are_validated_all_at_once() {
    let bad = CaOptions {
        default_ttl: Duration::from_secs(48 * 3600),
        max_ttl: Duration::from_secs(1),
    };
    let message = bad.validate().unwrap_err().to_string();
    assert!(message.contains("max_ttl 1s is shorter"), "{message}");
    assert!(message.contains("longer than max_ttl"), "{message}");
    let tmp = tempfile::tempdir().unwrap();
    let err = CertificateAuthority::load_or_create(tmp.path(), "Bad Domain", CaOptions::default())
        .unwrap_err();
    assert!(matches!(err, CaError::BadTrustDomain { .. }), "{err}");
}

#[test]
fn a_self_signed_chain_is_leaf_then_root_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let (csr, _) = csr_for(CART);
    let issued = ca.sign(&csr, &cart(), None).unwrap();
    assert_eq!(issued.chain.len(), 2);
    assert_eq!(issued.chain[1], ca.roots_pem()[0]);
    assert_each_link_verifies(&issued.chain);
    verify_with_webpki(&issued.chain, ca.roots_pem()).unwrap();

    let other = tempfile::tempdir().unwrap();
    let stranger = ca_in(other.path());
    assert!(verify_with_webpki(&issued.chain, stranger.roots_pem()).is_err());
}

#[test]
fn an_istio_plugin_intermediate_signs_and_the_chain_reaches_its_root() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = write_plugin(tmp.path());
    let ca = ca_in(tmp.path());
    assert_eq!(ca.source(), CaSource::PlugIn);
    assert_eq!(ca.roots_pem(), std::slice::from_ref(&plugin.root_pem));
    assert!(!tmp.path().join(SELF_SIGNED_KEY).exists());

    let (csr, _) = csr_for(CART);
    let issued = ca.sign(&csr, &cart(), None).unwrap();
    assert_eq!(issued.chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(issued.chain[1], plugin.intermediate_pem);
    assert_eq!(issued.chain[2], plugin.root_pem);
    assert_each_link_verifies(&issued.chain);
    verify_with_webpki(&issued.chain, ca.roots_pem()).unwrap();
}

#[test]
fn plugin_keys_in_legacy_pkcs1_and_sec1_encodings_work() {
    for layout in ["plugin-pkcs1", "plugin-sec1"] {
        let tmp = tempfile::tempdir().unwrap();
        copy_testdata_plugin(layout, tmp.path());
        let ca = ca_in(tmp.path());
        let (csr, _) = csr_for(CART);
        let issued = ca.sign(&csr, &cart(), None).unwrap();
        assert_eq!(issued.chain.len(), 3, "{layout}");
        assert_each_link_verifies(&issued.chain);
        verify_with_webpki(&issued.chain, ca.roots_pem()).unwrap();
    }
}

#[test]
fn broken_plugin_layouts_are_reported_with_what_to_fix() {
    let tmp = tempfile::tempdir().unwrap();
    write_plugin(tmp.path());
    std::fs::remove_file(tmp.path().join(PLUGIN_CERT_CHAIN)).unwrap();
    let err =
        CertificateAuthority::load_or_create(tmp.path(), "cluster.local", CaOptions::default())
            .unwrap_err();
    assert!(err.to_string().contains("cert-chain.pem"), "{err}");
    assert!(matches!(
        err,
        CaError::Layout(LayoutError::PartialPlugIn { .. })
    ));

    // A key that belongs to another certificate.
    let tmp = tempfile::tempdir().unwrap();
    write_plugin(tmp.path());
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(tmp.path().join(PLUGIN_CA_KEY), other.serialize_pem()).unwrap();
    let err =
        CertificateAuthority::load_or_create(tmp.path(), "cluster.local", CaOptions::default())
            .unwrap_err();
    assert!(
        matches!(err, CaError::Layout(LayoutError::KeyMismatch { .. })),
        "{err}"
    );

    // A root that did not sign the intermediate.
    let tmp = tempfile::tempdir().unwrap();
    write_plugin(tmp.path());
    let unrelated = tempfile::tempdir().unwrap();
    let unrelated = write_plugin(unrelated.path());
    std::fs::write(tmp.path().join(PLUGIN_ROOT_CERT), &unrelated.root_pem).unwrap();
    std::fs::write(tmp.path().join(PLUGIN_CERT_CHAIN), "").unwrap();
    let err =
        CertificateAuthority::load_or_create(tmp.path(), "cluster.local", CaOptions::default())
            .unwrap_err();
    assert!(
        matches!(err, CaError::Layout(LayoutError::BrokenChain { .. })),
        "{err}"
    );
    std::fs::write(
        tmp.path().join(PLUGIN_CERT_CHAIN),
        &unrelated.intermediate_pem,
    )
    .unwrap();
    let err =
        CertificateAuthority::load_or_create(tmp.path(), "cluster.local", CaOptions::default())
            .unwrap_err();
    assert!(
        matches!(err, CaError::Layout(LayoutError::BrokenChain { .. })),
        "{err}"
    );
}

#[test]
fn a_self_signed_key_without_its_certificate_is_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    ca_in(tmp.path());
    std::fs::remove_file(tmp.path().join(SELF_SIGNED_CERT)).unwrap();
    let err =
        CertificateAuthority::load_or_create(tmp.path(), "cluster.local", CaOptions::default())
            .unwrap_err();
    assert!(
        matches!(err, CaError::Layout(LayoutError::PartialSelfSigned { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(SELF_SIGNED_CERT), "{err}");
    assert!(tmp.path().join(SELF_SIGNED_KEY).exists());
}

fn csr_error(ca: &CertificateAuthority, csr: &str, identity: &SpiffeId) -> CsrError {
    match ca.sign(csr, identity, None) {
        Err(CaError::Csr(e)) => e,
        other => panic!("expected a CSR error, got {other:?}"),
    }
}

#[test]
fn malformed_or_forged_csrs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    assert!(matches!(
        csr_error(&ca, "garbage", &cart()),
        CsrError::NotPem
    ));
    let not_der = pem_encode("CERTIFICATE REQUEST", b"not a request");
    assert!(matches!(
        csr_error(&ca, &not_der, &cart()),
        CsrError::Malformed(_)
    ));

    let (csr, _) = csr_for(CART);
    let mut bytes = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .map(|d| d.as_ref().to_vec())
        .unwrap();
    // The signature is the last field: change its last byte.
    *bytes.last_mut().unwrap() ^= 0x01;
    let forged = pem_encode("CERTIFICATE REQUEST", &bytes);
    assert!(matches!(
        csr_error(&ca, &forged, &cart()),
        CsrError::BadSignature
    ));
}

#[test]
fn csrs_must_name_exactly_the_requested_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let (other, _) = csr_for("spiffe://cluster.local/ns/shop/sa/payments");
    let err = csr_error(&ca, &other, &cart());
    assert!(matches!(err, CsrError::IdentityMismatch { .. }));
    assert!(err.to_string().contains("payments"), "{err}");

    let (none, _) = csr_with_sans(vec![]);
    assert!(matches!(
        csr_error(&ca, &none, &cart()),
        CsrError::IdentityMismatch { .. }
    ));

    let two = vec![
        SanType::URI(CART.try_into().unwrap()),
        SanType::URI(
            "spiffe://cluster.local/ns/shop/sa/payments"
                .try_into()
                .unwrap(),
        ),
    ];
    let (two, _) = csr_with_sans(two);
    assert!(matches!(
        csr_error(&ca, &two, &cart()),
        CsrError::IdentityMismatch { .. }
    ));
    let request = SigningRequest::from_pem(&two).unwrap();
    assert!(matches!(
        request.identity(),
        Err(CsrError::SeveralIdentities(_))
    ));

    let dns = vec![
        SanType::URI(CART.try_into().unwrap()),
        SanType::DnsName("cart.shop.svc".try_into().unwrap()),
    ];
    let (dns, _) = csr_with_sans(dns);
    assert!(matches!(
        csr_error(&ca, &dns, &cart()),
        CsrError::NonUriSan(_)
    ));
}

#[test]
fn identities_of_another_trust_domain_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let foreign: SpiffeId = "spiffe://example.org/ns/shop/sa/cart".parse().unwrap();
    let (csr, _) = csr_for(&foreign.to_string());
    let err = ca.sign(&csr, &foreign, None).unwrap_err();
    assert!(matches!(err, CaError::WrongTrustDomain { .. }), "{err}");
    assert!(err.to_string().contains("example.org"), "{err}");
}

#[test]
fn only_p256_and_large_rsa_keys_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_in(tmp.path());
    let rsa = include_str!("testdata/csr-rsa2048.pem");
    let issued = ca.sign(rsa, &cart(), None).unwrap();
    verify_with_webpki(&issued.chain, ca.roots_pem()).unwrap();

    for (file, csr) in [
        ("rsa1024", include_str!("testdata/csr-rsa1024.pem")),
        ("p384", include_str!("testdata/csr-p384.pem")),
        ("ed25519", include_str!("testdata/csr-ed25519.pem")),
    ] {
        let err = csr_error(&ca, csr, &cart());
        assert!(matches!(err, CsrError::UnsupportedKey(_)), "{file}: {err}");
    }
    assert!(
        csr_error(&ca, include_str!("testdata/csr-rsa1024.pem"), &cart())
            .to_string()
            .contains("RSA of 1024 bits")
    );
}

#[test]
fn pem_encoding_round_trips() {
    for len in [0usize, 1, 2, 3, 47, 48, 49, 500] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let pem = pem_encode("CERTIFICATE", &bytes);
        assert!(pem.lines().all(|line| line.len() <= 64));
        let back = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes());
        if len == 0 {
            continue;
        }
        assert_eq!(back.unwrap().as_ref(), bytes.as_slice(), "length {len}");
    }
}
