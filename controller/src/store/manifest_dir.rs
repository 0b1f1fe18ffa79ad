//! Editing the manifest directory the way `meshctl apply`, `delete` and `label` do in the
//! embedded mode: every change replaces a whole file atomically, so the watching store sees the
//! old file or the new one, and other documents of an edited file are kept as written.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::kube_syntax::{check_label_key, check_label_value};
use super::loader::{MANIFEST_EXTENSIONS, is_manifest_file};
use super::manifest::{document_key, validate_manifest_text};
use super::object::{Kind, ObjectKey};
use super::rejection::{Problem, Rejection};

/// Permission bits of manifest files: readable by everyone, like files `kubectl` users keep.
const MANIFEST_MODE: u32 = 0o644;

/// Why an edit of the manifest directory was not made.
#[derive(Debug, thiserror::Error)]
pub enum ManifestDirError {
    /// The file name is not a plain manifest file name.
    #[error(
        "{name:?} is not a manifest file name: use a plain name ending in .yaml, .yml or .json"
    )]
    BadFileName {
        /// The name as given.
        name: String,
    },
    /// The text has invalid objects; nothing was written.
    #[error(
        "nothing was written, the manifests are invalid:\n{}",
        list(rejections)
    )]
    Invalid {
        /// Every problem found.
        rejections: Vec<Rejection>,
    },
    /// The manifest directory could not be listed.
    #[error("cannot list the manifest directory {path}: {source}")]
    List {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be removed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file could not be split into documents safely.
    #[error("{path} cannot be edited safely: {why}; fix or edit the file by hand")]
    Unsplittable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be edited.
        why: &'static str,
    },
    /// No manifest defines the object.
    #[error("no manifest in {dir} defines {key}{}", not_found_hint(key))]
    NotFound {
        /// The manifest directory.
        dir: PathBuf,
        /// The object looked for.
        key: ObjectKey,
    },
    /// The label key or value is not valid.
    #[error("label {label:?}: {problem}")]
    BadLabel {
        /// The label key.
        label: String,
        /// What is wrong.
        problem: Problem,
    },
}

fn list(rejections: &[Rejection]) -> String {
    rejections
        .iter()
        .map(|r| format!("  {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn not_found_hint(key: &ObjectKey) -> &'static str {
    match key.kind {
        Kind::Pod => {
            " (pods made by a Deployment have no manifest of their own: change the Deployment, \
             e.g. its spec.template.metadata.labels)"
        }
        _ => "",
    }
}

/// The manifest directory, for tools that change it.
#[derive(Clone, Debug)]
pub struct ManifestDir {
    dir: PathBuf,
}

impl ManifestDir {
    /// The directory at `dir`; it must exist when it is edited.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes a file (replacing any of that name) atomically, without checking its content.
    pub fn write_file(&self, file_name: &str, text: &str) -> Result<PathBuf, ManifestDirError> {
        let path = self.file_path(file_name)?;
        write(&path, text)?;
        Ok(path)
    }

    /// Checks `text` as the store would, then writes it as `file_name`; objects it defines are
    /// first removed from the directory's other files, so that each object has one definition,
    /// as `kubectl apply` replaces an object. Gives the keys of the objects written.
    pub fn apply(&self, file_name: &str, text: &str) -> Result<Vec<ObjectKey>, ManifestDirError> {
        let path = self.file_path(file_name)?;
        let objects = validate_manifest_text(file_name, text)
            .map_err(|rejections| ManifestDirError::Invalid { rejections })?;
        let keys: Vec<ObjectKey> = objects.iter().map(|o| o.key()).collect();
        for other in self.manifest_files()? {
            if other != path {
                self.remove_documents(&other, |key| keys.contains(key))?;
            }
        }
        write(&path, text)?;
        Ok(keys)
    }

    /// Removes an object from whichever files define it; a file left without documents is
    /// deleted. Gives the files changed.
    pub fn delete(&self, key: &ObjectKey) -> Result<Vec<PathBuf>, ManifestDirError> {
        let mut changed = Vec::new();
        for path in self.manifest_files()? {
            if self.remove_documents(&path, |k| k == key)? {
                changed.push(path);
            }
        }
        if changed.is_empty() {
            return Err(ManifestDirError::NotFound {
                dir: self.dir.clone(),
                key: key.clone(),
            });
        }
        Ok(changed)
    }

    /// Sets (`Some`) or removes (`None`) a label of an object in the file that defines it. A
    /// namespace without a manifest gets one (`namespace-<name>.yaml`). Gives the file written,
    /// or `None` when nothing needed to change.
    pub fn set_label(
        &self,
        key: &ObjectKey,
        label: &str,
        value: Option<&str>,
    ) -> Result<Option<PathBuf>, ManifestDirError> {
        let bad_label = |problem| ManifestDirError::BadLabel {
            label: label.to_string(),
            problem,
        };
        check_label_key(label).map_err(bad_label)?;
        if let Some(value) = value {
            check_label_value(value).map_err(bad_label)?;
        }
        for path in self.manifest_files()? {
            let mut file = ManifestFile::read(&path)?;
            let Some(index) = file.find(key) else {
                continue;
            };
            let changed = file.set_label(index, label, value);
            if changed {
                write(&path, &file.text())?;
            }
            return Ok(changed.then_some(path));
        }
        match (key.kind, value) {
            (Kind::Namespace, Some(value)) => {
                let path = self.file_path(&format!("namespace-{}.yaml", key.name))?;
                let text = format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:\n    {label}: {value:?}\n",
                    key.name
                );
                write(&path, &text)?;
                Ok(Some(path))
            }
            (Kind::Namespace, None) => Ok(None),
            _ => Err(ManifestDirError::NotFound {
                dir: self.dir.clone(),
                key: key.clone(),
            }),
        }
    }

    fn file_path(&self, file_name: &str) -> Result<PathBuf, ManifestDirError> {
        let plain = !file_name.contains('/') && !file_name.starts_with('.');
        let known = Path::new(file_name)
            .extension()
            .is_some_and(|ext| MANIFEST_EXTENSIONS.iter().any(|known| ext == *known));
        if plain && known {
            Ok(self.dir.join(file_name))
        } else {
            Err(ManifestDirError::BadFileName {
                name: file_name.to_string(),
            })
        }
    }

    fn manifest_files(&self) -> Result<Vec<PathBuf>, ManifestDirError> {
        let list_error = |source| ManifestDirError::List {
            path: self.dir.clone(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(list_error)? {
            let path = entry.map_err(list_error)?.path();
            if is_manifest_file(&path) {
                paths.push(path);
            }
        }
        paths.sort();
        Ok(paths)
    }

    /// Removes the documents whose key `matches`; tells whether any was removed.
    fn remove_documents(
        &self,
        path: &Path,
        matches: impl Fn(&ObjectKey) -> bool,
    ) -> Result<bool, ManifestDirError> {
        let text = read(path)?;
        // Files that mention no matching object are left alone, even if they are broken.
        let Some(mut file) = ManifestFile::parse_if(path, &text, &matches)? else {
            return Ok(false);
        };
        let removes_first = file
            .documents
            .first()
            .is_some_and(|d| d.key.as_ref().is_some_and(&matches));
        file.documents
            .retain(|d| !d.key.as_ref().is_some_and(&matches));
        // A bare `---` that now opens the file is noise.
        if let Some(first) = file.documents.first_mut()
            && removes_first
            && first.separator.as_deref() == Some("---\n")
        {
            first.separator = None;
        }
        if file.documents.iter().any(|d| d.value.is_some()) {
            write(path, &file.text())?;
        } else {
            std::fs::remove_file(path).map_err(|source| ManifestDirError::Remove {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(true)
    }
}

fn read(path: &Path) -> Result<String, ManifestDirError> {
    std::fs::read_to_string(path).map_err(|source| ManifestDirError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), ManifestDirError> {
    crate::fs::write_atomically(path, text.as_bytes(), MANIFEST_MODE).map_err(|source| {
        ManifestDirError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// One document of a file being edited: its text as written, unless it was changed.
struct Document {
    /// The `---` line that opens it; the first document may have none.
    separator: Option<String>,
    /// The text up to the next separator.
    body: String,
    /// The parsed document; `None` for an empty one (only comments or blank lines).
    value: Option<Value>,
    /// The object's key, when it names a known kind and a name.
    key: Option<ObjectKey>,
}

/// A manifest file split into its documents.
struct ManifestFile {
    documents: Vec<Document>,
}

impl ManifestFile {
    fn read(path: &Path) -> Result<Self, ManifestDirError> {
        let text = read(path)?;
        Self::parse(path, &text)
    }

    /// Splits only files that define a matching object (checked cheaply first).
    fn parse_if(
        path: &Path,
        text: &str,
        matches: &impl Fn(&ObjectKey) -> bool,
    ) -> Result<Option<Self>, ManifestDirError> {
        let mentions = serde_yaml_ng::Deserializer::from_str(text)
            .map_while(|document| Value::deserialize(document).ok())
            .any(|value| document_key(&value).is_some_and(|key| matches(&key)));
        if !mentions {
            return Ok(None);
        }
        Self::parse(path, text).map(Some)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, ManifestDirError> {
        let unsplittable = |why| ManifestDirError::Unsplittable {
            path: path.to_path_buf(),
            why,
        };
        let documents = split_documents(text).map_err(unsplittable)?;
        // The split must agree with the YAML parser, or an edit could damage the file.
        let mut parsed = 0;
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(_) => parsed += 1,
                Err(_) => return Err(unsplittable("it has a YAML syntax error")),
            }
        }
        let split = documents.iter().filter(|d| d.value.is_some()).count();
        if parsed != split {
            return Err(unsplittable("its documents could not be told apart"));
        }
        Ok(ManifestFile { documents })
    }

    fn find(&self, key: &ObjectKey) -> Option<usize> {
        self.documents
            .iter()
            .position(|d| d.key.as_ref() == Some(key))
    }

    /// Sets or removes a label of one document; tells whether anything changed.
    fn set_label(&mut self, index: usize, label: &str, value: Option<&str>) -> bool {
        let document = &mut self.documents[index];
        let Some(Value::Mapping(root)) = &mut document.value else {
            return false;
        };
        let labels = child_mapping(child_mapping(root, "metadata"), "labels");
        let key = Value::from(label);
        let changed = match value {
            Some(value) => {
                labels
                    .insert(key, Value::from(value))
                    .as_ref()
                    .and_then(Value::as_str)
                    != Some(value)
            }
            None => labels.remove(&key).is_some(),
        };
        if changed {
            let text = serde_yaml_ng::to_string(root).expect("a YAML mapping serializes");
            document.body = text;
        }
        changed
    }

    fn text(&self) -> String {
        let mut text = String::new();
        for document in &self.documents {
            match &document.separator {
                Some(separator) => text.push_str(separator),
                None if !text.is_empty() => text.push_str("---\n"),
                None => {}
            }
            text.push_str(&document.body);
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }
}

/// The mapping under `key`, created when absent or not a mapping.
fn child_mapping<'a>(parent: &'a mut Mapping, key: &str) -> &'a mut Mapping {
    let key = Value::from(key);
    if !parent.get(&key).is_some_and(Value::is_mapping) {
        parent.insert(key.clone(), Value::Mapping(Mapping::new()));
    }
    match parent.get_mut(&key) {
        Some(Value::Mapping(mapping)) => mapping,
        _ => unreachable!("the mapping was just inserted"),
    }
}

/// Splits YAML text at `---` lines, keeping each document's text as written. Files using YAML
/// directives, `...` end markers or content on a `---` line are refused rather than guessed at.
fn split_documents(text: &str) -> Result<Vec<Document>, &'static str> {
    let mut documents = Vec::new();
    let mut separator = None;
    let mut body = String::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed.starts_with('%') || trimmed == "..." {
            return Err("it uses YAML directives or '...' document end markers");
        }
        if let Some(rest) = trimmed.strip_prefix("---") {
            let rest = rest.trim_start();
            if !(rest.is_empty() || rest.starts_with('#')) {
                return Err("a '---' line carries content");
            }
            documents.push(document(separator.take(), std::mem::take(&mut body))?);
            separator = Some(if line.ends_with('\n') {
                line.to_string()
            } else {
                format!("{line}\n")
            });
            continue;
        }
        body.push_str(line);
    }
    documents.push(document(separator, body)?);
    // The text before a leading `---` is an empty document of no interest.
    documents.retain(|d| d.separator.is_some() || !d.body.is_empty());
    Ok(documents)
}

fn document(separator: Option<String>, body: String) -> Result<Document, &'static str> {
    let value: Value =
        serde_yaml_ng::from_str(&body).map_err(|_| "a document does not parse on its own")?;
    let value = (!value.is_null()).then_some(value);
    let key = value.as_ref().and_then(document_key);
    Ok(Document {
        separator,
        body,
        value,
        key,
    })
}

#[cfg(test)]
mod tests;
