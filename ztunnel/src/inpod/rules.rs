//! The redirection rules inside a pod's network namespace.
//!
//! The rules live in the `nat` table, in two chains of our own that the built-in chains jump
//! to first. For both IPv4 (`iptables`) and IPv6 (`ip6tables`), [`install`] leaves exactly
//! this behind (as `iptables-save -t nat` prints it):
//!
//! ```text
//! -A PREROUTING -p tcp -j MESH_PREROUTING
//! -A OUTPUT -p tcp -j MESH_OUTPUT
//! -A MESH_OUTPUT -m mark --mark 0x539/0xfff -j RETURN
//! -A MESH_OUTPUT -o lo -j RETURN
//! -A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001
//! -A MESH_PREROUTING -i lo -j RETURN
//! -A MESH_PREROUTING -p tcp -m tcp --dport 15008 -j RETURN
//! -A MESH_PREROUTING -p tcp -j REDIRECT --to-ports 15006
//! ```
//!
//! - Outbound: every TCP connection the pod opens goes to the proxy's outbound listener
//!   (15001), except the proxy's own (marked with [`PROXY_MARK`]) and traffic that stays on
//!   the loopback interface (the pod talking to itself, by `127.0.0.1` or by its own IP).
//!   `REDIRECT` only rewrites the destination, so `SO_ORIGINAL_DST` still tells the proxy
//!   where the app wanted to go.
//! - Inbound: every TCP connection arriving from outside goes to the proxy's plaintext
//!   inbound listener (15006), except HBONE (15008), which the proxy serves directly. The
//!   source address is kept, so policy sees the real client.
//! - DNS is not special-cased: UDP is never captured, and DNS over TCP is captured like any
//!   other TCP and passed through by the proxy (a destination outside the mesh). The lab
//!   resolves names through `/etc/hosts`, so it sends no DNS at all.
//!
//! Installation is one `iptables-restore --noflush` transaction per family, so a pod is never
//! half-captured by one family's rules. It is idempotent: declaring our chains flushes them,
//! and any jump into them left by an earlier install is deleted before the new one is put
//! first in its built-in chain. [`remove`] deletes the jumps and the chains and leaves nothing
//! of ours behind; removing rules that are not there is not an error.
//!
//! Both commands run as child processes spawned from a thread inside the pod's namespace
//! (see [`Netns::run`]), so they need no `nsenter` and see only that namespace. Callers must
//! not install and remove rules for the same pod concurrently: the rules to delete are read
//! with `iptables-save` just before the transaction.
//!
//! [`PROXY_MARK`]: super::PROXY_MARK

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::netns::{Netns, NetnsError};
use super::{HBONE_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, PROXY_MARK, PROXY_MARK_MASK};

/// Our chain for packets the pod sends (jumped to from the `nat` OUTPUT chain).
pub const OUTPUT_CHAIN: &str = "MESH_OUTPUT";

/// Our chain for packets the pod receives (jumped to from the `nat` PREROUTING chain).
pub const PREROUTING_CHAIN: &str = "MESH_PREROUTING";

/// How long one `iptables-restore` or `iptables-save` may take before it is killed. They
/// finish in milliseconds; the bound only matters when the xtables lock is stuck.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `iptables-restore` waits for the legacy backend's host-wide xtables lock.
const XTABLES_LOCK_WAIT_SECONDS: u32 = 5;

/// Where the iptables tools are looked for when they are not on `PATH` (sbin directories are
/// often left out of non-login shells' `PATH`).
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// Why redirection rules could not be installed, removed or read.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A required program is not installed.
    #[error(
        "`{tool}` was not found on PATH or in /usr/sbin, /sbin, /usr/local/sbin; in-pod \
         capture needs it: install the iptables package (e.g. `apt-get install iptables`)"
    )]
    MissingTool {
        /// The program's name.
        tool: &'static str,
    },
    /// The pod's namespace could not be entered to start the program.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The program could not be started or talked to.
    #[error("cannot run {tool} in the network namespace {netns}: {source}")]
    Spawn {
        /// The program's path.
        tool: PathBuf,
        /// The pod's namespace.
        netns: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The program did not finish in time and was killed.
    #[error(
        "{tool} did not finish within {TOOL_TIMEOUT:?} in the network namespace {netns} and was \
         killed; another process may be holding the xtables lock (/run/xtables.lock)"
    )]
    Timeout {
        /// The program's path.
        tool: PathBuf,
        /// The pod's namespace.
        netns: PathBuf,
    },
    /// The program ran and failed.
    #[error(
        "{tool} failed ({status}) in the network namespace {netns}: {stderr}; the kernel needs \
         the nat table and the REDIRECT target (nf_tables: nft_redir; legacy: iptable_nat)"
    )]
    Failed {
        /// The program's path.
        tool: PathBuf,
        /// The pod's namespace.
        netns: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
}

/// An IP family, each with its own set of iptables tools and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// `iptables-restore` / `iptables-save`.
    V4,
    /// `ip6tables-restore` / `ip6tables-save`.
    V6,
}

impl IpFamily {
    /// The families the rules cover on this machine: IPv6 only when the kernel has it, since
    /// a kernel without IPv6 cannot carry IPv6 traffic that would escape capture.
    pub fn present() -> Vec<IpFamily> {
        let mut families = vec![IpFamily::V4];
        if Path::new("/proc/sys/net/ipv6").exists() {
            families.push(IpFamily::V6);
        }
        families
    }

    fn restore_tool(self) -> &'static str {
        match self {
            IpFamily::V4 => "iptables-restore",
            IpFamily::V6 => "ip6tables-restore",
        }
    }

    fn save_tool(self) -> &'static str {
        match self {
            IpFamily::V4 => "iptables-save",
            IpFamily::V6 => "ip6tables-save",
        }
    }
}

/// The jumps from the built-in chains into ours, as rule specifications after `-A CHAIN`.
fn jumps() -> [(&'static str, String); 2] {
    [
        ("OUTPUT", format!("-p tcp -j {OUTPUT_CHAIN}")),
        ("PREROUTING", format!("-p tcp -j {PREROUTING_CHAIN}")),
    ]
}

/// The rules inside our chains, in order, as `iptables-restore` lines. The same text serves
/// both families.
pub fn chain_rules() -> Vec<String> {
    vec![
        format!("-A {OUTPUT_CHAIN} -m mark --mark {PROXY_MARK:#x}/{PROXY_MARK_MASK:#x} -j RETURN"),
        format!("-A {OUTPUT_CHAIN} -o lo -j RETURN"),
        format!("-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {OUTBOUND_CAPTURE_PORT}"),
        format!("-A {PREROUTING_CHAIN} -i lo -j RETURN"),
        format!("-A {PREROUTING_CHAIN} -p tcp -m tcp --dport {HBONE_PORT} -j RETURN"),
        format!("-A {PREROUTING_CHAIN} -p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}"),
    ]
}

/// What of ours an `iptables-save -t nat` dump contains.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CurrentRules {
    /// Our chains that exist.
    pub chains: Vec<String>,
    /// Rules in other chains that jump into ours, as `(chain, specification)`.
    pub jumps: Vec<(String, String)>,
}

impl CurrentRules {
    /// Reads our chains and the jumps into them from `iptables-save -t nat` output.
    pub fn parse(nat_dump: &str) -> Self {
        let ours = |chain: &str| chain == OUTPUT_CHAIN || chain == PREROUTING_CHAIN;
        let mut current = CurrentRules::default();
        for line in nat_dump.lines().map(str::trim) {
            if let Some(declaration) = line.strip_prefix(':') {
                let chain = declaration.split_whitespace().next().unwrap_or_default();
                if ours(chain) {
                    current.chains.push(chain.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let Some((chain, spec)) = rule.split_once(' ') else {
                    continue;
                };
                let target = spec.split_whitespace().skip_while(|t| *t != "-j").nth(1);
                if !ours(chain) && target.is_some_and(ours) {
                    current
                        .jumps
                        .push((chain.to_string(), spec.trim().to_string()));
                }
            }
        }
        current
    }

    /// Whether nothing of ours is present.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

/// The `iptables-restore --noflush` input that installs (or re-installs) the rules, given
/// what is there now.
pub fn install_script(current: &CurrentRules) -> String {
    let mut script = vec!["*nat".to_string()];
    // Declaring a chain creates it, or flushes it when it exists: re-adding replaces.
    script.push(format!(":{OUTPUT_CHAIN} - [0:0]"));
    script.push(format!(":{PREROUTING_CHAIN} - [0:0]"));
    for (chain, spec) in &current.jumps {
        script.push(format!("-D {chain} {spec}"));
    }
    for (chain, spec) in jumps() {
        script.push(format!("-I {chain} 1 {spec}"));
    }
    script.extend(chain_rules());
    script.push("COMMIT".to_string());
    script.join("\n") + "\n"
}

/// The `iptables-restore --noflush` input that removes everything of ours, or `None` when
/// nothing is there.
pub fn removal_script(current: &CurrentRules) -> Option<String> {
    if current.is_empty() {
        return None;
    }
    let mut script = vec!["*nat".to_string()];
    for (chain, spec) in &current.jumps {
        script.push(format!("-D {chain} {spec}"));
    }
    for chain in &current.chains {
        script.push(format!("-F {chain}"));
        script.push(format!("-X {chain}"));
    }
    script.push("COMMIT".to_string());
    Some(script.join("\n") + "\n")
}

/// Installs the redirection rules in the namespace `ns`, for every family the kernel has.
///
/// Idempotent. When a family fails, the rules of the others are removed again (best effort)
/// so the pod is not left half-captured, and the first error is returned.
pub async fn install(ns: &Netns) -> Result<(), RulesError> {
    for family in IpFamily::present() {
        if let Err(error) = install_family(ns, family).await {
            if let Err(cleanup) = remove(ns).await {
                tracing::warn!(netns = %ns.path().display(), %cleanup, "cannot undo partly installed rules");
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Removes the redirection rules from the namespace `ns`; nothing of ours is left behind.
///
/// Removing rules that are not there succeeds.
pub async fn remove(ns: &Netns) -> Result<(), RulesError> {
    for family in IpFamily::present() {
        let current = CurrentRules::parse(&save_nat(ns, family).await?);
        if let Some(script) = removal_script(&current) {
            restore(ns, family, script).await?;
        }
    }
    Ok(())
}

/// The `nat` table of the namespace `ns` as `iptables-save -t nat` (or `ip6tables-save`)
/// prints it.
pub async fn save_nat(ns: &Netns, family: IpFamily) -> Result<String, RulesError> {
    let tool = find_tool(family.save_tool())?;
    run_tool(ns, &tool, &["-t", "nat"], None).await
}

async fn install_family(ns: &Netns, family: IpFamily) -> Result<(), RulesError> {
    let current = CurrentRules::parse(&save_nat(ns, family).await?);
    restore(ns, family, install_script(&current)).await
}

async fn restore(ns: &Netns, family: IpFamily, script: String) -> Result<(), RulesError> {
    let tool = find_tool(family.restore_tool())?;
    let wait = format!("--wait={XTABLES_LOCK_WAIT_SECONDS}");
    tracing::debug!(netns = %ns.path().display(), ?family, %script, "applying capture rules");
    run_tool(ns, &tool, &["--noflush", &wait], Some(script))
        .await
        .map(drop)
}

/// Finds `tool` on `PATH` or in the sbin directories.
fn find_tool(tool: &'static str) -> Result<PathBuf, RulesError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .ok_or(RulesError::MissingTool { tool })
}

/// Runs `tool` inside `ns`, feeding it `stdin`, and returns its stdout.
async fn run_tool(
    ns: &Netns,
    tool: &Path,
    args: &[&str],
    stdin: Option<String>,
) -> Result<String, RulesError> {
    let spawn_error = |source| RulesError::Spawn {
        tool: tool.to_path_buf(),
        netns: ns.path().to_path_buf(),
        source,
    };
    let mut command = Command::new(tool);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The child inherits the namespace of the thread that spawns it.
    let mut child = ns.run(|| command.spawn())?.map_err(spawn_error)?;
    let input = child.stdin.take();
    let feed = async move {
        if let (Some(mut pipe), Some(text)) = (input, stdin) {
            pipe.write_all(text.as_bytes()).await?;
            pipe.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let finished = tokio::time::timeout(TOOL_TIMEOUT, async {
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output?;
        // A write error only matters if the tool did not say why it stopped reading.
        if output.status.success() {
            fed?;
        }
        Ok(output)
    })
    .await;
    let output = match finished {
        Err(_elapsed) => {
            return Err(RulesError::Timeout {
                tool: tool.to_path_buf(),
                netns: ns.path().to_path_buf(),
            });
        }
        Ok(result) => result.map_err(spawn_error)?,
    };
    if !output.status.success() {
        return Err(RulesError::Failed {
            tool: tool.to_path_buf(),
            netns: ns.path().to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
