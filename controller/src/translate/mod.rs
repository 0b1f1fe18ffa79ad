//! Translation of the desired state into the wire contract: pods and services become
//! `istio.workload.Address` resources, AuthorizationPolicies become `istio.security.Authorization`
//! (or, when a waypoint enforces them, `mesh.waypoint.v1.L7Policy`), HTTPRoutes become
//! `mesh.waypoint.v1.RouteConfiguration`.
//!
//! Translation is a pure function of a [`DesiredState`] snapshot: the same state always gives
//! the same resources (and so the same versions), which is what lets a reconnecting proxy be
//! sent only what changed. [`Translator`] translates one snapshot after another and, when only
//! pods changed, re-translates only those pods: the same result in time proportional to the
//! change.

mod authorization;
mod translator;
mod waypoint;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use authorization::PolicySelections;

use crate::store::{DesiredState, NamespacedName};
use crate::xds::{ResourceSnapshot, TypedResources, VersionedResource, by_name};

pub use authorization::L7_DENY_SUFFIX;
pub use translator::Translator;

/// The DNS suffix of service hostnames, as in Kubernetes.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// The cluster id written into workload records, as Istio names a single cluster.
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// The namespace whose selector-less policies apply mesh-wide, as in Istio.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// The HBONE port of waypoints.
pub const HBONE_PORT: u32 = 15008;

/// Settings of the translation.
#[derive(Clone, Debug)]
pub struct TranslateConfig {
    /// Trust domain of every workload identity.
    pub trust_domain: Arc<str>,
    /// Namespace whose policies without selector apply to the whole mesh.
    pub root_namespace: Arc<str>,
    /// Suffix of service hostnames: `<name>.<namespace>.<suffix>`.
    pub domain_suffix: Arc<str>,
    /// Cluster id written into workload records and uids.
    pub cluster_id: Arc<str>,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        Self {
            trust_domain: ztunnel::identity::DEFAULT_TRUST_DOMAIN.into(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
            domain_suffix: DEFAULT_DOMAIN_SUFFIX.into(),
            cluster_id: DEFAULT_CLUSTER_ID.into(),
        }
    }
}

impl TranslateConfig {
    /// The hostname of a service.
    pub fn hostname(&self, namespace: &str, name: &str) -> String {
        format!("{name}.{namespace}.{}", self.domain_suffix)
    }

    /// The uid (and resource name) of a pod's workload record, in Istio's form.
    pub fn workload_uid(&self, namespace: &str, name: &str) -> String {
        format!("{}//Pod/{namespace}/{name}", self.cluster_id)
    }
}

/// Something an operator should know about the translation: an object that is only partly
/// enforced, or that refers to something missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The object, as `Kind namespace/name`.
    pub object: String,
    /// What is wrong and what follows from it.
    pub message: String,
}

/// The outcome of one translation.
#[derive(Debug, Default)]
pub struct Translation {
    /// What the ADS server serves.
    pub snapshot: Arc<ResourceSnapshot>,
    /// What the status API reports.
    pub warnings: Vec<Warning>,
    /// Whether only the changed pods were translated (the rest reused from the last one).
    pub incremental: bool,
}

/// Translates one desired state from scratch. `generation` numbers the resulting snapshot.
pub fn translate(state: &DesiredState, config: &TranslateConfig, generation: u64) -> Translation {
    let (types, parts) = Parts::translate(state, config);
    Translation {
        snapshot: Arc::new(ResourceSnapshot {
            generation,
            types,
            changes: None,
        }),
        warnings: parts.warnings(),
        incremental: false,
    }
}

/// What a translation keeps besides its resources, arranged so that a change of pods can be
/// applied to it: policy selections (which depend on policies and services, not on pods) and
/// the warnings of each pod apart from the others.
#[derive(Debug, Default)]
struct Parts {
    selections: Arc<PolicySelections>,
    pod_warnings: BTreeMap<NamespacedName, Vec<Warning>>,
    other_warnings: Vec<Warning>,
}

impl Parts {
    /// Translates everything.
    fn translate(
        state: &DesiredState,
        config: &TranslateConfig,
    ) -> (BTreeMap<String, TypedResources>, Parts) {
        let mut other_warnings = Vec::new();
        let policies = authorization::translate(state, config, &mut other_warnings);
        let mut addresses = workload::service_addresses(state, config, &mut other_warnings);
        let waypoint = waypoint::translate(state, config, &mut other_warnings);
        let mut pod_warnings = BTreeMap::new();
        for (key, pod) in &state.pods {
            let (resource, warnings) =
                workload::pod_address(state, config, pod, &policies.selections);
            addresses.extend(resource);
            if !warnings.is_empty() {
                pod_warnings.insert(key.clone(), warnings);
            }
        }
        let types = [
            (mesh_proto::ADDRESS_TYPE_URL, addresses),
            (mesh_proto::AUTHORIZATION_TYPE_URL, policies.resources),
            (mesh_proto::ROUTE_CONFIGURATION_TYPE_URL, waypoint.routes),
            (mesh_proto::L7_POLICY_TYPE_URL, waypoint.policies),
        ]
        .into_iter()
        .map(|(type_url, list)| (type_url.to_string(), by_name(list)))
        .collect();
        let parts = Parts {
            selections: Arc::new(policies.selections),
            pod_warnings,
            other_warnings,
        };
        (types, parts)
    }

    /// Every warning, by object (`Kind namespace/name`), each object's in the order found.
    fn warnings(&self) -> Vec<Warning> {
        let pods = self.pod_warnings.values().flatten();
        let mut all: Vec<Warning> = self.other_warnings.iter().chain(pods).cloned().collect();
        all.sort_by(|a, b| a.object.cmp(&b.object));
        all
    }
}

/// Encodes a message as a named resource of a type.
fn resource<M: prost::Message>(type_url: &str, name: String, message: &M) -> VersionedResource {
    VersionedResource::encode(type_url, name, message)
}

#[cfg(test)]
mod tests;
