//! The lab's command line, shared by the `mesh-lab` binary and (later) `meshctl lab`.

use std::io::Write;
use std::path::Path;

use clap::{Args, Subcommand};

use crate::components;
use crate::inspect::{self, LogSource};
use crate::lifecycle::{self, Component, UpOptions};
use crate::name::{DEFAULT_LAB_NAME, LabName};
use crate::paths::LabPaths;
use crate::teardown::SUPERVISE_ARG;

/// The environment variable naming the lab when `--name` is not given.
pub const LAB_NAME_ENV: &str = "MESH_LAB";

/// The lab's commands and the lab they act on.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab's name: the prefix of its namespaces, the name of its state directory.
    #[arg(long, global = true, env = LAB_NAME_ENV, default_value = DEFAULT_LAB_NAME)]
    pub name: LabName,
    /// What to do.
    #[command(subcommand)]
    pub command: LabCommand,
}

/// What the lab can do.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create the lab: network, controller, a ztunnel per node, the supervisor.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 2)]
        nodes: u8,
        /// Run no ztunnels (pods run, nothing is captured).
        #[arg(long)]
        no_ztunnel: bool,
        /// Leave meshctl's context file alone (tests, or a second lab beside the one meshctl
        /// uses).
        #[arg(long)]
        no_context: bool,
        /// Validity the ztunnels ask for workload certificates, in seconds (default 24 h);
        /// a short one shows rotation.
        #[arg(long)]
        cert_ttl_secs: Option<u64>,
        /// An extra argument of every ztunnel, e.g. `--ztunnel-arg=--drain-deadline-secs=5`
        /// or `--ztunnel-arg=--no-bypass-protection` (repeat for more); kept for restarts.
        #[arg(long = "ztunnel-arg", value_name = "ARG", allow_hyphen_values = true)]
        ztunnel_args: Vec<String>,
    },
    /// Stop every process and delete every namespace and file of the lab.
    Down,
    /// Nodes, pods and processes.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a pod's namespace, with its name resolution.
    Exec {
        /// The pod, NAMESPACE/NAME.
        pod: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a log: NAMESPACE/POD, `controller`, `ztunnel --node NODE` or `supervisor`.
    Logs {
        /// NAMESPACE/POD, controller, ztunnel or supervisor.
        source: String,
        /// The node, for `ztunnel`.
        #[arg(long)]
        node: Option<String>,
    },
    /// Restart the controller or a node's ztunnel.
    Restart {
        /// `controller` or `ztunnel`.
        component: String,
        /// The node, for `ztunnel`.
        #[arg(long)]
        node: Option<String>,
    },
    /// Send a signal to the controller or a node's ztunnel and return at once (`restart`
    /// stops and starts; this leaves the process to do what it does on the signal).
    Signal {
        /// `controller` or `ztunnel`.
        component: String,
        /// The node, for `ztunnel`.
        #[arg(long)]
        node: Option<String>,
        /// The signal: TERM, INT, KILL, HUP, ... (with or without `SIG`).
        #[arg(long, default_value = "TERM")]
        signal: String,
    },
    /// The guided tour: plaintext, then mTLS after enrolling, then a policy; removes the lab
    /// at the end unless --keep.
    Demo {
        /// Leave the lab up afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Run the supervisor in the foreground (`up` starts it in the background).
    #[command(hide = true)]
    Supervise,
}

/// Why the command line is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `ztunnel` without `--node`.
    #[error("name the node: `{what} ztunnel --node node-1`")]
    NodeMissing {
        /// The command.
        what: &'static str,
    },
    /// An unknown signal.
    #[error("unknown signal {0:?}; use a name such as TERM, INT, KILL or HUP")]
    UnknownSignal(String),
    /// An unknown component.
    #[error("unknown component {given:?}; use {expected}")]
    UnknownComponent {
        /// What was given.
        given: String,
        /// What is accepted.
        expected: &'static str,
    },
}

/// Runs a lab command. `program_args` is how to run this program again up to the lab's
/// subcommands (e.g. `["/usr/bin/meshctl", "lab"]`): `up` starts the supervisor with it.
/// Returns the process exit code.
pub async fn run(args: LabArgs, program_args: Vec<String>) -> anyhow::Result<i32> {
    let lab = args.name;
    match args.command {
        LabCommand::Up {
            nodes,
            no_ztunnel,
            no_context,
            cert_ttl_secs,
            ztunnel_args,
        } => {
            let options = UpOptions {
                name: lab,
                nodes,
                ztunnel: !no_ztunnel,
                bin_dir: components::bin_dir(),
                supervisor_argv: program_args,
                write_context: !no_context,
                cert_ttl_secs,
                ztunnel_args,
            };
            up(options).await?;
        }
        LabCommand::Down => {
            let report = lifecycle::down(&lab).await?;
            print!("{report}");
        }
        LabCommand::Status { json } => {
            let status = inspect::status(&lab)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
        }
        LabCommand::Exec { pod, command } => {
            return Ok(inspect::exec(&lab, &pod, &command)?);
        }
        LabCommand::Logs { source, node } => {
            let source = match source.as_str() {
                "controller" => LogSource::Controller,
                "supervisor" => LogSource::Supervisor,
                "ztunnel" => {
                    LogSource::Ztunnel(node.ok_or(CliError::NodeMissing { what: "logs" })?)
                }
                pod => LogSource::Pod(pod.to_string()),
            };
            print_file(&inspect::log_path(&lab, &source)?)?;
        }
        LabCommand::Restart { component, node } => {
            let component = parse_component(&component, node, "restart")?;
            lifecycle::restart(&lab, &component).await?;
            println!("restarted {component}");
        }
        LabCommand::Signal {
            component,
            node,
            signal,
        } => {
            let component = parse_component(&component, node, "signal")?;
            let signal = parse_signal(&signal)?;
            let pid = lifecycle::signal(&lab, &component, signal)?;
            println!("sent {} to {component} (pid {pid})", signal.as_str());
        }
        LabCommand::Supervise => crate::supervisor::run(&lab).await?,
        LabCommand::Demo { keep } => {
            // The tour drives the lab through the same binaries a user runs, from a thread
            // that may block.
            let driver = crate::drive::LabDriver::new(lab, components::bin_dir());
            tokio::task::spawn_blocking(move || crate::demo::run(&driver, keep)).await??;
        }
    }
    Ok(0)
}

async fn up(mut options: UpOptions) -> anyhow::Result<()> {
    let lab = options.name.clone();
    options
        .supervisor_argv
        .extend([SUPERVISE_ARG.to_string(), "--name".into(), lab.to_string()]);
    let record = lifecycle::up(&options).await?;
    println!(
        "lab {lab} is up: {} node(s), controller {} in {}{}",
        record.nodes.len(),
        record.controller_ip,
        record.controller_netns,
        if record.ztunnel { "" } else { ", no ztunnels" }
    );
    println!("manifests: {}", LabPaths::new(&lab).manifests().display());
    if options.write_context {
        println!(
            "meshctl now talks to this lab ({})",
            crate::context::CONTEXT_FILE
        );
    }
    Ok(())
}

fn parse_component(
    component: &str,
    node: Option<String>,
    what: &'static str,
) -> Result<Component, CliError> {
    match component {
        "controller" => Ok(Component::Controller),
        "ztunnel" => Ok(Component::Ztunnel(
            node.ok_or(CliError::NodeMissing { what })?,
        )),
        other => Err(CliError::UnknownComponent {
            given: other.to_string(),
            expected: "controller or ztunnel --node NODE",
        }),
    }
}

/// A signal by name: `TERM` or `SIGTERM`.
fn parse_signal(name: &str) -> Result<nix::sys::signal::Signal, CliError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse()
        .map_err(|_| CliError::UnknownSignal(name.to_string()))
}

fn print_file(path: &Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::parse_signal;

    #[test]
    fn signals_are_named_with_or_without_sig() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGHUP").unwrap(), Signal::SIGHUP);
        assert!(parse_signal("BOGUS").is_err());
    }
}
