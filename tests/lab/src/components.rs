//! The lab's own processes: the controller (in its namespace), one ztunnel per node (in the
//! node's namespace) and the supervisor (in the host's namespace: it creates namespaces and
//! reaches the controller and the ztunnels through their Unix sockets). How each is started,
//! and how `up` and `restart` wait until it serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::addressing::{CONTROLLER_GRPC_PORT, CONTROLLER_IP, CONTROLLER_STATUS_PORT};
use crate::paths::LabPaths;
use crate::process::{self, ProcessError, ProcessRecord};
use crate::record::{LabRecord, NodeRecord};
use crate::status_client::StatusClient;

/// The environment variable that overrides where the lab's binaries are found.
pub const BIN_DIR_ENV: &str = "MESH_BIN_DIR";

/// The controller's binary.
pub const CONTROLLER_BIN: &str = "controller";

/// The ztunnel binary.
pub const ZTUNNEL_BIN: &str = "ztunnel";

/// The name the ztunnels expect in the controller's serving certificate.
pub const CONTROLLER_NAME: &str = "controller";

/// How long `up` and `restart` wait for the controller to be ready.
pub const CONTROLLER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `up` and `restart` wait for a ztunnel to open its enrollment socket.
pub const ZTUNNEL_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How many lines of a log a start-up error quotes.
const LOG_TAIL_LINES: usize = 15;

/// Why a component could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// A binary is missing.
    #[error(
        "{path} does not exist; build it with `cargo build -p {package}` (or set {BIN_DIR_ENV} to the directory holding the binaries){hint}"
    )]
    MissingBinary {
        /// The expected path.
        path: PathBuf,
        /// The cargo package that builds it.
        package: &'static str,
        /// Another way out, if there is one.
        hint: &'static str,
    },
    /// The process could not be started.
    #[error(transparent)]
    Spawn(#[from] ProcessError),
    /// The process exited during start-up.
    #[error("{component} exited during start-up; the end of its log {log}:\n{tail}")]
    Exited {
        /// Which component.
        component: String,
        /// Its log.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// The process did not become ready in time.
    #[error(
        "{component} was not ready within {timeout:?}: {reason}; the end of its log {log}:\n{tail}"
    )]
    NotReady {
        /// Which component.
        component: String,
        /// How long we waited.
        timeout: Duration,
        /// The last thing that failed.
        reason: String,
        /// Its log.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
}

/// Where the lab's binaries are: `$MESH_BIN_DIR`, or the directory of the running executable
/// (`target/debug` or `target/release` when run from a build).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The path of a binary that must exist.
pub fn require_binary(
    bin_dir: &Path,
    name: &str,
    package: &'static str,
    hint: &'static str,
) -> Result<PathBuf, ComponentError> {
    let path = bin_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ComponentError::MissingBinary {
            path,
            package,
            hint,
        })
    }
}

/// The controller's command line.
pub fn controller_argv(bin_dir: &Path, paths: &LabPaths) -> Vec<String> {
    let state = paths.controller_state();
    vec![
        bin_dir.join(CONTROLLER_BIN).display().to_string(),
        "serve".into(),
        "--manifests".into(),
        paths.manifests().display().to_string(),
        "--state".into(),
        state.display().to_string(),
        "--grpc-addr".into(),
        format!("{CONTROLLER_IP}:{CONTROLLER_GRPC_PORT}"),
        "--status-addr".into(),
        format!("127.0.0.1:{CONTROLLER_STATUS_PORT}"),
        "--status-socket".into(),
        paths.status_socket().display().to_string(),
    ]
}

/// The command line of a node's ztunnel: the lab's wiring, the certificate validity and the
/// extra arguments `up` was given ([`LabRecord::ztunnel_args`]).
pub fn ztunnel_argv(record: &LabRecord, paths: &LabPaths, node: &NodeRecord) -> Vec<String> {
    let name = node.name.as_str();
    let mut argv = vec![
        record.bin_dir.join(ZTUNNEL_BIN).display().to_string(),
        "--node".into(),
        name.into(),
        "--node-ip".into(),
        node.ip.to_string(),
        "--controller".into(),
        format!("{CONTROLLER_IP}:{CONTROLLER_GRPC_PORT}"),
        "--controller-name".into(),
        CONTROLLER_NAME.into(),
        "--root-cert".into(),
        paths.root_cert().display().to_string(),
        "--token-file".into(),
        paths.node_token(name).display().to_string(),
        "--enrollment-socket".into(),
        paths.enrollment_socket(name).display().to_string(),
        "--admin-addr".into(),
        "127.0.0.1:15000".into(),
        "--metrics-addr".into(),
        "0.0.0.0:15020".into(),
        "--readiness-addr".into(),
        "0.0.0.0:15021".into(),
    ];
    if let Some(ttl) = record.cert_ttl_secs {
        argv.extend(["--cert-validity-secs".into(), ttl.to_string()]);
    }
    argv.extend(record.ztunnel_args.iter().cloned());
    argv
}

/// Starts the controller in its namespace and waits until it is ready.
pub async fn start_controller(
    record: &LabRecord,
    paths: &LabPaths,
) -> Result<ProcessRecord, ComponentError> {
    let argv = controller_argv(&record.bin_dir, paths);
    let _ = std::fs::remove_file(paths.status_socket());
    let process = process::spawn_detached(
        Some(&record.controller_netns),
        &argv,
        &paths.controller_log(),
        &[],
    )?;
    let client = StatusClient::new(&paths.status_socket());
    wait_until("the controller", &process, CONTROLLER_READY_TIMEOUT, || {
        let client = client.clone();
        async move { client.ready().await.map_err(|e| e.to_string()) }
    })
    .await?;
    Ok(process)
}

/// Starts a node's ztunnel in the node's namespace and waits until its enrollment socket is
/// there.
pub async fn start_ztunnel(
    record: &LabRecord,
    paths: &LabPaths,
    node: &NodeRecord,
) -> Result<ProcessRecord, ComponentError> {
    let argv = ztunnel_argv(record, paths, node);
    let socket = paths.enrollment_socket(&node.name);
    let _ = std::fs::remove_file(&socket);
    let process = process::spawn_detached(
        Some(&node.netns),
        &argv,
        &paths.ztunnel_log(&node.name),
        &[],
    )?;
    let component = format!("ztunnel on {}", node.name);
    wait_until(&component, &process, ZTUNNEL_READY_TIMEOUT, || {
        let socket = socket.clone();
        async move {
            tokio::net::UnixStream::connect(&socket)
                .await
                .map(drop)
                .map_err(|e| format!("its enrollment socket {}: {e}", socket.display()))
        }
    })
    .await?;
    Ok(process)
}

/// Starts the supervisor, detached, in the host's namespace.
pub fn start_supervisor(
    argv: &[String],
    paths: &LabPaths,
) -> Result<ProcessRecord, ComponentError> {
    Ok(process::spawn_detached(
        None,
        argv,
        &paths.supervisor_log(),
        &[],
    )?)
}

/// Polls `probe` every 100 ms until it succeeds, the process exits, or `timeout` passes.
async fn wait_until<F, Fut>(
    component: &str,
    process: &ProcessRecord,
    timeout: Duration,
    probe: F,
) -> Result<(), ComponentError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let reason = match probe().await {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        if !process::is_alive(process.pid) {
            return Err(ComponentError::Exited {
                component: component.to_string(),
                log: process.log.clone(),
                tail: log_tail(&process.log),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ComponentError::NotReady {
                component: component.to_string(),
                timeout,
                reason,
                log: process.log.clone(),
                tail: log_tail(&process.log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a log file, indented for an error message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
