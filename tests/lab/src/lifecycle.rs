//! `up`, `down` and `restart`: bringing a lab into being, removing it, and restarting one of
//! its components.

use std::path::PathBuf;

use controller::auth::{AuthError, ProxyKind, Tokens};
use nix::sys::signal::Signal;
use tracing::info;

use crate::addressing::MAX_NODES;
use crate::components::{self, ComponentError};
use crate::context::{self, ContextError};
use crate::name::{LabName, NameError};
use crate::paths::LabPaths;
use crate::preflight::{self, PreflightError};
use crate::record::{LabRecord, RecordError};
use crate::teardown::{self, Teardown, TeardownError};
use crate::topology::{self, TopologyError};

/// What `up` builds.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The lab's name.
    pub name: LabName,
    /// How many nodes.
    pub nodes: u8,
    /// Whether to run a ztunnel on every node.
    pub ztunnel: bool,
    /// Where the controller and ztunnel binaries are.
    pub bin_dir: PathBuf,
    /// The supervisor's command line; it must contain `supervise` and `--name <LAB>` (see
    /// [`teardown::is_supervisor_of`]), e.g. `mesh-lab supervise --name mesh`.
    pub supervisor_argv: Vec<String>,
    /// Whether to point `meshctl` at the lab ([`context::CONTEXT_FILE`]); tests leave the
    /// context of a developer's lab alone.
    pub write_context: bool,
    /// Validity the ztunnels ask for workload certificates; short ones exercise rotation.
    pub cert_ttl_secs: Option<u64>,
    /// Extra arguments of every ztunnel (`--drain-deadline-secs=5`, `--no-bypass-protection`).
    pub ztunnel_args: Vec<String>,
}

/// What a lab component is, for `restart`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Component {
    /// The controller.
    Controller,
    /// The ztunnel of a node (by Kubernetes name).
    Ztunnel(String),
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Component::Controller => f.write_str("the controller"),
            Component::Ztunnel(node) => write!(f, "the ztunnel of {node}"),
        }
    }
}

/// Why a lifecycle command failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The machine is not ready for a lab.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The node count is out of range.
    #[error("a lab has 1 to {MAX_NODES} nodes, not {0}")]
    NodeCount(u8),
    /// The lab runs already.
    #[error(
        "lab {lab} is already up ({alive}); use it, or remove it first with `down --name {lab}`"
    )]
    AlreadyUp {
        /// The lab.
        lab: String,
        /// Which of its processes run.
        alive: String,
    },
    /// Cleaning the remains failed.
    #[error(transparent)]
    Teardown(#[from] TeardownError),
    /// A directory of the state could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A node token could not be issued.
    #[error("cannot issue the token of {node}: {source}")]
    Token {
        /// The node.
        node: String,
        /// Why.
        source: AuthError,
    },
    /// The network could not be built.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A component could not be started.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// A record could not be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The context file could not be written.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A node name is wrong.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The lab runs without ztunnels.
    #[error("lab {lab} runs without ztunnels (it was started with --no-ztunnel)")]
    NoZtunnel {
        /// The lab.
        lab: String,
    },
    /// The component to signal does not run.
    #[error("{component} of lab {lab} does not run")]
    NotRunning {
        /// The lab.
        lab: String,
        /// The component.
        component: String,
    },
    /// `up` failed after it had started building; what it built is gone again.
    #[error("{source}\n(everything `up` had built was removed again)")]
    UpFailed {
        /// What failed.
        source: Box<LifecycleError>,
    },
}

/// Brings a lab up: cleans the remains of a crashed lab of the same name, builds the network,
/// starts the controller, the ztunnels and the supervisor, and points `meshctl` at it. On a
/// failure everything built so far is removed again.
pub async fn up(options: &UpOptions) -> Result<LabRecord, LifecycleError> {
    preflight::check()?;
    if !(1..=MAX_NODES).contains(&options.nodes) {
        return Err(LifecycleError::NodeCount(options.nodes));
    }
    components::require_binary(
        &options.bin_dir,
        components::CONTROLLER_BIN,
        "controller",
        "",
    )?;
    if options.ztunnel {
        components::require_binary(
            &options.bin_dir,
            components::ZTUNNEL_BIN,
            "ztunnel",
            ", or bring the lab up without ztunnels with --no-ztunnel",
        )?;
    }
    let paths = LabPaths::new(&options.name);
    refuse_if_running(&options.name, &paths)?;
    let remains = teardown::teardown(&options.name, &paths).await?;
    if !remains.is_empty() {
        info!(lab = %options.name, "removed the remains of an earlier lab:\n{remains}");
    }
    match build_and_start(options, &paths).await {
        Ok(record) => Ok(record),
        Err(e) => {
            let _ = teardown::teardown(&options.name, &paths).await;
            Err(LifecycleError::UpFailed {
                source: Box::new(e),
            })
        }
    }
}

fn refuse_if_running(lab: &LabName, paths: &LabPaths) -> Result<(), LifecycleError> {
    let Ok(record) = LabRecord::load(lab, &paths.record()) else {
        return Ok(());
    };
    let processes = [
        ("supervisor", &record.supervisor),
        ("controller", &record.controller),
    ];
    let alive: Vec<String> = processes
        .iter()
        .filter_map(|(what, p)| {
            p.as_ref()
                .filter(|p| p.is_alive())
                .map(|p| format!("{what} pid {}", p.pid))
        })
        .collect();
    if alive.is_empty() {
        Ok(())
    } else {
        Err(LifecycleError::AlreadyUp {
            lab: lab.to_string(),
            alive: alive.join(", "),
        })
    }
}

async fn build_and_start(
    options: &UpOptions,
    paths: &LabPaths,
) -> Result<LabRecord, LifecycleError> {
    let mut record = LabRecord::new(
        &options.name,
        options.nodes,
        &options.bin_dir,
        options.ztunnel,
    );
    record.cert_ttl_secs = options.cert_ttl_secs;
    record.ztunnel_args = options.ztunnel_args.clone();
    prepare_state(paths, &record)?;
    topology::build(&options.name, options.nodes).await?;
    record.save(&paths.record())?;

    record.controller = Some(components::start_controller(&record, paths).await?);
    record.save(&paths.record())?;
    if options.ztunnel {
        for i in 0..record.nodes.len() {
            let ztunnel = components::start_ztunnel(&record, paths, &record.nodes[i]).await?;
            record.nodes[i].ztunnel = Some(ztunnel);
            record.save(&paths.record())?;
        }
    }
    record.supervisor = Some(components::start_supervisor(
        &options.supervisor_argv,
        paths,
    )?);
    record.save(&paths.record())?;
    if options.write_context {
        context::write(paths)?;
    }
    Ok(record)
}

/// Creates the state directory and issues every node's token before the controller starts.
fn prepare_state(paths: &LabPaths, record: &LabRecord) -> Result<(), LifecycleError> {
    let create = |path: PathBuf| {
        std::fs::create_dir_all(&path).map_err(|source| LifecycleError::CreateDir { path, source })
    };
    create(paths.manifests())?;
    create(paths.root().join("pods"))?;
    controller::fs::create_private_dir(&paths.controller_state()).map_err(|source| {
        LifecycleError::CreateDir {
            path: paths.controller_state(),
            source,
        }
    })?;
    let state = paths.controller_state();
    let mut tokens = Tokens::load(&state).map_err(|source| LifecycleError::Token {
        node: "any node".into(),
        source,
    })?;
    for node in &record.nodes {
        create(paths.node_dir(&node.name))?;
        let token_error = |source| LifecycleError::Token {
            node: node.name.clone(),
            source,
        };
        let token = tokens
            .issue(&state, ProxyKind::Ztunnel, &node.name)
            .map_err(token_error)?;
        let path = paths.node_token(&node.name);
        controller::fs::write_private_atomically(&path, token.as_bytes())
            .map_err(|source| token_error(AuthError::Write { path, source }))?;
    }
    Ok(())
}

/// Removes a lab completely; idempotent. Needs root.
pub async fn down(lab: &LabName) -> Result<Teardown, LifecycleError> {
    preflight::require_root()?;
    Ok(teardown::teardown(lab, &LabPaths::new(lab)).await?)
}

/// Sends `signal` to a component of a running lab and returns its pid, without waiting for
/// anything: a test watches what the process does with it (a ztunnel's drain on SIGTERM).
/// Only the process the lab started is signalled, never a process that reused its pid.
pub fn signal(lab: &LabName, component: &Component, signal: Signal) -> Result<u32, LifecycleError> {
    preflight::require_root()?;
    let record = LabRecord::load(lab, &LabPaths::new(lab).record())?;
    let process = match component {
        Component::Controller => record.controller.as_ref(),
        Component::Ztunnel(node) => {
            if !record.ztunnel {
                return Err(LifecycleError::NoZtunnel {
                    lab: lab.to_string(),
                });
            }
            record.node(node)?.ztunnel.as_ref()
        }
    };
    let process = process
        .filter(|p| p.is_alive())
        .ok_or_else(|| LifecycleError::NotRunning {
            lab: lab.to_string(),
            component: component.to_string(),
        })?;
    crate::process::signal(process.pid, signal);
    Ok(process.pid)
}

/// Stops a component of a running lab and starts it again with the same command line; waits
/// until it serves.
pub async fn restart(lab: &LabName, component: &Component) -> Result<LabRecord, LifecycleError> {
    preflight::require_root()?;
    let paths = LabPaths::new(lab);
    let mut record = LabRecord::load(lab, &paths.record())?;
    match component {
        Component::Controller => {
            if let Some(old) = &record.controller {
                old.stop().await;
            }
            record.controller = Some(components::start_controller(&record, &paths).await?);
        }
        Component::Ztunnel(node) => {
            if !record.ztunnel {
                return Err(LifecycleError::NoZtunnel {
                    lab: lab.to_string(),
                });
            }
            let index = usize::from(record.node(node)?.index) - 1;
            if let Some(old) = &record.nodes[index].ztunnel {
                old.stop().await;
            }
            let ztunnel = components::start_ztunnel(&record, &paths, &record.nodes[index]).await?;
            record.nodes[index].ztunnel = Some(ztunnel);
        }
    }
    record.save(&paths.record())?;
    Ok(record)
}
