//! `meshctl`: the command line of the mesh. In the embedded mode it edits the manifest
//! directory (validating before it writes) and reads the controller's status API.

mod apply;
mod context;
mod get;
mod http;
mod table;
mod waypoint;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use context::Context;
pub use waypoint::{Traffic, WaypointCommand, gateway_manifest};

/// The command line.
#[derive(Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Drive the mesh: apply manifests, label, inspect"
)]
pub struct Cli {
    /// The manifest directory of the controller (default: from the lab context).
    #[arg(long, global = true, env = "MESH_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// The controller's status API, host:port (default: from the lab context, else 127.0.0.1:15014).
    #[arg(long, global = true, env = "MESH_CONTROLLER")]
    pub controller: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// A meshctl command.
#[derive(Subcommand)]
pub enum Command {
    /// Create or replace objects from a file, a directory of files, or `-` (standard input).
    Apply {
        /// The manifests.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete the objects of a file, or one object by kind and name.
    Delete {
        /// The objects defined in this file.
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
        file: Option<PathBuf>,
        /// The kind (pod, service, namespace, authorizationpolicy, gateway, httproute, deployment).
        kind: Option<String>,
        /// The object's name.
        name: Option<String>,
        /// The object's namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Set (`KEY=VALUE`) or remove (`KEY-`) a label on a namespace, service or pod.
    Label {
        /// namespace, service or pod.
        kind: String,
        /// The object's name.
        name: String,
        /// `KEY=VALUE` or `KEY-`.
        #[arg(required = true)]
        labels: Vec<String>,
        /// The object's namespace (not for namespaces).
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// List objects as the controller sees them.
    Get {
        /// namespaces, pods, services, workloads, authorizationpolicies, gateways, httproutes.
        kind: String,
        /// Only this namespace.
        #[arg(short, long, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output: a table (default), `wide`, `json` or `yaml`.
        #[arg(short, long)]
        output: Option<String>,
    },
    /// Every proxy connected to the controller, and what it acknowledged.
    ProxyStatus,
    /// Waypoints: apply, list, delete, status.
    Waypoint {
        /// What to do.
        #[command(subcommand)]
        command: WaypointCommand,
    },
    /// The lab: the whole mesh on this machine (`meshctl lab --help`). Runs the `mesh-lab`
    /// program installed beside meshctl, as git and kubectl run their plugins.
    #[command(disable_help_flag = true)]
    Lab {
        /// The lab command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Runs a command; the error is what meshctl prints before exiting with status 1.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let context = Context::discover(cli.manifests, cli.controller);
    match cli.command {
        Command::Apply { files } => apply::apply(&context, &files),
        Command::Delete {
            file,
            kind,
            name,
            namespace,
        } => apply::delete(
            &context,
            file.as_deref(),
            kind.as_deref(),
            name.as_deref(),
            &namespace,
        ),
        Command::Label {
            kind,
            name,
            labels,
            namespace,
        } => apply::label(&context, &kind, &name, &namespace, &labels),
        Command::Get {
            kind,
            namespace,
            all_namespaces,
            output,
        } => {
            let namespace = match (namespace, all_namespaces) {
                (_, true) => None,
                (Some(ns), false) => Some(ns),
                (None, false) => Some("default".to_string()),
            };
            get::get(&context, &kind, namespace.as_deref(), output.as_deref())
        }
        Command::ProxyStatus => get::proxy_status(&context),
        Command::Waypoint { command } => waypoint::run(&context, command),
        Command::Lab { args } => lab(&args),
    }
}

/// Runs `mesh-lab` from meshctl's own directory (or `PATH`) and exits with its status.
fn lab(args: &[String]) -> anyhow::Result<()> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("mesh-lab")))
        .filter(|path| path.exists());
    let program = beside.unwrap_or_else(|| PathBuf::from("mesh-lab"));
    let status = std::process::Command::new(&program)
        .args(args)
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {}: {e}\n  build it with `cargo build -p mesh-lab` (it is installed beside meshctl)",
                program.display()
            )
        })?;
    std::process::exit(status.code().unwrap_or(1));
}
