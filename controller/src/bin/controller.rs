//! The controller binary: `controller serve` runs the control plane; `controller token issue`
//! gives a node its bearer token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use controller::app::{
    Controller, ControllerConfig, DEFAULT_GRPC_ADDR, DEFAULT_SERVING_NAMES, DEFAULT_STATUS_ADDR,
};
use controller::auth::{ProxyKind, Tokens};
use controller::ca::{CaOptions, DEFAULT_CERTIFICATE_TTL, DEFAULT_MAX_CERTIFICATE_TTL};
use controller::translate::{DEFAULT_ROOT_NAMESPACE, TranslateConfig};
use ipnet::IpNet;

/// Threads for blocking work. Only the store's reloads and the translations run there, one
/// after the other, and each allocates and frees a copy of the whole mesh. glibc gives every
/// thread its own malloc arena and keeps what an arena freed, so with tokio's large default
/// pool the controller of a 10,000-pod mesh grew past 360 MiB over 50 changes; one thread
/// keeps that churn in one arena (tests/BENCHMARKS.md).
const MAX_BLOCKING_THREADS: usize = 1;

#[derive(Parser)]
#[command(name = "controller", version, about = "The mesh's control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the manifests, run the CA and serve configuration to every proxy.
    Serve(ServeArgs),
    /// Manage proxy bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory of YAML manifests (the desired state).
    #[arg(long, env = "MESH_MANIFESTS")]
    manifests: PathBuf,
    /// Directory for the CA, tokens, VIP allocations and pod status.
    #[arg(long, env = "MESH_STATE")]
    state: PathBuf,
    /// Address of the gRPC port (delta ADS and CA, over TLS).
    #[arg(long, default_value = DEFAULT_GRPC_ADDR)]
    grpc_addr: SocketAddr,
    /// Address of the status API and metrics (HTTP).
    #[arg(long, default_value = DEFAULT_STATUS_ADDR)]
    status_addr: SocketAddr,
    /// Also serve the status API on this Unix socket.
    #[arg(long)]
    status_socket: Option<PathBuf>,
    /// Trust domain of workload identities.
    #[arg(long, default_value = ztunnel::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Namespace whose selector-less policies apply mesh-wide.
    #[arg(long, default_value = DEFAULT_ROOT_NAMESPACE)]
    root_namespace: String,
    /// CIDR that service VIPs are allocated from when a Service has no clusterIP.
    #[arg(long, default_value = controller::store::vip::DEFAULT_SERVICE_CIDR)]
    service_cidr: IpNet,
    /// Default workload certificate lifetime, in seconds.
    #[arg(long, default_value_t = DEFAULT_CERTIFICATE_TTL.as_secs())]
    cert_ttl_secs: u64,
    /// Longest workload certificate lifetime a proxy may ask for, in seconds.
    #[arg(long, default_value_t = DEFAULT_MAX_CERTIFICATE_TTL.as_secs())]
    max_cert_ttl_secs: u64,
    /// Extra DNS names for the controller's serving certificate.
    #[arg(long = "serving-name")]
    serving_names: Vec<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token for a proxy on a node and write it to a file (owner-only).
    Issue {
        /// The state directory of the controller.
        #[arg(long, env = "MESH_STATE")]
        state: PathBuf,
        /// The node the proxy runs on: it bounds the identities the proxy may obtain.
        #[arg(long)]
        node: String,
        /// The kind of proxy.
        #[arg(long, value_enum, default_value = "ztunnel")]
        kind: Kind,
        /// Where to write the token.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Ztunnel,
    Waypoint,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(TokenCommand::Issue {
            state,
            node,
            kind,
            out,
        }) => {
            controller::fs::create_private_dir(&state)
                .with_context(|| format!("cannot create {}", state.display()))?;
            let kind = match kind {
                Kind::Ztunnel => ProxyKind::Ztunnel,
                Kind::Waypoint => ProxyKind::Waypoint,
            };
            let mut tokens = Tokens::load(&state)?;
            let token = tokens.issue(&state, kind, &node)?;
            controller::fs::write_private_atomically(&out, format!("{token}\n").as_bytes())
                .with_context(|| format!("cannot write the token to {}", out.display()))?;
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let mut serving_names: Vec<String> = DEFAULT_SERVING_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    serving_names.extend(args.serving_names);
    let config = ControllerConfig {
        manifest_dir: args.manifests,
        state_dir: args.state,
        grpc_addr: args.grpc_addr,
        status_addr: args.status_addr,
        status_socket: args.status_socket,
        service_cidr: args.service_cidr,
        ca: CaOptions {
            default_ttl: Duration::from_secs(args.cert_ttl_secs),
            max_ttl: Duration::from_secs(args.max_cert_ttl_secs),
        },
        translate: TranslateConfig {
            trust_domain: args.trust_domain.into(),
            root_namespace: args.root_namespace.into(),
            ..TranslateConfig::default()
        },
        serving_names,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let controller = Controller::start(config).await?;
        controller.run_until(shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
