//! The waypoint's operator endpoints, each on its own port and on the control runtime, served
//! with the tunnel's accept loop and responses (`ztunnel::admin`):
//!
//! - admin, `127.0.0.1:15000`: `GET /config_dump` (xDS state, certificates, the services
//!   bound to this waypoint, how many routes apply) and `GET|POST /logging?level=<filter>`;
//! - metrics, `:15020`: `GET /metrics` (the request, balancer, inbound, HBONE, xDS and
//!   certificate metrics);
//! - readiness, `:15021`: `GET /healthz/ready` answers 200 once the first xDS push is in and
//!   the waypoint holds a certificate for its own identity.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use ztunnel::admin::{self, LogLevelSetter};
use ztunnel::identity::SpiffeId;
use ztunnel::proxy::Certificates;
use ztunnel::state::DiscoverySnapshot;
use ztunnel::xds::XdsStatus;

use crate::config::ConfigSnapshot;
use crate::inbound::WaypointBinding;

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The waypoint's own identity.
    pub identity: SpiffeId,
    /// How services name this waypoint.
    pub binding: WaypointBinding,
    /// Services and endpoints.
    pub discovery: watch::Receiver<Arc<DiscoverySnapshot>>,
    /// Routes and policies.
    pub config: watch::Receiver<Arc<ConfigSnapshot>>,
    /// The stream to the controller.
    pub xds: watch::Receiver<XdsStatus>,
    /// The waypoint's certificate.
    pub certs: Certificates,
    /// Every metric of the waypoint.
    pub metrics: Arc<Registry>,
    /// Changes the log filter.
    pub set_log_level: LogLevelSetter,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Endpoints {
    /// `/config_dump`, `/logging`.
    Admin,
    /// `/metrics`.
    Metrics,
    /// `/healthz/ready`.
    Readiness,
}

/// Serves one set of endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    endpoints: Endpoints,
    shutdown: watch::Receiver<bool>,
) {
    admin::serve_with(listener, shutdown, move |request| {
        respond(&state, endpoints, &request)
    })
    .await;
}

fn respond(
    state: &AdminState,
    endpoints: Endpoints,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (endpoints, request.method(), request.uri().path()) {
        (Endpoints::Admin, &Method::GET, "/config_dump") => {
            admin::json_response(config_dump(state))
        }
        (Endpoints::Admin, &Method::GET | &Method::POST, "/logging") => {
            admin::logging(&state.set_log_level, request.uri().query())
        }
        (Endpoints::Metrics, &Method::GET, "/metrics") => admin::metrics(&state.metrics),
        (Endpoints::Readiness, &Method::GET, "/healthz/ready") => readiness(state),
        _ => admin::not_found(),
    }
}

fn readiness(state: &AdminState) -> Response<Full<Bytes>> {
    if !state.xds.borrow().synced {
        return admin::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first configuration from the controller\n".into(),
        );
    }
    if state.certs.current(&state.identity).is_none() {
        return admin::text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for the certificate of {}\n", state.identity),
        );
    }
    admin::text(StatusCode::OK, "ready\n".into())
}

fn config_dump(state: &AdminState) -> Value {
    let snapshot = state.discovery.borrow().clone();
    let config = state.config.borrow().clone();
    let bound: Vec<Value> = snapshot
        .services()
        .filter(|s| state.binding.binds(s, &snapshot))
        .map(|s| {
            json!({
                "hostname": &*s.hostname,
                "vips": s.vips.iter().map(|v| v.ip.to_string()).collect::<Vec<_>>(),
                "ports": s.ports,
                "endpoints": snapshot.endpoints(s).len(),
            })
        })
        .collect();
    json!({
        "identity": state.identity.to_string(),
        "xds": admin::xds_json(&state.xds.borrow()),
        "certificates": admin::certificates_json(&state.certs),
        "bound_services": bound,
        "route_entries": config.routes.len(),
    })
}
