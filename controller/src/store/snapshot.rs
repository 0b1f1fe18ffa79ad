//! The desired state as one immutable snapshot, and the questions the rest of the controller
//! asks of it: is a pod in the mesh, which waypoint serves a service, which pods back a service,
//! may a node obtain an identity.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::authorization::AuthorizationPolicy;
use super::gateway::{Gateway, WaypointFor};
use super::http_route::HttpRoute;
use super::kube_syntax::{Labels, selector_matches};
use super::object::{
    DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_LABEL, DATAPLANE_MODE_NONE, NamespacedName,
    USE_WAYPOINT_LABEL, USE_WAYPOINT_NAMESPACE_LABEL, USE_WAYPOINT_NONE,
};
use super::rejection::Rejection;
use super::service::Service;
use super::waypoint::{GATEWAY_NAME_LABEL, is_waypoint_managed, speaks_hbone_natively};
use super::workload::{Deployment, Namespace, Pod};

/// Every valid object of the desired state, flattened and tied together: services have their
/// virtual IPs, Deployments' pods exist, pods carry their recorded placement. Shared as
/// `Arc<DesiredState>`; a change makes a new snapshot.
///
/// Objects are shared (`Arc`) with the loader and between snapshots: an object that did not
/// change is the same allocation in both, so making a snapshot copies no object and comparing
/// two snapshots (the objects are `Eq`, so `Arc` equality checks the pointer first) costs a
/// pointer comparison per unchanged object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    /// Namespaces by name. A namespace used by objects but never declared is absent; it then
    /// has no labels.
    pub namespaces: BTreeMap<Arc<str>, Arc<Namespace>>,
    /// Pods, standalone and from Deployments.
    pub pods: BTreeMap<NamespacedName, Arc<Pod>>,
    /// Deployments (their pods are in `pods`).
    pub deployments: BTreeMap<NamespacedName, Arc<Deployment>>,
    /// Services with their virtual IPs.
    pub services: BTreeMap<NamespacedName, Arc<Service>>,
    /// Authorization policies.
    pub authorization_policies: BTreeMap<NamespacedName, Arc<AuthorizationPolicy>>,
    /// Gateways; only those with `is_waypoint` are waypoints.
    pub gateways: BTreeMap<NamespacedName, Arc<Gateway>>,
    /// HTTP routes.
    pub http_routes: BTreeMap<NamespacedName, Arc<HttpRoute>>,
    /// Everything refused in the last load, in file order. For each refused object that had a
    /// valid version before, that version is still in the maps above.
    pub rejected: Vec<Rejection>,
}

impl DesiredState {
    /// The labels of a namespace; empty when it is not declared.
    pub fn namespace_labels(&self, namespace: &str) -> &Labels {
        static NO_LABELS: Labels = Labels::new();
        self.namespaces
            .get(namespace)
            .map_or(&NO_LABELS, |ns| &ns.labels)
    }

    /// Whether a pod is in the mesh: its own `istio.io/dataplane-mode` label wins (`ambient`
    /// enrolls, `none` opts out), otherwise its namespace's label decides.
    pub fn pod_enrolled(&self, pod: &Pod) -> bool {
        fn mode(labels: &Labels) -> Option<&str> {
            labels
                .get(DATAPLANE_MODE_LABEL)
                .map(String::as_str)
                .filter(|mode| !mode.is_empty())
        }
        match mode(&pod.labels) {
            Some(DATAPLANE_MODE_AMBIENT) => true,
            Some(DATAPLANE_MODE_NONE) => false,
            _ => mode(self.namespace_labels(&pod.namespace)) == Some(DATAPLANE_MODE_AMBIENT),
        }
    }

    /// Whether ztunnels reach a pod over HBONE: an enrolled pod (its ztunnel terminates the
    /// tunnel), or a pod that terminates HBONE itself, as a waypoint does.
    pub fn pod_speaks_hbone(&self, pod: &Pod) -> bool {
        self.pod_enrolled(pod) || speaks_hbone_natively(&pod.labels)
    }

    /// The waypoint a service's traffic goes through, as Istio reads the labels: the service's
    /// `istio.io/use-waypoint` wins over its namespace's; `none` opts out; the waypoint lives in
    /// the labelled object's namespace unless `istio.io/use-waypoint-namespace` names another.
    /// A waypoint's own service has none. The gateway itself may not exist: see
    /// [`DesiredState::waypoint`].
    pub fn use_waypoint_for_service(&self, service: &Service) -> Option<NamespacedName> {
        self.use_waypoint(&service.labels, &service.namespace)
    }

    /// The waypoint of traffic addressed to a pod directly; same rules as for services, with the
    /// pod's labels first. A waypoint's own pod has none.
    pub fn use_waypoint_for_pod(&self, pod: &Pod) -> Option<NamespacedName> {
        self.use_waypoint(&pod.labels, &pod.namespace)
    }

    /// The waypoint Gateway that handles a service's traffic: bound by `istio.io/use-waypoint`,
    /// existing, and serving services.
    pub fn service_waypoint(&self, service: &Service) -> Option<&Gateway> {
        let name = self.use_waypoint_for_service(service)?;
        self.waypoint(&name)
            .filter(|gw| matches!(gw.waypoint_for, WaypointFor::Service | WaypointFor::All))
    }

    fn use_waypoint(&self, labels: &Labels, namespace: &Arc<str>) -> Option<NamespacedName> {
        if is_waypoint_managed(labels) {
            // A waypoint does not send its own traffic through a waypoint.
            return None;
        }
        let from_labels = |labels: &Labels, default_namespace: &Arc<str>| {
            let name = labels.get(USE_WAYPOINT_LABEL).filter(|n| !n.is_empty())?;
            if name == USE_WAYPOINT_NONE {
                return Some(None);
            }
            let namespace = labels
                .get(USE_WAYPOINT_NAMESPACE_LABEL)
                .filter(|n| !n.is_empty())
                .map_or_else(|| default_namespace.clone(), |n| Arc::from(n.as_str()));
            Some(Some(NamespacedName::new(namespace, name.as_str())))
        };
        from_labels(labels, namespace)
            .or_else(|| from_labels(self.namespace_labels(namespace), namespace))
            .flatten()
    }

    /// The gateway named by a `use-waypoint` binding, when it exists and is a waypoint.
    pub fn waypoint(&self, name: &NamespacedName) -> Option<&Gateway> {
        self.gateways
            .get(name)
            .map(|gateway| &**gateway)
            .filter(|gateway| gateway.is_waypoint)
    }

    /// The pods behind a service: same namespace, labels matched by its non-empty selector, and
    /// an IP known.
    pub fn service_endpoints(&self, service: &Service) -> Vec<&Pod> {
        if service.selector.is_empty() {
            return Vec::new();
        }
        self.pods_in(&service.namespace)
            .filter(|pod| pod.ip.is_some() && selector_matches(&service.selector, &pod.labels))
            .collect()
    }

    /// The services whose selector picks a pod.
    pub fn services_of_pod(&self, pod: &Pod) -> Vec<&Service> {
        self.services
            .range(namespace_range(&pod.namespace))
            .map(|(_, service)| &**service)
            .filter(|s| !s.selector.is_empty() && selector_matches(&s.selector, &pod.labels))
            .collect()
    }

    /// The pods of one namespace.
    pub fn pods_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods
            .range(namespace_range(namespace))
            .map(|(_, pod)| &**pod)
    }

    /// The pods placed on a node.
    pub fn pods_on_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods
            .values()
            .map(|pod| &**pod)
            .filter(move |pod| pod.node.as_deref() == Some(node))
    }

    /// Whether a pod of this namespace and service account runs on the node: a node's proxy may
    /// obtain exactly those identities.
    pub fn node_runs_identity(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.pods_in(namespace).any(|pod| {
            pod.node.as_deref() == Some(node) && &*pod.service_account == service_account
        })
    }

    /// Whether a waypoint pod (labelled [`GATEWAY_NAME_LABEL`]) of this namespace and service
    /// account runs on the node: a waypoint's token obtains exactly those identities, never
    /// those of the application pods beside it.
    pub fn node_runs_waypoint_identity(
        &self,
        node: &str,
        namespace: &str,
        service_account: &str,
    ) -> bool {
        self.pods_in(namespace).any(|pod| {
            pod.node.as_deref() == Some(node)
                && &*pod.service_account == service_account
                && pod.labels.contains_key(GATEWAY_NAME_LABEL)
        })
    }
}

/// The key range of one namespace in a map keyed by namespaced names.
fn namespace_range(namespace: &str) -> std::ops::Range<NamespacedName> {
    // Names are never empty, so `(ns, "")` sorts before every name of `ns`, and `(ns + "\0", "")`
    // after every one of them and before the next namespace.
    NamespacedName::new(namespace, "")..NamespacedName::new(format!("{namespace}\0"), "")
}

#[cfg(test)]
mod tests;
