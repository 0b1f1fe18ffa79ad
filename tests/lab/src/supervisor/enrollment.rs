//! The lab's CNI node agent: one task per node keeps a connection to the node's ztunnel
//! enrollment socket and tells it about the pods on the node (add when the pod is created,
//! remove when it goes, the full list after every (re)connect). ztunnel decides from its xDS
//! view whether a pod is in the mesh; the agent tells it about every pod except those that
//! opted out with `istio.io/dataplane-mode: none` (waypoints among them), as Istio's CNI
//! agent does.
//!
//! A restarted ztunnel binds a new socket file; the agent notices the new file, reconnects and
//! sends the full list, so pods are captured again without being restarted.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use ztunnel::inpod::enrollment::PodEntry;
use ztunnel::inpod::{EnrollmentClient, EnrollmentError};

/// How often a disconnected agent tries again, and how often a connected one checks that the
/// socket is still the one it connected to.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// How long a new pod's containers wait for ztunnel to acknowledge the pod before they start
/// anyway (uncaptured; the next snapshot captures the pod).
pub const ENROLL_WAIT: Duration = Duration::from_secs(10);

/// The workload uid of a pod, as the controller names it in xDS.
pub fn pod_uid(namespace: &str, name: &str) -> String {
    format!("Kubernetes//Pod/{namespace}/{name}")
}

enum Command {
    Add {
        uid: String,
        netns: PathBuf,
        ack: oneshot::Sender<()>,
    },
    Remove {
        uid: String,
        ack: oneshot::Sender<()>,
    },
}

/// What the agent knows: the pods that should be enrolled, and which ztunnel acknowledged.
#[derive(Debug, Default)]
struct Shared {
    desired: BTreeMap<String, PathBuf>,
    captured: BTreeMap<String, bool>,
}

/// The agent of one node.
#[derive(Debug, Clone)]
pub struct NodeAgent {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
}

impl NodeAgent {
    /// Starts the agent of `node`, whose ztunnel listens on `socket`.
    pub fn start(node: String, socket: PathBuf) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(run(node, socket, rx, shared.clone()));
        Self { commands, shared }
    }

    /// Tells ztunnel about a new pod; the returned future completes once ztunnel answered (or
    /// after [`ENROLL_WAIT`]).
    pub fn add(
        &self,
        uid: &str,
        netns: &Path,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared
            .lock()
            .expect("agent lock")
            .desired
            .insert(uid.to_string(), netns.to_path_buf());
        let (ack, acked) = oneshot::channel();
        let _ = self.commands.send(Command::Add {
            uid: uid.to_string(),
            netns: netns.to_path_buf(),
            ack,
        });
        async move {
            let _ = tokio::time::timeout(ENROLL_WAIT, acked).await;
        }
    }

    /// Tells ztunnel a pod is going; the returned future completes once ztunnel answered (or
    /// after [`ENROLL_WAIT`]), so the pod's namespace can be deleted after ztunnel let go of it.
    pub fn remove(&self, uid: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
        {
            let mut shared = self.shared.lock().expect("agent lock");
            shared.desired.remove(uid);
            shared.captured.remove(uid);
        }
        let (ack, acked) = oneshot::channel();
        let _ = self.commands.send(Command::Remove {
            uid: uid.to_string(),
            ack,
        });
        async move {
            let _ = tokio::time::timeout(ENROLL_WAIT, acked).await;
        }
    }

    /// Whether ztunnel acknowledged the pod (`false` until it did).
    pub fn captured(&self, uid: &str) -> bool {
        self.shared
            .lock()
            .expect("agent lock")
            .captured
            .get(uid)
            .copied()
            .unwrap_or(false)
    }
}

/// Identifies the socket file: a restarted ztunnel makes a new one.
fn socket_identity(path: &Path) -> Option<(u64, i64, i64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

async fn run(
    node: String,
    socket: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut last_error = String::new();
    loop {
        let identity = socket_identity(&socket);
        let mut client = match connect_and_snapshot(&socket, &shared).await {
            Ok(client) => {
                info!(%node, "connected to ztunnel's enrollment socket; sent the pod list");
                last_error.clear();
                client
            }
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    warn!(%node, "{text}; retrying every {CHECK_INTERVAL:?}");
                    last_error = text;
                }
                // Pending adds are answered by the snapshot after the next connect.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(CHECK_INTERVAL).await;
                continue;
            }
        };
        loop {
            let command = tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => return,
                },
                () = tokio::time::sleep(CHECK_INTERVAL) => {
                    if socket_identity(&socket) != identity {
                        info!(%node, "ztunnel's enrollment socket was re-created; reconnecting");
                        break;
                    }
                    continue;
                }
            };
            if let Err(e) = apply(&mut client, command, &shared).await {
                warn!(%node, "{e}; reconnecting");
                break;
            }
        }
    }
}

async fn connect_and_snapshot(
    socket: &Path,
    shared: &Mutex<Shared>,
) -> Result<EnrollmentClient, EnrollmentError> {
    let mut client = EnrollmentClient::connect(socket).await?;
    let pods: Vec<PodEntry> = shared
        .lock()
        .expect("agent lock")
        .desired
        .iter()
        .map(|(uid, netns)| PodEntry {
            uid: uid.clone(),
            netns: netns.display().to_string(),
        })
        .collect();
    let outcome = client.snapshot(&pods).await;
    let failed = match &outcome {
        Ok(()) => String::new(),
        Err(EnrollmentError::Rejected { message, .. }) => message.clone(),
        Err(_) => return outcome.map(|()| client),
    };
    let mut shared = shared.lock().expect("agent lock");
    for pod in &pods {
        shared
            .captured
            .insert(pod.uid.clone(), !failed.contains(&pod.uid));
    }
    if !failed.is_empty() {
        warn!("ztunnel took the pod list without some pods: {failed}");
    }
    Ok(client)
}

/// Applies one command; an error other than ztunnel's refusal means the connection is out of
/// step and must be re-established.
async fn apply(
    client: &mut EnrollmentClient,
    command: Command,
    shared: &Mutex<Shared>,
) -> Result<(), EnrollmentError> {
    match command {
        Command::Add { uid, netns, ack } => {
            if !shared
                .lock()
                .expect("agent lock")
                .desired
                .contains_key(&uid)
            {
                return Ok(()); // removed before it was sent
            }
            let outcome = client.add(&uid, &netns).await;
            shared
                .lock()
                .expect("agent lock")
                .captured
                .insert(uid.clone(), outcome.is_ok());
            let _ = ack.send(());
            match outcome {
                Err(EnrollmentError::Rejected { message, .. }) => {
                    warn!(pod = %uid, "ztunnel refused the pod: {message}");
                    Ok(())
                }
                other => other,
            }
        }
        Command::Remove { uid, ack } => {
            let outcome = client.remove(&uid).await;
            let _ = ack.send(());
            match outcome {
                Err(EnrollmentError::Rejected { message, .. }) => {
                    warn!(pod = %uid, "ztunnel refused to remove the pod: {message}");
                    Ok(())
                }
                other => other,
            }
        }
    }
}
