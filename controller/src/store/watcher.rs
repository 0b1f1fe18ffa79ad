//! The running store: watches the manifest directory and the pod status records, reloads after
//! a burst of changes settles, and publishes each new snapshot on a watch channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::loader::{LoadError, Loader, StoreConfig};
use super::metrics::StoreMetrics;
use super::pod_status::POD_STATUS_DIR;
use super::snapshot::DesiredState;

/// How long the directory must be quiet before a reload: editors and `meshctl` write several
/// files (and temporary files) in a burst. The events of one burst arrive within a few
/// milliseconds, and `meshctl` and the lab replace files atomically, so a reload never sees
/// half of their write; a burst split in two costs one extra reload, which is cheap because
/// unchanged files are not parsed again. Every millisecond here is added to each change's way
/// to the proxies (the benchmark in tests/BENCHMARKS.md), so it is kept short.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(10);

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The first load failed.
    #[error("cannot load the desired state: {0}")]
    Load(#[from] LoadError),
    /// The directory could not be watched.
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: notify::Error,
    },
}

/// The desired-state store of a running controller. Dropping it stops watching.
pub struct Store {
    state: watch::Receiver<Arc<DesiredState>>,
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Store {
    /// Creates the directories if needed, loads once, and starts watching. Must be called
    /// inside a Tokio runtime.
    pub fn start(config: StoreConfig, metrics: StoreMetrics) -> Result<Self, StoreError> {
        let status_dir = config.state_dir.join(POD_STATUS_DIR);
        for dir in [&config.manifest_dir, &config.state_dir, &status_dir] {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|event| is_relevant(&event)) {
                    // The receiver is gone only when the store stopped.
                    let _ = changes_tx.send(());
                }
            })
            .map_err(|source| StoreError::Watch {
                path: config.manifest_dir.clone(),
                source,
            })?;
        for dir in [&config.manifest_dir, &status_dir] {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| StoreError::Watch {
                    path: dir.clone(),
                    source,
                })?;
        }
        // Watch before the first load, so that no change slips between the two.
        let mut loader = Loader::open(config)?;
        let first = loader.reload()?;
        metrics.observe_reload(&[], &first.rejected);
        log_rejections(&first);
        let (publisher, state) = watch::channel(first);
        let task = tokio::spawn(reload_on_change(loader, changes, publisher, metrics));
        Ok(Store {
            state,
            _watcher: watcher,
            task,
        })
    }

    /// A receiver of snapshots: it sees the current one and is told of every new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DesiredState>> {
        self.state.clone()
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<DesiredState> {
        self.state.borrow().clone()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_relevant(event: &notify::Event) -> bool {
    let visible = |path: &Path| {
        !path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'))
    };
    !matches!(event.kind, EventKind::Access(_)) && event.paths.iter().any(|p| visible(p))
}

async fn reload_on_change(
    mut loader: Loader,
    mut changes: mpsc::UnboundedReceiver<()>,
    publisher: watch::Sender<Arc<DesiredState>>,
    metrics: StoreMetrics,
) {
    while changes.recv().await.is_some() {
        // Wait for the burst to settle.
        loop {
            tokio::select! {
                () = tokio::time::sleep(RELOAD_DEBOUNCE) => break,
                change = changes.recv() => if change.is_none() { return },
            }
        }
        // Only this task publishes, so this is the state the reload is compared with.
        let previous = publisher.borrow().clone();
        let joined = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            // Compared here rather than on the runtime: with tens of thousands of objects,
            // comparing takes milliseconds that the ADS streams need.
            let result = loader.reload().map(|state| {
                let changed = *state != *previous;
                (state, changed)
            });
            tracing::debug!(elapsed = ?started.elapsed(), "desired state reloaded");
            (loader, result, previous)
        })
        .await;
        let (result, previous) = match joined {
            Ok((returned, result, previous)) => {
                loader = returned;
                (result, previous)
            }
            Err(e) => {
                tracing::error!(error = %e, "desired-state load failed; the store stops watching");
                return;
            }
        };
        match result {
            Ok((state, changed)) => {
                metrics.observe_reload(&previous.rejected, &state.rejected);
                if changed {
                    log_rejections(&state);
                    publisher.send_replace(state);
                    // Let the subscribers just woken (the translation) queue their work
                    // before the old state is freed.
                    tokio::task::yield_now().await;
                } else {
                    free_in_background(state);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "desired state not reloaded; the last one stays in force")
            }
        }
        // Most likely the last reference to the state just replaced.
        free_in_background(previous);
    }
}

/// Frees a large value on the blocking pool, after the work queued there (a translation of
/// the new state, typically). Freeing tens of thousands of objects takes milliseconds; on a
/// runtime worker it would hold up the ADS streams, and next to the translation it would
/// contend for the allocator's lock, since the loads and translations allocated that memory.
pub fn free_in_background<T: Send + 'static>(value: T) {
    tokio::task::spawn_blocking(move || drop(value));
}

fn log_rejections(state: &DesiredState) {
    for rejection in &state.rejected {
        tracing::warn!(%rejection, "manifest rejected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest_dir::ManifestDir;
    use crate::store::object::NamespacedName;
    use crate::store::pod_status::{PodStatusRecord, record_pod_status};

    /// Waits (boundedly) for a snapshot that satisfies `done`.
    async fn wait_for(
        receiver: &mut watch::Receiver<Arc<DesiredState>>,
        done: impl Fn(&DesiredState) -> bool,
    ) -> Arc<DesiredState> {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let current = receiver.borrow_and_update().clone();
                if done(&current) {
                    return current;
                }
                receiver.changed().await.expect("the store is running");
            }
        })
        .await;
        waited.expect("the store saw the change within 10 s")
    }

    #[tokio::test]
    async fn the_store_picks_up_manifest_and_status_changes() {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(root.path().join("manifests"), root.path().join("state"));
        let metrics = StoreMetrics::default();
        let store = Store::start(config.clone(), metrics.clone()).unwrap();
        assert!(store.current().pods.is_empty());
        let mut receiver = store.subscribe();

        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n\
                   spec: {containers: [{name: app}]}\n";
        ManifestDir::new(&config.manifest_dir)
            .apply("web.yaml", pod)
            .unwrap();
        let name = NamespacedName::new("shop", "web");
        wait_for(&mut receiver, |state| state.pods.contains_key(&name)).await;

        let record = PodStatusRecord {
            namespace: "shop".into(),
            name: "web".into(),
            node_name: Some("node-1".into()),
            pod_ip: Some("10.0.1.5".parse().unwrap()),
            phase: None,
        };
        record_pod_status(&config.state_dir, &record).unwrap();
        let state = wait_for(&mut receiver, |state| {
            state.pods.get(&name).is_some_and(|pod| pod.ip.is_some())
        })
        .await;
        assert_eq!(state.pods[&name].node.as_deref(), Some("node-1"));

        std::fs::write(config.manifest_dir.join("web.yaml"), "kind: [").unwrap();
        let state = wait_for(&mut receiver, |state| !state.rejected.is_empty()).await;
        assert!(
            state.pods.contains_key(&name),
            "the last good version stays"
        );
        assert_eq!(metrics.rejected_objects(), 1);
        assert!(metrics.reloads_total() >= 3);
    }
}
