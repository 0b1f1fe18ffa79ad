//! The tunnel's data path: what happens to the connections of every captured pod.
//!
//! - [`pods`]: the lifecycle of a pod's capture. A pod the node agent announced is captured
//!   while the controller says it is in the mesh (tunnel protocol HBONE, placed on this node):
//!   its redirection rules are installed and its three listeners run inside its namespace.
//! - [`outbound`]: connections the pod opens (port 15001), routed by [`route`] into an HBONE
//!   tunnel or passed through.
//! - [`inbound`]: HBONE tunnels to the pod (port 15008): identity, policy, then the app.
//! - [`plaintext`]: plaintext connections to the pod from outside the mesh (port 15006),
//!   subject to policy without an identity.
//! - [`admission`]: whether an inbound connection may reach its pod, at arrival and after a
//!   discovery change.
//! - [`bypass`]: a workload a waypoint serves accepts connections from that waypoint only.
//! - [`tracker`]: open inbound connections, re-evaluated when discovery changes (policy,
//!   waypoint bindings).
//! - [`metrics`]: Istio's TCP metrics and one access-log line per connection.

pub mod admission;
pub mod bypass;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod plaintext;
pub mod pods;
pub mod route;
pub mod tracker;

#[cfg(test)]
pub(crate) mod test_snapshot;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::cert_manager::{CertificateManager, CertificateSource, FetchError};
use crate::hbone::{ClientMetrics, ServerConfigSelector, ServerMetrics};
use crate::identity::SpiffeId;
use crate::state::DiscoverySnapshot;
use crate::tls::{TrustBundle, WorkloadCertificate, server_config};

pub use metrics::ConnectionMetrics;
pub use pods::PodManager;
pub use tracker::ConnectionTracker;

/// How long open connections may run on after a drain starts before they are closed.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// A certificate source behind a pointer, so the proxy is not generic over where
/// certificates come from (the controller's CA in production, a fake in tests).
pub struct BoxedSource(Box<dyn ErasedSource>);

type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<WorkloadCertificate, FetchError>> + Send + 'a>>;

trait ErasedSource: Send + Sync + 'static {
    fn fetch_boxed(&self, identity: SpiffeId) -> FetchFuture<'_>;
}

impl<S: CertificateSource> ErasedSource for S {
    fn fetch_boxed(&self, identity: SpiffeId) -> FetchFuture<'_> {
        Box::pin(async move { self.fetch(&identity).await })
    }
}

impl BoxedSource {
    /// Wraps a source.
    pub fn new(source: impl CertificateSource) -> Self {
        Self(Box::new(source))
    }
}

impl CertificateSource for BoxedSource {
    fn fetch(
        &self,
        identity: &SpiffeId,
    ) -> impl Future<Output = Result<WorkloadCertificate, FetchError>> + Send {
        self.0.fetch_boxed(identity.clone())
    }
}

/// The certificate manager of the proxy.
pub type Certificates = CertificateManager<BoxedSource>;

/// The TLS configuration of an HBONE server that presents `identity`: its current
/// certificate, the configuration rebuilt only when the certificate rotates. Connections are
/// refused while no certificate is held. A captured pod's server and the waypoint's use it.
pub fn rotating_server_config(
    certs: Certificates,
    identity: SpiffeId,
    trust: TrustBundle,
) -> ServerConfigSelector {
    type Cached = Option<(Arc<WorkloadCertificate>, Arc<rustls::ServerConfig>)>;
    let cache: Arc<std::sync::Mutex<Cached>> = Arc::default();
    Arc::new(move |_local| {
        let cert = certs.current(&identity)?;
        let mut cached = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((held, config)) = cached.as_ref()
            && Arc::ptr_eq(held, &cert)
        {
            return Some(config.clone());
        }
        let config = server_config(&cert, &trust).ok()?;
        *cached = Some((cert, config.clone()));
        Some(config)
    })
}

/// Behaviour an operator may change.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// See [`DRAIN_DEADLINE`].
    pub drain_deadline: Duration,
    /// Whether inbound connections to a workload a waypoint serves must come from that
    /// waypoint ([`bypass`]); on unless an operator turns it off.
    pub bypass_protection: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            drain_deadline: DRAIN_DEADLINE,
            bypass_protection: true,
        }
    }
}

/// What every connection handler of the node shares.
pub struct ProxyContext {
    /// The node this proxy serves; only pods placed here are captured.
    pub node: Arc<str>,
    /// The latest discovery state.
    pub discovery: watch::Receiver<Arc<DiscoverySnapshot>>,
    /// Certificates of the served identities.
    pub certs: Certificates,
    /// The mesh roots.
    pub trust: TrustBundle,
    /// Connection telemetry.
    pub metrics: ConnectionMetrics,
    /// HBONE client counters, shared by every pod's pool.
    pub client_metrics: ClientMetrics,
    /// HBONE server counters, shared by every pod's server.
    pub server_metrics: ServerMetrics,
    /// Open inbound connections, for policy re-evaluation.
    pub tracker: ConnectionTracker,
    /// Connections the pods' outbound and plaintext listeners accepted and that are still
    /// open, so that a drain can wait for them (HBONE tunnels are in `tracker`).
    pub accepted: ConnectionCount,
    /// Settings.
    pub settings: ProxySettings,
}

impl ProxyContext {
    /// The current discovery snapshot.
    pub fn snapshot(&self) -> Arc<DiscoverySnapshot> {
        self.discovery.borrow().clone()
    }
}

/// How many connections are open; each holds a [`CountedConnection`] until it ends.
#[derive(Clone, Debug, Default)]
pub struct ConnectionCount(Arc<AtomicUsize>);

/// One open connection of a [`ConnectionCount`]; uncounted when dropped, also on abort.
#[derive(Debug)]
pub struct CountedConnection(Arc<AtomicUsize>);

impl ConnectionCount {
    /// Counts one more open connection until the returned guard is dropped.
    pub fn open(&self) -> CountedConnection {
        self.0.fetch_add(1, Ordering::Relaxed);
        CountedConnection(self.0.clone())
    }

    /// How many are open.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `stop`, spawning `handle` for each one in a span named after
/// `direction` with a connection id, counted in `open` while it runs. An accept error (e.g.
/// too many open files) is logged and retried after a pause; it never ends the loop.
pub async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    direction: &'static str,
    open: &ConnectionCount,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    use tracing::Instrument;
    let mut id: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    id += 1;
                    let span = tracing::debug_span!("connection", direction, id, src.addr = %peer);
                    let counted = open.open();
                    // `map`, not an `async` block awaiting the task: a generator keeps the
                    // captured future and the one it awaits apart, which doubled the size of
                    // every connection's task (+1.7 KiB per open connection).
                    let task = handle(stream, peer).map(move |()| drop(counted));
                    tokio::spawn(task.instrument(span));
                }
                Err(error) => {
                    tracing::warn!(direction, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stopped(&mut stop) => return,
        }
    }
}

/// Completes when `stop` turns true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so callers can select on this from `Send` futures.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Copies bytes both ways until both sides are done; returns (a to b, b to a).
pub async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // No buffer per connection: see `hbone::copy_bidirectional`.
    crate::hbone::copy_bidirectional(a, b).await
}
