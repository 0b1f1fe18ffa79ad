//! Discovery state: the workloads, services and L4 policies the controller pushes, as typed
//! records indexed for the data path.
//!
//! The xDS client feeds a [`DiscoveryStore`], which converts every resource once (rejecting
//! what it cannot use, see [`ResourceError`]) and publishes an immutable
//! [`DiscoverySnapshot`] on a `watch` channel after each update. The data path holds a
//! receiver and reads `borrow().clone()`: no lock is ever held across an await, and a
//! snapshot stays valid for as long as a connection keeps it.
//!
//! Keys follow Istio's: a workload is named by its uid, a service by `namespace/hostname`,
//! a policy by `namespace/name`. Policies stay in their wire form
//! ([`mesh_proto::istio::security::Authorization`]) because the evaluator reads that form.

mod convert;
mod model;
mod snapshot;
mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::identity::{DEFAULT_TRUST_DOMAIN, IdentityError};

pub use convert::{DEFAULT_SERVICE_ACCOUNT, policy_key, service_key, validate_authorization};
pub use model::{
    Endpoint, GatewayDestination, GatewayRef, HealthPolicy, LoadBalancing, LoadBalancingMode,
    Locality, LocalityScope, NetworkIp, NetworkMode, PortMap, ServiceInfo, Tunnel, WorkloadInfo,
    WorkloadKind,
};
pub use snapshot::{DiscoverySnapshot, WaypointTarget};
pub use store::DiscoveryStore;

/// What the store assumes where a record leaves something out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshDefaults {
    /// The network this proxy is on: lookups by bare IP search it. Empty is the default
    /// network, which is what the controller writes.
    pub network: Arc<str>,
    /// The trust domain of workloads whose record has none.
    pub trust_domain: Arc<str>,
}

impl Default for MeshDefaults {
    fn default() -> Self {
        Self {
            network: "".into(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
        }
    }
}

/// Why a resource from the controller cannot be used. The xDS client NACKs it with this
/// message, prefixed by the resource's name; the previous version (if any) stays in force.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    /// The body is not the message its type URL promises.
    #[error(
        "the body does not decode as {message}: {detail}; controller and proxy disagree on the schema"
    )]
    Decode {
        /// The expected message.
        message: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// An address resource with neither a workload nor a service in it.
    #[error("the address carries neither a workload nor a service")]
    EmptyAddress,
    /// The resource name is not the key its body implies, so later removals by name would
    /// miss it.
    #[error(
        "its body makes it {expected:?}; workloads must be named by uid, services by \
         namespace/hostname and policies by namespace/name"
    )]
    NameMismatch {
        /// The name the body implies.
        expected: String,
    },
    /// A field that must be set is empty.
    #[error("{field} is empty")]
    MissingField {
        /// The field.
        field: String,
    },
    /// Raw address bytes of the wrong length.
    #[error("{field} holds a {len}-byte address; an IP address is 4 (IPv4) or 16 (IPv6) bytes")]
    BadAddress {
        /// The field.
        field: String,
        /// How many bytes it held.
        len: usize,
    },
    /// An address range longer than its address.
    #[error("{field} has prefix length {length}, longer than the {bits} bits of its address")]
    BadPrefix {
        /// The field.
        field: String,
        /// The prefix length given.
        length: u32,
        /// The address's width.
        bits: u32,
    },
    /// A number that is not a TCP port.
    #[error("{field} holds {value}, which is not a TCP port (1-65535)")]
    BadPort {
        /// The field.
        field: String,
        /// The number given.
        value: u32,
    },
    /// The same service port mapped twice.
    #[error("{field} maps service port {port} twice")]
    DuplicatePort {
        /// The field.
        field: String,
        /// The repeated port.
        port: u16,
    },
    /// An enum number this build does not know.
    #[error(
        "{field} has the value {value}, which this proxy does not know; run a proxy as new as \
         the controller"
    )]
    UnknownEnum {
        /// The field.
        field: String,
        /// The number given.
        value: i32,
    },
    /// A string match that does not say how to match.
    #[error("{field} has a string match with none of exact, prefix, suffix or presence")]
    EmptyStringMatch {
        /// The field.
        field: String,
    },
    /// The namespace, service account or trust domain do not form a mesh identity.
    #[error("its identity is invalid: {0}")]
    Identity(#[from] IdentityError),
    /// The store was handed a type it does not hold.
    #[error("{type_url} is not a type the discovery store holds")]
    UnexpectedType {
        /// The type URL.
        type_url: String,
    },
}

impl ResourceError {
    /// Prefixes the field path of a field-level error, so nested errors name where they are.
    fn at(self, prefix: &str) -> Self {
        let nest = |field: String| format!("{prefix}.{field}");
        match self {
            Self::BadAddress { field, len } => Self::BadAddress {
                field: nest(field),
                len,
            },
            Self::BadPort { field, value } => Self::BadPort {
                field: nest(field),
                value,
            },
            other => other,
        }
    }
}
