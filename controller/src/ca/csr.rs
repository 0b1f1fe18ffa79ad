//! Certificate signing requests: parsed, signature-checked and key-checked before the CA looks
//! at them. Only the public key and the requested URI SAN are taken from a request; everything
//! else in a certificate is decided by the CA.

use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use ztunnel::identity::{IdentityError, SpiffeId};

/// The smallest RSA modulus, in bits, the CA accepts in a request.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a certificate signing request was refused. Every message names what was wrong with the
/// request, so that the proxy's log tells its operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The request is not PEM.
    #[error("the CSR is not a PEM `CERTIFICATE REQUEST` block")]
    NotPem,
    /// The request is PEM but not a PKCS#10 structure.
    #[error("the CSR is not a valid PKCS#10 request: {0}")]
    Malformed(String),
    /// The request was not signed by the key it carries.
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    /// The key is neither ECDSA P-256 nor RSA of at least [`MIN_RSA_BITS`] bits.
    #[error(
        "the CSR's key is {0}; only ECDSA P-256 or RSA of at least {MIN_RSA_BITS} bits are accepted"
    )]
    UnsupportedKey(String),
    /// The request asks for a DNS name, IP address or other non-URI name.
    #[error(
        "the CSR asks for a non-URI subject alternative name ({0}); only the SPIFFE id is allowed"
    )]
    NonUriSan(String),
    /// The request names no identity, and none was given otherwise.
    #[error("the CSR carries no URI SAN, so it names no identity")]
    NoIdentity,
    /// The request names several identities.
    #[error("the CSR names {0:?}; exactly one SPIFFE id is allowed")]
    SeveralIdentities(Vec<String>),
    /// The request's URI SAN is not a mesh identity.
    #[error("the CSR's URI SAN is not a mesh identity: {0}")]
    BadIdentity(#[from] IdentityError),
    /// The request names something other than exactly the requested identity.
    #[error("the CSR names {found:?} but the certificate is requested for {requested}")]
    IdentityMismatch {
        /// The identity the caller asked for.
        requested: String,
        /// The URI SANs in the CSR.
        found: Vec<String>,
    },
}

/// A certificate signing request whose signature verified and whose key the CA accepts.
#[derive(Clone, Debug)]
pub struct SigningRequest {
    /// The request's SubjectPublicKeyInfo, DER.
    public_key_der: Vec<u8>,
    /// The URI SANs the request asks for, in order.
    uri_sans: Vec<String>,
}

impl SigningRequest {
    /// Parses a PEM `CERTIFICATE REQUEST`, checks its key type and its signature, and collects
    /// the identities it asks for. A SAN of any other kind than URI is refused.
    pub fn from_pem(pem: &str) -> Result<Self, CsrError> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| CsrError::NotPem)?;
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed(format!(
                "{} bytes follow the request",
                rest.len()
            )));
        }
        // The key is checked first: ring refuses to verify with a small RSA key, and "key too
        // small" is the more useful message.
        check_key(&csr.certification_request_info.subject_pki)?;
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        let uri_sans = requested_uri_sans(&csr)?;
        Ok(Self {
            public_key_der: csr.certification_request_info.subject_pki.raw.to_vec(),
            uri_sans,
        })
    }

    /// The URI SANs the request asks for.
    pub fn uri_sans(&self) -> &[String] {
        &self.uri_sans
    }

    /// The one identity the request names, as Istio's proxies write it into their CSRs.
    pub fn identity(&self) -> Result<SpiffeId, CsrError> {
        match self.uri_sans.as_slice() {
            [] => Err(CsrError::NoIdentity),
            [one] => Ok(one.parse()?),
            several => Err(CsrError::SeveralIdentities(several.to_vec())),
        }
    }

    /// Checks that the request names exactly `identity`, and nothing else.
    pub fn check_identity(&self, identity: &SpiffeId) -> Result<(), CsrError> {
        let wanted = identity.to_string();
        match self.uri_sans.as_slice() {
            [one] if *one == wanted => Ok(()),
            _ => Err(CsrError::IdentityMismatch {
                requested: wanted,
                found: self.uri_sans.clone(),
            }),
        }
    }

    /// The request's public key, in the form rcgen certifies.
    pub(crate) fn public_key(&self) -> Result<rcgen::SubjectPublicKeyInfo, CsrError> {
        rcgen::SubjectPublicKeyInfo::from_der(&self.public_key_der)
            .map_err(|e| CsrError::UnsupportedKey(e.to_string()))
    }
}

fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(curve) if curve == OID_EC_P256 => Ok(()),
            Some(curve) => Err(CsrError::UnsupportedKey(format!("ECDSA on curve {curve}"))),
            None => Err(CsrError::UnsupportedKey(
                "ECDSA without a named curve".into(),
            )),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(CsrError::Malformed(
                "the RSA public key does not parse".into(),
            ));
        };
        let bits = modulus_bits(rsa.modulus);
        return if bits >= MIN_RSA_BITS {
            Ok(())
        } else {
            Err(CsrError::UnsupportedKey(format!("RSA of {bits} bits")))
        };
    }
    Err(CsrError::UnsupportedKey(format!("of algorithm {alg}")))
}

/// The size of a big-endian modulus in bits, ignoring leading zero bytes and bits.
fn modulus_bits(modulus: &[u8]) -> usize {
    let significant: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(first) => &modulus[first..],
        None => return 0,
    };
    significant.len() * 8 - significant[0].leading_zeros() as usize
}

fn requested_uri_sans(csr: &X509CertificationRequest<'_>) -> Result<Vec<String>, CsrError> {
    let mut uris = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(uri) => uris.push((*uri).to_string()),
                        other => return Err(CsrError::NonUriSan(other.to_string())),
                    }
                }
            }
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::Malformed(format!(
                    "an extension does not parse: {error}"
                )));
            }
            // Other requested extensions are ignored: the CA writes its own.
            _ => {}
        }
    }
    Ok(uris)
}
