//! Who is calling: bearer tokens in the `authorization` gRPC metadata, as Istio's proxies send
//! them. In the embedded mode every node gets a token file at set-up; the controller keeps the
//! table of issued tokens in its state directory and refuses any other token.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The file in the state directory that holds the issued tokens.
pub const TOKENS_FILE: &str = "tokens.json";

/// Length in bytes of a freshly issued token, before hex encoding.
const TOKEN_BYTES: usize = 32;

/// What kind of proxy a token was issued to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// The per-node tunnel: may obtain identities of every workload on its node.
    Ztunnel,
    /// A waypoint: may obtain the identity of waypoint workloads on its node.
    Waypoint,
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyKind::Ztunnel => "ztunnel",
            ProxyKind::Waypoint => "waypoint",
        })
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The kind of proxy.
    pub kind: ProxyKind,
    /// The node the proxy runs on; it bounds the identities the caller may obtain.
    pub node: Arc<str>,
}

/// Why a call could not be authenticated or the table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no `authorization: Bearer <token>` metadata on the call")]
    MissingToken,
    #[error("the bearer token is not one this controller issued")]
    UnknownToken,
    #[error("cannot read the token table {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token table {path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write the token table {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a random token")]
    Random,
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        tonic::Status::unauthenticated(e.to_string())
    }
}

/// The table of issued tokens. Only a SHA-256 digest of each token is kept: the file on disk
/// does not reveal the tokens, and a lookup by digest leaks nothing useful through its timing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tokens {
    /// hex SHA-256 of the token -> who holds it.
    tokens: HashMap<String, Caller>,
}

fn digest(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tokens {
    /// Reads the token table of a state directory; a missing file is an empty table.
    pub fn load(state_dir: &Path) -> Result<Self, AuthError> {
        let path = state_dir.join(TOKENS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| AuthError::Parse { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(AuthError::Read { path, source }),
        }
    }

    /// Issues a new token for a proxy on a node and saves the table (owner-only permissions).
    pub fn issue(
        &mut self,
        state_dir: &Path,
        kind: ProxyKind,
        node: &str,
    ) -> Result<String, AuthError> {
        let mut raw = [0u8; TOKEN_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| AuthError::Random)?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.tokens.insert(
            digest(&token),
            Caller {
                kind,
                node: node.into(),
            },
        );
        self.save(state_dir)?;
        Ok(token)
    }

    /// Withdraws a token (its proxy is gone) and saves the table; `false` when it was not
    /// issued here.
    pub fn revoke(&mut self, state_dir: &Path, token: &str) -> Result<bool, AuthError> {
        if self.tokens.remove(&digest(token.trim())).is_none() {
            return Ok(false);
        }
        self.save(state_dir)?;
        Ok(true)
    }

    fn save(&self, state_dir: &Path) -> Result<(), AuthError> {
        let path = state_dir.join(TOKENS_FILE);
        let body = serde_json::to_vec_pretty(self).expect("token table serializes");
        crate::fs::write_private_atomically(&path, &body)
            .map_err(|source| AuthError::Write { path, source })
    }

    /// Looks a bearer token up.
    pub fn caller(&self, token: &str) -> Result<Caller, AuthError> {
        self.tokens
            .get(&digest(token))
            .cloned()
            .ok_or(AuthError::UnknownToken)
    }

    /// Authenticates a gRPC call from its `authorization: Bearer <token>` metadata.
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, AuthError> {
        let value = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::MissingToken)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::MissingToken)?;
        self.caller(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_authenticate_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = Tokens::load(dir.path()).unwrap();
        let token = tokens
            .issue(dir.path(), ProxyKind::Ztunnel, "node-1")
            .unwrap();
        let reloaded = Tokens::load(dir.path()).unwrap();
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let caller = reloaded.authenticate(&md).unwrap();
        assert_eq!(caller.kind, ProxyKind::Ztunnel);
        assert_eq!(&*caller.node, "node-1");
    }

    #[test]
    fn a_revoked_token_no_longer_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = Tokens::default();
        let token = tokens
            .issue(dir.path(), ProxyKind::Waypoint, "node-2")
            .unwrap();
        assert!(tokens.revoke(dir.path(), &token).unwrap());
        assert!(!tokens.revoke(dir.path(), &token).unwrap());
        let reloaded = Tokens::load(dir.path()).unwrap();
        assert!(matches!(
            reloaded.caller(&token),
            Err(AuthError::UnknownToken)
        ));
    }

    #[test]
    fn unknown_or_missing_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = Tokens::default();
        tokens
            .issue(dir.path(), ProxyKind::Ztunnel, "node-1")
            .unwrap();
        let mut md = tonic::metadata::MetadataMap::new();
        assert!(matches!(
            tokens.authenticate(&md),
            Err(AuthError::MissingToken)
        ));
        md.insert("authorization", "Bearer nope".parse().unwrap());
        assert!(matches!(
            tokens.authenticate(&md),
            Err(AuthError::UnknownToken)
        ));
    }
}
