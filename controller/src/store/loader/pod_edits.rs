//! The quick way through a reload for the commonest change in a running mesh: standalone pods
//! edited in place (labels, placement, phase), in files that change nothing else. Such an edit
//! cannot move a virtual IP, a waypoint, a Deployment's pods or a rejection, so the new
//! snapshot is the last one with those pods replaced; tying the whole directory together
//! again would cost time in proportion to the mesh rather than to the change. Anything else,
//! or any doubt, takes the full way.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Accepted, LastLoad, Origin, PodStatuses, merge_status};
use crate::store::manifest::ParsedFile;
use crate::store::object::{Object, ObjectKey};
use crate::store::snapshot::DesiredState;

/// What the changed files of one reload did to standalone pods, as long as that is all.
#[derive(Debug, Default)]
pub(super) struct PodEdits {
    /// The new versions of the edited pods.
    pods: Vec<(ObjectKey, Accepted)>,
    /// Something other than an in-place pod edit changed.
    other: bool,
}

impl PodEdits {
    /// Notes a change that is not a pod edit: a file added, removed or unreadable.
    pub(super) fn other_change(&mut self) {
        self.other = true;
    }

    /// Compares a file's new parse with its last one.
    pub(super) fn compare_file(
        &mut self,
        label: &Arc<str>,
        before: Option<&ParsedFile>,
        after: &ParsedFile,
        last_good: &BTreeMap<ObjectKey, Accepted>,
    ) {
        if self.other {
            return;
        }
        let Some(before) = before else {
            return self.other_change();
        };
        if before.failed() || after.failed() || before.documents.len() != after.documents.len() {
            return self.other_change();
        }
        for (old, new) in before.documents.iter().zip(&after.documents) {
            let (Ok(old_object), Ok(new_object)) = (&old.result, &new.result) else {
                return self.other_change();
            };
            let (Object::Pod(_), Object::Pod(_)) = (&**old_object, &**new_object) else {
                return self.other_change();
            };
            let key = new_object.key();
            // The old document must be the version in force: not a duplicate that another
            // file's object of the same name wins over.
            let in_force = last_good
                .get(&key)
                .is_some_and(|accepted| Arc::ptr_eq(&accepted.object, old_object));
            if old.index != new.index || old_object.key() != key || !in_force {
                return self.other_change();
            }
            if old_object != new_object {
                let origin = Origin {
                    file: label.clone(),
                    document: new.index,
                };
                let object = new_object.clone();
                self.pods.push((key, Accepted { object, origin }));
            }
        }
    }

    /// The new snapshot, when the reload only edited pods and no pod status record changed;
    /// records the edited pods as the last good versions.
    pub(super) fn apply(
        self,
        last: &LastLoad,
        statuses: &PodStatuses,
        last_good: &mut BTreeMap<ObjectKey, Accepted>,
    ) -> Option<DesiredState> {
        if self.other || *statuses != last.statuses {
            return None;
        }
        let mut state = DesiredState::clone(&last.state);
        let (records, _) = statuses;
        for (key, accepted) in self.pods {
            let Object::Pod(pod) = &*accepted.object else {
                unreachable!("only pods are collected");
            };
            let name = pod.namespaced_name();
            let mut pod = pod.clone();
            let own_records = records
                .iter()
                .filter(|r| r.namespace == *name.namespace && r.name == *name.name);
            for record in own_records {
                merge_status(Arc::make_mut(&mut pod), record);
            }
            state.pods.insert(name, pod);
            last_good.insert(key, accepted);
        }
        Some(state)
    }
}
