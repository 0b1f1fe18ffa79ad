//! The access log off the request path: a request hands its line's fields to a bounded
//! queue and goes on; one writer thread formats the lines and writes them in batches.
//!
//! Formatting and writing each line where the request ended cost 7-11 % of the waypoint's
//! CPU on the mesh path (tests/BENCHMARKS.md, "Where the time goes"): `tracing`'s formatter
//! and one `write(2)` to stderr per request, on a data-path worker. Now the request only
//! moves its record's fields into an [`AccessEntry`] and tries the queue. The writer thread
//! formats the entry with `tracing-subscriber`'s own formatter, configured as the binary's
//! (text or JSON, colours on a terminal), so the line reads as before, and writes everything
//! that queued up with one `write(2)`. What differs: the timestamp is when the line was
//! formatted (moments after the request ended, whose duration is in `duration_ms`), and the
//! line carries no span prefix (HTTP/1 lines used to carry the tunnel's spans; HTTP/2 and
//! upgraded ones never did).
//!
//! A full queue never blocks a request: its line is dropped, counted in
//! `waypoint_access_log_dropped_lines_total`, and the first drop is logged. The filter stays
//! where it was: `RUST_LOG=info,access=off` (or `/logging`) stops the lines before anything
//! is queued.

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{Dispatch, Level, info, warn};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use ztunnel::identity::SpiffeId;

/// Lines that may wait for the writer; past them lines are dropped.
///
/// About 80 ms of a busy waypoint's requests (50,000/s), so a writer held up by a slow
/// reader of stderr loses lines only when it stays behind. The queue grows in blocks as it
/// fills, so an idle waypoint does not hold it.
pub const ACCESS_LOG_QUEUE: usize = 4096;

/// How long the writer lets lines gather after a write: a busy waypoint then pays one
/// system call per batch, and its requests do not wake the writer one by one.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// Formatted bytes after which the writer writes even if more lines wait.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// How the writer formats lines.
#[derive(Clone, Debug)]
pub struct AccessLogSettings {
    /// See [`ACCESS_LOG_QUEUE`].
    pub queue: usize,
    /// JSON lines (the binary's `--log-json`) rather than text.
    pub json: bool,
    /// ANSI colours, as the binary's other log lines have them.
    pub ansi: bool,
}

impl AccessLogSettings {
    /// The settings for lines written to stderr, formatted as the binary's other logs are
    /// (`ztunnel::admin::init_logging`): colours when stderr is a terminal.
    pub fn stderr(json: bool) -> Self {
        Self {
            queue: ACCESS_LOG_QUEUE,
            json,
            ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

/// One request's access-log line, as fields: what the record held when it ended.
#[derive(Debug)]
pub struct AccessEntry {
    pub(super) method: Method,
    pub(super) source_addr: Option<IpAddr>,
    pub(super) source_principal: SpiffeId,
    pub(super) service: Arc<str>,
    pub(super) endpoint: Option<Arc<str>>,
    pub(super) path: String,
    pub(super) authority: String,
    pub(super) version: &'static str,
    pub(super) status: u16,
    pub(super) grpc_status: Option<Arc<str>>,
    pub(super) flags: String,
    pub(super) route: Option<(Arc<str>, Arc<str>)>,
    pub(super) attempts: u32,
    pub(super) duration_ms: u64,
    pub(super) bytes_received: u64,
    pub(super) bytes_sent: u64,
    pub(super) trace_id: String,
    pub(super) error: Option<(String, &'static str)>,
}

impl AccessEntry {
    /// Emits the line (target `access`) to the current `tracing` dispatcher.
    pub(super) fn emit(&self) {
        let source_addr = self
            .source_addr
            .map_or_else(String::new, |ip| ip.to_string());
        let (route, rule) = self
            .route
            .as_ref()
            .map(|(route, rule)| (&**route, &**rule))
            .unzip();
        let (error, caused_by) = self
            .error
            .as_ref()
            .map(|(error, by)| (error.as_str(), *by))
            .unzip();
        info!(
            target: "access",
            method = %self.method,
            src.addr = %source_addr,
            src.identity = %self.source_principal,
            dst.service = %self.service,
            dst.workload = self.endpoint.as_deref(),
            path = %self.path,
            authority = %self.authority,
            protocol = self.version,
            status = self.status,
            grpc_status = self.grpc_status.as_deref(),
            flags = %self.flags,
            route,
            rule,
            attempts = self.attempts,
            duration_ms = self.duration_ms,
            bytes_received = self.bytes_received,
            bytes_sent = self.bytes_sent,
            trace_id = %self.trace_id,
            error,
            caused_by,
            "request"
        );
    }
}

/// The request side of the access log: queues entries for the writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    inner: Arc<Queue>,
}

#[derive(Debug)]
struct Queue {
    entries: mpsc::Sender<AccessEntry>,
    dropped: Counter,
    warned: AtomicBool,
}

/// The writer thread; [`AccessLogWriter::finish`] waits for its last lines.
#[derive(Debug)]
pub struct AccessLogWriter {
    thread: JoinHandle<()>,
}

impl AccessLog {
    /// Starts the writer thread, which writes lines to `sink` (stderr in the binary) until
    /// every clone of the returned log is dropped; registers the drop counter in `registry`.
    pub fn start(
        settings: &AccessLogSettings,
        sink: Box<dyn Write + Send>,
        registry: &mut Registry,
    ) -> std::io::Result<(Self, AccessLogWriter)> {
        let (entries, queued) = mpsc::channel(settings.queue.max(1));
        let dropped = Counter::default();
        registry.register(
            "waypoint_access_log_dropped_lines",
            "Access-log lines dropped because the writer was behind",
            dropped.clone(),
        );
        let batch = Batch::default();
        let formatter = formatter(settings, &batch);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(queued, &formatter, &batch, sink))?;
        let log = Self {
            inner: Arc::new(Queue {
                entries,
                dropped,
                warned: AtomicBool::new(false),
            }),
        };
        Ok((log, AccessLogWriter { thread }))
    }

    /// Queues `entry` for the writer; drops and counts it when the queue is full.
    pub fn send(&self, entry: AccessEntry) {
        if self.inner.entries.try_send(entry).is_ok() {
            return;
        }
        self.inner.dropped.inc();
        if !self.inner.warned.swap(true, Ordering::Relaxed) {
            warn!(
                "the access-log writer is behind: dropping lines while its queue is full \
                 (counted in waypoint_access_log_dropped_lines_total; logged once)"
            );
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.get()
    }
}

impl AccessLogWriter {
    /// Waits up to `timeout` for the writer to write the lines still queued; it ends once
    /// every [`AccessLog`] clone is gone. Whether it ended in time.
    pub fn finish(self, timeout: Duration) -> bool {
        let until = std::time::Instant::now() + timeout;
        while !self.thread.is_finished() {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.thread.join().is_ok()
    }
}

/// Where the writer's formatter puts lines until they are written.
#[derive(Clone, Default)]
struct Batch(Arc<Mutex<Vec<u8>>>);

impl Batch {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Swaps the formatted lines into `out` (empty), keeping both allocations.
    fn take_into(&self, out: &mut Vec<u8>) {
        std::mem::swap(
            &mut *self.0.lock().unwrap_or_else(PoisonError::into_inner),
            out,
        );
    }
}

impl Write for Batch {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer thread's own dispatcher: the binary's format, for target `access` only (so
/// that it changes nothing about how other call sites are filtered), into `batch`.
fn formatter(settings: &AccessLogSettings, batch: &Batch) -> Dispatch {
    let batch = batch.clone();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(settings.ansi)
        .with_writer(move || batch.clone());
    let only_access = Targets::new().with_target("access", Level::INFO);
    if settings.json {
        Dispatch::new(tracing_subscriber::registry().with(layer.json().with_filter(only_access)))
    } else {
        Dispatch::new(tracing_subscriber::registry().with(layer.with_filter(only_access)))
    }
}

/// The writer thread: formats what is queued into `batch`, writes it to `sink` at once,
/// lets lines gather for a moment, and again, until the queue is closed.
fn write_lines(
    mut queued: mpsc::Receiver<AccessEntry>,
    formatter: &Dispatch,
    batch: &Batch,
    mut sink: Box<dyn Write + Send>,
) {
    let mut lines = Vec::new();
    while let Some(first) = queued.blocking_recv() {
        let drained = tracing::dispatcher::with_default(formatter, || {
            first.emit();
            while batch.len() < MAX_BATCH_BYTES {
                match queued.try_recv() {
                    Ok(entry) => entry.emit(),
                    Err(_) => return true,
                }
            }
            false
        });
        batch.take_into(&mut lines);
        // Nowhere to report a failed write but the same stderr; the lines are lost.
        let _ = sink.write_all(&lines).and_then(|()| sink.flush());
        lines.clear();
        if drained {
            std::thread::sleep(BATCH_WINDOW);
        }
    }
}
