//! Kernel settings of a namespace (`net.ipv4.*`). `/proc/sys/net` shows the settings of the
//! namespace of the thread that opens it, so a scratch thread enters the namespace, writes,
//! and ends: no `sysctl` tool is needed and this process's own threads never move.

use std::path::PathBuf;

use crate::paths::netns_path;

/// Why a setting could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The namespace handle could not be opened.
    #[error("cannot open network namespace {netns}: {source}")]
    Open {
        /// The namespace.
        netns: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The thread could not enter the namespace.
    #[error("cannot enter network namespace {netns}: {source}")]
    Enter {
        /// The namespace.
        netns: String,
        /// What the operating system said.
        source: nix::Error,
    },
    /// The setting could not be written.
    #[error("cannot set {key} in network namespace {netns}: {source}")]
    Write {
        /// The namespace.
        netns: String,
        /// The setting, as `net.ipv4...`.
        key: String,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Whether a setting must exist, or is skipped when the kernel does not offer it (a module
/// that is not loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// A missing setting is an error.
    Required,
    /// A missing setting is skipped.
    Optional,
}

/// Writes every `(key, value)` setting (keys like `net.ipv4.ip_forward`) inside `netns`.
pub async fn set(netns: &str, settings: &[(&str, &str)]) -> Result<(), SysctlError> {
    set_with(netns, settings, Presence::Required).await
}

/// Writes every setting inside `netns`, skipping missing ones when `presence` allows.
pub async fn set_with(
    netns: &str,
    settings: &[(&str, &str)],
    presence: Presence,
) -> Result<(), SysctlError> {
    let netns = netns.to_string();
    let settings: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        // A fresh thread: it enters the namespace and ends, so no pooled thread is moved.
        std::thread::spawn(move || write_in(&netns, &settings, presence))
            .join()
            .expect("the sysctl thread does not panic")
    })
    .await
    .expect("the sysctl task does not panic")
}

fn write_in(
    netns: &str,
    settings: &[(String, String)],
    presence: Presence,
) -> Result<(), SysctlError> {
    let handle = std::fs::File::open(netns_path(netns)).map_err(|source| SysctlError::Open {
        netns: netns.to_string(),
        source,
    })?;
    nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
        SysctlError::Enter {
            netns: netns.to_string(),
            source,
        }
    })?;
    for (key, value) in settings {
        let path: PathBuf = ["/proc/sys"].into_iter().chain(key.split('.')).collect();
        match std::fs::write(&path, value) {
            Ok(()) => {}
            Err(e)
                if presence == Presence::Optional && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SysctlError::Write {
                    netns: netns.to_string(),
                    key: key.clone(),
                    source,
                });
            }
        }
    }
    Ok(())
}
