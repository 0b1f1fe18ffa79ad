//! The resources the controller serves, as one immutable snapshot per translation.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

/// One named, versioned resource in its wire form.
#[derive(Debug, PartialEq)]
pub struct VersionedResource {
    /// The resource name the proxies subscribe to.
    pub name: Arc<str>,
    /// A digest of the encoded body: equal bodies have equal versions, also across restarts,
    /// so a proxy that reconnects with `initial_resource_versions` is sent only what changed.
    pub version: Arc<str>,
    /// The body, ready to send.
    pub body: prost_types::Any,
}

impl VersionedResource {
    /// Encodes a message under a type URL and derives its version from the bytes.
    pub fn encode<M: Message>(type_url: &str, name: impl Into<Arc<str>>, message: &M) -> Self {
        let value = message.encode_to_vec();
        Self {
            name: name.into(),
            version: content_version(&value).into(),
            body: prost_types::Any {
                type_url: type_url.to_string(),
                value,
            },
        }
    }
}

/// The version of a body: the first 8 bytes of its SHA-256, in hex.
fn content_version(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Resources of one type, by name.
pub type TypedResources = BTreeMap<Arc<str>, Arc<VersionedResource>>;

/// Everything the controller serves at one moment. Connections diff two snapshots by
/// comparing versions; unchanged resources are shared between snapshots.
#[derive(Debug, Default)]
pub struct ResourceSnapshot {
    /// Increases with every published snapshot; reported as `system_version_info`.
    pub generation: u64,
    /// Resources by type URL.
    pub types: BTreeMap<String, TypedResources>,
}

impl ResourceSnapshot {
    /// The resources of one type (empty when the type is unknown).
    pub fn of_type(&self, type_url: &str) -> Option<&TypedResources> {
        self.types.get(type_url)
    }

    /// Builds a snapshot from resources grouped by type.
    pub fn new(generation: u64, types: BTreeMap<String, Vec<VersionedResource>>) -> Self {
        let types = types
            .into_iter()
            .map(|(type_url, list)| {
                let map = list
                    .into_iter()
                    .map(|r| (r.name.clone(), Arc::new(r)))
                    .collect::<TypedResources>();
                (type_url, map)
            })
            .collect();
        Self { generation, types }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bodies_have_equal_versions_and_different_bodies_differ() {
        let a = VersionedResource::encode("t", "a", &prost_types::Duration { seconds: 1, nanos: 0 });
        let b = VersionedResource::encode("t", "b", &prost_types::Duration { seconds: 1, nanos: 0 });
        let c = VersionedResource::encode("t", "c", &prost_types::Duration { seconds: 2, nanos: 0 });
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
    }
}
