//! What the lab needs from the machine before it touches anything: root, and the system tools
//! it drives.

use std::path::Path;

/// The system tools the lab runs, each with the Debian package that provides it.
pub const REQUIRED_TOOLS: [(&str, &str); 4] = [
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("iptables-restore", "iptables"),
    ("iptables-save", "iptables"),
];

/// What the machine lacks.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The lab creates namespaces and rules: it needs root.
    #[error(
        "the lab creates network namespaces, veth pairs and iptables rules, so it needs root; \
         run it again with sudo"
    )]
    NotRoot,
    /// A tool is missing.
    #[error(
        "the lab needs `{tool}`, which is not on PATH; install it with \
         `apt-get install {package}`"
    )]
    MissingTool {
        /// The command.
        tool: &'static str,
        /// The Debian package with it.
        package: &'static str,
    },
}

/// Checks that this process runs as root.
pub fn require_root() -> Result<(), PreflightError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(PreflightError::NotRoot)
    }
}

/// Checks root and every tool of [`REQUIRED_TOOLS`]; names the first missing one.
pub fn check() -> Result<(), PreflightError> {
    require_root()?;
    for (tool, package) in REQUIRED_TOOLS {
        if find_on_path(tool).is_none() {
            return Err(PreflightError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// The path of `program` on PATH, where the lab will run it from.
pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
