//! Turning the manifest directory into a [`DesiredState`], again and again: every load reads
//! all files, and for every object that is refused this time, the version that was good last
//! time stays in force. Virtual IPs, Deployment pods, the objects that run waypoints and pod
//! status are tied on here, because each depends on more than one object.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use super::manifest::{ParsedFile, object_rejection, parse_manifest_text};
use super::object::{Kind, NamespacedName, Object, ObjectKey};
use super::pod_status::{PodStatusRecord, read_pod_statuses};
use super::rejection::{Problem, Rejection};
use super::service::ServiceManifest;
use super::snapshot::DesiredState;
use super::vip::{DEFAULT_SERVICE_CIDR, VipTable, VipTableError};
use super::waypoint::{waypoint_deployment, waypoint_service};
use super::workload::{Deployment, Pod};
use pod_edits::PodEdits;

/// The pod status records of the state directory, and the rejected ones.
type PodStatuses = (Vec<PodStatusRecord>, Vec<Rejection>);

/// File name endings the store reads; other files in the directory are ignored.
pub const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Where the store reads and keeps things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The directory of manifests (not searched recursively).
    pub manifest_dir: PathBuf,
    /// The controller's state directory: virtual IP table and pod status records.
    pub state_dir: PathBuf,
    /// Where virtual IPs of services without `spec.clusterIP` come from.
    pub service_cidr: IpNet,
}

impl StoreConfig {
    /// A configuration with the default service CIDR.
    pub fn new(manifest_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            manifest_dir: manifest_dir.into(),
            state_dir: state_dir.into(),
            service_cidr: DEFAULT_SERVICE_CIDR
                .parse()
                .expect("the default CIDR parses"),
        }
    }
}

/// Why a load could not happen at all (as opposed to objects being refused).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest directory could not be listed.
    #[error("cannot list the manifest directory {path}: {source}")]
    ListManifests {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The virtual IP table could not be read or written.
    #[error(transparent)]
    VipTable(#[from] VipTableError),
}

/// Where an accepted object was read.
#[derive(Clone, Debug)]
struct Origin {
    file: Arc<str>,
    document: usize,
}

#[derive(Clone, Debug)]
struct Accepted {
    /// Shared with the cached parse of its file and with the next load: a load copies each
    /// object only into the snapshot it makes.
    object: Arc<Object>,
    origin: Origin,
}

/// A file as last read and what parsing it gave.
#[derive(Debug)]
struct ParsedText {
    text: String,
    parsed: ParsedFile,
}

/// Loads the desired state, keeping what it needs between loads: the last good version of
/// every object, the virtual IP table, and each file's last parse.
#[derive(Debug)]
pub struct Loader {
    config: StoreConfig,
    last_good: BTreeMap<ObjectKey, Accepted>,
    vips: VipTable,
    /// By file label. Parsing is a pure function of label and text, so a file whose text did
    /// not change is not parsed again: a one-file change in a large directory then costs one
    /// parse, not one per file (parsing dominates a reload).
    parsed: HashMap<Arc<str>, ParsedText>,
    /// The last snapshot made, which a reload that only edits pods starts from.
    last: Option<LastLoad>,
}

/// A snapshot the loader made, and the pod status records it merged.
#[derive(Debug)]
struct LastLoad {
    state: Arc<DesiredState>,
    statuses: PodStatuses,
}

impl Loader {
    /// A loader with no history; reads the virtual IP table from the state directory.
    pub fn open(config: StoreConfig) -> Result<Self, LoadError> {
        let vips = VipTable::read(&config.state_dir)?;
        Ok(Loader {
            config,
            last_good: BTreeMap::new(),
            vips,
            parsed: HashMap::new(),
            last: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Reads the whole directory and makes a new snapshot; writes the virtual IP table when it
    /// changed. On error nothing changes.
    pub fn reload(&mut self) -> Result<Arc<DesiredState>, LoadError> {
        let files = read_manifest_files(&self.config.manifest_dir)?;
        let mut parsed_now = HashMap::with_capacity(files.len());
        let mut edits = PodEdits::default();
        let mut unreadable = BTreeMap::new();
        let mut order = Vec::with_capacity(files.len());
        for (label, text) in files {
            order.push(label.clone());
            let text = match text {
                Ok(text) => text,
                Err(e) => {
                    let problem = Problem::Unreadable {
                        reason: e.to_string(),
                    };
                    let rejection = Rejection::of_file(label.clone(), 0, problem);
                    let parsed = ParsedFile {
                        documents: Vec::new(),
                        file_rejections: vec![rejection],
                    };
                    edits.other_change();
                    unreadable.insert(label, parsed);
                    continue;
                }
            };
            let previous = self.parsed.remove(&label);
            let entry = match previous {
                Some(previous) if previous.text == text => previous,
                previous => {
                    let parsed = parse_manifest_text(label.clone(), &text);
                    let before = previous.as_ref().map(|p| &p.parsed);
                    edits.compare_file(&label, before, &parsed, &self.last_good);
                    ParsedText { parsed, text }
                }
            };
            parsed_now.insert(label, entry);
        }
        if !self.parsed.is_empty() {
            // Files that are gone (or unreadable now); they are forgotten.
            edits.other_change();
        }
        self.parsed = parsed_now;
        let statuses = read_pod_statuses(&self.config.state_dir);
        if let Some(last) = &self.last
            && let Some(state) = edits.apply(last, &statuses, &mut self.last_good)
        {
            let state = Arc::new(state);
            self.last = Some(LastLoad {
                state: state.clone(),
                statuses,
            });
            return Ok(state);
        }

        let mut round = Round::default();
        for label in order {
            let parsed = match unreadable.get(&label) {
                Some(parsed) => parsed,
                None => &self.parsed[&label].parsed,
            };
            round.add_file(label, parsed);
        }
        round.keep_last_good(&self.last_good);
        let mut waypoints = round.plan_waypoints();
        let (vips, table) = round.assign_vips(
            &self.vips,
            &self.last_good,
            self.config.service_cidr,
            &mut waypoints,
        );
        if table != self.vips {
            table.write(&self.config.state_dir)?;
            self.vips = table;
        }
        let state = Arc::new(round.assemble(vips, waypoints, &statuses));
        self.last_good = round.candidates;
        self.last = Some(LastLoad {
            state: state.clone(),
            statuses,
        });
        Ok(state)
    }
}

/// Reads a directory of manifests once, e.g. for a tool or a test. Like a controller start, it
/// allocates virtual IPs and records them in the state directory.
pub fn load(config: &StoreConfig) -> Result<DesiredState, LoadError> {
    let state = Loader::open(config.clone())?.reload()?;
    Ok(Arc::unwrap_or_clone(state))
}

/// Whether a path names a file the store reads: a known extension and not hidden (atomic
/// writes use hidden temporary files).
pub fn is_manifest_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_none_or(|name| name.to_string_lossy().starts_with('.'));
    let known = path
        .extension()
        .is_some_and(|ext| MANIFEST_EXTENSIONS.iter().any(|known| ext == *known));
    !hidden && known && path.is_file()
}

/// The label a file is named by in messages: `<directory name>/<file name>`.
pub(crate) fn file_label(dir: &Path, path: &Path) -> Arc<str> {
    let dir_name = dir.file_name().unwrap_or_default().to_string_lossy();
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    if dir_name.is_empty() {
        file_name.into()
    } else {
        format!("{dir_name}/{file_name}").into()
    }
}

type FileText = (Arc<str>, std::io::Result<String>);

fn read_manifest_files(dir: &Path) -> Result<Vec<FileText>, LoadError> {
    let list_error = |source| LoadError::ListManifests {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        if is_manifest_file(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| (file_label(dir, &path), std::fs::read_to_string(&path)))
        .collect())
}

/// The objects the mesh makes to run one waypoint Gateway; `None` where the user declared an
/// object of the same name, which then stands in.
struct PlannedWaypoint {
    gateway: ObjectKey,
    origin: Origin,
    service: Option<ServiceManifest>,
    deployment: Option<Deployment>,
}

impl PlannedWaypoint {
    fn rejection(&self, field: &str, problem: Problem) -> Rejection {
        let origin = &self.origin;
        object_rejection(
            &origin.file,
            origin.document,
            &self.gateway,
            field.to_string(),
            problem,
        )
    }
}

/// The work of one load.
#[derive(Default)]
struct Round {
    candidates: BTreeMap<ObjectKey, Accepted>,
    rejected: Vec<Rejection>,
    /// Objects refused this time whose last good version stays.
    refused_keys: BTreeSet<ObjectKey>,
    /// Files that could not be read as a whole: their objects' last good versions stay.
    failed_files: BTreeSet<Arc<str>>,
}

impl Round {
    fn add_file(&mut self, label: Arc<str>, parsed: &ParsedFile) {
        if parsed.failed() {
            self.failed_files.insert(label.clone());
        }
        self.rejected.extend(parsed.file_rejections.iter().cloned());
        for document in &parsed.documents {
            let object = match &document.result {
                Ok(object) => object.clone(),
                Err(rejections) => {
                    self.rejected.extend(rejections.iter().cloned());
                    match document.key.clone() {
                        Some(key) => self.refused_keys.insert(key),
                        // Which object this was is unknown: keep all of the file's old ones.
                        None => self.failed_files.insert(label.clone()),
                    };
                    continue;
                }
            };
            let key = object.key();
            if let Some(first) = self.candidates.get(&key) {
                let problem = Problem::Duplicate {
                    file: first.origin.file.clone(),
                    document: first.origin.document,
                };
                let rejection =
                    object_rejection(&label, document.index, &key, String::new(), problem);
                self.rejected.push(rejection);
                continue;
            }
            let origin = Origin {
                file: label.clone(),
                document: document.index,
            };
            self.candidates.insert(key, Accepted { object, origin });
        }
    }

    fn keep_last_good(&mut self, last_good: &BTreeMap<ObjectKey, Accepted>) {
        for (key, accepted) in last_good {
            let refused = self.refused_keys.contains(key)
                || self.failed_files.contains(&accepted.origin.file);
            if refused && !self.candidates.contains_key(key) {
                self.candidates.insert(key.clone(), accepted.clone());
            }
        }
    }

    /// The Service and Deployment of every waypoint Gateway (see [`super::waypoint`]). Where a
    /// declared object has one of their names, the declared one wins and the Gateway is
    /// reported.
    fn plan_waypoints(&mut self) -> Vec<PlannedWaypoint> {
        let mut planned = Vec::new();
        for (key, accepted) in &self.candidates {
            let Object::Gateway(gateway) = &*accepted.object else {
                continue;
            };
            if !gateway.is_waypoint {
                continue;
            }
            let mut waypoint = PlannedWaypoint {
                gateway: key.clone(),
                origin: accepted.origin.clone(),
                service: Some(waypoint_service(gateway)),
                deployment: Some(waypoint_deployment(gateway)),
            };
            let declared = |kind: Kind, name: &str| {
                let key = ObjectKey::namespaced(kind, &gateway.namespace, name);
                self.candidates.get(&key).map(|other| {
                    let object = format!("{}/{name}", gateway.namespace);
                    (kind, object, other.origin.file.clone())
                })
            };
            if let Some((_, service, file)) = declared(Kind::Service, &gateway.name) {
                let problem = Problem::WaypointServiceDeclared { service, file };
                self.rejected
                    .push(waypoint.rejection("metadata.name", problem));
                waypoint.service = None;
            }
            let deployment = waypoint.deployment.as_ref().expect("just made");
            let pods = deployment.pods();
            let clash = declared(Kind::Deployment, &deployment.name)
                .or_else(|| pods.iter().find_map(|pod| declared(Kind::Pod, &pod.name)));
            if let Some((kind, object, file)) = clash {
                let problem = Problem::WaypointPodDeclared { kind, object, file };
                self.rejected
                    .push(waypoint.rejection("metadata.name", problem));
                waypoint.deployment = None;
            }
            planned.push(waypoint);
        }
        planned
    }

    /// The address each service asks for: `spec.clusterIP`, or `None` for any.
    fn vip_requests(
        &self,
        waypoints: &[PlannedWaypoint],
    ) -> BTreeMap<NamespacedName, Option<IpAddr>> {
        let declared = self
            .candidates
            .values()
            .filter_map(|accepted| match &*accepted.object {
                Object::Service(s) => Some((s.namespaced_name(), s.cluster_ip)),
                _ => None,
            });
        let generated = waypoints
            .iter()
            .filter_map(|w| w.service.as_ref())
            .map(|s| (s.namespaced_name(), s.cluster_ip));
        declared.chain(generated).collect()
    }

    /// Gives services their virtual IPs, the waypoints' generated ones included. A service
    /// refused for its address falls back to its last good version (which held an address of
    /// its own), or is dropped when it has none; a waypoint's is dropped and its Gateway
    /// reported.
    fn assign_vips(
        &mut self,
        table: &VipTable,
        last_good: &BTreeMap<ObjectKey, Accepted>,
        cidr: IpNet,
        waypoints: &mut [PlannedWaypoint],
    ) -> (BTreeMap<NamespacedName, IpAddr>, VipTable) {
        let mut reverted = BTreeSet::new();
        loop {
            let assignment = table.assign(&self.vip_requests(waypoints), cidr);
            if assignment.conflicts.is_empty() {
                return (assignment.vips, assignment.table);
            }
            for (service, problem) in assignment.conflicts {
                let generated = waypoints.iter_mut().find(|w| {
                    w.service
                        .as_ref()
                        .is_some_and(|s| s.namespaced_name() == service)
                });
                if let Some(waypoint) = generated {
                    waypoint.service = None;
                    self.rejected.push(waypoint.rejection("", problem));
                    continue;
                }
                let key = ObjectKey::namespaced(Kind::Service, &service.namespace, &service.name);
                let Some(refused) = self.candidates.remove(&key) else {
                    continue;
                };
                let field = match problem {
                    Problem::VipTaken { .. } => "spec.clusterIP".to_string(),
                    _ => String::new(),
                };
                let origin = &refused.origin;
                let rejection =
                    object_rejection(&origin.file, origin.document, &key, field, problem);
                self.rejected.push(rejection);
                match last_good.get(&key) {
                    Some(previous)
                        if previous.object != refused.object && reverted.insert(key.clone()) =>
                    {
                        self.candidates.insert(key, previous.clone());
                    }
                    _ => {}
                }
            }
        }
    }

    /// Builds the snapshot: objects by kind, Deployment pods, waypoints, pod status records
    /// merged.
    fn assemble(
        &mut self,
        vips: BTreeMap<NamespacedName, IpAddr>,
        waypoints: Vec<PlannedWaypoint>,
        statuses: &PodStatuses,
    ) -> DesiredState {
        let mut state = DesiredState::default();
        for accepted in self.candidates.values() {
            // Each arm shares the object (an `Arc`), it does not copy it.
            match Object::clone(&accepted.object) {
                Object::Namespace(ns) => {
                    state.namespaces.insert(ns.name.clone(), ns);
                }
                Object::Pod(pod) => {
                    state.pods.insert(pod.namespaced_name(), pod);
                }
                Object::Deployment(d) => {
                    let name = NamespacedName::new(d.namespace.clone(), d.name.clone());
                    state.deployments.insert(name, d);
                }
                Object::Service(s) => {
                    let name = s.namespaced_name();
                    if let Some(vip) = vips.get(&name) {
                        state
                            .services
                            .insert(name, Arc::new(ServiceManifest::clone(&s).with_vip(*vip)));
                    }
                }
                Object::AuthorizationPolicy(p) => {
                    let name = NamespacedName::new(p.namespace.clone(), p.name.clone());
                    state.authorization_policies.insert(name, p);
                }
                Object::Gateway(g) => {
                    state.gateways.insert(g.namespaced_name(), g);
                }
                Object::HttpRoute(r) => {
                    let name = NamespacedName::new(r.namespace.clone(), r.name.clone());
                    state.http_routes.insert(name, r);
                }
            }
        }
        self.expand_deployments(&mut state);
        add_waypoints(&mut state, waypoints, &vips);
        let (records, rejections) = statuses;
        for record in records {
            let name = NamespacedName::new(record.namespace.as_str(), record.name.as_str());
            if let Some(pod) = state.pods.get_mut(&name) {
                merge_status(Arc::make_mut(pod), record);
            }
        }
        self.rejected.extend(rejections.iter().cloned());
        state.rejected = std::mem::take(&mut self.rejected);
        state
    }

    /// Adds the pods of every Deployment; a pod whose name a standalone Pod already has is not
    /// made, and the Deployment is reported.
    fn expand_deployments(&mut self, state: &mut DesiredState) {
        for (name, deployment) in &state.deployments {
            let key = ObjectKey::namespaced(Kind::Deployment, &name.namespace, &name.name);
            let Some(accepted) = self.candidates.get(&key) else {
                continue;
            };
            for pod in deployment.pods() {
                let pod_name = pod.namespaced_name();
                let standalone =
                    ObjectKey::namespaced(Kind::Pod, &pod_name.namespace, &pod_name.name);
                if let Some(other) = self.candidates.get(&standalone) {
                    let problem = Problem::PodNameClash {
                        pod: pod_name.to_string(),
                        file: other.origin.file.clone(),
                    };
                    let origin = &accepted.origin;
                    let field = "metadata.name".to_string();
                    self.rejected.push(object_rejection(
                        &origin.file,
                        origin.document,
                        &key,
                        field,
                        problem,
                    ));
                    continue;
                }
                state.pods.insert(pod_name, Arc::new(pod));
            }
        }
    }
}

/// Adds the objects that run waypoints. Names were checked against declared objects when the
/// waypoints were planned, so nothing declared is replaced.
fn add_waypoints(
    state: &mut DesiredState,
    waypoints: Vec<PlannedWaypoint>,
    vips: &BTreeMap<NamespacedName, IpAddr>,
) {
    for waypoint in waypoints {
        if let Some(service) = waypoint.service {
            let name = service.namespaced_name();
            if let Some(vip) = vips.get(&name) {
                state
                    .services
                    .insert(name, Arc::new(service.with_vip(*vip)));
            }
        }
        if let Some(deployment) = waypoint.deployment {
            for pod in deployment.pods() {
                state
                    .pods
                    .entry(pod.namespaced_name())
                    .or_insert_with(|| Arc::new(pod));
            }
            let name = NamespacedName::new(deployment.namespace.clone(), deployment.name.clone());
            state.deployments.insert(name, Arc::new(deployment));
        }
    }
}

/// A status record overrides what the manifest says, field by field.
fn merge_status(pod: &mut Pod, record: &PodStatusRecord) {
    if let Some(node) = &record.node_name {
        pod.node = Some(node.as_str().into());
    }
    if let Some(ip) = record.pod_ip {
        pod.ip = Some(ip);
    }
    if let Some(phase) = &record.phase {
        pod.phase = Some(phase.clone());
    }
}

mod pod_edits;

#[cfg(test)]
mod tests;
