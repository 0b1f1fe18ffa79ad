//! Where a lab keeps its files: one state directory per lab, removed at `down`.
//!
//! ```text
//! /var/lib/mesh-lab/<LAB>/
//!   lab.json                  the lab record: nodes, processes, addresses
//!   pods.json                 the supervisor's report: every pod, its node, IP and namespace
//!   supervisor.log
//!   manifests/                the desired state (meshctl edits it)
//!   controller/               the controller's state: CA, tokens, pod-status/, status.sock
//!   controller/controller.log
//!   nodes/<node>/             token, enroll.sock, ztunnel.log
//!   pods/<ns>_<name>/pod.log  what the pod's containers print
//! ```

use std::path::{Path, PathBuf};

use crate::name::LabName;

/// The directory under which every lab has its state directory.
pub const STATE_ROOT: &str = "/var/lib/mesh-lab";

/// Where `ip netns exec` finds per-namespace files that it mounts over `/etc`.
pub const ETC_NETNS: &str = "/etc/netns";

/// Where `ip netns` keeps the handles of named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// The paths of one lab.
#[derive(Clone, Debug)]
pub struct LabPaths {
    root: PathBuf,
}

impl LabPaths {
    /// The paths of lab `name` under [`STATE_ROOT`].
    pub fn new(name: &LabName) -> Self {
        Self::under(Path::new(STATE_ROOT), name)
    }

    /// The paths of lab `name` under another root (tests).
    pub fn under(root: &Path, name: &LabName) -> Self {
        Self {
            root: root.join(name.as_str()),
        }
    }

    /// The lab's state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lab record.
    pub fn record(&self) -> PathBuf {
        self.root.join("lab.json")
    }

    /// The supervisor's report of the pods.
    pub fn pods_report(&self) -> PathBuf {
        self.root.join("pods.json")
    }

    /// The supervisor's log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }

    /// The manifest directory: the desired state.
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// The controller's state directory.
    pub fn controller_state(&self) -> PathBuf {
        self.root.join("controller")
    }

    /// The controller's status API socket.
    pub fn status_socket(&self) -> PathBuf {
        self.controller_state().join("status.sock")
    }

    /// The controller's log.
    pub fn controller_log(&self) -> PathBuf {
        self.root.join("controller.log")
    }

    /// The trust bundle the controller writes at start.
    pub fn root_cert(&self) -> PathBuf {
        self.controller_state()
            .join(controller::app::ROOT_CERT_FILE)
    }

    /// The directory of a node (by its Kubernetes name).
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }

    /// The bearer token file of a node's ztunnel.
    pub fn node_token(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("token")
    }

    /// The enrollment socket of a node's ztunnel.
    pub fn enrollment_socket(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("enroll.sock")
    }

    /// The log of a node's ztunnel.
    pub fn ztunnel_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("ztunnel.log")
    }

    /// The directory of a pod.
    pub fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join("pods").join(format!("{namespace}_{name}"))
    }

    /// The log of a pod's containers.
    pub fn pod_log(&self, namespace: &str, name: &str) -> PathBuf {
        self.pod_dir(namespace, name).join("pod.log")
    }
}

/// The per-namespace `/etc` directory of a namespace (`ip netns exec` mounts its files).
pub fn etc_netns(netns: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(netns)
}

/// The path of a named namespace, as the enrollment API wants it.
pub fn netns_path(netns: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(netns)
}
