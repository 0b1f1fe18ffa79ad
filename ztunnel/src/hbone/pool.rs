//! The pool of HBONE client connections.
//!
//! The map is behind a plain mutex that is only held for a lookup, never across an await.
//! Each connection counts its own streams in one atomic word (count plus a "closed" bit), so
//! reserving a stream, releasing it and retiring an idle connection are lock-free and cannot
//! race each other. Each connection has a driver task that polls the HTTP/2 connection,
//! sends keep-alive PINGs and retires the connection when it has been idle too long.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{Instrument, debug, info_span};

use super::client::{ClientSettings, HboneError, TunnelRequest};
use super::client_builder;
use super::metrics::ClientMetrics;
use crate::identity::SpiffeId;
use crate::tls::{TrustBundle, WorkloadCertificate, client_config, describe_handshake_error};

/// Marks a connection that takes no new streams (GOAWAY, keep-alive failure, idle, closed).
const CLOSED: usize = 1 << (usize::BITS - 1);

/// Dials that succeed but whose connection closes before a caller can use it, before the
/// caller gives up; bounds the loop against a server that accepts and hangs up at once.
const MAX_LOST_DIALS: usize = 3;

type H2Connection = h2::client::Connection<TlsStream<TcpStream>, Bytes>;

/// Which connections may carry a tunnel: same source, same acceptable servers, same address.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct PoolKey {
    source: SpiffeId,
    expected: Arc<[SpiffeId]>,
    destination: SocketAddr,
}

impl PoolKey {
    pub(crate) fn new(request: &TunnelRequest) -> Self {
        let mut expected = request.expected_identities.clone();
        expected.sort();
        expected.dedup();
        Self {
            source: request.source.identity().clone(),
            expected: expected.into(),
            destination: request.destination,
        }
    }
}

/// The connections of one key, and the dial in progress for it, if any.
#[derive(Default)]
struct Entry {
    connections: Vec<Arc<PooledConnection>>,
    dialing: Option<watch::Receiver<DialState>>,
}

/// What callers waiting for a dial see.
#[derive(Clone)]
enum DialState {
    Pending,
    Done(Result<(), HboneError>),
}

enum Checkout {
    Ready(StreamLease),
    /// Wait for this dial; `none_open` says the key had no open connection at all.
    Wait {
        dial: watch::Receiver<DialState>,
        none_open: bool,
    },
}

/// Opens the TCP connection under a tunnel. The tunnel uses the plain connect by default; the
/// node proxy supplies one that opens the socket inside the pod's network namespace, so the
/// tunnel leaves the node with the pod's own address.
pub type Dialer = Arc<
    dyn Fn(
            SocketAddr,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<TcpStream>> + Send>,
        > + Send
        + Sync,
>;

/// The dialer that connects from the proxy's own network namespace.
pub fn direct_dialer() -> Dialer {
    Arc::new(|dst| Box::pin(TcpStream::connect(dst)))
}

/// All pooled connections of one client.
pub(crate) struct Pool {
    settings: ClientSettings,
    metrics: ClientMetrics,
    dialer: Dialer,
    epoch: Instant,
    next_id: AtomicU64,
    entries: Mutex<HashMap<PoolKey, Entry>>,
}

impl Pool {
    pub(crate) fn new(
        settings: ClientSettings,
        metrics: ClientMetrics,
        dialer: Dialer,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            metrics,
            dialer,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    pub(crate) fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    /// Reserves a stream on a connection of `key`, dialing one if none has room.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        key: &PoolKey,
        request: &TunnelRequest,
    ) -> Result<StreamLease, HboneError> {
        let mut lost = 0;
        let mut after_dial = false;
        loop {
            let mut dial = match self.checkout_or_dial(key, request) {
                Checkout::Ready(lease) => return Ok(lease),
                Checkout::Wait { dial, none_open } => {
                    // A dial "succeeded" but its connection closed before we could use it.
                    lost += usize::from(after_dial && none_open);
                    if lost >= MAX_LOST_DIALS {
                        return Err(HboneError::ConnectionLost {
                            dst: key.destination,
                        });
                    }
                    dial
                }
            };
            let state = dial
                .wait_for(|state| matches!(state, DialState::Done(_)))
                .await
                .map(|state| state.clone())
                .map_err(|_| HboneError::DialAbandoned {
                    dst: key.destination,
                })?;
            if let DialState::Done(Err(error)) = state {
                return Err(error);
            }
            // Look again. The new connection may already be full, in which case the next
            // turn dials another, as the limit asks.
            after_dial = true;
        }
    }

    fn checkout_or_dial(self: &Arc<Self>, key: &PoolKey, request: &TunnelRequest) -> Checkout {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        entry.connections.retain(|conn| !conn.is_closed());
        // The first connection with room: filling one before the next lets the others idle out.
        if let Some(lease) = entry.connections.iter().find_map(StreamLease::reserve) {
            return Checkout::Ready(lease);
        }
        let none_open = entry.connections.is_empty();
        if let Some(dial) = &entry.dialing {
            let dial = dial.clone();
            return Checkout::Wait { dial, none_open };
        }
        let (done, dial) = watch::channel(DialState::Pending);
        entry.dialing = Some(dial.clone());
        let span = info_span!("hbone_dial", dst.addr = %key.destination);
        let task = dial_task(self.clone(), key.clone(), DialSpec::new(request), done);
        tokio::spawn(task.instrument(span));
        Checkout::Wait { dial, none_open }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PoolKey, Entry>> {
        // The map stays consistent even if a holder panicked: every update is a single step.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish_dial(&self, key: &PoolKey, connection: Option<Arc<PooledConnection>>) {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        entry.dialing = None;
        match connection {
            Some(connection) => entry.connections.push(connection),
            None if entry.connections.is_empty() => {
                entries.remove(key);
            }
            None => {}
        }
    }

    fn remove(&self, key: &PoolKey, id: u64) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(key) {
            entry.connections.retain(|conn| conn.id != id);
            if entry.connections.is_empty() && entry.dialing.is_none() {
                entries.remove(key);
            }
        }
    }
}

/// What a dial needs, owned, so that it can run in its own task and outlive any one caller.
struct DialSpec {
    source: WorkloadCertificate,
    trust: TrustBundle,
    expected: Vec<SpiffeId>,
    destination: SocketAddr,
}

impl DialSpec {
    fn new(request: &TunnelRequest) -> Self {
        Self {
            source: request.source.clone(),
            trust: request.trust.clone(),
            expected: request.expected_identities.clone(),
            destination: request.destination,
        }
    }
}

async fn dial_task(pool: Arc<Pool>, key: PoolKey, spec: DialSpec, done: watch::Sender<DialState>) {
    let outcome = match dial(&spec, &pool.dialer, pool.settings.connect_timeout).await {
        Ok((sender, connection, peer_identity)) => {
            let id = pool.next_id.fetch_add(1, Ordering::Relaxed);
            let pooled = Arc::new(PooledConnection {
                id,
                sender,
                peer_identity,
                max_streams: pool.settings.max_streams_per_connection,
                state: AtomicUsize::new(0),
                idle_since_ms: AtomicU64::new(0),
                served: AtomicU64::new(0),
                epoch: pool.epoch,
            });
            pooled.touch();
            pool.metrics.connections.inc();
            debug!(id, peer.id = %pooled.peer_identity, "HBONE connection established");
            let driver = drive(
                Arc::downgrade(&pool),
                key.clone(),
                pooled.clone(),
                connection,
            );
            tokio::spawn(driver.instrument(info_span!("hbone_connection", id)));
            pool.finish_dial(&key, Some(pooled));
            Ok(())
        }
        Err(error) => {
            debug!(%error, "HBONE dial failed");
            pool.metrics.connection_failure(error.metric_label());
            pool.finish_dial(&key, None);
            Err(error)
        }
    };
    let _ = done.send(DialState::Done(outcome));
}

/// TCP connect, TLS handshake (with the mesh checks) and HTTP/2 preface, under one timeout.
async fn dial(
    spec: &DialSpec,
    dialer: &Dialer,
    timeout: Duration,
) -> Result<(SendRequest<Bytes>, H2Connection, SpiffeId), HboneError> {
    let dst = spec.destination;
    let handshakes = async {
        let config =
            client_config(&spec.source, &spec.trust, spec.expected.clone()).map_err(|e| {
                HboneError::TlsConfig {
                    dst,
                    source: Arc::new(e),
                }
            })?;
        let tcp = dialer(dst).await.map_err(|e| HboneError::TcpConnect {
            dst,
            source: Arc::new(e),
        })?;
        // Tunnels carry interactive traffic; Nagle would delay small frames.
        let _ = tcp.set_nodelay(true);
        // No SNI is sent; the name only satisfies the API. The verifier ignores it.
        let name = ServerName::IpAddress(dst.ip().into());
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| HboneError::TlsHandshake {
                dst,
                reason: describe_handshake_error(&e),
            })?;
        let peer =
            crate::tls::peer_identity(tls.get_ref().1).map_err(|e| HboneError::PeerIdentity {
                dst,
                source: Arc::new(e),
            })?;
        let (sender, connection) =
            client_builder()
                .handshake(tls)
                .await
                .map_err(|e| HboneError::H2Handshake {
                    dst,
                    source: Arc::new(e),
                })?;
        Ok((sender, connection, peer))
    };
    tokio::time::timeout(timeout, handshakes)
        .await
        .map_err(|_| HboneError::ConnectTimeout { dst, timeout })?
}

/// Polls one connection until it closes, dies (no PING ack) or idles out, then takes it out
/// of the pool.
async fn drive(
    pool: Weak<Pool>,
    key: PoolKey,
    pooled: Arc<PooledConnection>,
    mut conn: H2Connection,
) {
    let Some((settings, metrics)) = pool
        .upgrade()
        .map(|pool| (pool.settings.clone(), pool.metrics.clone()))
    else {
        return;
    };
    metrics.connections_active.inc();
    let keepalive = keepalive(
        conn.ping_pong(),
        settings.keepalive_interval,
        settings.keepalive_timeout,
    );
    tokio::pin!(keepalive);
    // Checking twice per idle period retires a connection between 1x and 1.5x the timeout.
    let period = (settings.idle_timeout / 2).max(Duration::from_millis(1));
    let mut idle_check = tokio::time::interval(period);
    idle_check.tick().await;
    loop {
        tokio::select! {
            result = &mut conn => {
                match result {
                    Ok(()) => debug!("HBONE connection closed"),
                    Err(error) => debug!(%error, "HBONE connection ended"),
                }
                break;
            }
            failure = &mut keepalive => {
                debug!(reason = %failure, "HBONE connection failed its keep-alive; closing");
                metrics.connection_failure("keepalive");
                break;
            }
            _ = idle_check.tick() => {
                if pooled.retire_if_idle(settings.idle_timeout) {
                    debug!("HBONE connection idle; releasing it");
                    break;
                }
            }
        }
    }
    pooled.close();
    metrics.connections_active.dec();
    if let Some(pool) = pool.upgrade() {
        pool.remove(&key, pooled.id);
    }
}

/// Resolves only when keep-alive fails: a PING unanswered within `timeout`, or PINGs
/// impossible because the connection is gone.
async fn keepalive(ping_pong: Option<PingPong>, interval: Duration, timeout: Duration) -> String {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(error)) => return format!("PING failed: {error}"),
            Err(_) => return format!("no PING acknowledgement within {timeout:?}"),
        }
    }
}

/// One pooled HTTP/2 connection.
pub(crate) struct PooledConnection {
    id: u64,
    sender: SendRequest<Bytes>,
    peer_identity: SpiffeId,
    max_streams: usize,
    /// Open streams, plus [`CLOSED`] once the connection takes no new ones.
    state: AtomicUsize,
    /// When the last stream ended, in milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    /// Streams that got a response; a connection that served none is not stale, just bad.
    served: AtomicU64,
    epoch: Instant,
}

impl PooledConnection {
    fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
    }

    fn touch(&self) {
        let now = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis();
        self.idle_since_ms
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Whether the driver should let the connection go: it was taken out of service and its
    /// last stream ended, or it has had no stream for `idle_timeout` (then it is closed here,
    /// atomically with respect to [`StreamLease::reserve`], so never under a new stream).
    fn retire_if_idle(&self, idle_timeout: Duration) -> bool {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return true;
        }
        let idle_ms = self.idle_since_ms.load(Ordering::Acquire);
        let idle_since = self.epoch + Duration::from_millis(idle_ms);
        if Instant::now().saturating_duration_since(idle_since) < idle_timeout {
            return false;
        }
        self.state
            .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A reserved stream slot on a pooled connection; dropping it frees the slot.
pub(crate) struct StreamLease {
    connection: Arc<PooledConnection>,
}

impl StreamLease {
    fn reserve(connection: &Arc<PooledConnection>) -> Option<Self> {
        let reserved =
            connection
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                    (state & CLOSED == 0 && state < connection.max_streams).then_some(state + 1)
                });
        reserved.ok().map(|_| Self {
            connection: connection.clone(),
        })
    }

    pub(crate) fn sender(&self) -> SendRequest<Bytes> {
        self.connection.sender.clone()
    }

    pub(crate) fn peer_identity(&self) -> &SpiffeId {
        &self.connection.peer_identity
    }

    /// Whether the connection answered any stream before this one.
    pub(crate) fn served_before(&self) -> bool {
        self.connection.served.load(Ordering::Acquire) > 0
    }

    pub(crate) fn mark_served(&self) {
        self.connection.served.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes the connection out of service: it is going away.
    pub(crate) fn retire(&self) {
        self.connection.close();
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        // Stamp before releasing, so that a retire check never sees a count of zero with a
        // stale idle time.
        self.connection.touch();
        self.connection.state.fetch_sub(1, Ordering::AcqRel);
    }
}
