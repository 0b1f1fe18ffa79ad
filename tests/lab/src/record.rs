//! The lab's records on disk: `lab.json` (what `up` built and started) and `pods.json` (what
//! the supervisor runs). Both are replaced atomically, so a reader never sees half a file.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::addressing;
use crate::name::{self, LabName};
use crate::process::ProcessRecord;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The lab has no record: it is not up.
    #[error("lab {lab} is not up (no {path}); start it with `up --name {lab}`")]
    NotUp {
        /// The lab.
        lab: String,
        /// The record's path.
        path: PathBuf,
    },
    /// The record could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The record is not what the lab writes.
    #[error("{path} is damaged ({source}); run `down` for the lab and `up` again")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// The record could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// One node of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its Kubernetes name (`node-<i>`).
    pub name: String,
    /// Its index (1-based).
    pub index: u8,
    /// Its namespace.
    pub netns: String,
    /// Its LAN address.
    pub ip: Ipv4Addr,
    /// Its pod CIDR.
    pub pod_cidr: String,
    /// Its ztunnel, when the lab runs one.
    pub ztunnel: Option<ProcessRecord>,
}

/// What `up` built and started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabRecord {
    /// The lab's name.
    pub name: String,
    /// Where the lab's binaries come from.
    pub bin_dir: PathBuf,
    /// Whether a ztunnel runs on every node.
    pub ztunnel: bool,
    /// The nodes.
    pub nodes: Vec<NodeRecord>,
    /// The controller's namespace.
    pub controller_netns: String,
    /// The controller's LAN address.
    pub controller_ip: Ipv4Addr,
    /// The controller process.
    pub controller: Option<ProcessRecord>,
    /// The supervisor process.
    pub supervisor: Option<ProcessRecord>,
    /// Validity the ztunnels ask for workload certificates (their default when unset).
    #[serde(default)]
    pub cert_ttl_secs: Option<u64>,
    /// Extra arguments of every ztunnel (e.g. `--drain-deadline-secs=5`), kept for restarts.
    #[serde(default)]
    pub ztunnel_args: Vec<String>,
}

impl LabRecord {
    /// The record of a fresh lab, before any process runs.
    pub fn new(lab: &LabName, nodes: u8, bin_dir: &Path, ztunnel: bool) -> Self {
        Self {
            name: lab.to_string(),
            bin_dir: bin_dir.to_path_buf(),
            ztunnel,
            nodes: (1..=nodes)
                .map(|index| NodeRecord {
                    name: name::node_name(index),
                    index,
                    netns: lab.node_netns(index),
                    ip: addressing::node_ip(index),
                    pod_cidr: addressing::pod_cidr(index).to_string(),
                    ztunnel: None,
                })
                .collect(),
            controller_netns: lab.controller_netns(),
            controller_ip: addressing::CONTROLLER_IP,
            controller: None,
            supervisor: None,
            cert_ttl_secs: None,
            ztunnel_args: Vec::new(),
        }
    }

    /// Reads the record of a lab; [`RecordError::NotUp`] when there is none.
    pub fn load(lab: &LabName, path: &Path) -> Result<Self, RecordError> {
        read_json(path)?.ok_or_else(|| RecordError::NotUp {
            lab: lab.to_string(),
            path: path.to_path_buf(),
        })
    }

    /// Replaces the record atomically.
    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        write_json(path, self)
    }

    /// The node with Kubernetes name `name`.
    pub fn node(&self, name: &str) -> Result<&NodeRecord, name::NameError> {
        let index = name::node_index(name, self.nodes.len() as u8)?;
        Ok(&self.nodes[usize::from(index) - 1])
    }
}

/// One pod, as the supervisor reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReport {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// Whether the controller counts it in the mesh.
    pub enrolled: bool,
    /// Whether the node's ztunnel acknowledged it (`None`: the lab runs no ztunnel).
    pub captured: Option<bool>,
    /// The pids of its running containers.
    pub pids: Vec<u32>,
    /// How many times its containers were restarted.
    pub restarts: u32,
}

/// Every pod the supervisor runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodsReport {
    /// The pods, by namespace and name.
    pub pods: Vec<PodReport>,
    /// Pods that cannot be placed, with the reason.
    pub pending: Vec<String>,
}

impl PodsReport {
    /// Reads the report; no file means no pods yet.
    pub fn load(path: &Path) -> Result<Self, RecordError> {
        Ok(read_json(path)?.unwrap_or_default())
    }

    /// Replaces the report atomically.
    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        write_json(path, self)
    }

    /// The pod `namespace/name`.
    pub fn find(&self, namespace: &str, name: &str) -> Option<&PodReport> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RecordError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecordError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RecordError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    let mut body = serde_json::to_vec_pretty(value).expect("records serialize");
    body.push(b'\n');
    controller::fs::write_atomically(path, &body, 0o644).map_err(|source| RecordError::Write {
        path: path.to_path_buf(),
        source,
    })
}
