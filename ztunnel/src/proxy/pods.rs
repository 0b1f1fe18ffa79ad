//! The lifecycle of each pod's capture.
//!
//! The node agent announces pods (uid and network namespace) through the enrollment API; the
//! controller says, through discovery, which of them are in the mesh. A pod is captured while
//! both hold: announced, and its workload has tunnel protocol HBONE and is placed on this
//! node. Capturing installs the redirection rules, starts the listeners inside the pod's
//! namespace and asks for the pod's certificate; releasing stops the listeners, closes the
//! pod's connections and removes the rules. Neither restarts the pod.
//!
//! Shutting down (SIGTERM) is not releasing: the listeners close and open connections get
//! the drain deadline, but the rules stay. A pod in the mesh must never talk around the
//! tunnel, so while no tunnel runs its connections are redirected to closed ports and refused
//! (fail closed) until the next ztunnel captures it again (installing is idempotent). A pod
//! that left the mesh meanwhile loses those stale rules as soon as discovery says so.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::ProxyContext;
use crate::hbone::{ClientSettings, Dialer, HboneClient, HboneServer, ServerSettings};
use crate::identity::SpiffeId;
use crate::inpod::{
    EnrollmentEvent, HBONE_PORT, INBOUND_CAPTURE_PORT, Netns, NetnsError, OUTBOUND_CAPTURE_PORT,
    PROXY_MARK, PodUid, RulesError, bind_listener, rules,
};
use crate::state::{DiscoverySnapshot, Tunnel, WorkloadInfo};

/// A captured pod, as its connection handlers see it.
pub struct PodCapture {
    /// The pod's workload uid.
    pub uid: PodUid,
    /// The pod's network namespace: listeners and upstream sockets are made in it.
    pub netns: Arc<Netns>,
    /// The pod's address.
    pub ip: IpAddr,
    /// The identity the pod's tunnels speak for.
    pub identity: SpiffeId,
    /// The pod's own HBONE pool: its tunnels leave from its namespace, with its address.
    pub hbone: HboneClient,
    /// Cancelled when the pod is released: every connection of the pod ends.
    pub released: CancellationToken,
}

/// Why a pod could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot install the redirection rules: {0}")]
    Rules(#[from] RulesError),
    #[error("cannot open the pod's listeners: {0}")]
    Listen(#[from] NetnsError),
    #[error("the workload of pod {0} has no IP address")]
    NoAddress(PodUid),
}

struct Capture {
    pod: Arc<PodCapture>,
    /// Stops the listeners.
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

struct AnnouncedPod {
    netns: Arc<Netns>,
    capture: Option<Capture>,
    /// Whether the pod's namespace may hold redirection rules while it is not captured: left
    /// by an earlier ztunnel process that shut down, until this one removes them.
    stale_rules: bool,
}

impl AnnouncedPod {
    fn new(netns: Netns) -> Self {
        Self {
            netns: Arc::new(netns),
            capture: None,
            stale_rules: true,
        }
    }
}

/// One announced pod, as the admin API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PodSummary {
    /// The workload uid.
    pub uid: String,
    /// The pod's network namespace.
    pub netns: String,
    /// Whether the pod is captured (in the mesh) right now.
    pub captured: bool,
    /// The captured pod's address and identity.
    pub ip: Option<IpAddr>,
    pub identity: Option<String>,
}

/// Captures and releases pods as enrollment and discovery change.
pub struct PodManager {
    ctx: Arc<ProxyContext>,
    pods: HashMap<PodUid, AnnouncedPod>,
    summary: watch::Sender<Vec<PodSummary>>,
}

impl PodManager {
    /// A manager with no pods yet, and a receiver of its pod list.
    pub fn new(ctx: Arc<ProxyContext>) -> (Self, watch::Receiver<Vec<PodSummary>>) {
        let (summary, pods) = watch::channel(Vec::new());
        let manager = Self {
            ctx,
            pods: HashMap::new(),
            summary,
        };
        (manager, pods)
    }

    fn publish(&self) {
        let mut list: Vec<PodSummary> = self
            .pods
            .iter()
            .map(|(uid, pod)| PodSummary {
                uid: uid.to_string(),
                netns: pod.netns.path().display().to_string(),
                captured: pod.capture.is_some(),
                ip: pod.capture.as_ref().map(|c| c.pod.ip),
                identity: pod.capture.as_ref().map(|c| c.pod.identity.to_string()),
            })
            .collect();
        list.sort_by(|a, b| a.uid.cmp(&b.uid));
        self.summary.send_replace(list);
    }

    /// Serves enrollment events and discovery changes until `shutdown`, then releases every
    /// pod (listeners first; connections get the drain deadline).
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<EnrollmentEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut discovery = self.ctx.discovery.clone();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        self.handle(event).await;
                        self.publish();
                    }
                    None => break,
                },
                changed = discovery.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snapshot = discovery.borrow_and_update().clone();
                    self.reconcile_all(&snapshot).await;
                    self.publish();
                    let revoked = self
                        .ctx
                        .tracker
                        .reevaluate(&snapshot, self.ctx.settings.bypass_protection);
                    for closed in &revoked {
                        self.ctx.metrics.failure(closed.direction, closed.reason);
                    }
                    if !revoked.is_empty() {
                        info!(closed = revoked.len(), "a discovery change closed open connections");
                    }
                }
                () = super::stopped(&mut shutdown) => break,
            }
        }
        self.drain().await;
    }

    async fn handle(&mut self, event: EnrollmentEvent) {
        let snapshot = self.ctx.snapshot();
        match event {
            EnrollmentEvent::Add { uid, netns, reply } => {
                self.forget(&uid).await;
                self.pods.insert(uid.clone(), AnnouncedPod::new(netns));
                reply.send(self.reconcile(&uid, &snapshot).await);
            }
            EnrollmentEvent::Remove { uid, reply } => {
                self.forget(&uid).await;
                reply.ok();
            }
            EnrollmentEvent::Snapshot { pods, reply } => {
                let wanted: HashMap<PodUid, Netns> = pods.into_iter().collect();
                let stale: Vec<PodUid> = self
                    .pods
                    .keys()
                    .filter(|u| !wanted.contains_key(*u))
                    .cloned()
                    .collect();
                for uid in stale {
                    self.forget(&uid).await;
                }
                let mut failures = Vec::new();
                for (uid, netns) in wanted {
                    if !self.pods.contains_key(&uid) {
                        self.pods.insert(uid.clone(), AnnouncedPod::new(netns));
                    }
                    if let Err(e) = self.reconcile(&uid, &snapshot).await {
                        failures.push(format!("{uid}: {e}"));
                    }
                }
                reply.send(if failures.is_empty() {
                    Ok(())
                } else {
                    Err(failures.join("; "))
                });
            }
        }
    }

    async fn reconcile_all(&mut self, snapshot: &DiscoverySnapshot) {
        let uids: Vec<PodUid> = self.pods.keys().cloned().collect();
        for uid in uids {
            if let Err(error) = self.reconcile(&uid, snapshot).await {
                warn!(pod = %uid, %error, "cannot capture pod; it stays outside the mesh until the next change");
            }
        }
    }

    /// Captures or releases one announced pod to match discovery.
    async fn reconcile(
        &mut self,
        uid: &PodUid,
        snapshot: &DiscoverySnapshot,
    ) -> Result<(), String> {
        let known = snapshot.workload_by_uid(uid.as_str());
        let workload = known
            .clone()
            .filter(|w| w.tunnel == Tunnel::Hbone && *w.node == *self.ctx.node);
        let Some(pod) = self.pods.get_mut(uid) else {
            return Ok(());
        };
        match (&pod.capture, workload) {
            (Some(capture), Some(w))
                if capture.pod.identity == w.identity && w.addresses.contains(&capture.pod.ip) =>
            {
                Ok(())
            }
            (Some(_), Some(w)) => {
                let capture = pod.capture.take().expect("checked above");
                release(&self.ctx, capture, Rules::Keep).await;
                self.capture(uid, w).await
            }
            (None, Some(w)) => self.capture(uid, w).await,
            (Some(_), None) => {
                let capture = pod.capture.take().expect("checked above");
                release(&self.ctx, capture, Rules::Remove).await;
                pod.stale_rules = false;
                Ok(())
            }
            // Only a workload discovery knows to be outside the mesh loses stale rules: an
            // unknown one (discovery not synced yet, say) keeps them and stays fail closed.
            (None, None) if pod.stale_rules && known.is_some() => {
                rules::remove(&pod.netns)
                    .await
                    .map_err(|e| format!("cannot remove stale redirection rules: {e}"))?;
                info!(pod = %uid, "removed the redirection rules an earlier ztunnel left");
                pod.stale_rules = false;
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    async fn capture(&mut self, uid: &PodUid, workload: Arc<WorkloadInfo>) -> Result<(), String> {
        let Some(pod) = self.pods.get_mut(uid) else {
            return Ok(());
        };
        match start_capture(&self.ctx, uid, pod.netns.clone(), &workload).await {
            Ok(capture) => {
                info!(pod = %uid, identity = %workload.identity, ip = %capture.pod.ip, "pod captured");
                pod.capture = Some(capture);
                pod.stale_rules = true;
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    async fn forget(&mut self, uid: &PodUid) {
        if let Some(capture) = self.pods.remove(uid).and_then(|pod| pod.capture) {
            release(&self.ctx, capture, Rules::Remove).await;
        }
        self.forget_unused_identities();
    }

    /// Stops renewing certificates no captured pod uses any more.
    fn forget_unused_identities(&self) {
        for status in self.ctx.certs.certificates() {
            let used = self
                .pods
                .values()
                .filter_map(|p| p.capture.as_ref())
                .any(|c| c.pod.identity == status.identity);
            if !used {
                self.ctx.certs.forget(&status.identity);
            }
        }
    }

    /// Shutdown: every listener closes at once; open connections (tunnels to the pods, their
    /// outbound and plaintext connections) may finish until the drain deadline, then the ones
    /// left are closed. The rules stay (see the module doc).
    async fn drain(&mut self) {
        let captures: Vec<Capture> = self
            .pods
            .values_mut()
            .filter_map(|p| p.capture.take())
            .collect();
        for capture in &captures {
            let _ = capture.stop.send(true);
        }
        let deadline = self.ctx.settings.drain_deadline;
        info!(
            pods = captures.len(),
            open = self.open_connections(),
            deadline_s = deadline.as_secs_f64(),
            "draining: listeners closed; open connections may finish until the deadline"
        );
        let finished = tokio::time::timeout(deadline, async {
            while self.open_connections() > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        })
        .await;
        if finished.is_err() {
            info!(
                open = self.open_connections(),
                "drain deadline passed; closing the connections still open"
            );
        }
        for capture in &captures {
            capture.pod.released.cancel();
        }
        for capture in captures {
            release(&self.ctx, capture, Rules::Keep).await;
        }
    }

    fn open_connections(&self) -> usize {
        self.ctx.tracker.len() + self.ctx.accepted.get()
    }
}

/// How often a drain looks whether every connection has finished.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Whether releasing a capture removes the pod's redirection rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    /// The pod left the mesh or is gone.
    Remove,
    /// The pod is captured again at once, or the tunnel shuts down and the pod must stay
    /// fail closed.
    Keep,
}

/// Installs the rules, opens the three listeners and starts serving them.
async fn start_capture(
    ctx: &Arc<ProxyContext>,
    uid: &PodUid,
    netns: Arc<Netns>,
    workload: &WorkloadInfo,
) -> Result<Capture, CaptureError> {
    let ip = *workload
        .addresses
        .first()
        .ok_or_else(|| CaptureError::NoAddress(uid.clone()))?;
    let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let outbound = bind_listener(&netns, any(OUTBOUND_CAPTURE_PORT))?;
    let plaintext = bind_listener(&netns, any(INBOUND_CAPTURE_PORT))?;
    let hbone = bind_listener(&netns, any(HBONE_PORT))?;
    // Listeners first, rules second: a captured connection never finds nobody listening.
    rules::install(&netns).await?;
    ctx.certs.ensure(&workload.identity);

    let pod = Arc::new(PodCapture {
        uid: uid.clone(),
        netns: netns.clone(),
        ip,
        identity: workload.identity.clone(),
        hbone: HboneClient::with_dialer(
            ClientSettings::default(),
            ctx.client_metrics.clone(),
            pod_dialer(netns),
        ),
        released: CancellationToken::new(),
    });
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let span = info_span!("pod", uid = %uid);
    tasks.spawn(
        super::outbound::serve(ctx.clone(), pod.clone(), outbound, stopped.clone())
            .instrument(span.clone()),
    );
    tasks.spawn(
        super::plaintext::serve(ctx.clone(), pod.clone(), plaintext, stopped.clone())
            .instrument(span.clone()),
    );
    let server = HboneServer::new(
        super::inbound::InboundHandler::new(ctx.clone(), pod.clone()),
        super::rotating_server_config(ctx.certs.clone(), pod.identity.clone(), ctx.trust.clone()),
        ServerSettings {
            drain_deadline: ctx.settings.drain_deadline,
            ..ServerSettings::default()
        },
        ctx.server_metrics.clone(),
    );
    let mut hbone_stop = stopped;
    tasks.spawn(
        async move {
            server
                .serve(hbone, async move {
                    let _ = hbone_stop.wait_for(|s| *s).await;
                })
                .await;
        }
        .instrument(span),
    );
    Ok(Capture { pod, stop, tasks })
}

/// Stops a capture: listeners, then connections, then (when the pod leaves the mesh or is
/// gone) the rules.
async fn release(ctx: &ProxyContext, mut capture: Capture, fate: Rules) {
    let _ = capture.stop.send(true);
    capture.pod.released.cancel();
    ctx.tracker.close_pod(&capture.pod.uid);
    // The HBONE server drains its tunnels; give it the deadline, then stop whatever is left.
    let _ = tokio::time::timeout(ctx.settings.drain_deadline, async {
        while capture.tasks.join_next().await.is_some() {}
    })
    .await;
    capture.tasks.abort_all();
    if fate == Rules::Remove
        && let Err(error) = rules::remove(&capture.pod.netns).await
    {
        warn!(pod = %capture.pod.uid, %error, "cannot remove the redirection rules");
    }
    info!(pod = %capture.pod.uid, "pod released");
}

/// Opens tunnel connections from inside the pod's namespace, marked so that the pod's own
/// capture rules let them out.
fn pod_dialer(netns: Arc<Netns>) -> Dialer {
    Arc::new(move |dst| {
        let netns = netns.clone();
        Box::pin(async move {
            crate::inpod::connect(&netns, dst, Some(PROXY_MARK))
                .await
                .map_err(std::io::Error::other)
        })
    })
}
