//! The proxies connected right now and what they acknowledged, for the status API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use super::connection::TypeStatus;
use crate::auth::{Caller, ProxyKind};

/// One connected proxy as the status API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    /// The stream's id, unique for the life of the controller.
    pub stream: u64,
    /// Tunnel or waypoint.
    pub kind: ProxyKind,
    /// The node the proxy's token was issued for.
    pub node: Arc<str>,
    /// The id the proxy gave in its `node.id` (Istio's form: `type~ip~pod.ns~domain`).
    pub proxy_id: String,
    /// The peer address of the stream.
    pub peer: Option<String>,
    /// When the stream opened, in seconds since the Unix epoch.
    pub connected_at: u64,
    /// Per type URL: versions sent and acknowledged, and the last NACK.
    pub types: BTreeMap<String, TypeStatus>,
}

/// A NACK kept after its stream closed, so an operator still sees why a proxy refused config.
#[derive(Clone, Debug, Serialize)]
pub struct RecentNack {
    /// The node of the proxy that sent it.
    pub node: Arc<str>,
    /// The proxy's `node.id`.
    pub proxy_id: String,
    /// The type that was refused.
    pub type_url: String,
    /// The proxy's message.
    pub message: String,
}

/// Every connected proxy. The lock is held only to copy small records in or out, never
/// across an await.
#[derive(Clone, Debug, Default)]
pub struct ProxyRegistry {
    inner: Arc<Mutex<BTreeMap<u64, ProxyStatus>>>,
}

impl ProxyRegistry {
    /// Records a new stream.
    pub fn connect(&self, stream: u64, caller: &Caller, peer: Option<String>) {
        let connected_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let status = ProxyStatus {
            stream,
            kind: caller.kind,
            node: caller.node.clone(),
            proxy_id: String::new(),
            peer,
            connected_at,
            types: BTreeMap::new(),
        };
        self.lock().insert(stream, status);
    }

    /// Updates what a stream has acknowledged.
    pub fn update(&self, stream: u64, proxy_id: &str, types: &BTreeMap<String, TypeStatus>) {
        if let Some(status) = self.lock().get_mut(&stream) {
            if status.proxy_id.is_empty() {
                status.proxy_id = proxy_id.to_string();
            }
            status.types.clone_from(types);
        }
    }

    /// Forgets a closed stream.
    pub fn disconnect(&self, stream: u64) {
        self.lock().remove(&stream);
    }

    /// A copy of every connected proxy, ordered by stream id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        // A panic while holding this lock cannot leave a record half-written (every write is
        // a single insert or assignment), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
