//! The tunnel's operator endpoints, each on its own port:
//!
//! - admin, `127.0.0.1:15000` only (pods must never reach it): `GET /config_dump` (workloads,
//!   services, policies, certificates without keys, enrolled pods, xDS state) and
//!   `POST|GET /logging?level=<filter>` (changes the log filter at run time);
//! - metrics, `:15020`: `GET /metrics` in the Prometheus text format;
//! - readiness, `:15021`: `GET /healthz/ready` answers 200 once the first xDS push is in and
//!   every captured pod has its certificate, and 503 again from the start of a drain.
//!
//! They run on the control runtime, never on the data path's, and keep answering while the
//! data path drains (the metrics show the drain). The accept loop and the
//! generic responses ([`serve_with`], [`metrics`], [`logging`], ...) are public: the waypoint
//! serves its own endpoints with them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::proxy::Certificates;
use crate::proxy::pods::PodSummary;
use crate::state::DiscoverySnapshot;
use crate::xds::XdsStatus;

/// Changes the log filter; the binary provides it from its tracing set-up.
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub discovery: watch::Receiver<Arc<DiscoverySnapshot>>,
    pub xds: watch::Receiver<XdsStatus>,
    pub certs: Certificates,
    pub pods: watch::Receiver<Vec<PodSummary>>,
    pub metrics: Arc<Registry>,
    pub set_log_level: LogLevelSetter,
    /// Becomes true when the drain starts: readiness then answers 503, so that whatever
    /// watches it (a kubelet, the lab) stops counting on this node's tunnel.
    pub draining: watch::Receiver<bool>,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Endpoints {
    Admin,
    Metrics,
    Readiness,
}

/// Serves one set of endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    endpoints: Endpoints,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, shutdown, move |request| {
        respond(&state, endpoints, request)
    })
    .await;
}

/// Serves `respond`'s answers on `listener` until `shutdown`: the accept loop every proxy's
/// operator endpoints share (the waypoint's too).
pub async fn serve_with<F>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, respond: F)
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::proxy::stopped(&mut shutdown) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let respond = respond.clone();
                async move { Ok::<_, Infallible>(respond(request)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds an endpoint's listener, naming the port in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the {what} endpoint on {addr}: {e}"))
}

fn respond(
    state: &AdminState,
    endpoints: Endpoints,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (endpoints, request.method(), path) {
        (Endpoints::Admin, &Method::GET, "/config_dump") => json_response(config_dump(state)),
        (Endpoints::Admin, &Method::GET | &Method::POST, "/logging") => {
            logging(&state.set_log_level, request.uri().query())
        }
        (Endpoints::Metrics, &Method::GET, "/metrics") => metrics(&state.metrics),
        (Endpoints::Readiness, &Method::GET, "/healthz/ready") => readiness(state),
        _ => not_found(),
    }
}

/// 404, for paths an endpoint does not serve.
pub fn not_found() -> Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, "not found\n".to_string())
}

/// `/logging?level=<filter>`: changes the log filter with `set_level`.
pub fn logging(set_level: &LogLevelSetter, query: Option<&str>) -> Response<Full<Bytes>> {
    let level = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("level="));
    match level {
        None => text(
            StatusCode::BAD_REQUEST,
            "give the filter as ?level=<filter>, e.g. ?level=debug\n".into(),
        ),
        Some(level) => match set_level(level) {
            Ok(()) => text(StatusCode::OK, format!("log filter is now {level}\n")),
            Err(e) => text(
                StatusCode::BAD_REQUEST,
                format!("invalid filter {level:?}: {e}\n"),
            ),
        },
    }
}

/// `/metrics`: `registry` in the OpenMetrics text format.
pub fn metrics(registry: &Registry) -> Response<Full<Bytes>> {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        warn!(error = %e, "cannot encode metrics");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics\n".into(),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

fn readiness(state: &AdminState) -> Response<Full<Bytes>> {
    let synced = state.xds.borrow().synced;
    let captured: Vec<String> = state
        .pods
        .borrow()
        .iter()
        .filter_map(|p| p.identity.clone())
        .collect();
    let missing: Vec<String> = captured
        .into_iter()
        .filter(|id| {
            id.parse()
                .ok()
                .and_then(|id| state.certs.current(&id))
                .is_none()
        })
        .collect();
    let (status, body) = readiness_answer(*state.draining.borrow(), synced, &missing);
    text(status, body)
}

/// What readiness answers: draining wins over everything, then the first configuration, then
/// the certificates of the captured pods.
fn readiness_answer(draining: bool, synced: bool, missing: &[String]) -> (StatusCode, String) {
    if draining {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: no new connections are taken\n".into(),
        );
    }
    match (synced, missing.is_empty()) {
        (true, true) => (StatusCode::OK, "ready\n".into()),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first configuration from the controller\n".into(),
        ),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for certificates: {}\n", missing.join(", ")),
        ),
    }
}

fn config_dump(state: &AdminState) -> Value {
    let snapshot = state.discovery.borrow().clone();
    let xds = state.xds.borrow().clone();
    let workloads: Vec<Value> = snapshot
        .workloads()
        .map(|w| {
            json!({
                "uid": &*w.uid, "name": &*w.name, "namespace": &*w.namespace,
                "addresses": w.addresses, "node": &*w.node, "identity": w.identity.to_string(),
                "protocol": format!("{:?}", w.tunnel), "healthy": w.healthy,
                "waypoint": w.waypoint.as_ref().map(|g| format!("{:?}", g.destination)),
                "services": w.services.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
                "authorization_policies": w.authorization_policies.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let services: Vec<Value> = snapshot
        .services()
        .map(|s| {
            json!({
                "hostname": &*s.hostname, "namespace": &*s.namespace, "name": &*s.name,
                "vips": s.vips.iter().map(|v| v.ip.to_string()).collect::<Vec<_>>(),
                "ports": s.ports, "endpoints": snapshot.endpoints(s).len(),
                "waypoint": s.waypoint.as_ref().map(|g| format!("{:?}", g.destination)),
            })
        })
        .collect();
    let policies: Vec<Value> = snapshot
        .policies()
        .map(|p| json!({ "namespace": p.namespace, "name": p.name, "scope": p.scope, "action": p.action, "groups": p.groups.len(), "dry_run": p.dry_run }))
        .collect();
    json!({
        "xds": xds_json(&xds),
        "workloads": workloads,
        "services": services,
        "policies": policies,
        "certificates": certificates_json(&state.certs),
        "pods": *state.pods.borrow(),
    })
}

/// The state of the xDS stream, for a config dump.
pub fn xds_json(xds: &XdsStatus) -> Value {
    json!({
        "connection": format!("{:?}", xds.connection),
        "synced": xds.synced,
        "last_error": xds.last_error.as_ref().map(|e| e.to_string()),
    })
}

/// The certificates a proxy holds (never a key), for a config dump.
pub fn certificates_json(certs: &Certificates) -> Vec<Value> {
    certs
        .certificates()
        .into_iter()
        .map(|c| {
            json!({
                "identity": c.identity.to_string(), "state": format!("{:?}", c.state),
                "not_before": c.not_before.map(epoch), "not_after": c.not_after.map(epoch),
                "serial": c.serial, "next_renewal": c.next_renewal.map(epoch),
            })
        })
        .collect()
}

fn epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `value` as pretty-printed JSON.
pub fn json_response(value: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(&value).unwrap_or_default(),
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Sets up the proxy's logs on stderr (JSON lines when `json`; colours only on a terminal),
/// filtered by `RUST_LOG` or `info`, and returns the setter `/logging` uses to change the
/// filter at run time. Both proxies' binaries start with it.
pub fn init_logging(json: bool) -> LogLevelSetter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, reload};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json())
            .init();
    } else {
        tracing_subscriber::registry().with(filter).with(fmt).init();
    }
    Arc::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_configuration_and_certificates_and_ends_with_the_drain() {
        let missing = ["spiffe://cluster.local/ns/shop/sa/cart".to_string()];
        let cases = [
            (false, false, &[][..], 503, "first configuration"),
            (
                false,
                true,
                &missing[..],
                503,
                "waiting for certificates: spiffe://",
            ),
            (false, true, &[][..], 200, "ready"),
            (true, true, &[][..], 503, "draining"),
            (true, false, &missing[..], 503, "draining"),
        ];
        for (draining, synced, missing, code, says) in cases {
            let (status, body) = readiness_answer(draining, synced, missing);
            assert_eq!(status.as_u16(), code, "{draining} {synced} {missing:?}");
            assert!(body.contains(says), "{body}");
        }
    }
}
