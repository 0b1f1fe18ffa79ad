//! Where meshctl finds the mesh: flags and environment first, then the context file a running
//! lab writes, then the defaults of a controller on this machine.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The context file a running lab writes, so that meshctl needs no flags while it is up.
pub const CONTEXT_FILE: &str = "/run/mesh/context.json";

/// The status API address when nothing else says.
pub const DEFAULT_CONTROLLER: &str = "127.0.0.1:15014";

/// What meshctl talks to.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Context {
    /// The manifest directory, when this machine runs the controller.
    pub manifests: Option<PathBuf>,
    /// The status API, `host:port`.
    pub controller: String,
}

impl Context {
    /// Flags and environment win; the lab's context file fills in the rest.
    pub fn discover(manifests: Option<PathBuf>, controller: Option<String>) -> Self {
        let file = Self::read(Path::new(CONTEXT_FILE));
        Self {
            manifests: manifests.or_else(|| file.as_ref().and_then(|f| f.manifests.clone())),
            controller: controller
                .or_else(|| file.map(|f| f.controller))
                .unwrap_or_else(|| DEFAULT_CONTROLLER.to_string()),
        }
    }

    fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The manifest directory, or an error that says how to name it.
    pub fn manifest_dir(&self) -> anyhow::Result<&Path> {
        self.manifests.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no manifest directory: start a lab (`meshctl lab up`), or pass --manifests DIR (or set MESH_MANIFESTS)"
            )
        })
    }
}
