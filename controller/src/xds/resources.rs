//! The resources the controller serves, as one immutable snapshot per translation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prost::Message;

use crate::sorted_diff::{Difference, sorted_diff};

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

/// The version of a body: the first 8 bytes of its SHA-256, in hex. Written digit by digit:
/// this runs for every resource of every translation.
fn content_version(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut version = String::with_capacity(16);
    for b in &digest.as_ref()[..8] {
        version.push(char::from(HEX[usize::from(b >> 4)]));
        version.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    version
}

/// Resources of one type, by name.
pub type TypedResources = BTreeMap<Arc<str>, Arc<VersionedResource>>;

/// Everything the controller serves at one moment. A connection compares the versions it
/// sent with the snapshot's; when the snapshot knows what changed since the one before, a
/// connection that was up to date with that one looks only at the changes.
#[derive(Debug, Default)]
pub struct ResourceSnapshot {
    /// Increases with every published snapshot; reported as `system_version_info`.
    pub generation: u64,
    /// Resources by type URL.
    pub types: BTreeMap<String, TypedResources>,
    /// What changed since the previous published snapshot, when known.
    pub changes: Option<SnapshotChanges>,
}

/// What changed between two snapshots. Computed once when a snapshot is published, so that a
/// one-pod change costs each connection work in proportion to the change, not to the mesh.
#[derive(Debug, Default, PartialEq)]
pub struct SnapshotChanges {
    /// The generation of the snapshot these changes lead from.
    pub since: u64,
    /// Per type URL; a type without changes is absent.
    pub types: BTreeMap<String, TypeChanges>,
}

/// The changes of one type, each list sorted by name.
#[derive(Debug, Default, PartialEq)]
pub struct TypeChanges {
    /// Resources that are new or have a new version.
    pub updated: Vec<Arc<str>>,
    /// Resources that are gone.
    pub removed: Vec<Arc<str>>,
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
            .map(|(type_url, list)| (type_url, by_name(list)))
            .collect();
        Self {
            generation,
            types,
            changes: None,
        }
    }

    /// Records what changed since `previous`, which must be the snapshot published just
    /// before this one.
    pub fn with_changes_since(mut self, previous: &ResourceSnapshot) -> Self {
        let empty = TypedResources::new();
        let type_urls: BTreeSet<&String> = self.types.keys().chain(previous.types.keys()).collect();
        let types = type_urls
            .into_iter()
            .filter_map(|type_url| {
                let old = previous.types.get(type_url).unwrap_or(&empty);
                let new = self.types.get(type_url).unwrap_or(&empty);
                let changes = type_changes(old, new);
                let changed = !changes.updated.is_empty() || !changes.removed.is_empty();
                changed.then(|| (type_url.clone(), changes))
            })
            .collect();
        self.changes = Some(SnapshotChanges {
            since: previous.generation,
            types,
        });
        self
    }
}

fn type_changes(old: &TypedResources, new: &TypedResources) -> TypeChanges {
    let mut changes = TypeChanges::default();
    for (name, difference) in sorted_diff(old, new, |a, b| a.version == b.version) {
        match difference {
            Difference::Added | Difference::Changed => changes.updated.push(name.clone()),
            Difference::Removed => changes.removed.push(name.clone()),
        }
    }
    changes
}

/// Resources keyed by their names.
pub fn by_name(list: Vec<VersionedResource>) -> TypedResources {
    list.into_iter()
        .map(|r| (r.name.clone(), Arc::new(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bodies_have_equal_versions_and_different_bodies_differ() {
        let a = VersionedResource::encode(
            "t",
            "a",
            &prost_types::Duration {
                seconds: 1,
                nanos: 0,
            },
        );
        let b = VersionedResource::encode(
            "t",
            "b",
            &prost_types::Duration {
                seconds: 1,
                nanos: 0,
            },
        );
        let c = VersionedResource::encode(
            "t",
            "c",
            &prost_types::Duration {
                seconds: 2,
                nanos: 0,
            },
        );
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
    }

    #[test]
    fn a_version_is_the_hex_of_the_first_bytes_of_the_sha256() {
        // Stable across releases: a proxy reconnecting to a newer controller declares the
        // versions the older one gave it.
        assert_eq!(content_version(b""), "e3b0c44298fc1c14");
        assert_eq!(content_version(b"abc"), "ba7816bf8f01cfea");
    }

    fn snapshot(generation: u64, types: &[(&str, &[(&str, i64)])]) -> ResourceSnapshot {
        let types = types
            .iter()
            .map(|(type_url, things)| {
                let list = things
                    .iter()
                    .map(|(name, seconds)| {
                        let body = prost_types::Duration {
                            seconds: *seconds,
                            nanos: 0,
                        };
                        VersionedResource::encode(type_url, *name, &body)
                    })
                    .collect();
                (type_url.to_string(), list)
            })
            .collect();
        ResourceSnapshot::new(generation, types)
    }

    fn names(list: &[Arc<str>]) -> Vec<&str> {
        list.iter().map(|n| &**n).collect()
    }

    #[test]
    fn changes_name_what_was_added_updated_and_removed_per_type() {
        let old = snapshot(
            4,
            &[
                ("t", &[("a", 1), ("b", 1), ("c", 1), ("e", 1)]),
                ("gone", &[("x", 1)]),
                ("same", &[("s", 1)]),
            ],
        );
        let new = snapshot(
            5,
            &[
                ("t", &[("b", 2), ("c", 1), ("d", 1), ("f", 1)]),
                ("fresh", &[("y", 1)]),
                ("same", &[("s", 1)]),
            ],
        )
        .with_changes_since(&old);
        let changes = new.changes.as_ref().unwrap();
        assert_eq!(changes.since, 4);
        let types: Vec<&str> = changes.types.keys().map(String::as_str).collect();
        assert_eq!(
            types,
            ["fresh", "gone", "t"],
            "unchanged types are left out"
        );
        assert_eq!(names(&changes.types["t"].updated), ["b", "d", "f"]);
        assert_eq!(names(&changes.types["t"].removed), ["a", "e"]);
        assert_eq!(names(&changes.types["gone"].removed), ["x"]);
        assert_eq!(names(&changes.types["fresh"].updated), ["y"]);
    }
}
