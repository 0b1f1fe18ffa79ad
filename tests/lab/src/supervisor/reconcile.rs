//! One pass of the supervisor: compare what the controller wants with what runs, and act.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::desired::{self, Desired, DesiredPod, DesiredService, PodKey};
use super::enrollment::NodeAgent;
use super::hosts;
use super::placement::Scheduler;
use super::pod::{PodContext, RunningPod};
use super::services::{self, ServiceRules};
use super::waypoint;
use crate::name::{self, LabName};
use crate::paths::LabPaths;
use crate::record::{LabRecord, PodReport, PodsReport};
use crate::status_client::StatusClient;

/// How long a pod that could not be set up waits before the next attempt.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// The supervisor's state between passes.
pub struct Reconciler {
    ctx: PodContext,
    client: StatusClient,
    scheduler: Scheduler,
    node_netns: Vec<String>,
    agents: BTreeMap<u8, NodeAgent>,
    pods: BTreeMap<PodKey, RunningPod>,
    next_id: u32,
    pending: BTreeMap<PodKey, (String, Instant)>,
    services: Vec<DesiredService>,
    rules: Option<ServiceRules>,
    rules_retry: Option<Instant>,
    report: Option<PodsReport>,
    last_fetch_error: Option<String>,
}

impl Reconciler {
    /// A reconciler for a lab with no pods yet; starts the node agents when the lab runs
    /// ztunnels.
    pub fn new(lab: LabName, paths: LabPaths, record: &LabRecord) -> Self {
        let agents = if record.ztunnel {
            record
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.index,
                        NodeAgent::start(n.name.clone(), paths.enrollment_socket(&n.name)),
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Self {
            client: StatusClient::new(&paths.status_socket()),
            scheduler: Scheduler::new(record.nodes.len() as u8),
            node_netns: record.nodes.iter().map(|n| n.netns.clone()).collect(),
            agents,
            ctx: PodContext {
                lab,
                paths,
                bin_dir: record.bin_dir.clone(),
                cert_ttl_secs: record.cert_ttl_secs,
            },
            pods: BTreeMap::new(),
            next_id: 1,
            pending: BTreeMap::new(),
            services: Vec::new(),
            rules: None,
            rules_retry: None,
            report: None,
            last_fetch_error: None,
        }
    }

    /// One pass.
    pub async fn tick(&mut self) {
        let desired = match desired::fetch(&self.client).await {
            Ok(desired) => {
                if self.last_fetch_error.take().is_some() {
                    info!("the controller answers again");
                }
                desired
            }
            Err(e) => {
                let text = e.to_string();
                if self.last_fetch_error.as_deref() != Some(text.as_str()) {
                    warn!("{text}; pods keep running as they are until the controller answers");
                    self.last_fetch_error = Some(text);
                }
                return;
            }
        };
        self.apply(desired).await;
    }

    async fn apply(&mut self, desired: Desired) {
        self.services = desired.services;
        let wanted: BTreeMap<PodKey, DesiredPod> =
            desired.pods.into_iter().map(|p| (p.key(), p)).collect();
        let gone: Vec<PodKey> = self
            .pods
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.remove_pod(&key).await;
        }
        self.pending.retain(|key, _| wanted.contains_key(key));
        for (key, pod) in &wanted {
            match self.pods.get_mut(key) {
                Some(running) => {
                    running.enrolled = pod.enrolled;
                    let agent = self.agents.get(&running.place.node);
                    running.announce(agent, !pod.opted_out()).await;
                    if running.containers != pod.containers {
                        info!(pod = %key, "containers changed; restarting them");
                        running
                            .replace_containers(&self.ctx, pod.containers.clone())
                            .await;
                    }
                }
                None => self.add_pod(pod).await,
            }
        }
        self.record_statuses();
        self.refresh_hosts();
        self.refresh_rules().await;
        self.write_report();
    }

    async fn add_pod(&mut self, pod: &DesiredPod) {
        let key = pod.key();
        if self
            .pending
            .get(&key)
            .is_some_and(|(_, retry)| Instant::now() < *retry)
        {
            return;
        }
        let place = match self.scheduler.place(pod.node.as_deref()) {
            Ok(place) => place,
            Err(e) => return self.defer(key, e.to_string()),
        };
        let env = if waypoint::is_waypoint(&pod.labels) {
            match waypoint::credentials(&self.ctx, &key, &name::node_name(place.node)) {
                Ok(env) => env,
                Err(e) => {
                    self.scheduler.release(place);
                    return self.defer(key, e.to_string());
                }
            }
        } else {
            BTreeMap::new()
        };
        let id = self.next_id;
        self.next_id += 1;
        let hosts = hosts::render(&key.namespace, &key.name, place.ip, &self.services);
        match RunningPod::create(
            &self.ctx,
            key.clone(),
            id,
            place,
            pod.containers.clone(),
            hosts,
        )
        .await
        {
            Ok(mut running) => {
                running.enrolled = pod.enrolled;
                running.announced = !pod.opted_out();
                running.env = env;
                if let Err(e) = running.record_status(&self.ctx) {
                    warn!(pod = %key, "{e}; retrying");
                }
                running.start(&self.ctx, self.agents.get(&place.node));
                info!(pod = %key, node = %running.node_name(), ip = %place.ip, netns = %running.netns, "pod started");
                self.pending.remove(&key);
                self.pods.insert(key, running);
            }
            Err(e) => {
                self.scheduler.release(place);
                if let Err(error) = waypoint::revoke(&self.ctx, &key) {
                    warn!(pod = %key, "{error}");
                }
                self.defer(key, format!("cannot set up its network: {e}"));
            }
        }
    }

    fn defer(&mut self, key: PodKey, reason: String) {
        let known = self.pending.get(&key).is_some_and(|(r, _)| *r == reason);
        if !known {
            error!(pod = %key, "cannot run the pod: {reason}; retrying every {RETRY_DELAY:?}");
        }
        self.pending
            .insert(key, (reason, Instant::now() + RETRY_DELAY));
    }

    async fn remove_pod(&mut self, key: &PodKey) {
        let Some(running) = self.pods.remove(key) else {
            return;
        };
        let place = running.place;
        let agent = self.agents.get(&place.node);
        match running.destroy(&self.ctx, agent).await {
            Ok(()) => info!(pod = %key, "pod removed"),
            Err(e) => error!(pod = %key, "pod removed, but its network could not be deleted: {e}"),
        }
        self.scheduler.release(place);
    }

    fn record_statuses(&mut self) {
        for running in self.pods.values_mut().filter(|p| !p.recorded) {
            if let Err(e) = running.record_status(&self.ctx) {
                warn!(pod = %running.key, "{e}; retrying");
            }
        }
    }

    fn refresh_hosts(&mut self) {
        for running in self.pods.values_mut() {
            let text = hosts::render(
                &running.key.namespace,
                &running.key.name,
                running.place.ip,
                &self.services,
            );
            if text == running.hosts {
                continue;
            }
            match hosts::write(&running.netns, &text) {
                Ok(()) => running.hosts = text,
                Err(e) => warn!(pod = %running.key, "{e}"),
            }
        }
    }

    async fn refresh_rules(&mut self) {
        let rules = services::render(&self.services);
        if self.rules.as_ref() == Some(&rules)
            || self.rules_retry.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        for skipped in &rules.skipped {
            warn!(port = %skipped, "named target ports are not translated by the lab's kube-proxy; use a port number");
        }
        for netns in &self.node_netns {
            if let Err(e) = services::apply(netns, &rules).await {
                error!(%netns, "cannot install the service rules: {e}; retrying in {RETRY_DELAY:?}");
                self.rules_retry = Some(Instant::now() + RETRY_DELAY);
                return;
            }
        }
        info!(
            rules = rules.rules.len(),
            "service rules installed on every node"
        );
        self.rules_retry = None;
        self.rules = Some(rules);
    }

    fn write_report(&mut self) {
        let report = self.report();
        if self.report.as_ref() == Some(&report) {
            return;
        }
        match report.save(&self.ctx.paths.pods_report()) {
            Ok(()) => self.report = Some(report),
            Err(e) => warn!("{e}"),
        }
    }

    fn report(&self) -> PodsReport {
        let pods = self
            .pods
            .values()
            .map(|p| {
                let state = p.processes.as_ref().map(|pr| pr.state.clone());
                PodReport {
                    namespace: p.key.namespace.clone(),
                    name: p.key.name.clone(),
                    node: p.node_name(),
                    ip: p.place.ip,
                    netns: p.netns.clone(),
                    enrolled: p.enrolled,
                    captured: self.agents.get(&p.place.node).map(|a| a.captured(&p.uid())),
                    pids: state
                        .as_ref()
                        .map(|s| {
                            s.pids
                                .lock()
                                .expect("pids lock")
                                .values()
                                .copied()
                                .collect()
                        })
                        .unwrap_or_default(),
                    restarts: state.map_or(0, |s| s.restarts.load(Ordering::Relaxed)),
                }
            })
            .collect();
        let pending = self
            .pending
            .iter()
            .map(|(key, (reason, _))| format!("{key}: {reason}"))
            .collect();
        PodsReport { pods, pending }
    }
}
