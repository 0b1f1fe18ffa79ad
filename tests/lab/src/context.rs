//! The context file: while a lab is up, `meshctl` finds its manifests and its controller here
//! and needs no flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths::LabPaths;

/// Where the context file lives (the path `meshctl` reads).
pub const CONTEXT_FILE: &str = "/run/mesh/context.json";

/// Why the context file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The directory or the file could not be written.
    #[error("cannot write the context file {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// The context file's content, as `meshctl` reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextFile {
    /// The lab's manifest directory.
    pub manifests: PathBuf,
    /// The controller's status API: `unix:<socket path>`.
    pub controller: String,
}

impl ContextFile {
    /// The context of a lab.
    pub fn of(paths: &LabPaths) -> Self {
        Self {
            manifests: paths.manifests(),
            controller: format!("unix:{}", paths.status_socket().display()),
        }
    }
}

/// Points `meshctl` at the lab (replacing the context of any other lab).
pub fn write(paths: &LabPaths) -> Result<(), ContextError> {
    let path = Path::new(CONTEXT_FILE);
    let error = |source| ContextError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let mut body = serde_json::to_vec_pretty(&ContextFile::of(paths)).expect("context serializes");
    body.push(b'\n');
    controller::fs::write_atomically(path, &body, 0o644).map_err(error)
}

/// Removes the context file if it points at this lab; tells whether it did.
pub fn remove_if_ours(paths: &LabPaths) -> bool {
    let path = Path::new(CONTEXT_FILE);
    let ours = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ContextFile>(&bytes).ok())
        .is_some_and(|context| context.manifests.starts_with(paths.root()));
    ours && std::fs::remove_file(path).is_ok()
}
