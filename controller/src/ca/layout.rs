//! Where the CA's key material lives on disk, and how it is read or first created.
//!
//! Two layouts are understood, checked in this order:
//!
//! 1. Istio's plug-in layout: `ca-cert.pem` (the signing, usually intermediate, certificate),
//!    `ca-key.pem`, `cert-chain.pem` (the chain from `ca-cert.pem` towards the root) and
//!    `root-cert.pem` (the trust bundle). All four must be present.
//! 2. A self-signed root this controller created earlier: `self-signed-ca-cert.pem` and
//!    `self-signed-ca-key.pem`. When neither layout is present it is created, so restarts keep
//!    the same root.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::authority::{CLOCK_SKEW, asn1_time, random_serial};
use super::private_key::{PrivateKeyError, key_pair_from_pem};

/// Plug-in layout: the signing certificate.
pub const PLUGIN_CA_CERT: &str = "ca-cert.pem";
/// Plug-in layout: the signing certificate's private key.
pub const PLUGIN_CA_KEY: &str = "ca-key.pem";
/// Plug-in layout: the chain from the signing certificate towards the root.
pub const PLUGIN_CERT_CHAIN: &str = "cert-chain.pem";
/// Plug-in layout: the root certificates, the mesh's trust bundle.
pub const PLUGIN_ROOT_CERT: &str = "root-cert.pem";
/// The certificate of the root this controller created.
pub const SELF_SIGNED_CERT: &str = "self-signed-ca-cert.pem";
/// The private key of the root this controller created (mode 0600).
pub const SELF_SIGNED_KEY: &str = "self-signed-ca-key.pem";
/// How long a self-signed root is valid: ten years, as Istio's.
pub const SELF_SIGNED_ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

const PLUGIN_FILES: [&str; 4] = [
    PLUGIN_CA_CERT,
    PLUGIN_CA_KEY,
    PLUGIN_CERT_CHAIN,
    PLUGIN_ROOT_CERT,
];
const SELF_SIGNED_FILES: [&str; 2] = [SELF_SIGNED_CERT, SELF_SIGNED_KEY];

/// Where the CA's signing key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// Istio's plug-in layout supplied by the operator.
    PlugIn,
    /// A self-signed root created by an earlier run, read back.
    SelfSignedLoaded,
    /// A self-signed root created by this run.
    SelfSignedCreated,
}

/// Why the CA's key material cannot be read or created.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file of the layout cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file or the directory of a new root cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Some, but not all, of the four plug-in files are present.
    #[error(
        "{dir} holds part of an Istio plug-in CA but lacks {missing:?}; provide all of \
         ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem, or remove them"
    )]
    PartialPlugIn {
        /// The CA directory.
        dir: PathBuf,
        /// The absent files.
        missing: Vec<&'static str>,
    },
    /// Only one of the self-signed root's two files is present.
    #[error(
        "{dir} holds part of a self-signed root but lacks {missing:?}; restore it, or remove \
         the remaining file to create a new root (every proxy must then fetch new certificates)"
    )]
    PartialSelfSigned {
        /// The CA directory.
        dir: PathBuf,
        /// The absent file.
        missing: Vec<&'static str>,
    },
    /// A file that must hold a certificate holds none.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate is not valid PEM or X.509.
    #[error("{path} holds a certificate that does not parse: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// The signing certificate is not a CA certificate allowed to sign certificates.
    #[error("{path} cannot sign certificates: {reason}")]
    NotCa {
        /// The file.
        path: PathBuf,
        /// Which constraint it lacks.
        reason: String,
    },
    /// The signing certificate has expired.
    #[error("{path} expired at {not_after}; replace the CA certificate")]
    Expired {
        /// The file.
        path: PathBuf,
        /// When it expired.
        not_after: String,
    },
    /// The private key cannot be read or used.
    #[error("cannot use the private key in {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why it is unusable.
        source: PrivateKeyError,
    },
    /// The private key is not the signing certificate's.
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The plug-in certificates do not form a chain from `ca-cert.pem` to a root.
    #[error(
        "the plug-in chain in {dir} does not lead from ca-cert.pem to a root in root-cert.pem: \
         {reason}"
    )]
    BrokenChain {
        /// The CA directory.
        dir: PathBuf,
        /// Where the chain breaks.
        reason: String,
    },
    /// No random serial number could be drawn for a new root.
    #[error("the system random number generator failed")]
    Random,
    /// rcgen could not generate the root's key or certificate.
    #[error("cannot generate the self-signed root: {0}")]
    Generate(rcgen::Error),
}

/// Everything the CA signs with, read from (or created in) its directory.
pub(crate) struct SigningMaterial {
    /// The key of `signing_cert`.
    pub key: KeyPair,
    /// The certificate that signs leaves: the root itself, or a plug-in intermediate.
    pub signing_cert: CertificateDer<'static>,
    /// The certificates that follow a leaf in an issued chain: from `signing_cert` up to and
    /// including the root that anchors it.
    pub chain: Vec<CertificateDer<'static>>,
    /// The trust bundle: every root certificate.
    pub roots: Vec<CertificateDer<'static>>,
    /// Which layout supplied the material.
    pub source: CaSource,
}

/// Reads the plug-in layout or an earlier self-signed root from `dir`, or creates a root there.
pub(crate) fn load_or_create(
    dir: &Path,
    trust_domain: &str,
) -> Result<SigningMaterial, LayoutError> {
    let present = |names: &[&'static str]| -> (Vec<&'static str>, Vec<&'static str>) {
        names.iter().partition(|name| dir.join(name).exists())
    };
    let (plugin_present, plugin_missing) = present(&PLUGIN_FILES);
    if !plugin_present.is_empty() {
        if !plugin_missing.is_empty() {
            return Err(LayoutError::PartialPlugIn {
                dir: dir.to_path_buf(),
                missing: plugin_missing,
            });
        }
        return load_plugin(dir);
    }
    let (own_present, own_missing) = present(&SELF_SIGNED_FILES);
    match (own_present.is_empty(), own_missing.is_empty()) {
        (false, true) => load_self_signed(dir),
        (true, false) => create_self_signed(dir, trust_domain),
        _ => Err(LayoutError::PartialSelfSigned {
            dir: dir.to_path_buf(),
            missing: own_missing,
        }),
    }
}

fn load_plugin(dir: &Path) -> Result<SigningMaterial, LayoutError> {
    let cert_path = dir.join(PLUGIN_CA_CERT);
    let key_path = dir.join(PLUGIN_CA_KEY);
    let mut ca_certs = read_required_certs(&cert_path)?;
    let signing_cert = ca_certs.remove(0);
    check_signing_cert(&cert_path, &signing_cert)?;
    let key = read_key(&key_path, &cert_path, &signing_cert)?;
    let roots = read_required_certs(&dir.join(PLUGIN_ROOT_CERT))?;
    // cert-chain.pem may be empty when ca-cert.pem is signed by the root directly, and
    // ca-cert.pem sometimes carries its own chain after the signing certificate.
    let mut candidates = read_certs(&dir.join(PLUGIN_CERT_CHAIN))?;
    candidates.extend(ca_certs);
    let chain = chain_to_root(&signing_cert, candidates, &roots).map_err(|reason| {
        LayoutError::BrokenChain {
            dir: dir.to_path_buf(),
            reason,
        }
    })?;
    Ok(SigningMaterial {
        key,
        signing_cert,
        chain,
        roots,
        source: CaSource::PlugIn,
    })
}

fn load_self_signed(dir: &Path) -> Result<SigningMaterial, LayoutError> {
    let cert_path = dir.join(SELF_SIGNED_CERT);
    let root = read_required_certs(&cert_path)?.remove(0);
    check_signing_cert(&cert_path, &root)?;
    let key = read_key(&dir.join(SELF_SIGNED_KEY), &cert_path, &root)?;
    Ok(SigningMaterial {
        key,
        signing_cert: root.clone(),
        chain: vec![root.clone()],
        roots: vec![root],
        source: CaSource::SelfSignedLoaded,
    })
}

fn create_self_signed(dir: &Path, trust_domain: &str) -> Result<SigningMaterial, LayoutError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(LayoutError::Generate)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial().map_err(|_| LayoutError::Random)?);
    let now = SystemTime::now();
    params.not_before = asn1_time(now - CLOCK_SKEW).to_datetime();
    params.not_after = asn1_time(now + SELF_SIGNED_ROOT_VALIDITY).to_datetime();
    let root = params.self_signed(&key).map_err(LayoutError::Generate)?;

    let write_err = |path: PathBuf| move |source| LayoutError::Write { path, source };
    crate::fs::create_private_dir(dir).map_err(write_err(dir.to_path_buf()))?;
    // The key first: a crash in between leaves a key without a certificate, which the next
    // start reports instead of silently replacing.
    let key_path = dir.join(SELF_SIGNED_KEY);
    crate::fs::write_private_atomically(&key_path, key.serialize_pem().as_bytes())
        .map_err(write_err(key_path))?;
    let cert_path = dir.join(SELF_SIGNED_CERT);
    crate::fs::write_atomically(&cert_path, root.pem().as_bytes(), 0o644)
        .map_err(write_err(cert_path))?;

    let root = root.der().clone();
    Ok(SigningMaterial {
        key,
        signing_cert: root.clone(),
        chain: vec![root.clone()],
        roots: vec![root],
        source: CaSource::SelfSignedCreated,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LayoutError> {
    let bytes = std::fs::read(path).map_err(|source| LayoutError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LayoutError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    for cert in &certs {
        parse(path, cert)?;
    }
    Ok(certs)
}

/// Like [`read_certs`], but the file must hold at least one certificate.
fn read_required_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LayoutError> {
    let certs = read_certs(path)?;
    if certs.is_empty() {
        return Err(LayoutError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn parse<'a>(path: &Path, der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, LayoutError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| LayoutError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn read_key(
    key_path: &Path,
    cert_path: &Path,
    cert: &CertificateDer<'_>,
) -> Result<KeyPair, LayoutError> {
    let bytes = std::fs::read(key_path).map_err(|source| LayoutError::Read {
        path: key_path.to_path_buf(),
        source,
    })?;
    let key = key_pair_from_pem(&bytes).map_err(|source| LayoutError::Key {
        path: key_path.to_path_buf(),
        source,
    })?;
    let parsed = parse(cert_path, cert)?;
    if key.subject_public_key_info() != parsed.public_key().raw {
        return Err(LayoutError::KeyMismatch {
            key: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
        });
    }
    Ok(key)
}

fn check_signing_cert(path: &Path, der: &CertificateDer<'_>) -> Result<(), LayoutError> {
    let cert = parse(path, der)?;
    let not_ca = |reason: &str| LayoutError::NotCa {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if !cert.is_ca() {
        return Err(not_ca("its basic constraints do not say CA:true"));
    }
    if let Ok(Some(usage)) = cert.key_usage()
        && !usage.value.key_cert_sign()
    {
        return Err(not_ca("its key usage lacks keyCertSign"));
    }
    let not_after = cert.validity().not_after;
    if not_after.timestamp() <= asn1_time(SystemTime::now()).timestamp() {
        return Err(LayoutError::Expired {
            path: path.to_path_buf(),
            not_after: not_after.to_string(),
        });
    }
    Ok(())
}

/// Orders the plug-in certificates from `signing` to the root that anchors it, each one
/// signed by the next. Certificates that are not on that path are left out.
fn chain_to_root(
    signing: &CertificateDer<'static>,
    mut candidates: Vec<CertificateDer<'static>>,
    roots: &[CertificateDer<'static>],
) -> Result<Vec<CertificateDer<'static>>, String> {
    if roots.contains(signing) {
        return Ok(vec![signing.clone()]);
    }
    candidates.retain(|c| c != signing && !roots.contains(c));
    let mut chain = vec![signing.clone()];
    // Each step consumes a candidate, so the walk ends.
    loop {
        let current = chain
            .last()
            .expect("the chain starts with the signing certificate");
        if let Some(root) = roots.iter().find(|r| issued_by(current, r)) {
            chain.push(root.clone());
            return Ok(chain);
        }
        let Some(position) = candidates.iter().position(|c| issued_by(current, c)) else {
            let (subject, issuer) = X509Certificate::from_der(current)
                .map(|(_, c)| (c.subject().to_string(), c.issuer().to_string()))
                .unwrap_or_default();
            return Err(format!(
                "the issuer {issuer:?} of {subject:?} is in neither cert-chain.pem nor \
                 root-cert.pem (or its signature does not verify)"
            ));
        };
        chain.push(candidates.remove(position));
    }
}

/// Whether `issuer` signed `cert`.
pub(crate) fn issued_by(cert: &CertificateDer<'_>, issuer: &CertificateDer<'_>) -> bool {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        X509Certificate::from_der(cert),
        X509Certificate::from_der(issuer),
    ) else {
        return false;
    };
    cert.issuer() == issuer.subject()
        && issuer.is_ca()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}
