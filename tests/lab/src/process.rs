//! The lab's long-running processes: started detached (their own process group, stdin closed,
//! output appended to a log file) so they outlive the command that started them, recorded by
//! pid, and stopped with SIGTERM then SIGKILL.
//!
//! A recorded pid is only signalled while `/proc/<pid>/cmdline` still shows the command the
//! lab started, so a pid reused by an unrelated process is never touched.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long a process gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be opened.
    #[error("cannot open the log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// A process the lab started, as recorded in `lab.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: u32,
    /// The namespace it runs in; `None` for the host's.
    pub netns: Option<String>,
    /// The program and its arguments (without `ip netns exec`).
    pub argv: Vec<String>,
    /// Its log file.
    pub log: PathBuf,
}

impl ProcessRecord {
    /// Whether the process still runs (and is still the one the lab started).
    pub fn is_alive(&self) -> bool {
        is_alive(self.pid) && cmdline(self.pid).is_some_and(|argv| argv == self.argv)
    }

    /// Stops the process (SIGTERM, then SIGKILL after [`STOP_GRACE`]); tells whether it was
    /// running.
    pub async fn stop(&self) -> bool {
        if !self.is_alive() {
            return false;
        }
        stop_pids(&[self.pid]).await;
        true
    }
}

/// Starts `argv` detached inside `netns` (or the host's namespace), output appended to `log`.
pub fn spawn_detached(
    netns: Option<&str>,
    argv: &[String],
    log: &Path,
    env: &[(&str, String)],
) -> Result<ProcessRecord, ProcessError> {
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| ProcessError::Log {
            path: log.to_path_buf(),
            source,
        })?;
    let errors = output.try_clone().map_err(|source| ProcessError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    // `ip netns exec` enters the namespace and execs the program: the pid stays the same.
    let mut command = match netns {
        Some(netns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]).args(argv);
            c
        }
        None => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .current_dir("/")
        .process_group(0);
    let child = command.spawn().map_err(|source| ProcessError::Spawn {
        command: argv.join(" "),
        source,
    })?;
    Ok(ProcessRecord {
        pid: child.id(),
        netns: netns.map(str::to_string),
        argv: argv.to_vec(),
        log: log.to_path_buf(),
    })
}

/// Whether a pid names a running (not zombie) process.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself contain ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The argv of a running process.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// Every running process whose argv satisfies `matches`.
pub fn find(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|&pid| cmdline(pid).is_some_and(|argv| matches(&argv)) && is_alive(pid))
        .collect()
}

/// Sends SIGTERM to every pid, waits up to [`STOP_GRACE`] for them to exit, then SIGKILLs the
/// rest. Returns the pids that had to be killed.
pub async fn stop_pids(pids: &[u32]) -> Vec<u32> {
    for &pid in pids {
        signal(pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while tokio::time::Instant::now() < deadline && pids.iter().any(|&p| is_alive(p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    for &pid in &survivors {
        signal(pid, Signal::SIGKILL);
    }
    // SIGKILL is not instant for a process in the middle of a system call.
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while tokio::time::Instant::now() < deadline && survivors.iter().any(|&p| is_alive(p)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    survivors
}

/// Sends a signal; a process that is gone already is not an error.
pub fn signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}
