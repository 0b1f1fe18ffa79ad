//! Reading manifest text: YAML (or JSON) files with one or more documents, each a Kubernetes
//! object. Every document is decoded into its kind's type with the path of any bad field, then
//! checked; what is wrong becomes a [`Rejection`] naming file, object and field.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::authorization::{RawAuthorizationPolicy, authorization_policy_from_manifest};
use super::gateway::{RawGateway, gateway_from_manifest};
use super::http_route::{RawHttpRoute, http_route_from_manifest};
use super::kube_syntax::{check_dns_label, check_dns_subdomain};
use super::object::{DEFAULT_NAMESPACE, Kind, NamespacedName, Object, ObjectKey};
use super::rejection::{FieldProblem, Findings, Problem, Rejection};
use super::service::service_from_manifest;
use super::workload::{deployment_from_manifest, namespace_from_manifest, pod_from_manifest};

/// What reading one file gave.
#[derive(Debug, Default)]
pub(crate) struct ParsedFile {
    /// Every non-empty document, in order.
    pub(crate) documents: Vec<ParsedDocument>,
    /// Problems with the file as a whole (unreadable, YAML syntax).
    pub(crate) file_rejections: Vec<Rejection>,
}

impl ParsedFile {
    /// Whether the file as a whole could not be used: then none of its objects change.
    pub(crate) fn failed(&self) -> bool {
        !self.file_rejections.is_empty()
    }
}

/// What reading one document gave.
#[derive(Debug)]
pub(crate) struct ParsedDocument {
    /// Index of the document in its file, from 0.
    pub(crate) index: usize,
    /// The object's key, when the document names a known kind and a name (even if the object is
    /// otherwise invalid: its last good version then stays in force).
    pub(crate) key: Option<ObjectKey>,
    /// The object, or why it was refused. Shared: the loader keeps it between loads and
    /// hands it on without copying.
    pub(crate) result: Result<Arc<Object>, Vec<Rejection>>,
}

/// Checks manifest text as the store would read it, without touching the desired state: the
/// objects when all are valid, otherwise every rejection (same messages as the store's).
/// `file` names the text in messages, e.g. `shop.yaml`.
pub fn validate_manifest_text(file: &str, text: &str) -> Result<Vec<Object>, Vec<Rejection>> {
    let file: Arc<str> = file.into();
    let parsed = parse_manifest_text(file.clone(), text);
    let mut rejections = parsed.file_rejections;
    let mut objects = Vec::new();
    let mut seen = BTreeMap::new();
    for document in parsed.documents {
        match document.result {
            Err(refused) => rejections.extend(refused),
            Ok(object) => {
                let key = object.key();
                if let Some(first) = seen.get(&key) {
                    let problem = Problem::Duplicate {
                        file: file.clone(),
                        document: *first,
                    };
                    rejections.push(object_rejection(
                        &file,
                        document.index,
                        &key,
                        String::new(),
                        problem,
                    ));
                } else {
                    seen.insert(key, document.index);
                    objects.push(Arc::unwrap_or_clone(object));
                }
            }
        }
    }
    if rejections.is_empty() {
        Ok(objects)
    } else {
        Err(rejections)
    }
}

/// Reads every document of a file's text. A syntax error anywhere fails the whole file.
pub(crate) fn parse_manifest_text(file: Arc<str>, text: &str) -> ParsedFile {
    let mut parsed = ParsedFile::default();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(document) {
            Err(e) => {
                let problem = Problem::Syntax {
                    reason: e.to_string(),
                };
                parsed.documents.clear();
                parsed
                    .file_rejections
                    .push(Rejection::of_file(file, index, problem));
                // The parser cannot resume after an error; every later document is lost too.
                return parsed;
            }
            Ok(Value::Null) => {}
            Ok(value) => parsed.documents.push(parse_document(&file, index, value)),
        }
    }
    parsed
}

/// A rejection of a named object.
pub(crate) fn object_rejection(
    file: &Arc<str>,
    document: usize,
    key: &ObjectKey,
    field: String,
    problem: Problem,
) -> Rejection {
    Rejection {
        file: file.clone(),
        document,
        kind: Some(key.kind.to_string()),
        namespace: key.namespace.as_deref().map(String::from),
        name: Some(key.name.to_string()),
        field,
        problem,
    }
}

/// The kind, namespace and name a document claims, read before its fields are checked.
struct Identity {
    kind: Option<Kind>,
    kind_text: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl Identity {
    fn read(value: &Value) -> Identity {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
        let kind_text = text(value.get("kind"));
        let api_version = text(value.get("apiVersion"));
        let kind = match (&api_version, &kind_text) {
            (Some(api_version), Some(kind)) => Kind::from_manifest(api_version, kind),
            _ => None,
        };
        let metadata = value.get("metadata");
        let name = text(metadata.and_then(|m| m.get("name"))).filter(|n| !n.is_empty());
        let namespace = match kind {
            Some(kind) if !kind.is_namespaced() => None,
            _ => Some(
                text(metadata.and_then(|m| m.get("namespace")))
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            ),
        };
        Identity {
            kind,
            kind_text,
            namespace,
            name,
        }
    }

    fn key(&self) -> Option<ObjectKey> {
        let kind = self.kind?;
        let name = self.name.as_deref()?;
        Some(match kind {
            Kind::Namespace => ObjectKey::namespace(name),
            _ => ObjectKey::namespaced(kind, self.namespace.as_deref()?, name),
        })
    }

    fn rejection(&self, file: &Arc<str>, index: usize, problem: FieldProblem) -> Rejection {
        Rejection {
            file: file.clone(),
            document: index,
            kind: self.kind.map(|k| k.to_string()),
            namespace: self.namespace.clone().filter(|_| self.kind.is_some()),
            name: self.name.clone().filter(|_| self.kind.is_some()),
            field: problem.field,
            problem: problem.problem,
        }
    }
}

/// The key of a document, read leniently, for tools that edit manifest files.
pub(crate) fn document_key(value: &Value) -> Option<ObjectKey> {
    Identity::read(value).key()
}

fn parse_document(file: &Arc<str>, index: usize, mut value: Value) -> ParsedDocument {
    strip_nulls(&mut value);
    let identity = Identity::read(&value);
    let key = identity.key();
    let result = check_document(&identity, value)
        .map(Arc::new)
        .map_err(|problems| {
            problems
                .into_iter()
                .map(|problem| identity.rejection(file, index, problem))
                .collect()
        });
    ParsedDocument { index, key, result }
}

fn check_document(identity: &Identity, value: Value) -> Result<Object, Vec<FieldProblem>> {
    let problem = |field: &str, problem| {
        vec![FieldProblem {
            field: field.into(),
            problem,
        }]
    };
    if !value.is_mapping() {
        return Err(problem("", Problem::NotAnObject));
    }
    for field in ["apiVersion", "kind"] {
        if value.get(field).is_none() {
            return Err(problem(field, Problem::Missing));
        }
    }
    let Some(kind) = identity.kind else {
        let text = |field| {
            value
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let unknown = Problem::UnknownKind {
            api_version: text("apiVersion"),
            kind: identity.kind_text.clone().unwrap_or_else(|| text("kind")),
        };
        return Err(problem("kind", unknown));
    };
    let Some(name) = identity.name.clone() else {
        return Err(problem("metadata.name", Problem::Missing));
    };
    let namespace = identity.namespace.clone().unwrap_or_default();
    check_names(kind, &name, &namespace)?;
    let id = NamespacedName::new(namespace, name.as_str());
    decode_kind(kind, id, value)
}

fn check_names(kind: Kind, name: &str, namespace: &str) -> Result<(), Vec<FieldProblem>> {
    let mut findings = Findings::default();
    let name_check = match kind {
        Kind::Namespace | Kind::Service => check_dns_label(name),
        _ => check_dns_subdomain(name),
    };
    findings.take("metadata.name", name_check);
    if kind.is_namespaced() {
        findings.take("metadata.namespace", check_dns_label(namespace));
    }
    findings.finish(())
}

fn decode_kind(kind: Kind, id: NamespacedName, value: Value) -> Result<Object, Vec<FieldProblem>> {
    match kind {
        Kind::Namespace => namespace_from_manifest(decode::<core::Namespace>(value)?, id.name)
            .map(|o| Object::Namespace(Arc::new(o))),
        Kind::Pod => {
            pod_from_manifest(decode::<core::Pod>(value)?, id).map(|o| Object::Pod(Arc::new(o)))
        }
        Kind::Deployment => deployment_from_manifest(decode::<apps::Deployment>(value)?, id)
            .map(|o| Object::Deployment(Arc::new(o))),
        Kind::Service => service_from_manifest(decode::<core::Service>(value)?, id)
            .map(|o| Object::Service(Arc::new(o))),
        Kind::AuthorizationPolicy => {
            authorization_policy_from_manifest(decode::<RawAuthorizationPolicy>(value)?, id)
                .map(|o| Object::AuthorizationPolicy(Arc::new(o)))
        }
        Kind::Gateway => gateway_from_manifest(decode::<RawGateway>(value)?, id)
            .map(|o| Object::Gateway(Arc::new(o))),
        Kind::HttpRoute => http_route_from_manifest(decode::<RawHttpRoute>(value)?, id)
            .map(|o| Object::HttpRoute(Arc::new(o))),
    }
}

/// Decodes a document into `T`, naming the path of a field of the wrong type or a missing
/// required field. Unknown fields are ignored, as by the API server's lenient decoding.
pub(crate) fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Vec<FieldProblem>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.inner().to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'));
        let problem = match missing {
            Some(field) if path.is_empty() => FieldProblem {
                field: field.to_string(),
                problem: Problem::Missing,
            },
            Some(field) => FieldProblem {
                field: format!("{path}.{field}"),
                problem: Problem::Missing,
            },
            None => FieldProblem {
                field: path,
                problem: Problem::WrongType { reason: message },
            },
        };
        vec![problem]
    })
}

/// Drops `key: null` entries, which the API server treats as absent.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Mapping(mapping) => {
            mapping.retain(|_, v| !v.is_null());
            for (_, v) in mapping.iter_mut() {
                strip_nulls(v);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(strip_nulls),
        Value::Tagged(tagged) => strip_nulls(&mut tagged.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
