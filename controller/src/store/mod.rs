//! The desired-state store: a directory of Kubernetes-shaped YAML manifests (multi-document
//! files allowed), watched and turned into a typed, validated, immutable [`DesiredState`].
//!
//! Kinds read: `v1` Namespace, Pod and Service, `apps/v1` Deployment,
//! `security.istio.io/v1` AuthorizationPolicy and `gateway.networking.k8s.io/v1` Gateway and
//! HTTPRoute. The core kinds are decoded with the community Kubernetes types; the Istio and
//! Gateway API kinds with types of our own holding the fields users write. Unknown fields are
//! ignored, as the API server's lenient decoding does; wrong types are errors.
//!
//! A refused object becomes a [`Rejection`] naming file, object and field; the rest of the
//! directory still applies, and the last good version of the refused object stays in force.
//!
//! Layout: [`manifest`] reads text into [`Object`]s, one module per kind checks and flattens
//! ([`workload`], [`service`], [`authorization`], [`gateway`], [`http_route`]), [`loader`] ties
//! objects together (virtual IPs from [`vip`], Deployment pods, the Service and pod of every
//! [`waypoint`], [`pod_status`] records) into a [`snapshot`], [`watcher`] runs it on changes, and
//! [`manifest_dir`] is the editing side used by `meshctl`.

pub mod authorization;
pub mod gateway;
pub mod http_route;
pub mod kube_syntax;
pub mod loader;
pub mod manifest;
pub mod manifest_dir;
pub mod metrics;
pub mod object;
pub mod pod_status;
pub mod rejection;
pub mod service;
pub mod snapshot;
pub mod vip;
pub mod watcher;
pub mod waypoint;
pub mod workload;

pub use authorization::{
    AuthorizationPolicy, PolicyAction, PolicyCondition, PolicyOperation, PolicyRule, PolicySource,
    PolicyTargetRef, StringMatch,
};
pub use gateway::{Gateway, Listener, WaypointFor};
pub use http_route::{
    BackendRef, HeaderModifier, HttpRoute, Mirror, ParentRef, PathMatch, PathModifier, Redirect,
    Rewrite, RouteFilter, RouteMatch, RouteRetry, RouteRule, RouteTimeouts, ValueMatch,
};
pub use kube_syntax::Labels;
pub use loader::{LoadError, Loader, StoreConfig, is_manifest_file, load};
pub use manifest::validate_manifest_text;
pub use manifest_dir::{ManifestDir, ManifestDirError};
pub use metrics::StoreMetrics;
pub use object::{Kind, NamespacedName, Object, ObjectKey};
pub use pod_status::{PodStatusError, PodStatusRecord, record_pod_status, remove_pod_status};
pub use rejection::{Problem, Rejection};
pub use service::{Service, ServiceManifest, ServicePort, TargetPort};
pub use snapshot::DesiredState;
pub use watcher::{Store, StoreError};
pub use workload::{Container, ContainerPort, Deployment, EnvVar, Namespace, Pod, PodTemplate};
