//! The kinds the store reads, how one object is named, and the checks every object's metadata
//! goes through (label syntax and the mesh's own labels).

use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::authorization::AuthorizationPolicy;
use super::gateway::Gateway;
use super::http_route::HttpRoute;
use super::kube_syntax::{Labels, check_dns_label, check_labels};
use super::rejection::{Findings, Problem};
use super::service::ServiceManifest;
use super::workload::{Deployment, Namespace, Pod};

/// The namespace of an object whose manifest names none, as `kubectl` assumes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Pod and namespace label that puts workloads in the mesh (`ambient`) or keeps them out (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The `istio.io/dataplane-mode` value that enrolls workloads.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
/// The `istio.io/dataplane-mode` value that keeps workloads out of the mesh.
pub const DATAPLANE_MODE_NONE: &str = "none";
/// Namespace, service and pod label naming the waypoint (a Gateway) that serves them.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Companion of `istio.io/use-waypoint`: the waypoint's namespace, when it is another one.
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// The `istio.io/use-waypoint` value that opts an object out of its namespace's waypoint.
pub const USE_WAYPOINT_NONE: &str = "none";

/// A kind of object the store reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1 Namespace`.
    Namespace,
    /// `v1 Pod`.
    Pod,
    /// `apps/v1 Deployment`.
    Deployment,
    /// `v1 Service`.
    Service,
    /// `security.istio.io/v1 AuthorizationPolicy`.
    AuthorizationPolicy,
    /// `gateway.networking.k8s.io/v1 Gateway`.
    Gateway,
    /// `gateway.networking.k8s.io/v1 HTTPRoute`.
    HttpRoute,
}

impl Kind {
    /// Every kind, in the order they are listed in messages.
    pub const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Deployment,
        Kind::Service,
        Kind::AuthorizationPolicy,
        Kind::Gateway,
        Kind::HttpRoute,
    ];

    /// The `kind` field as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
        }
    }

    /// The `apiVersion` values accepted for the kind. Older served versions of the Istio and
    /// Gateway API kinds are accepted too, so existing manifests work unchanged.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service => &["v1"],
            Kind::Deployment => &["apps/v1"],
            Kind::AuthorizationPolicy => &["security.istio.io/v1", "security.istio.io/v1beta1"],
            Kind::Gateway | Kind::HttpRoute => &[
                "gateway.networking.k8s.io/v1",
                "gateway.networking.k8s.io/v1beta1",
            ],
        }
    }

    /// Finds the kind for an `apiVersion` and `kind` pair.
    pub fn from_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.api_versions().contains(&api_version))
    }

    /// Finds the kind by its name alone, case-insensitively (`service`, `HTTPRoute`), as a
    /// command line names it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether objects of the kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a namespaced object: the key of the snapshot's maps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The name inside the namespace.
    pub name: Arc<str>,
}

impl NamespacedName {
    /// Builds a name from its parts.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        NamespacedName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What identifies an object in the desired state: kind, namespace (none for namespaces), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace; `None` exactly for namespaces.
    pub namespace: Option<Arc<str>>,
    /// The name.
    pub name: Arc<str>,
}

impl ObjectKey {
    /// The key of a namespaced object.
    pub fn namespaced(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// The key of a namespace.
    pub fn namespace(name: &str) -> Self {
        ObjectKey {
            kind: Kind::Namespace,
            namespace: None,
            name: name.into(),
        }
    }

    /// Namespace and name of a namespaced object; `None` for a namespace.
    pub fn namespaced_name(&self) -> Option<NamespacedName> {
        let namespace = self.namespace.clone()?;
        Some(NamespacedName {
            namespace,
            name: self.name.clone(),
        })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One validated object of the desired state, before the store ties objects together
/// (virtual IPs, Deployment pods, pod status).
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A namespace.
    Namespace(Arc<Namespace>),
    /// A standalone pod.
    Pod(Arc<Pod>),
    /// A deployment; it expands to pods.
    Deployment(Arc<Deployment>),
    /// A service, before its virtual IP is allocated.
    Service(Arc<ServiceManifest>),
    /// An Istio authorization policy.
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
    /// A Gateway API gateway (a waypoint when of class `istio-waypoint`).
    Gateway(Arc<Gateway>),
    /// A Gateway API HTTP route.
    HttpRoute(Arc<HttpRoute>),
}

impl Object {
    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let namespaced = |kind, namespace: &Arc<str>, name: &Arc<str>| ObjectKey {
            kind,
            namespace: Some(namespace.clone()),
            name: name.clone(),
        };
        match self {
            Object::Namespace(o) => ObjectKey {
                kind: Kind::Namespace,
                namespace: None,
                name: o.name.clone(),
            },
            Object::Pod(o) => namespaced(Kind::Pod, &o.namespace, &o.name),
            Object::Deployment(o) => namespaced(Kind::Deployment, &o.namespace, &o.name),
            Object::Service(o) => namespaced(Kind::Service, &o.namespace, &o.name),
            Object::AuthorizationPolicy(o) => {
                namespaced(Kind::AuthorizationPolicy, &o.namespace, &o.name)
            }
            Object::Gateway(o) => namespaced(Kind::Gateway, &o.namespace, &o.name),
            Object::HttpRoute(o) => namespaced(Kind::HttpRoute, &o.namespace, &o.name),
        }
    }
}

/// The checked labels of an object's metadata.
pub(crate) fn metadata_labels(meta: &ObjectMeta, findings: &mut Findings) -> Labels {
    let labels = meta.labels.clone().unwrap_or_default();
    check_labels(&labels, "metadata.labels", findings);
    check_mesh_labels(&labels, findings);
    labels
}

/// Checks the values of the mesh's own labels, so that a typo does not silently leave a workload
/// out of the mesh or without its waypoint.
fn check_mesh_labels(labels: &Labels, findings: &mut Findings) {
    let at = |key: &str| format!("metadata.labels[{key:?}]");
    if let Some(mode) = labels.get(DATAPLANE_MODE_LABEL)
        && ![DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_NONE, ""].contains(&mode.as_str())
    {
        findings.push(
            at(DATAPLANE_MODE_LABEL),
            Problem::invalid(mode, "must be \"ambient\" (enroll) or \"none\" (opt out)"),
        );
    }
    for key in [USE_WAYPOINT_LABEL, USE_WAYPOINT_NAMESPACE_LABEL] {
        if let Some(value) = labels.get(key) {
            findings.take(at(key), check_dns_label(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_api_version_and_name() {
        assert_eq!(Kind::from_manifest("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(
            Kind::from_manifest("gateway.networking.k8s.io/v1", "HTTPRoute"),
            Some(Kind::HttpRoute)
        );
        assert_eq!(Kind::from_manifest("apps/v1", "Pod"), None);
        assert_eq!(Kind::from_manifest("v1", "ConfigMap"), None);
        assert_eq!(Kind::from_name("httproute"), Some(Kind::HttpRoute));
        assert_eq!(Kind::from_name("svc"), None);
    }

    #[test]
    fn mesh_labels_are_checked() {
        let meta = |key: &str, value: &str| ObjectMeta {
            labels: Some([(key.to_string(), value.to_string())].into()),
            ..Default::default()
        };
        let cases = [
            (DATAPLANE_MODE_LABEL, "ambient", true),
            (DATAPLANE_MODE_LABEL, "none", true),
            (DATAPLANE_MODE_LABEL, "ambiant", false),
            (USE_WAYPOINT_LABEL, "waypoint", true),
            (USE_WAYPOINT_LABEL, "Waypoint", false),
            (USE_WAYPOINT_NAMESPACE_LABEL, "infra", true),
        ];
        for (key, value, ok) in cases {
            let mut findings = Findings::default();
            metadata_labels(&meta(key, value), &mut findings);
            assert_eq!(findings.finish(()).is_ok(), ok, "{key}={value}");
        }
    }

    #[test]
    fn keys_print_like_kubectl() {
        assert_eq!(
            ObjectKey::namespaced(Kind::Service, "shop", "cart").to_string(),
            "Service shop/cart"
        );
        assert_eq!(ObjectKey::namespace("shop").to_string(), "Namespace shop");
    }
}
