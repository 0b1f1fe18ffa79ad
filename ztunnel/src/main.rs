//! The `ztunnel` binary: one per node.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ztunnel::app::{ZtunnelConfig, run};
use ztunnel::proxy::ProxySettings;

#[derive(Parser)]
#[command(
    name = "ztunnel",
    version,
    about = "The mesh's per-node zero-trust tunnel"
)]
struct Args {
    /// The node this tunnel serves.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// The node's address (used in the proxy id only).
    #[arg(long, default_value = "0.0.0.0")]
    node_ip: IpAddr,
    /// The controller's gRPC address (xDS and CA).
    #[arg(long, default_value = "controller:15012")]
    controller: String,
    /// The DNS name in the controller's serving certificate.
    #[arg(long, default_value = ztunnel::xds::DEFAULT_SERVER_NAME)]
    controller_name: String,
    /// The mesh trust bundle (PEM), e.g. the controller's `<state>/root-cert.pem`.
    #[arg(long)]
    root_cert: PathBuf,
    /// The file holding this node's bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// The trust domain of the mesh.
    #[arg(long, default_value = ztunnel::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The Unix socket of the enrollment API (the node agent connects to it).
    #[arg(long, default_value = "/var/run/ztunnel/enroll.sock")]
    enrollment_socket: PathBuf,
    /// Admin endpoint (keep it on loopback: pods must not reach it).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// Readiness endpoint.
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: SocketAddr,
    /// Validity asked for workload certificates, in seconds.
    #[arg(long, default_value_t = ztunnel::cert_manager::DEFAULT_CERTIFICATE_VALIDITY.as_secs())]
    cert_validity_secs: u64,
    /// Data-path worker threads.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
    /// Seconds open connections may run on after SIGTERM.
    #[arg(long, default_value_t = ztunnel::proxy::DRAIN_DEADLINE.as_secs())]
    drain_deadline_secs: u64,
    /// Accept connections to workloads a waypoint serves from anyone, not only from the
    /// waypoint (turns bypass protection off).
    #[arg(long)]
    no_bypass_protection: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let set_level = ztunnel::admin::init_logging(args.log_json);
    let config = ZtunnelConfig {
        node: args.node,
        node_ip: args.node_ip,
        controller: args.controller,
        controller_name: args.controller_name,
        root_cert: args.root_cert,
        token_file: args.token_file,
        trust_domain: args.trust_domain,
        enrollment_socket: args.enrollment_socket,
        admin_addr: args.admin_addr,
        metrics_addr: args.metrics_addr,
        readiness_addr: args.readiness_addr,
        cert_validity: Duration::from_secs(args.cert_validity_secs),
        worker_threads: args.worker_threads,
        proxy: ProxySettings {
            drain_deadline: Duration::from_secs(args.drain_deadline_secs),
            bypass_protection: !args.no_bypass_protection,
        },
    };
    run(config, set_level)
}
