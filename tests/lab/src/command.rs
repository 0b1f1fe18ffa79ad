//! Running the system tools the lab is built with (`ip`, `iptables-restore`, ...), with errors
//! that show the exact command and what it printed.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How long one tool invocation may take before it counts as hung.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a tool invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The tool could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// The exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The tool did not finish in time.
    #[error("`{command}` did not finish within {TOOL_TIMEOUT:?}")]
    Timeout {
        /// The command line.
        command: String,
    },
}

impl CommandError {
    /// What the tool printed on stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            CommandError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Runs `program args...` and returns its stdout.
pub async fn run(program: &str, args: &[&str]) -> Result<String, CommandError> {
    run_with_input(program, args, None).await
}

/// Runs `program args...` inside network namespace `netns` (`ip netns exec`).
pub async fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String, CommandError> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full).await
}

/// Runs `program args...` with `input` on its stdin and returns its stdout.
pub async fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, CommandError> {
    let command = command_line(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|source| CommandError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let output = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CommandError::Timeout {
            command: command.clone(),
        })?
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CommandError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
