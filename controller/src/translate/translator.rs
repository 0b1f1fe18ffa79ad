//! Translating one desired state after another. Most changes in a running mesh are pods coming,
//! going and changing; the resources of everything else do not depend on pods (see
//! [`PolicySelections`](super::authorization::PolicySelections)), so when only pods changed the
//! last translation is kept and only the changed pods are translated again. Any other change
//! translates everything. Both give the same snapshot; the tests hold them to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Parts, TranslateConfig, Translation, workload};
use crate::sorted_diff::sorted_diff;
use crate::store::{DesiredState, NamespacedName, Pod};
use crate::xds::{ResourceSnapshot, TypedResources};

/// Translates desired states in order, numbering the snapshots and recording in each what
/// changed since the one before.
#[derive(Debug)]
pub struct Translator {
    config: TranslateConfig,
    generation: u64,
    last: Option<Last>,
}

/// The last translation and its input.
#[derive(Debug)]
struct Last {
    state: Arc<DesiredState>,
    snapshot: Arc<ResourceSnapshot>,
    parts: Parts,
}

impl Translator {
    /// A translator that has translated nothing yet.
    pub fn new(config: TranslateConfig) -> Self {
        Translator {
            config,
            generation: 0,
            last: None,
        }
    }

    /// Translates the next desired state.
    pub fn translate(&mut self, state: Arc<DesiredState>) -> Translation {
        self.generation += 1;
        let (types, parts, since, incremental) = match self.last.take() {
            Some(last) if only_pods_differ(&last.state, &state) => {
                let since = last.snapshot.clone();
                let (types, parts) = last.with_pods_of(&state, &self.config);
                (types, parts, Some(since), true)
            }
            last => {
                let (types, parts) = Parts::translate(&state, &self.config);
                (types, parts, last.map(|last| last.snapshot), false)
            }
        };
        let snapshot = ResourceSnapshot {
            generation: self.generation,
            types,
            changes: None,
        };
        // Computed once here, so that every ADS stream handles a small change in time
        // proportional to the change rather than to the whole mesh.
        let snapshot = Arc::new(match since {
            Some(previous) => snapshot.with_changes_since(&previous),
            None => snapshot,
        });
        let warnings = parts.warnings();
        self.last = Some(Last {
            state,
            snapshot: snapshot.clone(),
            parts,
        });
        Translation {
            snapshot,
            warnings,
            incremental,
        }
    }
}

impl Last {
    /// The resources and parts of `state`, which differs from the last state in pods only.
    fn with_pods_of(
        self,
        state: &DesiredState,
        config: &TranslateConfig,
    ) -> (BTreeMap<String, TypedResources>, Parts) {
        let mut types = self.snapshot.types.clone();
        let mut parts = self.parts;
        let addresses = types
            .entry(mesh_proto::ADDRESS_TYPE_URL.to_string())
            .or_default();
        let changed = changed_pods(&self.state.pods, &state.pods);
        tracing::debug!(pods = changed.len(), "translating the changed pods only");
        for key in changed {
            addresses.remove(config.workload_uid(&key.namespace, &key.name).as_str());
            parts.pod_warnings.remove(key);
            let Some(pod) = state.pods.get(key) else {
                continue;
            };
            let (resource, warnings) = workload::pod_address(state, config, pod, &parts.selections);
            if let Some(resource) = resource {
                addresses.insert(resource.name.clone(), Arc::new(resource));
            }
            if !warnings.is_empty() {
                parts.pod_warnings.insert(key.clone(), warnings);
            }
        }
        (types, parts)
    }
}

/// Whether two states differ at most in their pods (and in what was rejected, which is not
/// translated). Unchanged objects are shared between states, so this is mostly pointer
/// comparisons.
fn only_pods_differ(old: &DesiredState, new: &DesiredState) -> bool {
    old.namespaces == new.namespaces
        && old.deployments == new.deployments
        && old.services == new.services
        && old.authorization_policies == new.authorization_policies
        && old.gateways == new.gateways
        && old.http_routes == new.http_routes
}

/// The names of pods added, removed or changed.
fn changed_pods<'a>(
    old: &'a BTreeMap<NamespacedName, Arc<Pod>>,
    new: &'a BTreeMap<NamespacedName, Arc<Pod>>,
) -> Vec<&'a NamespacedName> {
    // Unchanged pods are shared between states: `==` on `Arc<Pod>` compares pointers first.
    sorted_diff(old, new, |a, b| a == b)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests;
