//! What a waypoint pod gets from the lab, as a cluster would mount it into the pod: a bearer
//! token of kind `waypoint` bound to the pod's node, and the environment that the `waypoint`
//! binary reads as the defaults of its flags (`MESH_CONTROLLER`, `MESH_CONTROLLER_NAME`,
//! `MESH_ROOT_CERT`, `MESH_TOKEN_FILE`, and `MESH_CERT_VALIDITY_SECS` when the lab was
//! started with short-lived certificates). The generated Deployment names only the Gateway.
//!
//! A pod is a waypoint when it carries `gateway.networking.k8s.io/gateway-name`. The token is
//! written into the controller's token table (the controller reloads it every second) and
//! into the pod's directory, owner-only; it is revoked when the pod is removed. With it the
//! CA gives out only identities of waypoint pods placed on that node.

use std::collections::BTreeMap;
use std::path::PathBuf;

use controller::auth::{AuthError, ProxyKind, Tokens};
use controller::store::waypoint::GATEWAY_NAME_LABEL;

use super::desired::PodKey;
use super::pod::PodContext;
use crate::addressing::{CONTROLLER_GRPC_PORT, CONTROLLER_IP};
use crate::components::CONTROLLER_NAME;

/// The file in a waypoint pod's directory that holds its token.
const TOKEN_FILE: &str = "token";

/// Why a waypoint pod could not be given its credentials.
#[derive(Debug, thiserror::Error)]
pub enum WaypointError {
    /// The token could not be issued or revoked.
    #[error("cannot manage the waypoint's token: {0}")]
    Token(#[from] AuthError),
    /// The token could not be written for the pod.
    #[error("cannot write the waypoint's token to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Whether a pod with these labels is a waypoint.
pub fn is_waypoint(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(GATEWAY_NAME_LABEL)
}

/// Issues the token of a waypoint pod placed on `node` and returns the environment of its
/// containers.
pub fn credentials(
    ctx: &PodContext,
    pod: &PodKey,
    node: &str,
) -> Result<BTreeMap<String, String>, WaypointError> {
    let state = ctx.paths.controller_state();
    let token = Tokens::load(&state)?.issue(&state, ProxyKind::Waypoint, node)?;
    let dir = ctx.paths.pod_dir(&pod.namespace, &pod.name);
    let path = dir.join(TOKEN_FILE);
    std::fs::create_dir_all(&dir)
        .and_then(|()| controller::fs::write_private_atomically(&path, token.as_bytes()))
        .map_err(|source| WaypointError::Write {
            path: path.clone(),
            source,
        })?;
    let mut env = BTreeMap::from([
        (
            "MESH_CONTROLLER".to_string(),
            format!("{CONTROLLER_IP}:{CONTROLLER_GRPC_PORT}"),
        ),
        ("MESH_CONTROLLER_NAME".to_string(), CONTROLLER_NAME.into()),
        (
            "MESH_ROOT_CERT".to_string(),
            ctx.paths.root_cert().display().to_string(),
        ),
        ("MESH_TOKEN_FILE".to_string(), path.display().to_string()),
    ]);
    if let Some(ttl) = ctx.cert_ttl_secs {
        env.insert("MESH_CERT_VALIDITY_SECS".to_string(), ttl.to_string());
    }
    Ok(env)
}

/// Revokes the token of a removed waypoint pod; a pod without one is left alone.
pub fn revoke(ctx: &PodContext, pod: &PodKey) -> Result<(), WaypointError> {
    let path = ctx
        .paths
        .pod_dir(&pod.namespace, &pod.name)
        .join(TOKEN_FILE);
    let Ok(token) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let state = ctx.paths.controller_state();
    Tokens::load(&state)?.revoke(&state, &token)?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}
