//! The certificate authority: signs workload certificates whose only name is the SPIFFE id,
//! with the chain a proxy needs to present them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;
use ztunnel::identity::{IdentityError, SpiffeId};

use super::csr::{CsrError, SigningRequest};
use super::layout::{self, CaSource, LayoutError};

/// Validity of a workload certificate when the request does not ask for one: 24 hours, as in
/// Istio; proxies renew at half life.
pub const DEFAULT_CERTIFICATE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest validity a request may obtain; longer requests are shortened to it.
pub const DEFAULT_MAX_CERTIFICATE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How far in the past certificates start, so that a peer whose clock is slightly behind
/// already accepts them.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Length in bytes of a random certificate serial number.
const SERIAL_BYTES: usize = 16;

/// How the CA chooses certificate lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaOptions {
    /// Validity when a request asks for none; [`DEFAULT_CERTIFICATE_TTL`] by default.
    pub default_ttl: Duration,
    /// The longest validity a request obtains; [`DEFAULT_MAX_CERTIFICATE_TTL`] by default.
    pub max_ttl: Duration,
}

impl Default for CaOptions {
    fn default() -> Self {
        Self {
            default_ttl: DEFAULT_CERTIFICATE_TTL,
            max_ttl: DEFAULT_MAX_CERTIFICATE_TTL,
        }
    }
}

impl CaOptions {
    /// Checks the options, reporting every problem at once.
    pub fn validate(&self) -> Result<(), CaError> {
        let mut problems = Vec::new();
        if self.default_ttl < CLOCK_SKEW {
            problems.push(format!(
                "default_ttl {:?} is shorter than the {CLOCK_SKEW:?} clock-skew allowance",
                self.default_ttl
            ));
        }
        if self.max_ttl < CLOCK_SKEW {
            problems.push(format!(
                "max_ttl {:?} is shorter than the {CLOCK_SKEW:?} clock-skew allowance",
                self.max_ttl
            ));
        }
        if self.default_ttl > self.max_ttl {
            problems.push(format!(
                "default_ttl {:?} is longer than max_ttl {:?}",
                self.default_ttl, self.max_ttl
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CaError::BadOptions(problems.join("; ")))
        }
    }

    /// The validity a request obtains: the default when it asks for none (or zero), capped at
    /// the maximum.
    pub fn ttl_for(&self, requested: Option<Duration>) -> Duration {
        match requested {
            Some(ttl) if !ttl.is_zero() => ttl.min(self.max_ttl),
            _ => self.default_ttl,
        }
    }
}

/// Why the CA cannot start or refuses to sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The lifetime options contradict each other; the message lists every problem.
    #[error("invalid CA options: {0}")]
    BadOptions(String),
    /// The configured trust domain cannot appear in a SPIFFE id.
    #[error("the trust domain {trust_domain:?} is invalid: {source}")]
    BadTrustDomain {
        /// The configured value.
        trust_domain: String,
        /// What is wrong with it.
        source: IdentityError,
    },
    /// The key material on disk cannot be read or created.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The signing certificate cannot be turned into an issuer.
    #[error("the CA certificate cannot sign: {0}")]
    Issuer(rcgen::Error),
    /// The signing request is refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The identity belongs to a trust domain this CA does not serve.
    #[error("identity {identity} is in trust domain {found:?}, but this CA serves {expected:?}")]
    WrongTrustDomain {
        /// The requested identity.
        identity: String,
        /// Its trust domain.
        found: String,
        /// The CA's trust domain.
        expected: String,
    },
    /// The signing certificate is no longer valid.
    #[error("the CA certificate expired at {0:?}; replace it to issue certificates again")]
    Expired(SystemTime),
    /// No random serial number could be drawn.
    #[error("the system random number generator failed")]
    Random,
    /// rcgen could not produce the certificate.
    #[error("signing the certificate failed: {0}")]
    Sign(rcgen::Error),
}

/// A signed workload certificate and what the log line needs to know about it.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// PEM certificates, leaf first, then the intermediates up to and including the root, as
    /// Istio's CA returns them.
    pub chain: Vec<String>,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// The end of the leaf's validity.
    pub not_after: SystemTime,
}

/// The mesh's certificate authority. Immutable once loaded; share it in an `Arc`.
pub struct CertificateAuthority {
    trust_domain: Arc<str>,
    options: CaOptions,
    issuer: Issuer<'static, KeyPair>,
    signing_not_after: SystemTime,
    chain: Vec<String>,
    roots: Vec<String>,
    source: CaSource,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The issuer holds the signing key; leave it out.
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("options", &self.options)
            .field("source", &self.source)
            .field("signing_not_after", &self.signing_not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Opens the CA kept in `dir`: Istio's plug-in files when present, else the root an
    /// earlier run created, else a new self-signed ECDSA P-256 root (organization = trust
    /// domain, ten years), written with owner-only permissions.
    pub fn load_or_create(
        dir: &Path,
        trust_domain: &str,
        options: CaOptions,
    ) -> Result<Self, CaError> {
        options.validate()?;
        // A trust domain is valid exactly when an identity in it can be built.
        SpiffeId::new(trust_domain, "default", "default").map_err(|source| {
            CaError::BadTrustDomain {
                trust_domain: trust_domain.to_string(),
                source,
            }
        })?;
        let material = layout::load_or_create(dir, trust_domain)?;
        let signing = X509Certificate::from_der(&material.signing_cert)
            .map_err(|e| CaError::Issuer(rcgen::Error::X509(e.to_string())))?
            .1;
        let signing_not_after = system_time(&signing.validity().not_after);
        let issuer = Issuer::from_ca_cert_der(&material.signing_cert, material.key)
            .map_err(CaError::Issuer)?;
        Ok(Self {
            trust_domain: trust_domain.into(),
            options,
            issuer,
            signing_not_after,
            chain: material.chain.iter().map(pem).collect(),
            roots: material.roots.iter().map(pem).collect(),
            source: material.source,
        })
    }

    /// The trust domain this CA issues identities in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The lifetime options in force.
    pub fn options(&self) -> &CaOptions {
        &self.options
    }

    /// Which layout the signing key came from.
    pub fn source(&self) -> CaSource {
        self.source
    }

    /// The trust bundle: one PEM certificate per mesh root.
    pub fn roots_pem(&self) -> &[String] {
        &self.roots
    }

    /// Checks that `identity` belongs to this CA's trust domain.
    pub fn check_trust_domain(&self, identity: &SpiffeId) -> Result<(), CaError> {
        if identity.trust_domain() == &*self.trust_domain {
            return Ok(());
        }
        Err(CaError::WrongTrustDomain {
            identity: identity.to_string(),
            found: identity.trust_domain().to_string(),
            expected: self.trust_domain.to_string(),
        })
    }

    /// Parses and checks a PEM CSR, then signs it for `identity`; see [`Self::sign_request`].
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        requested_ttl: Option<Duration>,
    ) -> Result<IssuedCertificate, CaError> {
        self.sign_request(&SigningRequest::from_pem(csr_pem)?, identity, requested_ttl)
    }

    /// Signs a certificate for `identity` with the request's public key. The request must name
    /// exactly that identity; nothing else is taken from it: the URI SAN is the identity alone,
    /// key usage digitalSignature + keyEncipherment, extended key usage serverAuth +
    /// clientAuth, not a CA, valid from [`CLOCK_SKEW`] ago for [`CaOptions::ttl_for`] (and
    /// never past the CA certificate's own expiry), with a random serial.
    pub fn sign_request(
        &self,
        request: &SigningRequest,
        identity: &SpiffeId,
        requested_ttl: Option<Duration>,
    ) -> Result<IssuedCertificate, CaError> {
        self.check_trust_domain(identity)?;
        request.check_identity(identity)?;
        let public_key = request.public_key()?;

        let now = SystemTime::now();
        let ttl = self.options.ttl_for(requested_ttl);
        let not_after = now
            .checked_add(ttl)
            .map_or(self.signing_not_after, |t| t.min(self.signing_not_after));
        if not_after <= now {
            return Err(CaError::Expired(self.signing_not_after));
        }

        let serial = random_serial().map_err(|_| CaError::Random)?;
        let mut params = CertificateParams::default();
        // Istio's workload certificates have an empty subject; the SAN is then critical.
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Sign(e))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial.clone());
        params.not_before = asn1_time(now - CLOCK_SKEW).to_datetime();
        params.not_after = asn1_time(not_after).to_datetime();

        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(leaf.pem());
        chain.extend(self.chain.iter().cloned());
        Ok(IssuedCertificate {
            chain,
            serial: serial
                .to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            not_after,
        })
    }
}

/// A certificate and key for a server of the control plane itself (not a workload).
pub struct ServingCertificate {
    /// Leaf first, up to the root.
    pub cert_chain_pem: String,
    /// The new key, PKCS#8 PEM.
    pub key_pem: String,
}

impl CertificateAuthority {
    /// Issues a server certificate for the controller's own gRPC port: a fresh ECDSA P-256
    /// key, the given DNS names and IPs, server auth only. Proxies verify it with the mesh's
    /// trust bundle, as they verify each other.
    pub fn issue_serving_certificate(
        &self,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        ttl: Duration,
    ) -> Result<ServingCertificate, CaError> {
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Sign)?;
        let mut params = CertificateParams::new(dns_names.to_vec()).map_err(CaError::Sign)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial().map_err(|_| CaError::Random)?);
        let now = SystemTime::now();
        let not_after = now
            .checked_add(ttl)
            .map_or(self.signing_not_after, |t| t.min(self.signing_not_after));
        params.not_before = asn1_time(now - CLOCK_SKEW).to_datetime();
        params.not_after = asn1_time(not_after).to_datetime();
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut cert_chain_pem = cert.pem();
        for c in &self.chain {
            cert_chain_pem.push_str(c);
        }
        Ok(ServingCertificate {
            cert_chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

fn pem(der: &CertificateDer<'_>) -> String {
    pem_encode("CERTIFICATE", der)
}

/// Encodes DER as a PEM block (RFC 7468: base64 in 64-column lines).
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 0x3f]);
            } else {
                encoded.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.chunks(64) {
        // Only ALPHABET bytes and '=' were pushed, all ASCII.
        out.extend(line.iter().map(|b| char::from(*b)));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A random, positive serial number whose first byte is never zero: DER drops leading zero
/// bytes, and the serial we log must be the one in the certificate.
pub(crate) fn random_serial() -> Result<SerialNumber, ring::error::Unspecified> {
    let mut bytes = [0u8; SERIAL_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A wall-clock time as an X.509 time, saturating at the ends of the representable range.
pub(crate) fn asn1_time(at: SystemTime) -> ASN1Time {
    // 9999-12-31T23:59:59Z, the last second X.509 can express.
    const LAST_SECOND: i64 = 253_402_300_799;
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(LAST_SECOND))
        .min(LAST_SECOND);
    ASN1Time::from_timestamp(secs).unwrap_or_else(|_| ASN1Time::now())
}

fn system_time(at: &ASN1Time) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).unwrap_or(0))
}
