//! The writer side of the waypoint configuration: applies xDS updates, compiles each
//! resource once, and publishes a fresh [`ConfigSnapshot`] after each update that changed
//! something. Owned by the xDS client's task, so it needs no lock.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_proto::mesh::waypoint::v1 as wire;
use prost::Message;
use tokio::sync::watch;
use tracing::warn;
use ztunnel::state::DiscoveryStore;
use ztunnel::xds::{NamedResource, Rejection, ResourceHandler, ResourceUpdate};

use super::policy::{L7Policy, compile_policy};
use super::route::{Route, compile_route};
use super::table::{PolicyTable, RouteTable};
use super::{ConfigError, ConfigErrors, ConfigSnapshot, WaypointName};

/// The compiled routes and policies received so far, and the channel their snapshots are
/// published on.
pub struct ConfigStore {
    name: WaypointName,
    routes: HashMap<Arc<str>, Arc<Route>>,
    policies: HashMap<Arc<str>, Arc<L7Policy>>,
    snapshots: watch::Sender<Arc<ConfigSnapshot>>,
}

impl ConfigStore {
    /// An empty store for the waypoint `name`; its first snapshot is empty too.
    pub fn new(name: WaypointName) -> Self {
        let (snapshots, _) = watch::channel(Arc::new(ConfigSnapshot::default()));
        Self {
            name,
            routes: HashMap::new(),
            policies: HashMap::new(),
            snapshots,
        }
    }

    /// A receiver of every snapshot from now on; `borrow()` is the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.snapshots.subscribe()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.snapshots.borrow().clone()
    }

    fn publish(&self) {
        let gateway = &self.name.gateway;
        let snapshot = ConfigSnapshot {
            routes: RouteTable::build(self.routes.values(), gateway),
            policies: PolicyTable::build(self.policies.values(), gateway),
        };
        self.snapshots.send_replace(Arc::new(snapshot));
    }

    fn upsert_route(&mut self, resource: &NamedResource) -> Result<(), ConfigErrors> {
        let message = wire::RouteConfiguration::decode(resource.body.as_slice()).map_err(|e| {
            ConfigError::Decode {
                message: "mesh.waypoint.v1.RouteConfiguration",
                detail: e.to_string(),
            }
        })?;
        let route = compile_route(&resource.name, &message)?;
        self.routes
            .insert(resource.name.as_str().into(), Arc::new(route));
        Ok(())
    }

    fn upsert_policy(&mut self, resource: &NamedResource) -> Result<(), ConfigErrors> {
        let message =
            wire::L7Policy::decode(resource.body.as_slice()).map_err(|e| ConfigError::Decode {
                message: "mesh.waypoint.v1.L7Policy",
                detail: e.to_string(),
            })?;
        let policy = compile_policy(&resource.name, &message)?;
        self.policies
            .insert(resource.name.as_str().into(), Arc::new(policy));
        Ok(())
    }

    /// Applies an update with `upsert` and `remove`, and publishes if anything changed.
    fn apply_with(
        &mut self,
        update: ResourceUpdate,
        upsert: fn(&mut Self, &NamedResource) -> Result<(), ConfigErrors>,
        remove: fn(&mut Self, &str) -> bool,
    ) -> Vec<Rejection> {
        let (rejections, changed) = update.apply_to(self, upsert, remove);
        for rejection in &rejections {
            warn!(resource = %rejection.name, errors = %rejection.reason, "waypoint resource rejected; its previous version stays in force");
        }
        if changed {
            self.publish();
        }
        rejections
    }
}

impl ResourceHandler for ConfigStore {
    fn type_urls(&self) -> Vec<&'static str> {
        vec![
            mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
            mesh_proto::L7_POLICY_TYPE_URL,
        ]
    }

    fn apply(&mut self, type_url: &str, update: ResourceUpdate) -> Vec<Rejection> {
        match type_url {
            mesh_proto::ROUTE_CONFIGURATION_TYPE_URL => {
                self.apply_with(update, Self::upsert_route, |store, name| {
                    store.routes.remove(name).is_some()
                })
            }
            mesh_proto::L7_POLICY_TYPE_URL => {
                self.apply_with(update, Self::upsert_policy, |store, name| {
                    store.policies.remove(name).is_some()
                })
            }
            other => update.reject_all(ConfigError::UnexpectedType {
                type_url: other.to_string(),
            }),
        }
    }
}

/// Everything a waypoint subscribes to on its one ADS stream: the address feed (services
/// and endpoints, through ztunnel's [`DiscoveryStore`]) and its own routes and policies.
pub struct WaypointResources {
    /// Services and endpoints.
    pub discovery: DiscoveryStore,
    /// Routes and L7 policies.
    pub config: ConfigStore,
}

impl ResourceHandler for WaypointResources {
    fn type_urls(&self) -> Vec<&'static str> {
        // The waypoint enforces L7 policy only; L4 authorizations are the tunnels' job.
        let mut urls = vec![mesh_proto::ADDRESS_TYPE_URL];
        urls.extend(self.config.type_urls());
        urls
    }

    fn apply(&mut self, type_url: &str, update: ResourceUpdate) -> Vec<Rejection> {
        if type_url == mesh_proto::ADDRESS_TYPE_URL {
            self.discovery.apply(type_url, update)
        } else {
            self.config.apply(type_url, update)
        }
    }
}
