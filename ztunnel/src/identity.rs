//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! This is the one home of the identity type; the controller, the tunnel and the waypoint all
//! use it, so that a name parsed in one place means the same in every other.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The URI scheme every mesh identity carries.
pub const SPIFFE_SCHEME: &str = "spiffe://";

/// The trust domain used when none is configured, as in Istio.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A workload identity in the mesh. Cheap to clone: every part is shared.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: Arc<str>,
    namespace: Arc<str>,
    service_account: Arc<str>,
}

/// Why a string is not a mesh identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The string is not a `spiffe://` URI.
    #[error("identity {0:?} does not start with {SPIFFE_SCHEME}")]
    MissingScheme(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error(
        "identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    BadShape(String),
    /// One part has characters or a length Kubernetes names cannot have.
    #[error("identity {value:?} has an invalid {part}: {why}")]
    BadPart {
        /// The whole identity as given.
        value: String,
        /// Which part is wrong (trust domain, namespace, service account).
        part: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl SpiffeId {
    /// Builds an identity from its parts, checking each one.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        let whole = || format!("{SPIFFE_SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        check_part(trust_domain, "trust domain", true).map_err(|why| IdentityError::BadPart {
            value: whole(),
            part: "trust domain",
            why,
        })?;
        check_part(namespace, "namespace", false).map_err(|why| IdentityError::BadPart {
            value: whole(),
            part: "namespace",
            why,
        })?;
        check_part(service_account, "service account", false).map_err(|why| {
            IdentityError::BadPart {
                value: whole(),
                part: "service account",
                why,
            }
        })?;
        Ok(Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace of the workload.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account of the workload.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The identity without its scheme, as Istio writes principals in policies:
    /// `<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

fn check_part(value: &str, _part: &'static str, dots_allowed: bool) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if value.len() > 253 {
        return Err("it is longer than 253 characters");
    }
    let ok = value.bytes().all(|b| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'-'
            || (dots_allowed && b == b'.')
            || b == b'_'
    });
    if !ok {
        return Err(
            "only lower-case letters, digits, '-', '_' (and '.' in a trust domain) are allowed",
        );
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SPIFFE_SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SPIFFE_SCHEME)
            .ok_or_else(|| IdentityError::MissingScheme(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => Self::new(td, ns, sa),
            _ => Err(IdentityError::BadShape(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_same_identity() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(id.principal(), "cluster.local/ns/shop/sa/cart");
    }

    #[test]
    fn rejects_malformed_identities() {
        for bad in [
            "cluster.local/ns/shop/sa/cart",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/namespace/shop/sa/cart",
            "spiffe://cluster.local/ns/shop/sa/cart/extra",
            "spiffe:///ns/shop/sa/cart",
            "spiffe://cluster.local/ns/Shop/sa/cart",
            "spiffe://cluster.local/ns/shop/sa/",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} was accepted");
        }
    }
}
