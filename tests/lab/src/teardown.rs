//! Removing a lab: every process, namespace and file it made. Used by `down`, by `up` before
//! it builds (remains of a crashed lab), and by the tests' guards. It works from what is on
//! the machine, not from the lab's records, so it also cleans a lab that crashed half-built;
//! it is idempotent.
//!
//! Order matters: the supervisor goes first (it would restart pods), then every process inside
//! the lab's namespaces (a namespace lives on while a process holds it), then the namespaces
//! (their veth pairs and iptables rules go with them), then the files.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::context;
use crate::name::LabName;
use crate::paths::{self, LabPaths};
use crate::process;
use crate::record::LabRecord;
use crate::topology::{self, TopologyError};

/// The argument that marks the supervisor's command line.
pub const SUPERVISE_ARG: &str = "supervise";

/// How much of a stopped process's command line the report shows.
const MAX_DESCRIPTION: usize = 160;

/// Why the lab could not be removed completely.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    /// Listing or deleting namespaces failed.
    #[error("cannot remove the lab's namespaces: {0}")]
    Topology(#[from] TopologyError),
    /// A file or directory could not be removed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// What a teardown removed.
#[derive(Debug, Default)]
pub struct Teardown {
    /// Processes stopped, as `pid command`.
    pub processes: Vec<String>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Files and directories removed.
    pub files: Vec<PathBuf>,
}

impl Teardown {
    /// Whether nothing was left to remove.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.namespaces.is_empty() && self.files.is_empty()
    }
}

impl fmt::Display for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "nothing to remove");
        }
        for process in &self.processes {
            writeln!(f, "stopped process {process}")?;
        }
        if !self.namespaces.is_empty() {
            writeln!(f, "deleted namespaces {}", self.namespaces.join(" "))?;
        }
        for file in &self.files {
            writeln!(f, "removed {}", file.display())?;
        }
        Ok(())
    }
}

/// Whether `argv` is the supervisor of lab `lab` (`... supervise ... --name LAB`).
pub fn is_supervisor_of(argv: &[String], lab: &LabName) -> bool {
    argv.iter().any(|a| a == SUPERVISE_ARG)
        && argv
            .windows(2)
            .any(|w| w[0] == "--name" && w[1] == lab.as_str())
}

/// Removes everything of lab `lab`.
pub async fn teardown(lab: &LabName, paths: &LabPaths) -> Result<Teardown, TeardownError> {
    let mut report = Teardown::default();
    let supervisors = process::find(|argv| is_supervisor_of(argv, lab));
    stop(&supervisors, &mut report).await;

    let mut namespaces: Vec<String> = topology::list_namespaces()
        .await?
        .into_iter()
        .filter(|ns| lab.owns_netns(ns))
        .collect();
    let mut inside = Vec::new();
    for netns in &namespaces {
        inside.extend(pids_in(netns).await);
    }
    // The recorded processes too, should one have left its namespace's view somehow.
    if let Ok(record) = LabRecord::load(lab, &paths.record()) {
        let recorded = record
            .controller
            .iter()
            .chain(record.nodes.iter().filter_map(|n| n.ztunnel.as_ref()));
        inside.extend(recorded.filter(|p| p.is_alive()).map(|p| p.pid));
    }
    inside.sort_unstable();
    inside.dedup();
    stop(&inside, &mut report).await;

    // Pods first, the switch last: a half-finished teardown leaves the simplest remains.
    namespaces.sort_by_key(|ns| teardown_rank(lab, ns));
    for netns in namespaces {
        topology::delete_namespace(&netns).await?;
        report.namespaces.push(netns);
    }
    remove_etc_netns(lab, &mut report)?;
    remove_dir(paths.root(), &mut report)?;
    if context::remove_if_ours(paths) {
        report.files.push(context::CONTEXT_FILE.into());
    }
    Ok(report)
}

async fn stop(pids: &[u32], report: &mut Teardown) {
    let described: Vec<String> = pids
        .iter()
        .map(|&pid| {
            let argv = process::cmdline(pid).unwrap_or_default().join(" ");
            let mut line: String = argv.split_whitespace().collect::<Vec<_>>().join(" ");
            if line.chars().count() > MAX_DESCRIPTION {
                line = line.chars().take(MAX_DESCRIPTION).collect::<String>() + "...";
            }
            format!("{pid} {line}")
        })
        .collect();
    process::stop_pids(pids).await;
    report.processes.extend(described);
}

/// The pids of every process inside a namespace (`ip netns pids`).
async fn pids_in(netns: &str) -> Vec<u32> {
    match crate::command::run("ip", &["netns", "pids", netns]).await {
        Ok(out) => out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn teardown_rank(lab: &LabName, netns: &str) -> u8 {
    let suffix = &netns[lab.as_str().len() + 1..];
    match suffix.as_bytes().first() {
        Some(b'p') => 0,
        Some(b'n') => 1,
        Some(b'c') => 2,
        _ => 3,
    }
}

fn remove_etc_netns(lab: &LabName, report: &mut Teardown) -> Result<(), TeardownError> {
    let Ok(entries) = std::fs::read_dir(paths::ETC_NETNS) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| lab.owns_netns(n)) {
            remove_dir(&entry.path(), report)?;
        }
    }
    Ok(())
}

fn remove_dir(path: &Path, report: &mut Teardown) -> Result<(), TeardownError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {
            report.files.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TeardownError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}
