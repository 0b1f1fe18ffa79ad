//! Why an object of the desired state was refused, named so that an operator can find and fix
//! it: the file, the document in it, the object, the field and what is wrong with the value.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

/// What is wrong with one field (or one document, or one file) of the desired state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file could not be read at all.
    #[error("cannot read the file: {reason}")]
    Unreadable {
        /// The operating system's reason.
        reason: String,
    },
    /// The YAML (or JSON) text does not parse; no document of the file is used.
    #[error("YAML syntax error: {reason}; no object of this file changes until it is fixed")]
    Syntax {
        /// The parser's message, with line and column.
        reason: String,
    },
    /// The document is not a mapping with `apiVersion`, `kind` and `metadata`.
    #[error(
        "the document is not a Kubernetes object: write a mapping with apiVersion, kind and metadata"
    )]
    NotAnObject,
    /// The kind (or its apiVersion) is not one the mesh reads.
    #[error(
        "unknown kind {kind:?} in apiVersion {api_version:?}; this mesh reads v1 Namespace, Pod and \
         Service, apps/v1 Deployment, security.istio.io/v1 AuthorizationPolicy and \
         gateway.networking.k8s.io/v1 Gateway and HTTPRoute"
    )]
    UnknownKind {
        /// The `apiVersion` written in the document.
        api_version: String,
        /// The `kind` written in the document.
        kind: String,
    },
    /// A required field is absent.
    #[error("required field is missing")]
    Missing,
    /// The value has the wrong YAML type or shape (a string where a number belongs, ...).
    #[error("wrong type: {reason}")]
    WrongType {
        /// The decoder's message, e.g. `invalid type: string "x", expected i32`.
        reason: String,
    },
    /// The value has the right type but is not allowed.
    #[error("invalid value {value}: {why}")]
    InvalidValue {
        /// The offending value, quoted when it is a string.
        value: String,
        /// What the value must look like instead.
        why: String,
    },
    /// Another document already defines an object of the same kind, namespace and name.
    #[error(
        "the same object is already defined in {file} (document {document}); \
         this definition is ignored until one of the two is removed"
    )]
    Duplicate {
        /// The file holding the definition in force.
        file: Arc<str>,
        /// The document index of that definition.
        document: usize,
    },
    /// The service asks for a virtual IP that another service holds.
    #[error(
        "virtual IP {ip} is already used by Service {holder}; choose another address or remove \
         spec.clusterIP to have one allocated"
    )]
    VipTaken {
        /// The contested address.
        ip: IpAddr,
        /// `namespace/name` of the service that holds it.
        holder: String,
    },
    /// The service CIDR has no free address left.
    #[error("no free virtual IP left in the service CIDR {cidr}; configure a wider CIDR")]
    VipsExhausted {
        /// The configured CIDR.
        cidr: ipnet::IpNet,
    },
    /// A pod made from a Deployment has the name of a Pod defined on its own.
    #[error(
        "its pod {pod} clashes with the Pod of the same name defined in {file}; rename one of \
         them (this pod is not created)"
    )]
    PodNameClash {
        /// `namespace/name` of the pod.
        pod: String,
        /// The file that defines the standalone Pod.
        file: Arc<str>,
    },
    /// A waypoint Gateway's Service is declared by the user, who then owns it.
    #[error(
        "Service {service}, which the mesh would make for this waypoint, is declared in {file}: \
         the declared one is used; it must select the waypoint's pods \
         (gateway.networking.k8s.io/gateway-name) and offer port 15008, or ztunnels cannot reach \
         the waypoint"
    )]
    WaypointServiceDeclared {
        /// `namespace/name` of the service.
        service: String,
        /// The file that declares it.
        file: Arc<str>,
    },
    /// An object declared by the user has the name of the waypoint's Deployment or pod.
    #[error(
        "{kind} {object}, which the mesh would make to run this waypoint, is declared in {file}: \
         the declared one is kept and the mesh runs no waypoint pod for this gateway; rename \
         one of them"
    )]
    WaypointPodDeclared {
        /// `Deployment` or `Pod`.
        kind: super::object::Kind,
        /// `namespace/name` of the object.
        object: String,
        /// The file that declares it.
        file: Arc<str>,
    },
}

impl Problem {
    /// A value that breaks a rule, with the rule in words.
    pub fn invalid(value: impl fmt::Debug, why: impl Into<String>) -> Self {
        Problem::InvalidValue {
            value: format!("{value:?}"),
            why: why.into(),
        }
    }

    /// A number that breaks a rule: shown without quotes.
    pub fn invalid_number(value: impl fmt::Display, why: impl Into<String>) -> Self {
        Problem::InvalidValue {
            value: value.to_string(),
            why: why.into(),
        }
    }
}

impl Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// One refused object (or document, or file) with everything needed to find it. Serializes
/// with its fields plus `message`, the whole sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The file, as `<manifest dir name>/<file name>`, e.g. `manifests/shop.yaml`.
    pub file: Arc<str>,
    /// Index of the YAML document in the file, from 0.
    pub document: usize,
    /// The object's kind, when the document names one.
    pub kind: Option<String>,
    /// The object's namespace; `None` for namespaces and unnamed documents.
    pub namespace: Option<String>,
    /// The object's name, when the document has one.
    pub name: Option<String>,
    /// The field path, e.g. `spec.ports[0].port`; empty when the whole document or file is bad.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

impl Rejection {
    /// A rejection of a whole file (unreadable or with a syntax error).
    pub fn of_file(file: Arc<str>, document: usize, problem: Problem) -> Self {
        Rejection {
            file,
            document,
            kind: None,
            namespace: None,
            name: None,
            field: String::new(),
            problem,
        }
    }
}

impl Serialize for Rejection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Rejection", 8)?;
        s.serialize_field("file", &*self.file)?;
        s.serialize_field("document", &self.document)?;
        s.serialize_field("kind", &self.kind)?;
        s.serialize_field("namespace", &self.namespace)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("field", &self.field)?;
        s.serialize_field("problem", &self.problem)?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => match &self.namespace {
                Some(namespace) => write!(f, "{kind} {namespace}/{name}")?,
                None => write!(f, "{kind} {name}")?,
            },
            (Some(kind), None) => write!(f, "{kind} in document {}", self.document)?,
            (None, _) => write!(f, "document {}", self.document)?,
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// A problem found at a field path, before it is tied to a file and an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field path, e.g. `spec.ports[0].port`.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

/// Collects every problem of one object so that all of them are reported at once.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    problems: Vec<FieldProblem>,
}

impl Findings {
    /// Records a problem at `field`.
    pub(crate) fn push(&mut self, field: impl Into<String>, problem: Problem) {
        self.problems.push(FieldProblem {
            field: field.into(),
            problem,
        });
    }

    /// Keeps the value of a check, or records its problem and gives `None`.
    pub(crate) fn take<T>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, Problem>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(problem) => {
                self.push(field, problem);
                None
            }
        }
    }

    /// Every problem found so far, when checking cannot go on.
    pub(crate) fn fail<T>(self) -> Result<T, Vec<FieldProblem>> {
        Err(self.problems)
    }

    /// The value when nothing was wrong, otherwise every problem found.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, Vec<FieldProblem>> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self.problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(kind: Option<&str>, namespace: Option<&str>, name: Option<&str>) -> Rejection {
        Rejection {
            file: "manifests/shop.yaml".into(),
            document: 2,
            kind: kind.map(String::from),
            namespace: namespace.map(String::from),
            name: name.map(String::from),
            field: "spec.ports[0].port".into(),
            problem: Problem::invalid_number(-3, "a port must be between 1 and 65535"),
        }
    }

    #[test]
    fn display_names_file_object_and_field() {
        let cases = [
            (
                rejection(Some("Service"), Some("shop"), Some("cart")),
                "manifests/shop.yaml: Service shop/cart: spec.ports[0].port: invalid value -3: \
                 a port must be between 1 and 65535",
            ),
            (
                rejection(Some("Namespace"), None, Some("shop")),
                "manifests/shop.yaml: Namespace shop: spec.ports[0].port: invalid value -3: \
                 a port must be between 1 and 65535",
            ),
            (
                rejection(Some("Service"), Some("shop"), None),
                "manifests/shop.yaml: Service in document 2: spec.ports[0].port: invalid value \
                 -3: a port must be between 1 and 65535",
            ),
            (
                rejection(None, None, None),
                "manifests/shop.yaml: document 2: spec.ports[0].port: invalid value -3: a port \
                 must be between 1 and 65535",
            ),
        ];
        for (rejection, expected) in cases {
            assert_eq!(rejection.to_string(), expected);
        }
    }

    #[test]
    fn findings_report_every_problem() {
        let mut findings = Findings::default();
        assert_eq!(findings.take("a", Ok::<_, Problem>(1)), Some(1));
        assert_eq!(findings.take::<u8>("b", Err(Problem::Missing)), None);
        findings.push("c", Problem::NotAnObject);
        let problems = findings.finish(()).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["b", "c"]);
    }
}
