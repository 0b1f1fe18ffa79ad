//! A pod's containers as processes: each runs `command` + `args` inside the pod's namespace
//! (`ip netns exec`, so the pod's hosts file applies), in its own process group, output
//! appended to the pod's log, and is restarted with a growing delay when it exits. Stopping a
//! pod sends SIGTERM to each container's process group, then SIGKILL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::warn;

use super::desired::{ContainerSpec, PodKey};
use crate::process::STOP_GRACE;

/// The first delay before a container that exited is started again.
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);

/// The longest delay between restarts.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// A container that ran this long is healthy again: its next restart waits the first delay.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// Everything needed to run a pod's containers.
#[derive(Clone, Debug)]
pub struct PodLaunch {
    /// The pod.
    pub pod: PodKey,
    /// Its node's Kubernetes name.
    pub node: String,
    /// Its address.
    pub ip: std::net::Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// Its log file (containers' output and the lab's notes).
    pub log: PathBuf,
    /// Its working directory.
    pub dir: PathBuf,
    /// A directory put first on the containers' PATH (the lab's binaries, e.g. `testapp`).
    pub bin_dir: PathBuf,
    /// Environment the lab gives every container of the pod (a waypoint's credentials);
    /// the containers' own `env` wins.
    pub env: BTreeMap<String, String>,
}

/// What a pod's containers are doing, shared with the status report.
#[derive(Debug, Default)]
pub struct PodProcessState {
    /// The pid of each running container, by container name.
    pub pids: Mutex<BTreeMap<String, u32>>,
    /// How many times a container was restarted.
    pub restarts: AtomicU32,
}

/// The running containers of one pod.
#[derive(Debug)]
pub struct PodProcesses {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// What the containers are doing.
    pub state: Arc<PodProcessState>,
}

impl PodProcesses {
    /// Starts the containers once `gate` completes (the pod's enrollment, so the apps' first
    /// connections are already captured).
    pub fn start(
        launch: PodLaunch,
        containers: Vec<ContainerSpec>,
        gate: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(PodProcessState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut gate_stop = stopped.clone();
            tokio::select! {
                () = gate => {}
                _ = gate_stop.wait_for(|s| *s) => return,
            }
            let launch = Arc::new(launch);
            let mut set = JoinSet::new();
            for spec in containers {
                set.spawn(run_container(
                    launch.clone(),
                    spec,
                    stopped.clone(),
                    shared.clone(),
                ));
            }
            while set.join_next().await.is_some() {}
        });
        Self { stop, task, state }
    }

    /// Stops every container and waits until they are gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        // Each container gets STOP_GRACE after SIGTERM, then SIGKILL; they stop in parallel.
        let _ = tokio::time::timeout(STOP_GRACE * 3, self.task).await;
    }
}

/// Appends a note of the lab to a pod's log.
fn note(log: &Path, text: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(file, "[mesh-lab] {text}");
    }
}

async fn run_container(
    launch: Arc<PodLaunch>,
    spec: ContainerSpec,
    mut stop: watch::Receiver<bool>,
    state: Arc<PodProcessState>,
) {
    let argv = spec.argv();
    if argv.is_empty() {
        let text = format!(
            "container {} has neither command nor args; the lab ignores images, so give \
             spec.containers[].command",
            spec.name
        );
        note(&launch.log, &text);
        warn!(pod = %launch.pod, "{text}");
        return;
    }
    let mut delay = FIRST_RESTART_DELAY;
    loop {
        let started = tokio::time::Instant::now();
        match run_once(&launch, &spec, &argv, &mut stop, &state).await {
            RunOutcome::Stopped => return,
            RunOutcome::NotStarted(e) => {
                note(
                    &launch.log,
                    &format!("cannot start container {}: {e}", spec.name),
                );
            }
            RunOutcome::Exited(status) => {
                if started.elapsed() >= HEALTHY_RUN {
                    delay = FIRST_RESTART_DELAY;
                }
                note(
                    &launch.log,
                    &format!(
                        "container {} exited ({status}); restarting in {delay:?}",
                        spec.name
                    ),
                );
                state.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
        if sleep_or_stop(delay, &mut stop).await {
            return;
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

/// How one run of a container ended.
enum RunOutcome {
    /// The pod is being stopped; the container was terminated.
    Stopped,
    /// The process could not be started.
    NotStarted(std::io::Error),
    /// The process exited by itself, with this status.
    Exited(String),
}

/// Starts the container once and waits until it exits or the pod stops.
async fn run_once(
    launch: &PodLaunch,
    spec: &ContainerSpec,
    argv: &[String],
    stop: &mut watch::Receiver<bool>,
    state: &PodProcessState,
) -> RunOutcome {
    let mut child = match spawn(launch, spec, argv) {
        Ok(child) => child,
        Err(e) => return RunOutcome::NotStarted(e),
    };
    let pid = child.id().unwrap_or_default();
    let pids = || state.pids.lock().expect("pids lock");
    pids().insert(spec.name.clone(), pid);
    note(
        &launch.log,
        &format!(
            "container {} started, pid {pid}: {}",
            spec.name,
            argv.join(" ")
        ),
    );
    let exited = tokio::select! {
        status = child.wait() => Some(status),
        _ = stop.wait_for(|s| *s) => None,
    };
    let Some(status) = exited else {
        terminate(&mut child, pid).await;
        pids().remove(&spec.name);
        note(&launch.log, &format!("container {} stopped", spec.name));
        return RunOutcome::Stopped;
    };
    pids().remove(&spec.name);
    // Like a container runtime, take down what the main process left behind.
    if let Ok(group) = i32::try_from(pid)
        && group > 0
    {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
    RunOutcome::Exited(status.map_or_else(|e| e.to_string(), |s| s.to_string()))
}

fn spawn(launch: &PodLaunch, spec: &ContainerSpec, argv: &[String]) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)?;
    Command::new("ip")
        .args(["netns", "exec", &launch.netns])
        .args(argv)
        .env("PATH", path_with(&launch.bin_dir))
        .env("POD_NAME", &launch.pod.name)
        .env("POD_NAMESPACE", &launch.pod.namespace)
        .env("POD_IP", launch.ip.to_string())
        .env("NODE_NAME", &launch.node)
        .envs(&launch.env)
        .envs(&spec.env)
        .current_dir(&launch.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

/// This process's PATH with `bin_dir` first: pods and `exec` find the lab's binaries
/// (`testapp`, ...) by name.
pub fn path_with(bin_dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap_or(path)
}

/// Sleeps `delay`; returns true when told to stop meanwhile.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// SIGTERM to the container's process group, SIGKILL after [`STOP_GRACE`].
async fn terminate(child: &mut Child, pid: u32) {
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
    if group.as_raw() > 0 {
        let _ = killpg(group, Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        if group.as_raw() > 0 {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let _ = child.wait().await;
    }
}
