//! The supervisor: the lab's kubelet, CNI node agent and kube-proxy in one background process.
//!
//! Every [`POLL_INTERVAL`] it reads the pods and services from the controller's status API and
//! makes the lab match:
//!
//! - a new pod is placed ([`placement`]), gets a namespace, a veth and an address
//!   ([`crate::topology::PodNetwork`]), a hosts file ([`hosts`]), a status record for the
//!   controller, is announced to its node's ztunnel ([`enrollment`]) and its containers start
//!   ([`containers`]);
//! - a pod that went away is stopped, unannounced, and its namespace, files and record removed;
//! - hosts files and every node's service translation ([`services`]) follow the services;
//! - a waypoint pod gets a token and the controller's address ([`waypoint`]).
//!
//! When the controller cannot be reached nothing changes: pods keep running until it answers
//! again. What runs is written to `pods.json` for `status` and `exec`.

pub mod containers;
pub mod desired;
pub mod enrollment;
pub mod hosts;
pub mod placement;
pub mod pod;
pub mod services;
pub mod waypoint;

mod reconcile;

use std::time::Duration;

use tracing::{info, warn};

use crate::name::LabName;
use crate::paths::LabPaths;
use crate::process;
use crate::record::{LabRecord, RecordError};
use crate::topology::{self, TopologyError};

pub use reconcile::Reconciler;

/// How often the supervisor reads the desired state.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The lab's record could not be read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Stale pods could not be removed.
    #[error("cannot remove the pods of an earlier supervisor: {0}")]
    Cleanup(#[from] TopologyError),
    /// The signal handlers could not be installed.
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
}

/// Runs the supervisor of lab `lab` until SIGTERM or SIGINT.
pub async fn run(lab: &LabName) -> Result<(), SupervisorError> {
    let paths = LabPaths::new(lab);
    let record = LabRecord::load(lab, &paths.record())?;
    remove_stale_pods(lab, &paths).await?;
    let mut reconciler = Reconciler::new(lab.clone(), paths, &record);
    info!(lab = %lab, nodes = record.nodes.len(), ztunnel = record.ztunnel, "supervisor started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(SupervisorError::Signals)?;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => reconciler.tick().await,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // `down` removes the pods; leaving them lets a supervisor stopped by mistake be noticed
    // (status shows it dead) without taking the apps down.
    info!("supervisor stopping");
    Ok(())
}

/// Removes pods a previous supervisor of this lab left: their processes, namespaces, hosts
/// files and status records. The new supervisor places every pod afresh.
async fn remove_stale_pods(lab: &LabName, paths: &LabPaths) -> Result<(), TopologyError> {
    for netns in topology::list_namespaces().await? {
        if !lab.owns_pod_netns(&netns) {
            continue;
        }
        if let Ok(out) = crate::command::run("ip", &["netns", "pids", &netns]).await {
            let pids: Vec<u32> = out
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            process::stop_pids(&pids).await;
        }
        topology::delete_namespace(&netns).await?;
        hosts::remove(&netns);
        warn!(%netns, "removed a pod namespace left by an earlier supervisor");
    }
    if let Ok(entries) = std::fs::read_dir(crate::paths::ETC_NETNS) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| lab.owns_pod_netns(n))
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let records = paths
        .controller_state()
        .join(controller::store::pod_status::POD_STATUS_DIR);
    if let Ok(entries) = std::fs::read_dir(&records) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
