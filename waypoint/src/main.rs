//! The `waypoint` binary: the shared L7 proxy, one per Gateway of class `istio-waypoint`.
//!
//! Every flag that the platform provides has an environment variable: the lab (and a pod
//! spec) sets `MESH_CONTROLLER`, `MESH_ROOT_CERT`, `MESH_TOKEN_FILE`, `NODE_NAME`, `POD_NAME`
//! and `POD_IP`, so the Deployment the controller generates only names the Gateway.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use waypoint::app::{WaypointConfig, run};

#[derive(Parser)]
#[command(name = "waypoint", version, about = "The mesh's shared L7 proxy")]
struct Args {
    /// The Gateway this waypoint runs for (its Service has the same name).
    #[arg(long)]
    name: String,
    /// The Gateway's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The service account the waypoint runs as; the Gateway's name by default.
    #[arg(long)]
    service_account: Option<String>,
    /// This pod's name (for the proxy id); the Gateway's name by default.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// This pod's address.
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<IpAddr>,
    /// The node the pod runs on; its token is bound to it.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// The controller's gRPC address (xDS and CA).
    #[arg(long, env = "MESH_CONTROLLER", default_value = "controller:15012")]
    controller: String,
    /// The DNS name in the controller's serving certificate.
    #[arg(long, env = "MESH_CONTROLLER_NAME", default_value = ztunnel::xds::DEFAULT_SERVER_NAME)]
    controller_name: String,
    /// The mesh trust bundle (PEM), e.g. the controller's `<state>/root-cert.pem`.
    #[arg(long, env = "MESH_ROOT_CERT")]
    root_cert: PathBuf,
    /// The file holding the waypoint's bearer token.
    #[arg(long, env = "MESH_TOKEN_FILE")]
    token_file: PathBuf,
    /// The trust domain of the mesh.
    #[arg(long, default_value = ztunnel::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The suffix of service hostnames.
    #[arg(long, default_value = ztunnel::xds::PROXY_DNS_DOMAIN)]
    domain_suffix: String,
    /// Where HBONE from the ztunnels arrives.
    #[arg(long, default_value = "0.0.0.0:15008")]
    hbone_addr: SocketAddr,
    /// Admin endpoint (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// Readiness endpoint.
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: SocketAddr,
    /// Validity asked for the waypoint's certificate, in seconds.
    #[arg(
        long,
        env = "MESH_CERT_VALIDITY_SECS",
        default_value_t = ztunnel::cert_manager::DEFAULT_CERTIFICATE_VALIDITY.as_secs()
    )]
    cert_validity_secs: u64,
    /// Data-path worker threads.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
    /// Seconds open tunnels, proxied TCP and upgraded connections may run on after SIGTERM.
    #[arg(long, default_value_t = ztunnel::proxy::DRAIN_DEADLINE.as_secs())]
    drain_deadline_secs: u64,
    /// Seconds a byte relay (a connection proxied as opaque TCP, or an upgraded one such as a
    /// WebSocket) may carry no byte either way before both sides are closed; 0 turns the
    /// timeout off. `--upgrade-idle-timeout-secs`, its former name, is still accepted.
    #[arg(
        long,
        alias = "upgrade-idle-timeout-secs",
        default_value_t = waypoint::relay::TCP_IDLE_TIMEOUT.as_secs()
    )]
    tcp_idle_timeout_secs: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let set_level = ztunnel::admin::init_logging(args.log_json);
    let config = WaypointConfig {
        service_account: args.service_account.unwrap_or_else(|| args.name.clone()),
        pod_name: args.pod_name.unwrap_or_else(|| args.name.clone()),
        name: args.name,
        namespace: args.namespace,
        pod_ip: args.pod_ip,
        node: args.node,
        controller: args.controller,
        controller_name: args.controller_name,
        root_cert: args.root_cert,
        token_file: args.token_file,
        trust_domain: args.trust_domain,
        domain_suffix: args.domain_suffix,
        hbone_addr: args.hbone_addr,
        admin_addr: args.admin_addr,
        metrics_addr: args.metrics_addr,
        readiness_addr: args.readiness_addr,
        cert_validity: Duration::from_secs(args.cert_validity_secs),
        worker_threads: args.worker_threads,
        drain_deadline: Duration::from_secs(args.drain_deadline_secs),
        tcp_idle_timeout: Duration::from_secs(args.tcp_idle_timeout_secs),
        log_json: args.log_json,
    };
    run(config, set_level)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags every run needs, then `extra`.
    fn parse(extra: &[&str]) -> Args {
        let required = [
            "waypoint",
            "--name=waypoint",
            "--namespace=shop",
            "--node=node-1",
            "--root-cert=root-cert.pem",
            "--token-file=token",
        ];
        Args::try_parse_from(required.iter().chain(extra)).unwrap()
    }

    #[test]
    fn the_tcp_idle_timeout_defaults_to_an_hour_and_keeps_its_former_name() {
        assert_eq!(parse(&[]).tcp_idle_timeout_secs, 3600);
        assert_eq!(
            parse(&["--tcp-idle-timeout-secs=60"]).tcp_idle_timeout_secs,
            60
        );
        assert_eq!(
            parse(&["--upgrade-idle-timeout-secs", "0"]).tcp_idle_timeout_secs,
            0
        );
    }
}
