//! The waypoints' own configuration: HTTPRoutes become `mesh.waypoint.v1.RouteConfiguration`
//! resources, AuthorizationPolicies that target a waypoint become `mesh.waypoint.v1.L7Policy`
//! resources, both named `namespace/name` after the object they come from.
//!
//! The controller writes every default out (proto3 zero means zero): backend weight 1, redirect
//! status 302, mirror share 100 %, retry attempts `route::DEFAULT_RETRY_ATTEMPTS`; a zero timeout,
//! which the Gateway API uses to mean "none", is left unset.
//!
//! Routes are checked against the rest of the desired state, and what does not resolve is
//! reported as a [`Warning`] and left out, never the whole route: a parent that is neither a
//! waypoint Gateway nor a Service is ignored (a route with no parent left is not sent); a
//! backend that is not an existing Service port is dropped, its share going to the rule's other
//! backends, and a rule with no backend left is kept so that its requests get 500 instead of
//! falling through to another rule. Rules are ordered by the Gateway API's match precedence (see
//! `route::by_precedence`).
//!
//! # Fault injection annotations
//!
//! The Gateway API has no fault injection, so routes ask for it with annotations under this
//! mesh's prefix `mesh.dev/`; the faults apply to every rule of the route:
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     mesh.dev/fault-delay: "100ms:10"   # hold 10 % of requests for 100 ms
//!     mesh.dev/fault-abort: "503:50"     # answer 50 % of requests with 503
//! ```
//!
//! - `mesh.dev/fault-delay: "<duration>[:<percent>]"`: the duration in the Gateway API's format
//!   (`500ms`, `2s`, `1m30s`).
//! - `mesh.dev/fault-abort: "<status>[:<percent>]"`: an HTTP status from 200 to 599.
//!
//! The percentage is a number from 0 to 100 (`10`, `0.5`, `25%`); without it, every request is
//! hit. A value that does not parse, or an unknown `mesh.dev/` annotation, is reported as a
//! warning naming the annotation, and the route applies without that fault.

mod fault;
mod policy;
mod route;

use std::time::Duration;

use super::{TranslateConfig, Warning, resource};
use crate::store::DesiredState;
use crate::xds::VersionedResource;

/// The waypoints' resources of one desired state.
pub(super) struct WaypointResources {
    /// `RouteConfiguration`s, one per HTTPRoute that attaches to something of the mesh.
    pub routes: Vec<VersionedResource>,
    /// `L7Policy`s, one per AuthorizationPolicy target that a waypoint enforces.
    pub policies: Vec<VersionedResource>,
}

/// Translates the routes and the waypoint-enforced policies.
pub(super) fn translate(
    state: &DesiredState,
    config: &TranslateConfig,
    warnings: &mut Vec<Warning>,
) -> WaypointResources {
    let routes = state
        .http_routes
        .values()
        .filter_map(|route| {
            let translation = route::RouteTranslation {
                state,
                config,
                route,
                warnings: &mut *warnings,
            };
            let message = translation.configuration()?;
            let name = message.name.clone();
            Some(resource(
                mesh_proto::ROUTE_CONFIGURATION_TYPE_URL,
                name,
                &message,
            ))
        })
        .collect();
    let policies = policy::translate(state, config, warnings);
    WaypointResources { routes, policies }
}

/// A duration on the wire. Durations here come from the Gateway API's format, which cannot
/// overflow the wire's range.
fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

#[cfg(test)]
mod tests;
