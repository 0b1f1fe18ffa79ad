//! Looking into a running lab: `status`, `exec` and `logs`.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::name::{LabName, NameError};
use crate::paths::LabPaths;
use crate::preflight::{self, PreflightError};
use crate::process::ProcessRecord;
use crate::record::{LabRecord, PodReport, PodsReport, RecordError};

/// Why an inspection failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not root.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The lab's records could not be read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A pod reference is not `NS/POD`.
    #[error("{given:?} is not a pod reference; write NAMESPACE/POD, e.g. default/client")]
    PodReference {
        /// What was given.
        given: String,
    },
    /// The pod is not running in the lab.
    #[error("no pod {pod} runs in lab {lab}; pods: {known}")]
    UnknownPod {
        /// The pod asked for.
        pod: String,
        /// The lab.
        lab: String,
        /// The pods that do run.
        known: String,
    },
    /// A node name is wrong.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The lab runs without ztunnels.
    #[error("lab {lab} runs without ztunnels (it was started with --no-ztunnel)")]
    NoZtunnel {
        /// The lab.
        lab: String,
    },
    /// The command could not be run.
    #[error("cannot run `ip netns exec {netns} {command}`: {source}")]
    Exec {
        /// The pod's namespace.
        netns: String,
        /// The command.
        command: String,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// A process of the lab and whether it runs.
#[derive(Debug, Serialize)]
pub struct ProcessStatus {
    /// What it is (`controller`, `ztunnel node-1`, `supervisor`).
    pub component: String,
    /// Its pid, when it was started.
    pub pid: Option<u32>,
    /// Whether it runs.
    pub alive: bool,
    /// Its log.
    pub log: Option<PathBuf>,
}

/// The state of a lab, for `status`.
#[derive(Debug, Serialize)]
pub struct LabStatus {
    /// What `up` built.
    pub lab: LabRecord,
    /// Every process of the lab.
    pub processes: Vec<ProcessStatus>,
    /// What the supervisor runs.
    pub pods: PodsReport,
}

fn process_status(component: String, process: Option<&ProcessRecord>) -> ProcessStatus {
    ProcessStatus {
        component,
        pid: process.map(|p| p.pid),
        alive: process.is_some_and(ProcessRecord::is_alive),
        log: process.map(|p| p.log.clone()),
    }
}

/// The state of lab `lab`.
pub fn status(lab: &LabName) -> Result<LabStatus, InspectError> {
    let paths = LabPaths::new(lab);
    let record = LabRecord::load(lab, &paths.record())?;
    let mut processes = vec![
        process_status("supervisor".into(), record.supervisor.as_ref()),
        process_status("controller".into(), record.controller.as_ref()),
    ];
    if record.ztunnel {
        for node in &record.nodes {
            processes.push(process_status(
                format!("ztunnel {}", node.name),
                node.ztunnel.as_ref(),
            ));
        }
    }
    let pods = PodsReport::load(&paths.pods_report())?;
    Ok(LabStatus {
        lab: record,
        processes,
        pods,
    })
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lab = &self.lab;
        writeln!(
            f,
            "lab {} (controller {} in {})",
            lab.name, lab.controller_ip, lab.controller_netns
        )?;
        writeln!(f, "\nPROCESS            PID      STATE")?;
        for p in &self.processes {
            let pid = p.pid.map_or("-".to_string(), |p| p.to_string());
            let state = if p.alive { "running" } else { "DEAD" };
            writeln!(f, "{:<18} {pid:<8} {state}", p.component)?;
        }
        writeln!(f, "\nNODE     NAMESPACE        ADDRESS        POD CIDR")?;
        for n in &lab.nodes {
            writeln!(
                f,
                "{:<8} {:<16} {:<14} {}",
                n.name,
                n.netns,
                n.ip.to_string(),
                n.pod_cidr
            )?;
        }
        writeln!(
            f,
            "\nPOD                            NODE     IP             NAMESPACE        ENROLLED CAPTURED RESTARTS"
        )?;
        for p in &self.pods.pods {
            let captured = match p.captured {
                None => "-",
                Some(true) => "yes",
                Some(false) => "no",
            };
            let enrolled = if p.enrolled { "yes" } else { "no" };
            let pod = format!("{}/{}", p.namespace, p.name);
            writeln!(
                f,
                "{pod:<30} {:<8} {:<14} {:<16} {enrolled:<8} {captured:<8} {}",
                p.node,
                p.ip.to_string(),
                p.netns,
                p.restarts
            )?;
        }
        for pending in &self.pods.pending {
            writeln!(f, "pending: {pending}")?;
        }
        Ok(())
    }
}

/// Parses `NS/POD`.
pub fn parse_pod_reference(given: &str) -> Result<(&str, &str), InspectError> {
    given
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| InspectError::PodReference {
            given: given.to_string(),
        })
}

/// The running pod `NS/POD` of a lab.
pub fn find_pod(lab: &LabName, reference: &str) -> Result<PodReport, InspectError> {
    let (namespace, name) = parse_pod_reference(reference)?;
    let pods = PodsReport::load(&LabPaths::new(lab).pods_report())?;
    if let Some(pod) = pods.find(namespace, name) {
        return Ok(pod.clone());
    }
    let known: Vec<String> = pods
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    Err(InspectError::UnknownPod {
        pod: reference.to_string(),
        lab: lab.to_string(),
        known: if known.is_empty() {
            "none yet".to_string()
        } else {
            known.join(", ")
        },
    })
}

/// Runs `command` inside pod `NS/POD`'s namespace, with its name resolution (its `/etc/hosts`)
/// and the environment its containers get (the lab's binaries first on PATH), its stdio
/// inherited; returns its exit code.
pub fn exec(lab: &LabName, reference: &str, command: &[String]) -> Result<i32, InspectError> {
    preflight::require_root()?;
    let record = LabRecord::load(lab, &LabPaths::new(lab).record())?;
    let pod = find_pod(lab, reference)?;
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .args(command)
        .env(
            "PATH",
            crate::supervisor::containers::path_with(&record.bin_dir),
        )
        .env("POD_NAME", &pod.name)
        .env("POD_NAMESPACE", &pod.namespace)
        .env("POD_IP", pod.ip.to_string())
        .env("NODE_NAME", &pod.node)
        .status()
        .map_err(|source| InspectError::Exec {
            netns: pod.netns.clone(),
            command: command.join(" "),
            source,
        })?;
    // A command killed by a signal exits like a shell reports it: 128 + the signal.
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// Which log `logs` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// A pod's containers (`NS/POD`).
    Pod(String),
    /// The controller.
    Controller,
    /// A node's ztunnel.
    Ztunnel(String),
    /// The supervisor.
    Supervisor,
}

/// The log file of a source.
pub fn log_path(lab: &LabName, source: &LogSource) -> Result<PathBuf, InspectError> {
    let paths = LabPaths::new(lab);
    let record = LabRecord::load(lab, &paths.record())?;
    Ok(match source {
        LogSource::Pod(reference) => {
            let (namespace, name) = parse_pod_reference(reference)?;
            let path = paths.pod_log(namespace, name);
            if !path.exists() {
                find_pod(lab, reference)?;
            }
            path
        }
        LogSource::Controller => paths.controller_log(),
        LogSource::Supervisor => paths.supervisor_log(),
        LogSource::Ztunnel(node) => {
            if !record.ztunnel {
                return Err(InspectError::NoZtunnel {
                    lab: lab.to_string(),
                });
            }
            paths.ztunnel_log(&record.node(node)?.name)
        }
    })
}
