//! `xds-scale`: how the controller's delta ADS holds up in a large mesh.
//!
//! Generates manifests for N pods and S services, starts `controller serve` as a separate
//! process on loopback, connects P proxies (delta ADS over TLS, wildcard on addresses and
//! authorizations, every response acknowledged), and measures:
//!
//! - the first sync: one proxy alone, then P proxies connecting at once;
//! - R rounds of a one-pod change on disk (a label rewritten atomically in the pod's own file)
//!   until all P proxies have received the pod's new workload, then the ACKs are confirmed on
//!   the status API;
//! - the controller's memory (VmRSS, VmHWM) from `/proc`.
//!
//! Build and run: `cargo build --release -p controller -p mesh-tests &&
//! target/release/xds-scale` (see tests/BENCHMARKS.md).

// The crate root lives in src/bin/, so its modules are named by path.
#[path = "xds_scale/ads_client.rs"]
mod ads_client;
#[path = "xds_scale/controller_process.rs"]
mod controller_process;
#[path = "xds_scale/manifests.rs"]
mod manifests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use ads_client::{ClientConfig, ClientEvent, run_client};
use controller::app::ROOT_CERT_FILE;
use controller::translate::TranslateConfig;
use controller_process::{ControllerProcess, Memory, issue_tokens};
use manifests::{MeshShape, ProbePod};

/// Upper bound of the controller's start (first load and translation).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Upper bound of a first sync, of one proxy or of all of them.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// Upper bound of one round: change on disk to every proxy having it, and the ACK check.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// Quiet time before a round, well above the store's debounce, so that rounds never merge.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// Quiet time before the idle memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// The goals of the controller issue: a one-pod change reaches every proxy (p99)...
const GOAL_CHANGE_P99: Duration = Duration::from_millis(100);

/// ...a full first sync completes...
const GOAL_FIRST_SYNC: Duration = Duration::from_secs(2);

/// ...and the controller's memory stays under this, in KiB (300 MiB).
const GOAL_MEMORY_KIB: u64 = 300 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "xds-scale",
    about = "Delta ADS scale benchmark of the controller"
)]
struct Args {
    /// Pods in the mesh (all placed, all enrolled).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Services, each selecting pods of its namespace.
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    /// Namespaces the pods and services spread over (one AuthorizationPolicy each).
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Nodes the pods spread over.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Connected proxies.
    #[arg(long, default_value_t = 100)]
    proxies: usize,
    /// One-pod changes measured.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// The controller binary; by default the one next to this program.
    #[arg(long)]
    controller: Option<PathBuf>,
    /// Keep the controller's log here (set RUST_LOG for more detail); by default it is
    /// removed with the temporary directory.
    #[arg(long)]
    controller_log: Option<PathBuf>,
    /// Print every round.
    #[arg(long)]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.pods == 0 || args.namespaces == 0 || args.nodes == 0 || args.proxies == 0 {
        bail!("--pods, --namespaces, --nodes and --proxies must be at least 1");
    }
    let binary = match &args.controller {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("controller"),
    };
    if !binary.is_file() {
        bail!(
            "no controller binary at {}; build it with `cargo build --release -p controller` or pass --controller",
            binary.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        // On a signal the run is dropped, and with it the controller process and the
        // temporary directory.
        tokio::select! {
            report = run(&args, binary) => report,
            signal = interrupted() => bail!("stopped by {signal}"),
        }
    })?;
    report.print(&args);
    Ok(())
}

/// Completes on SIGINT, SIGTERM or SIGHUP, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    async fn wait(kind: SignalKind, name: &'static str) -> &'static str {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
                name
            }
            Err(e) => {
                eprintln!("xds-scale: cannot watch {name}: {e}");
                std::future::pending().await
            }
        }
    }
    tokio::select! {
        name = wait(SignalKind::interrupt(), "SIGINT") => name,
        name = wait(SignalKind::terminate(), "SIGTERM") => name,
        name = wait(SignalKind::hangup(), "SIGHUP") => name,
    }
}

/// Everything measured.
struct Report {
    shape: MeshShape,
    generate: Duration,
    start_to_ready: Duration,
    memory_ready: Memory,
    measured: Measured,
}

/// What is measured with proxies connected.
struct Measured {
    one_proxy_sync: Duration,
    /// Sorted.
    per_proxy_sync: Vec<Duration>,
    all_proxies_sync: Duration,
    /// In round order.
    changes: Vec<Duration>,
    /// Controller CPU time (user + system) per round: the change itself, its pushes and ACKs,
    /// and the status API polls that confirm the ACKs.
    cpu_per_change: Duration,
    memory_synced: Memory,
    memory_end: Memory,
}

async fn run(args: &Args, binary: PathBuf) -> anyhow::Result<Report> {
    let root = tempfile::Builder::new().prefix("xds-scale-").tempdir()?;
    let manifests = root.path().join("manifests");
    let state = root.path().join("state");
    let shape = MeshShape {
        pods: args.pods,
        services: args.services,
        namespaces: args.namespaces,
        nodes: args.nodes,
        probes: args.rounds.clamp(1, args.pods),
    };
    let started = Instant::now();
    let probes = shape.write(&manifests)?;
    let generate = started.elapsed();
    let tokens = issue_tokens(
        &binary,
        &state,
        &root.path().join("tokens"),
        args.proxies + 1,
        args.nodes,
    )?;

    let log = match &args.controller_log {
        Some(path) => path.clone(),
        None => root.path().join("controller.log"),
    };
    let started = Instant::now();
    let mut controller = ControllerProcess::start(&binary, &manifests, &state, log)?;
    controller.wait_ready(START_TIMEOUT).await?;
    let start_to_ready = started.elapsed();
    let memory_ready = controller.memory()?;
    eprintln!("controller ready after {start_to_ready:?}");

    let roots_pem = std::fs::read_to_string(state.join(ROOT_CERT_FILE))
        .context("cannot read the trust bundle")?;
    let naming = TranslateConfig::default();
    let config = Arc::new(ClientConfig {
        grpc_addr: controller.grpc_addr,
        roots_pem,
        expected: shape.expected(),
        probes: probes
            .iter()
            .enumerate()
            .map(|(i, p)| (naming.workload_uid(&p.namespace, &p.name), i))
            .collect(),
    });
    let measured = measure(args, &shape, &probes, &controller, config, tokens)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", controller.log_tail()))?;
    Ok(Report {
        shape,
        generate,
        start_to_ready,
        memory_ready,
        measured,
    })
}

async fn measure(
    args: &Args,
    shape: &MeshShape,
    probes: &[ProbePod],
    controller: &ControllerProcess,
    config: Arc<ClientConfig>,
    mut tokens: Vec<String>,
) -> anyhow::Result<Measured> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut clients = JoinSet::new();

    // One proxy alone: the first sync without contention.
    let lone = tokens.pop().context("a token for the lone proxy")?;
    let handle = clients.spawn(run_client(
        args.proxies,
        lone,
        config.clone(),
        events_tx.clone(),
    ));
    let one_proxy_sync = wait_synced(&mut events, 1, &config).await?[0];
    handle.abort();
    eprintln!("one proxy synced in {one_proxy_sync:?}");

    // All proxies at once.
    let started = Instant::now();
    for (client, token) in tokens.into_iter().enumerate() {
        clients.spawn(run_client(client, token, config.clone(), events_tx.clone()));
    }
    let mut per_proxy_sync = wait_synced(&mut events, args.proxies, &config).await?;
    let all_proxies_sync = started.elapsed();
    per_proxy_sync.sort();
    eprintln!("{} proxies synced in {all_proxies_sync:?}", args.proxies);
    tokio::time::sleep(SETTLE).await;
    let memory_synced = controller.memory()?;

    let mut changes = Vec::with_capacity(args.rounds);
    let cpu_before = controller.cpu_time()?;
    for round in 1..=args.rounds {
        tokio::time::sleep(ROUND_PAUSE).await;
        let probe = (round - 1) % probes.len();
        let revision = format!("r{round}");
        let written = Instant::now();
        let written_at = std::time::SystemTime::now();
        shape.set_probe_version(&probes[probe], &revision)?;
        let (last, generation) = wait_probe(&mut events, probe, &revision, args.proxies).await?;
        let change = last.saturating_duration_since(written);
        changes.push(change);
        if args.verbose {
            // Unix time, to line the rounds up with the controller's log.
            let at = written_at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "round {round}: written at {:.6}, generation {generation}, all received after {}",
                at.as_secs_f64(),
                ms(change)
            );
        }
        controller
            .wait_acked(
                mesh_proto::ADDRESS_TYPE_URL,
                generation,
                args.proxies,
                ROUND_TIMEOUT,
            )
            .await
            .with_context(|| format!("round {round}"))?;
    }
    let cpu_per_change = (controller.cpu_time()? - cpu_before) / args.rounds.max(1) as u32;
    let memory_end = controller.memory()?;
    clients.abort_all();
    Ok(Measured {
        one_proxy_sync,
        per_proxy_sync,
        all_proxies_sync,
        changes,
        cpu_per_change,
        memory_synced,
        memory_end,
    })
}

/// Waits for `count` first syncs of exactly the expected resources and returns their
/// durations.
async fn wait_synced(
    events: &mut mpsc::UnboundedReceiver<ClientEvent>,
    count: usize,
    config: &ClientConfig,
) -> anyhow::Result<Vec<Duration>> {
    let expected = config.expected;
    let mut synced = Vec::with_capacity(count);
    let waited = tokio::time::timeout(SYNC_TIMEOUT, async {
        while synced.len() < count {
            match events.recv().await.context("every client stopped")? {
                ClientEvent::Synced { elapsed, received } => {
                    if received != (expected.addresses, expected.authorizations) {
                        bail!(
                            "a proxy received {} addresses and {} authorizations, expected {} and {}",
                            received.0,
                            received.1,
                            expected.addresses,
                            expected.authorizations
                        );
                    }
                    synced.push(elapsed);
                }
                ClientEvent::Failed { client, error } => bail!("proxy {client}: {error}"),
                ClientEvent::Probe { .. } => {}
            }
        }
        Ok(())
    })
    .await;
    match waited {
        Ok(result) => result.map(|()| synced),
        Err(_) => bail!(
            "only {} of {count} proxies synced within {SYNC_TIMEOUT:?}",
            synced.len()
        ),
    }
}

/// Waits until `proxies` clients received `revision` of a probe pod; returns when the last one
/// did and the generation of its response.
async fn wait_probe(
    events: &mut mpsc::UnboundedReceiver<ClientEvent>,
    probe: usize,
    revision: &str,
    proxies: usize,
) -> anyhow::Result<(Instant, u64)> {
    let mut received = 0;
    let mut last = None;
    let waited = tokio::time::timeout(ROUND_TIMEOUT, async {
        while received < proxies {
            match events.recv().await.context("every client stopped")? {
                ClientEvent::Probe {
                    probe: p,
                    revision: r,
                    generation,
                    at,
                } if p == probe && r == revision => {
                    received += 1;
                    last = Some((at, generation));
                }
                ClientEvent::Failed { client, error } => bail!("proxy {client}: {error}"),
                _ => {}
            }
        }
        Ok(())
    })
    .await;
    match (waited, last) {
        (Ok(Ok(())), Some(last)) => Ok(last),
        (Ok(Err(e)), _) => Err(e),
        _ => bail!(
            "only {received} of {proxies} proxies received {revision} within {ROUND_TIMEOUT:?}"
        ),
    }
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report {
    fn print(&self, args: &Args) {
        let expected = self.shape.expected();
        let m = &self.measured;
        let mut changes = m.changes.clone();
        changes.sort();
        let syncs = &m.per_proxy_sync;
        println!(
            "xds-scale: {} pods, {} services, {} namespaces, {} nodes, {} proxies, {} rounds",
            args.pods, args.services, args.namespaces, args.nodes, args.proxies, args.rounds
        );
        println!(
            "resources: {} addresses ({} workloads + {} services), {} authorizations",
            expected.addresses, self.shape.pods, self.shape.services, expected.authorizations
        );
        println!("manifests generated in {}", ms(self.generate));
        println!(
            "controller start to ready (first load + translation): {}",
            ms(self.start_to_ready)
        );
        println!("first sync, one proxy alone: {}", ms(m.one_proxy_sync));
        println!(
            "first sync, {} proxies at once: per proxy p50 {} p99 {} max {}; all done after {}",
            syncs.len(),
            ms(percentile(syncs, 50.0)),
            ms(percentile(syncs, 99.0)),
            ms(syncs.last().copied().unwrap_or_default()),
            ms(m.all_proxies_sync)
        );
        println!(
            "one-pod change on disk -> all {} proxies received it ({} rounds): p50 {} p99 {} max {} min {}",
            args.proxies,
            changes.len(),
            ms(percentile(&changes, 50.0)),
            ms(percentile(&changes, 99.0)),
            ms(changes.last().copied().unwrap_or_default()),
            ms(changes.first().copied().unwrap_or_default())
        );
        println!(
            "controller CPU time per change (with its pushes, ACKs and status polls): {}",
            ms(m.cpu_per_change)
        );
        println!(
            "controller memory: RSS ready {}, RSS synced+idle {}, RSS end {}, peak (VmHWM) {}",
            mib(self.memory_ready.rss_kib),
            mib(m.memory_synced.rss_kib),
            mib(m.memory_end.rss_kib),
            mib(m.memory_end.hwm_kib)
        );
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        let p99 = percentile(&changes, 99.0);
        println!(
            "goals: change p99 < {} {}; first sync of all proxies < {} {}; peak memory < {} {}",
            ms(GOAL_CHANGE_P99),
            verdict(p99 < GOAL_CHANGE_P99),
            ms(GOAL_FIRST_SYNC),
            verdict(m.all_proxies_sync < GOAL_FIRST_SYNC),
            mib(GOAL_MEMORY_KIB),
            verdict(m.memory_end.hwm_kib < GOAL_MEMORY_KIB)
        );
    }
}
