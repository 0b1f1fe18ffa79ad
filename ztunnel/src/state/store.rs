//! The writer side of discovery: applies xDS updates to the current resources and publishes
//! a fresh [`DiscoverySnapshot`] after each one. Owned by the xDS client's task, so it needs
//! no lock; readers only ever see whole snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_proto::istio::security::Authorization;
use mesh_proto::istio::workload::{Address, address};
use prost::Message;
use tokio::sync::watch;

use super::convert::{policy_key, service_key, validate_authorization};
use super::model::{ServiceInfo, WorkloadInfo};
use super::snapshot::{DiscoverySnapshot, Stamped};
use super::{MeshDefaults, ResourceError};
use crate::xds::{NamedResource, Rejection, ResourceHandler, ResourceUpdate};

/// The workloads, services and policies received so far, and the channel their snapshots
/// are published on.
#[derive(Debug)]
pub struct DiscoveryStore {
    defaults: MeshDefaults,
    workloads: HashMap<Arc<str>, Stamped<WorkloadInfo>>,
    services: HashMap<Arc<str>, Stamped<ServiceInfo>>,
    policies: HashMap<Arc<str>, Arc<Authorization>>,
    next_stamp: u64,
    snapshots: watch::Sender<Arc<DiscoverySnapshot>>,
}

impl DiscoveryStore {
    /// An empty store; its first snapshot is empty too.
    pub fn new(defaults: MeshDefaults) -> Self {
        let empty = DiscoverySnapshot::build(
            defaults.network.clone(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        let (snapshots, _) = watch::channel(Arc::new(empty));
        Self {
            defaults,
            workloads: HashMap::new(),
            services: HashMap::new(),
            policies: HashMap::new(),
            next_stamp: 0,
            snapshots,
        }
    }

    /// A receiver of every snapshot from now on; `borrow()` is the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DiscoverySnapshot>> {
        self.snapshots.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<DiscoverySnapshot> {
        self.snapshots.borrow().clone()
    }

    /// Rebuilds every index from scratch: O(resources) per update, which keeps conflicting
    /// addresses and late-arriving services simple to get right; updates are rare next to
    /// lookups, and this runs on the control runtime, never on the data path.
    fn publish(&self) {
        let snapshot = DiscoverySnapshot::build(
            self.defaults.network.clone(),
            self.workloads.values(),
            self.services.values(),
            self.policies.values(),
        );
        self.snapshots.send_replace(Arc::new(snapshot));
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    fn upsert_address(&mut self, resource: &NamedResource) -> Result<(), ResourceError> {
        let message =
            Address::decode(resource.body.as_slice()).map_err(|e| ResourceError::Decode {
                message: "istio.workload.Address",
                detail: e.to_string(),
            })?;
        let name: Arc<str> = resource.name.as_str().into();
        match message.r#type {
            Some(address::Type::Workload(workload)) => {
                expect_name(&resource.name, &workload.uid)?;
                let value = Arc::new(WorkloadInfo::from_proto(&workload, &self.defaults)?);
                let stamp = self.stamp();
                // One name is one resource: a service of the same name is replaced.
                self.services.remove(&name);
                self.workloads.insert(name, Stamped { value, stamp });
            }
            Some(address::Type::Service(service)) => {
                expect_name(
                    &resource.name,
                    &service_key(&service.namespace, &service.hostname),
                )?;
                let value = Arc::new(ServiceInfo::from_proto(&service)?);
                let stamp = self.stamp();
                self.workloads.remove(&name);
                self.services.insert(name, Stamped { value, stamp });
            }
            None => return Err(ResourceError::EmptyAddress),
        }
        Ok(())
    }

    fn upsert_policy(&mut self, resource: &NamedResource) -> Result<(), ResourceError> {
        let policy =
            Authorization::decode(resource.body.as_slice()).map_err(|e| ResourceError::Decode {
                message: "istio.security.Authorization",
                detail: e.to_string(),
            })?;
        expect_name(&resource.name, &policy_key(&policy))?;
        validate_authorization(&policy)?;
        self.policies
            .insert(resource.name.as_str().into(), Arc::new(policy));
        Ok(())
    }

    /// Applies an update with `upsert` and `remove`, and publishes if anything changed.
    fn apply_with(
        &mut self,
        update: ResourceUpdate,
        upsert: fn(&mut Self, &NamedResource) -> Result<(), ResourceError>,
        remove: fn(&mut Self, &str) -> bool,
    ) -> Vec<Rejection> {
        let (rejections, changed) = update.apply_to(self, upsert, remove);
        if changed {
            self.publish();
        }
        rejections
    }
}

impl ResourceHandler for DiscoveryStore {
    fn type_urls(&self) -> Vec<&'static str> {
        vec![
            mesh_proto::ADDRESS_TYPE_URL,
            mesh_proto::AUTHORIZATION_TYPE_URL,
        ]
    }

    fn apply(&mut self, type_url: &str, update: ResourceUpdate) -> Vec<Rejection> {
        match type_url {
            mesh_proto::ADDRESS_TYPE_URL => {
                self.apply_with(update, Self::upsert_address, |store, name| {
                    let workload = store.workloads.remove(name).is_some();
                    let service = store.services.remove(name).is_some();
                    workload || service
                })
            }
            mesh_proto::AUTHORIZATION_TYPE_URL => {
                self.apply_with(update, Self::upsert_policy, |store, name| {
                    store.policies.remove(name).is_some()
                })
            }
            other => update.reject_all(ResourceError::UnexpectedType {
                type_url: other.to_string(),
            }),
        }
    }
}

fn expect_name(name: &str, expected: &str) -> Result<(), ResourceError> {
    if name != expected {
        return Err(ResourceError::NameMismatch {
            expected: expected.to_string(),
        });
    }
    Ok(())
}
