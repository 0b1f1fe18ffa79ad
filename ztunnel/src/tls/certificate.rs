//! Workload certificates and the mesh trust bundle.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::{TlsError, crypto_provider};
use crate::identity::{SPIFFE_SCHEME, SpiffeId};

/// The certificate of one workload identity: the leaf-first chain and its signing key.
///
/// Cheap to clone. The private key is parsed once, at construction, into the signer that
/// rustls uses, and is never printed.
#[derive(Clone)]
pub struct WorkloadCertificate {
    identity: SpiffeId,
    certified: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl WorkloadCertificate {
    /// Builds a certificate from DER: `chain` is leaf first, then any intermediates.
    ///
    /// Fails unless the leaf's single SPIFFE URI SAN is `identity` and `key` belongs to the leaf.
    pub fn from_der(
        identity: &SpiffeId,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let leaf = chain.first().ok_or_else(|| TlsError::EmptyChain {
            identity: identity.clone(),
        })?;
        let parsed = parse(leaf)?;
        let presented = identity_of(&parsed)?;
        if &presented != identity {
            return Err(TlsError::IdentityMismatch {
                expected: identity.clone(),
                presented,
            });
        }
        let not_before = system_time(parsed.validity().not_before.timestamp());
        let not_after = system_time(parsed.validity().not_after.timestamp());
        let signer = crypto_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|source| TlsError::UnusableKey {
                identity: identity.clone(),
                source,
            })?;
        let certified = CertifiedKey::new(chain, signer);
        // `Unknown` means the key type cannot report its public half; refuse it rather than
        // serve a certificate we could not check.
        certified.keys_match().map_err(|_| TlsError::KeyMismatch {
            identity: identity.clone(),
        })?;
        Ok(Self {
            identity: identity.clone(),
            certified: Arc::new(certified),
            not_before,
            not_after,
        })
    }

    /// Builds a certificate from PEM: the chain (leaf first) and a PKCS#8, SEC1 or PKCS#1 key.
    pub fn from_pem(
        identity: &SpiffeId,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                what: "certificate chain",
                source,
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })?;
        Self::from_der(identity, chain, key)
    }

    /// The identity this certificate proves.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The chain as sent in the handshake: leaf first, then intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The start of the leaf's validity period.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The end of the leaf's validity period.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain and signer in the shape rustls resolvers want.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("chain_len", &self.certified.cert.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The roots of the mesh and the trust domain whose identities they vouch for.
///
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    trust_domain: Arc<str>,
    roots: Arc<[CertificateDer<'static>]>,
    anchors: Arc<[TrustAnchor<'static>]>,
}

impl TrustBundle {
    /// Builds a bundle from DER root certificates.
    pub fn new(trust_domain: &str, roots: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        // The identity type owns the trust-domain grammar; borrow it with placeholder parts.
        SpiffeId::new(trust_domain, "default", "default").map_err(|source| {
            TlsError::BadTrustDomain {
                trust_domain: trust_domain.to_string(),
                source,
            }
        })?;
        if roots.is_empty() {
            return Err(TlsError::EmptyBundle {
                trust_domain: trust_domain.to_string(),
            });
        }
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(index, root)| {
                webpki::anchor_from_trusted_cert(root)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|source| TlsError::BadRoot { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            trust_domain: trust_domain.into(),
            roots: roots.into(),
            anchors: anchors.into(),
        })
    }

    /// Builds a bundle from concatenated PEM root certificates.
    pub fn from_pem(trust_domain: &str, roots_pem: &[u8]) -> Result<Self, TlsError> {
        let roots = CertificateDer::pem_slice_iter(roots_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                what: "trust bundle",
                source,
            })?;
        Self::new(trust_domain, roots)
    }

    /// The trust domain whose identities this bundle accepts, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificates, as given.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub(crate) fn trust_domain_arc(&self) -> Arc<str> {
        self.trust_domain.clone()
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

/// The SPIFFE identity named by a certificate: its one `spiffe://` URI SAN.
pub fn spiffe_id_of(certificate: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    identity_of(&parse(certificate)?)
}

fn parse<'a>(certificate: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, TlsError> {
    x509_parser::parse_x509_certificate(certificate)
        .map(|(_, parsed)| parsed)
        .map_err(|e| TlsError::BadCertificate {
            detail: e.to_string(),
        })
}

fn identity_of(certificate: &X509Certificate<'_>) -> Result<SpiffeId, TlsError> {
    let san = certificate
        .subject_alternative_name()
        .map_err(|e| TlsError::BadCertificate {
            detail: format!("subject alternative names: {e}"),
        })?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(SPIFFE_SCHEME) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(TlsError::MissingSpiffeId),
        [uri] => uri.parse().map_err(|source| TlsError::BadSpiffeId {
            uri: uri.to_string(),
            source,
        }),
        _ => Err(TlsError::MultipleSpiffeIds { count: uris.len() }),
    }
}

fn system_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs()),
    }
}
