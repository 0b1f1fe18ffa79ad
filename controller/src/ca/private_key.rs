//! Reading a CA's private key from PEM. ring only reads PKCS#8, but plug-in CA keys often come
//! in the older encodings (`RSA PRIVATE KEY` from cert-manager or OpenSSL 1.x, `EC PRIVATE KEY`
//! from `openssl ecparam`); those are re-wrapped into PKCS#8 rather than refused.

use rcgen::KeyPair;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// DER of `AlgorithmIdentifier { rsaEncryption, NULL }`.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// DER of `AlgorithmIdentifier { id-ecPublicKey, prime256v1 }`.
const EC_P256_ALGORITHM: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
    0xce, 0x3d, 0x03, 0x01, 0x07,
];
/// DER of `AlgorithmIdentifier { id-ecPublicKey, secp384r1 }`.
const EC_P384_ALGORITHM: &[u8] = &[
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];

/// Why a PEM private key cannot be used to sign.
#[derive(Debug, thiserror::Error)]
pub enum PrivateKeyError {
    /// The file holds no private key block.
    #[error("it holds no PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block")]
    NotPem,
    /// The key does not parse or is of an unsupported kind.
    #[error(
        "the key is not usable for signing ({0}); use an unencrypted ECDSA P-256/P-384 or RSA key, \
         e.g. convert it with `openssl pkcs8 -topk8 -nocrypt`"
    )]
    Unusable(String),
}

/// Reads an unencrypted private key in PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM form.
pub fn key_pair_from_pem(pem: &[u8]) -> Result<KeyPair, PrivateKeyError> {
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| PrivateKeyError::NotPem)?;
    match key {
        PrivateKeyDer::Pkcs8(der) => KeyPair::try_from(der.secret_pkcs8_der())
            .map_err(|e| PrivateKeyError::Unusable(e.to_string())),
        PrivateKeyDer::Pkcs1(der) => {
            let pkcs8 = pkcs8_wrap(RSA_ALGORITHM, der.secret_pkcs1_der());
            KeyPair::try_from(pkcs8.as_slice())
                .map_err(|e| PrivateKeyError::Unusable(e.to_string()))
        }
        PrivateKeyDer::Sec1(der) => {
            // SEC1 may name its curve inside; ring checks the named curve and the public key
            // against the wrapper's, so only the right curve is accepted.
            let mut last = String::new();
            for algorithm in [EC_P256_ALGORITHM, EC_P384_ALGORITHM] {
                let pkcs8 = pkcs8_wrap(algorithm, der.secret_sec1_der());
                match KeyPair::try_from(pkcs8.as_slice()) {
                    Ok(pair) => return Ok(pair),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(PrivateKeyError::Unusable(format!(
                "EC key on an unsupported curve: {last}"
            )))
        }
        _ => Err(PrivateKeyError::Unusable("unknown key encoding".into())),
    }
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, OCTET STRING key }` (RFC 5208).
fn pkcs8_wrap(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(algorithm);
    body.extend(der_tlv(0x04, key));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn pkcs8_keys_round_trip() {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let read = key_pair_from_pem(pair.serialize_pem().as_bytes()).unwrap();
        assert_eq!(read.der_bytes(), pair.der_bytes());
    }

    #[test]
    fn legacy_rsa_and_ec_keys_are_rewrapped() {
        let rsa = key_pair_from_pem(include_bytes!("testdata/plugin-pkcs1/ca-key.pem")).unwrap();
        assert!(rsa.is_compatible(&rcgen::PKCS_RSA_SHA256));
        let ec = key_pair_from_pem(include_bytes!("testdata/plugin-sec1/ca-key.pem")).unwrap();
        assert!(ec.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(matches!(
            key_pair_from_pem(b"nope"),
            Err(PrivateKeyError::NotPem)
        ));
        let bogus = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            key_pair_from_pem(bogus.as_bytes()),
            Err(PrivateKeyError::Unusable(_))
        ));
    }

    #[test]
    fn long_der_lengths_use_the_long_form() {
        assert_eq!(der_tlv(0x04, &[0; 3])[..2], [0x04, 3]);
        assert_eq!(der_tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }
}
