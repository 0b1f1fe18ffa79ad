//! The store's metrics: how many objects are refused now, how many refusals happened, how many
//! loads ran.

use std::collections::BTreeSet;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::rejection::Rejection;

/// Metrics of the desired-state store. Cheap to clone: clones share the values.
#[derive(Clone, Debug, Default)]
pub struct StoreMetrics {
    rejected_objects: Gauge,
    rejections: Counter,
    reloads: Counter,
}

impl StoreMetrics {
    /// Creates the metrics and registers them: `mesh_store_rejected_objects`,
    /// `mesh_store_rejections_total` and `mesh_store_reloads_total`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = StoreMetrics::default();
        registry.register(
            "mesh_store_rejected_objects",
            "Objects (documents or files) of the desired state refused by the last load",
            metrics.rejected_objects.clone(),
        );
        registry.register(
            "mesh_store_rejections",
            "Refusals of desired-state objects; a refusal that persists across loads counts once",
            metrics.rejections.clone(),
        );
        registry.register(
            "mesh_store_reloads",
            "Loads of the desired state",
            metrics.reloads.clone(),
        );
        metrics
    }

    /// Records one load, given the rejections of the load before and of this one.
    pub fn observe_reload(&self, previous: &[Rejection], current: &[Rejection]) {
        self.reloads.inc();
        let objects: BTreeSet<(&str, usize)> =
            current.iter().map(|r| (&*r.file, r.document)).collect();
        self.rejected_objects
            .set(i64::try_from(objects.len()).unwrap_or(i64::MAX));
        let new = current.iter().filter(|r| !previous.contains(r)).count();
        self.rejections.inc_by(new as u64);
    }

    /// The current number of refused objects.
    pub fn rejected_objects(&self) -> i64 {
        self.rejected_objects.get()
    }

    /// The number of refusals so far.
    pub fn rejections_total(&self) -> u64 {
        self.rejections.get()
    }

    /// The number of loads so far.
    pub fn reloads_total(&self) -> u64 {
        self.reloads.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rejection::Problem;

    fn rejection(document: usize, field: &str) -> Rejection {
        Rejection {
            field: field.into(),
            ..Rejection::of_file("manifests/a.yaml".into(), document, Problem::Missing)
        }
    }

    #[test]
    fn counts_objects_and_new_refusals() {
        let mut registry = Registry::default();
        let metrics = StoreMetrics::register(&mut registry);
        let first = [rejection(0, "a"), rejection(0, "b"), rejection(1, "a")];
        metrics.observe_reload(&[], &first);
        assert_eq!(metrics.rejected_objects(), 2);
        assert_eq!(metrics.rejections_total(), 3);
        let second = [rejection(1, "a")];
        metrics.observe_reload(&first, &second);
        assert_eq!(metrics.rejected_objects(), 1);
        assert_eq!(metrics.rejections_total(), 3);
        assert_eq!(metrics.reloads_total(), 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "mesh_store_rejected_objects 1",
            "mesh_store_rejections_total 3",
            "mesh_store_reloads_total 2",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }
}
