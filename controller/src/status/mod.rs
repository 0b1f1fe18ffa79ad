//! The status API: what an operator asks the controller. HTTP with JSON bodies, plus the
//! Prometheus metrics of the controller.
//!
//! - `GET /status`: connected proxies with their acknowledged versions and last NACK,
//!   rejected objects and translation warnings.
//! - `GET /ready`: 200 once the first translation is published.
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /objects/{kind}[?namespace=NS]`: the desired state as rows (see [`views`]).

pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::store::DesiredState;
use crate::translate::{TranslateConfig, Warning};
use crate::xds::{ProxyRegistry, ProxyStatus};

/// What the model side of the controller reports: refused objects and translation warnings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModelReport {
    /// The generation of the snapshot being served (0: none yet).
    pub generation: u64,
    /// Objects refused by the store, as `file: Kind ns/name: field: problem`.
    pub rejected: Vec<String>,
    /// Objects only partly enforced or referring to something missing.
    pub warnings: Vec<Warning>,
}

/// The document `GET /status` returns.
#[derive(Debug, Serialize)]
pub struct StatusDocument {
    /// Every connected proxy.
    pub proxies: Vec<ProxyStatus>,
    /// The generation of the snapshot being served.
    pub generation: u64,
    /// Refused objects.
    pub rejected: Vec<String>,
    /// Translation warnings.
    pub warnings: Vec<Warning>,
}

/// Everything the status API reads.
#[derive(Clone)]
pub struct StatusApi {
    /// Connected proxies.
    pub proxies: ProxyRegistry,
    /// The latest model report.
    pub model: watch::Receiver<Arc<ModelReport>>,
    /// The controller's metrics.
    pub metrics: Arc<Registry>,
    /// The desired state, for `/objects`.
    pub desired: watch::Receiver<Arc<DesiredState>>,
    /// Naming of hostnames, uids and identities.
    pub translate: TranslateConfig,
}

/// Query of `/objects`.
#[derive(Debug, serde::Deserialize)]
struct ObjectsQuery {
    namespace: Option<String>,
}

impl StatusApi {
    /// The HTTP routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/status", get(status))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .route("/objects/{kind}", get(objects))
            .with_state(self)
    }

    /// Serves the API on a Unix socket until `shutdown` completes: the lab's tools reach a
    /// controller in another network namespace through the file system.
    pub async fn serve_unix(
        self,
        listener: tokio::net::UnixListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves the API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn status(State(api): State<StatusApi>) -> Json<StatusDocument> {
    let model = api.model.borrow().clone();
    Json(StatusDocument {
        proxies: api.proxies.list(),
        generation: model.generation,
        rejected: model.rejected.clone(),
        warnings: model.warnings.clone(),
    })
}

async fn objects(
    State(api): State<StatusApi>,
    Path(kind): Path<String>,
    Query(query): Query<ObjectsQuery>,
) -> Response {
    let state = api.desired.borrow().clone();
    match views::rows(&state, &api.translate, &kind, query.namespace.as_deref()) {
        Some(rows) => Json(rows).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "unknown kind {kind:?}; known kinds: {}\n",
                views::KINDS.join(", ")
            ),
        )
            .into_response(),
    }
}

async fn ready(State(api): State<StatusApi>) -> Response {
    if api.model.borrow().generation > 0 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration translated yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(api): State<StatusApi>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &api.metrics) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}
