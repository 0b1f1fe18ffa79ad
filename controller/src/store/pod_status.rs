//! Pod placement as the lab records it, playing kubelet: one file per pod in
//! `<state dir>/pod-status/`, separate from the manifests, each naming the pod, its node, its IP
//! and its phase. The store merges the records into the pods; a record overrides what the
//! manifest says.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::kube_syntax::{check_dns_label, check_dns_subdomain};
use super::rejection::{Problem, Rejection};

/// The directory under the state directory that holds the records.
pub const POD_STATUS_DIR: &str = "pod-status";

/// The kind shown in rejections of a bad record.
const RECORD_KIND: &str = "PodStatus";

/// Where a pod runs, as the lab (or a kubelet) reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusRecord {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name (for a Deployment's pod, `<deployment>-<index>`).
    pub name: String,
    /// The node the pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod's IP.
    #[serde(rename = "podIP", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<IpAddr>,
    /// The phase (`Pending`, `Running`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// Why a record could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum PodStatusError {
    /// The record is not valid.
    #[error("pod status record for {namespace}/{name} is invalid: {field}: {problem}")]
    Invalid {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// The bad field.
        field: &'static str,
        /// What is wrong.
        problem: Problem,
    },
    /// The record directory could not be created.
    #[error("cannot create the pod status directory {path}: {source}")]
    CreateDir {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The record could not be written.
    #[error("cannot write the pod status record {path}: {source}")]
    Write {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The record could not be removed.
    #[error("cannot remove the pod status record {path}: {source}")]
    Remove {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl PodStatusRecord {
    fn check(&self) -> Result<(), (&'static str, Problem)> {
        check_dns_label(&self.namespace).map_err(|p| ("namespace", p))?;
        check_dns_subdomain(&self.name).map_err(|p| ("name", p))?;
        if let Some(node) = &self.node_name {
            check_dns_subdomain(node).map_err(|p| ("nodeName", p))?;
        }
        Ok(())
    }
}

/// The record file of a pod. Names cannot contain `_`, so the file name is unambiguous.
fn record_path(state_dir: &Path, namespace: &str, name: &str) -> PathBuf {
    state_dir
        .join(POD_STATUS_DIR)
        .join(format!("{namespace}_{name}.json"))
}

/// Records where a pod runs, replacing any earlier record of it atomically. The store picks the
/// change up like a manifest change.
pub fn record_pod_status(
    state_dir: &Path,
    record: &PodStatusRecord,
) -> Result<PathBuf, PodStatusError> {
    record
        .check()
        .map_err(|(field, problem)| PodStatusError::Invalid {
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            field,
            problem,
        })?;
    let dir = state_dir.join(POD_STATUS_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|source| PodStatusError::CreateDir { path: dir, source })?;
    let path = record_path(state_dir, &record.namespace, &record.name);
    let mut text = serde_json::to_vec_pretty(record).expect("a record serializes");
    text.push(b'\n');
    crate::fs::write_atomically(&path, &text, 0o644).map_err(|source| PodStatusError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Removes the record of a pod; tells whether there was one.
pub fn remove_pod_status(
    state_dir: &Path,
    namespace: &str,
    name: &str,
) -> Result<bool, PodStatusError> {
    let path = record_path(state_dir, namespace, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PodStatusError::Remove { path, source }),
    }
}

/// Reads every record; a bad one becomes a rejection naming its file and field. A missing
/// directory means no records.
pub(crate) fn read_pod_statuses(state_dir: &Path) -> (Vec<PodStatusRecord>, Vec<Rejection>) {
    let dir = state_dir.join(POD_STATUS_DIR);
    let mut records = Vec::new();
    let mut rejections = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return (records, rejections);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| super::loader::is_manifest_file(path))
        .collect();
    paths.sort();
    for path in paths {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let label: Arc<str> = format!("{POD_STATUS_DIR}/{file_name}").into();
        match read_record(&path) {
            Ok(record) => match record.check() {
                Ok(()) => records.push(record),
                Err((field, problem)) => rejections.push(Rejection {
                    file: label,
                    document: 0,
                    kind: Some(RECORD_KIND.into()),
                    namespace: Some(record.namespace),
                    name: Some(record.name),
                    field: field.into(),
                    problem,
                }),
            },
            Err((field, problem)) => rejections.push(Rejection {
                kind: Some(RECORD_KIND.into()),
                field,
                ..Rejection::of_file(label, 0, problem)
            }),
        }
    }
    (records, rejections)
}

fn read_record(path: &Path) -> Result<PodStatusRecord, (String, Problem)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let problem = Problem::Unreadable {
            reason: e.to_string(),
        };
        (String::new(), problem)
    })?;
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        let problem = Problem::Syntax {
            reason: e.to_string(),
        };
        (String::new(), problem)
    })?;
    super::manifest::decode(value).map_err(|mut problems| {
        let first = problems.remove(0);
        (first.field, first.problem)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, ip: &str) -> PodStatusRecord {
        PodStatusRecord {
            namespace: "shop".into(),
            name: name.into(),
            node_name: Some("node-1".into()),
            pod_ip: Some(ip.parse().unwrap()),
            phase: Some("Running".into()),
        }
    }

    #[test]
    fn records_are_written_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        record_pod_status(dir.path(), &record("cart-0", "10.0.1.5")).unwrap();
        record_pod_status(dir.path(), &record("cart-0", "10.0.1.6")).unwrap();
        let (records, rejections) = read_pod_statuses(dir.path());
        assert!(rejections.is_empty(), "{rejections:?}");
        assert_eq!(records, [record("cart-0", "10.0.1.6")]);
        assert!(remove_pod_status(dir.path(), "shop", "cart-0").unwrap());
        assert!(!remove_pod_status(dir.path(), "shop", "cart-0").unwrap());
        assert!(read_pod_statuses(dir.path()).0.is_empty());
    }

    #[test]
    fn invalid_records_are_refused_or_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = record_pod_status(dir.path(), &record("Cart", "10.0.1.5")).unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        std::fs::create_dir_all(dir.path().join(POD_STATUS_DIR)).unwrap();
        std::fs::write(
            dir.path().join(POD_STATUS_DIR).join("shop_x.json"),
            r#"{"namespace": "shop", "name": "x", "podIP": "10.0.1.999"}"#,
        )
        .unwrap();
        let (records, rejections) = read_pod_statuses(dir.path());
        assert!(records.is_empty());
        let message = rejections[0].to_string();
        assert!(
            message.starts_with("pod-status/shop_x.json: PodStatus"),
            "{message}"
        );
        assert!(message.contains("podIP"), "{message}");
    }
}
