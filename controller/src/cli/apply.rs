//! `meshctl apply`, `delete` and `label`: edits of the manifest directory. Every edit is
//! checked as the controller would check it before anything is written, and every file is
//! replaced atomically.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Context;
use crate::store::{Kind, ManifestDir, ObjectKey, is_manifest_file, validate_manifest_text};

/// Applies files, directories or standard input.
pub fn apply(context: &Context, paths: &[PathBuf]) -> anyhow::Result<()> {
    let dir = ManifestDir::new(context.manifest_dir()?);
    let inputs = read_inputs(paths)?;
    // Check everything first: one bad file refuses the whole command, as nothing is written.
    let mut problems = Vec::new();
    for (name, text) in &inputs {
        if let Err(rejections) = validate_manifest_text(name, text) {
            problems.extend(rejections.iter().map(ToString::to_string));
        }
    }
    if !problems.is_empty() {
        bail!("nothing was applied:\n  {}", problems.join("\n  "));
    }
    for (name, text) in &inputs {
        let keys = dir.apply(&target_file_name(name, text), text)?;
        for key in keys {
            println!("{} applied", describe(&key));
        }
    }
    Ok(())
}

/// Deletes the objects of a file, or one object.
pub fn delete(
    context: &Context,
    file: Option<&Path>,
    kind: Option<&str>,
    name: Option<&str>,
    namespace: &str,
) -> anyhow::Result<()> {
    let dir = ManifestDir::new(context.manifest_dir()?);
    let keys = match (file, kind, name) {
        (Some(file), _, _) => {
            let (label, text) = read_one(file)?;
            let objects = validate_manifest_text(&label, &text).map_err(|rejections| {
                let list: Vec<String> = rejections.iter().map(ToString::to_string).collect();
                anyhow::anyhow!(
                    "cannot read the objects to delete:\n  {}",
                    list.join("\n  ")
                )
            })?;
            objects.iter().map(|o| o.key()).collect()
        }
        (None, Some(kind), Some(name)) => vec![object_key(kind, name, namespace)?],
        _ => bail!(
            "say what to delete: `meshctl delete -f FILE` or `meshctl delete KIND NAME [-n NS]`"
        ),
    };
    for key in keys {
        dir.delete(&key)?;
        println!("{} deleted", describe(&key));
    }
    Ok(())
}

/// Sets or removes labels.
pub fn label(
    context: &Context,
    kind: &str,
    name: &str,
    namespace: &str,
    labels: &[String],
) -> anyhow::Result<()> {
    let key = object_key(kind, name, namespace)?;
    if !matches!(key.kind, Kind::Namespace | Kind::Service | Kind::Pod) {
        bail!(
            "labels can be set on namespaces, services and pods, not on {}",
            key.kind.as_str()
        );
    }
    let dir = ManifestDir::new(context.manifest_dir()?);
    for label in labels {
        let (label_key, value) = match (label.split_once('='), label.strip_suffix('-')) {
            (Some((k, v)), _) => (k, Some(v)),
            (None, Some(k)) => (k, None),
            (None, None) => bail!("{label:?} is not KEY=VALUE (to set) or KEY- (to remove)"),
        };
        let changed = dir.set_label(&key, label_key, value)?;
        let what = if changed.is_some() {
            "labeled"
        } else {
            "unchanged"
        };
        println!("{} {what}", describe(&key));
    }
    Ok(())
}

/// Reads every input: `-` is standard input; a directory gives its manifest files.
fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_manifest_file(p))
                .collect();
            files.sort();
            for file in files {
                inputs.push(read_one(&file)?);
            }
        } else {
            inputs.push(read_one(path)?);
        }
    }
    Ok(inputs)
}

fn read_one(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the manifests from standard input")?;
        return Ok(("-".to_string(), text));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

/// The file an input is stored as: its own file name, or, for standard input, a name made
/// from the first object so that separate applies do not replace each other.
fn target_file_name(label: &str, text: &str) -> String {
    if label != "-"
        && let Some(name) = Path::new(label).file_name()
    {
        return name.to_string_lossy().into_owned();
    }
    let first = validate_manifest_text(label, text)
        .ok()
        .and_then(|objects| objects.first().map(|o| o.key()));
    match first {
        Some(key) => format!(
            "{}-{}-{}.yaml",
            key.namespace.as_deref().unwrap_or("cluster"),
            key.kind.as_str().to_ascii_lowercase(),
            key.name
        ),
        None => "stdin.yaml".to_string(),
    }
}

/// A kind named on the command line, singular or plural, with kubectl's short names.
pub fn kind_from_arg(arg: &str) -> Option<Kind> {
    let lower = arg.to_ascii_lowercase();
    let singular = match lower.as_str() {
        "ns" => "namespace",
        "po" => "pod",
        "svc" => "service",
        "deploy" => "deployment",
        "ap" | "authorizationpolicies" => "authorizationpolicy",
        "gtw" => "gateway",
        other => other.strip_suffix('s').unwrap_or(other),
    };
    Kind::from_name(singular)
}

fn object_key(kind: &str, name: &str, namespace: &str) -> anyhow::Result<ObjectKey> {
    let kind = kind_from_arg(kind).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown kind {kind:?}: use namespace, pod, deployment, service, authorizationpolicy, gateway or httproute"
        )
    })?;
    Ok(if kind.is_namespaced() {
        ObjectKey::namespaced(kind, namespace, name)
    } else {
        ObjectKey::namespace(name)
    })
}

fn describe(key: &ObjectKey) -> String {
    match &key.namespace {
        Some(ns) => format!("{} {ns}/{}", key.kind.as_str(), key.name),
        None => format!("{} {}", key.kind.as_str(), key.name),
    }
}
