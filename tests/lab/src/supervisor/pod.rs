//! One pod's life in the lab, as a kubelet and a CNI plugin would run it: network first, then
//! status, enrollment and containers; on removal the reverse.

use std::collections::BTreeMap;
use std::path::PathBuf;

use controller::store::{PodStatusError, PodStatusRecord, record_pod_status, remove_pod_status};

use super::containers::{PodLaunch, PodProcesses};
use super::desired::{ContainerSpec, PodKey};
use super::enrollment::{NodeAgent, pod_uid};
use super::hosts::{self, HostsError};
use super::placement::Place;
use crate::addressing;
use crate::name::{self, LabName};
use crate::paths::{LabPaths, netns_path};
use crate::topology::{self, PodNetwork, TopologyError};

/// The phase the lab reports for a pod it runs.
const RUNNING: &str = "Running";

/// Why a pod could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The network could not be built.
    #[error(transparent)]
    Network(#[from] TopologyError),
    /// The pod's name resolution could not be written.
    #[error(transparent)]
    Hosts(#[from] HostsError),
    /// The pod's directory could not be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// A pod the supervisor runs.
#[derive(Debug)]
pub struct RunningPod {
    /// The pod.
    pub key: PodKey,
    /// Where it runs.
    pub place: Place,
    /// Its network namespace.
    pub netns: String,
    /// The containers it was started with.
    pub containers: Vec<ContainerSpec>,
    /// Whether the controller counts it in the mesh.
    pub enrolled: bool,
    /// Whether the node agent told the ztunnel about it (every pod but those that opted out).
    pub announced: bool,
    /// Whether its status record is written.
    pub recorded: bool,
    /// The hosts file last written.
    pub hosts: String,
    /// Environment the lab adds to its containers (a waypoint's credentials).
    pub env: BTreeMap<String, String>,
    /// Its processes.
    pub processes: Option<PodProcesses>,
}

/// What every pod of a lab shares.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// The lab.
    pub lab: LabName,
    /// The lab's paths.
    pub paths: LabPaths,
    /// Where the lab's binaries are (first on the containers' PATH).
    pub bin_dir: PathBuf,
    /// The validity of workload certificates the lab asks for, when not the default.
    pub cert_ttl_secs: Option<u64>,
}

impl RunningPod {
    /// Builds the pod's network and files; the containers are started by [`Self::start`].
    pub async fn create(
        ctx: &PodContext,
        key: PodKey,
        id: u32,
        place: Place,
        containers: Vec<ContainerSpec>,
        hosts: String,
    ) -> Result<Self, PodError> {
        let netns = ctx.lab.pod_netns(id);
        let network = PodNetwork {
            netns: netns.clone(),
            node_netns: ctx.lab.node_netns(place.node),
            node_link: format!("vp{id}"),
            ip: place.ip,
            gateway: addressing::pod_gateway(place.node),
        };
        let dir = ctx.paths.pod_dir(&key.namespace, &key.name);
        std::fs::create_dir_all(&dir).map_err(|source| PodError::Dir { path: dir, source })?;
        // The hosts file must be there before anything runs in the pod: `ip netns exec`
        // mounts what exists when it starts.
        hosts::write(&netns, &hosts)?;
        if let Err(e) = network.create().await {
            hosts::remove(&netns);
            return Err(e.into());
        }
        Ok(Self {
            key,
            place,
            netns,
            containers,
            enrolled: false,
            announced: false,
            recorded: false,
            hosts,
            env: BTreeMap::new(),
            processes: None,
        })
    }

    /// The pod's node, by Kubernetes name.
    pub fn node_name(&self) -> String {
        name::node_name(self.place.node)
    }

    /// The pod's workload uid.
    pub fn uid(&self) -> String {
        pod_uid(&self.key.namespace, &self.key.name)
    }

    /// Records where the pod runs, for the controller (as a kubelet reports pod status).
    pub fn record_status(&mut self, ctx: &PodContext) -> Result<(), PodStatusError> {
        let record = PodStatusRecord {
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            node_name: Some(self.node_name()),
            pod_ip: Some(self.place.ip.into()),
            phase: Some(RUNNING.to_string()),
        };
        record_pod_status(&ctx.paths.controller_state(), &record)?;
        self.recorded = true;
        Ok(())
    }

    /// Starts the containers: after the node's ztunnel acknowledged the pod when it is
    /// announced to an agent, at once otherwise.
    pub fn start(&mut self, ctx: &PodContext, agent: Option<&NodeAgent>) {
        let agent = agent.filter(|_| self.announced);
        let launch = PodLaunch {
            pod: self.key.clone(),
            node: self.node_name(),
            ip: self.place.ip,
            netns: self.netns.clone(),
            log: ctx.paths.pod_log(&self.key.namespace, &self.key.name),
            dir: ctx.paths.pod_dir(&self.key.namespace, &self.key.name),
            bin_dir: ctx.bin_dir.clone(),
            env: self.env.clone(),
        };
        let processes = match agent {
            Some(agent) => {
                let gate = agent.add(&self.uid(), &netns_path(&self.netns));
                PodProcesses::start(launch, self.containers.clone(), gate)
            }
            None => PodProcesses::start(launch, self.containers.clone(), async {}),
        };
        self.processes = Some(processes);
    }

    /// Tells the node's ztunnel about the pod, or that it is gone from its view, when that
    /// changed (the pod's opt-out label was set or removed).
    pub async fn announce(&mut self, agent: Option<&NodeAgent>, announced: bool) {
        if self.announced == announced {
            return;
        }
        self.announced = announced;
        let Some(agent) = agent else { return };
        if announced {
            // The containers run already; the acknowledgement is not waited for.
            drop(agent.add(&self.uid(), &netns_path(&self.netns)));
        } else {
            agent.remove(&self.uid()).await;
        }
    }

    /// Restarts the containers with a new spec (the pod stays enrolled).
    pub async fn replace_containers(&mut self, ctx: &PodContext, containers: Vec<ContainerSpec>) {
        if let Some(processes) = self.processes.take() {
            processes.stop().await;
        }
        self.containers = containers;
        self.start(ctx, None);
    }

    /// Stops the containers, unenrolls the pod, deletes its network, files and status record.
    pub async fn destroy(
        mut self,
        ctx: &PodContext,
        agent: Option<&NodeAgent>,
    ) -> Result<(), PodError> {
        if let Some(processes) = self.processes.take() {
            processes.stop().await;
        }
        if let Some(agent) = agent.filter(|_| self.announced) {
            agent.remove(&self.uid()).await;
        }
        if let Err(e) = super::waypoint::revoke(ctx, &self.key) {
            tracing::warn!(pod = %self.key, "{e}");
        }
        // Anything else that entered the pod (an `exec` session) goes too.
        kill_remaining(&self.netns).await;
        topology::delete_namespace(&self.netns).await?;
        hosts::remove(&self.netns);
        if let Err(e) = remove_pod_status(
            &ctx.paths.controller_state(),
            &self.key.namespace,
            &self.key.name,
        ) {
            tracing::warn!(pod = %self.key, "{e}");
        }
        Ok(())
    }
}

async fn kill_remaining(netns: &str) {
    let Ok(out) = crate::command::run("ip", &["netns", "pids", netns]).await else {
        return;
    };
    let pids: Vec<u32> = out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if !pids.is_empty() {
        crate::process::stop_pids(&pids).await;
    }
}
