//! The waypoint's configuration: routes ([`RouteConfiguration`]) and L7 authorization
//! ([`L7Policy`]) from the controller, compiled once into immutable, validated tables.
//!
//! Each resource is compiled on its own when it arrives (`route`, `policy`): regexes are
//! built, header names parsed, numbers range-checked, and every problem of the resource is
//! reported at once. A resource that fails is rejected (the xDS client NACKs it with the
//! message) and its previous version, if any, stays in force; the other resources apply.
//! [`ConfigStore`] then indexes all compiled resources into a [`ConfigSnapshot`]
//! ([`RouteTable`] + [`PolicyTable`]) and publishes it on a `watch` channel, so the data path
//! reads whole snapshots and never a half-applied update.
//!
//! [`RouteConfiguration`]: mesh_proto::mesh::waypoint::v1::RouteConfiguration
//! [`L7Policy`]: mesh_proto::mesh::waypoint::v1::L7Policy

mod policy;
mod route;
mod store;
mod table;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use policy::{
    Action, HeaderCondition, L7Policy, Operation, Pattern, PolicyRule, PolicyTarget, Source,
    compile_policy,
};
pub use route::{
    Backend, DEFAULT_RETRY_BACKOFF, Fault, FaultAbort, FaultDelay, HeaderMatch, HeaderModifier,
    Mirror, Parent, PathMatch, PathModifier, QueryMatch, Redirect, RetryPolicy, Route, RouteMatch,
    Rule, StringMatch, Timeouts, UrlRewrite, compile_route,
};
pub use store::{ConfigStore, WaypointResources};
pub use table::{MatchEntry, PolicyIter, PolicyTable, RouteTable, ServiceRoutes};

/// Who this waypoint is, as routes and policies name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaypointName {
    /// The waypoint's Gateway as `namespace/name`: the parent of gateway-attached routes and
    /// the target of gateway-wide policies.
    pub gateway: Arc<str>,
}

/// Everything the data path needs from the controller's waypoint resources at one moment.
/// Published whole; never changed in place.
#[derive(Debug, Default)]
pub struct ConfigSnapshot {
    /// Routes by the service (and port) they apply to.
    pub routes: RouteTable,
    /// L7 policies by the traffic they govern.
    pub policies: PolicyTable,
}

/// Why one field of a waypoint resource cannot be used. The messages name the field by its
/// path in the resource (e.g. `rules[0].matches[1].path.regex`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The body is not the message its type URL promises.
    #[error(
        "the body does not decode as {message}: {detail}; controller and proxy disagree on the schema"
    )]
    Decode {
        /// The expected message.
        message: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// The resource name is not the `name` its body carries, so later removals would miss it.
    #[error(
        "its body names it {expected:?}; the resource name must be the same \"namespace/name\""
    )]
    NameMismatch {
        /// The name in the body.
        expected: String,
    },
    /// A field that must be set is empty.
    #[error("{field} is empty")]
    MissingField {
        /// The field.
        field: String,
    },
    /// A regular expression that does not compile (RE2 syntax, whole-value match).
    #[error("{field}: {pattern:?} is not a valid regular expression: {detail}")]
    BadRegex {
        /// The field.
        field: String,
        /// The expression as given.
        pattern: String,
        /// The compiler's complaint.
        detail: String,
    },
    /// A header name HTTP does not allow.
    #[error("{field}: {name:?} is not a valid HTTP header name")]
    BadHeaderName {
        /// The field.
        field: String,
        /// The name as given.
        name: String,
    },
    /// A header value HTTP does not allow (control characters, non-visible bytes).
    #[error("{field}: the value is not a valid HTTP header value")]
    BadHeaderValue {
        /// The field.
        field: String,
    },
    /// A path that does not start with `/`.
    #[error("{field}: {path:?} is not an absolute path; it must start with '/'")]
    BadPath {
        /// The field.
        field: String,
        /// The path as given.
        path: String,
    },
    /// A method name HTTP does not allow.
    #[error("{field}: {method:?} is not a valid HTTP method")]
    BadMethod {
        /// The field.
        field: String,
        /// The method as given.
        method: String,
    },
    /// A number that is not a TCP port.
    #[error("{field} holds {value}, which is not a TCP port (1-65535)")]
    BadPort {
        /// The field.
        field: String,
        /// The number given.
        value: u32,
    },
    /// A status code outside the range the field allows.
    #[error("{field} holds {value}; allowed: {allowed}")]
    BadStatus {
        /// The field.
        field: String,
        /// The number given.
        value: u32,
        /// The allowed values, in words.
        allowed: &'static str,
    },
    /// A percentage outside 0-100.
    #[error("{field} holds {value}, which is not a percentage (0-100)")]
    BadPercent {
        /// The field.
        field: String,
        /// The number given.
        value: f64,
    },
    /// A negative or out-of-range duration.
    #[error("{field} is not a valid non-negative duration")]
    BadDuration {
        /// The field.
        field: String,
    },
    /// A redirect scheme other than http or https.
    #[error("{field}: scheme {scheme:?} is not supported; use \"http\" or \"https\"")]
    BadScheme {
        /// The field.
        field: String,
        /// The scheme as given.
        scheme: String,
    },
    /// A hostname that cannot be an HTTP authority.
    #[error("{field}: {hostname:?} is not a valid hostname")]
    BadHostname {
        /// The field.
        field: String,
        /// The hostname as given.
        hostname: String,
    },
    /// The per-attempt deadline is longer than the whole request's, as Gateway API forbids.
    #[error("{field}: backend_request ({backend:?}) is longer than request ({request:?})")]
    TimeoutOrder {
        /// The field.
        field: String,
        /// The per-attempt deadline.
        backend: std::time::Duration,
        /// The overall deadline.
        request: std::time::Duration,
    },
    /// A prefix replacement on a rule whose matches are not all path prefixes.
    #[error(
        "{field}: a prefix replacement needs every match of the rule to be a path prefix match"
    )]
    PrefixRewriteWithoutPrefixMatch {
        /// The field.
        field: String,
    },
    /// An enum number this build does not know.
    #[error(
        "{field} has the value {value}, which this proxy does not know; run a proxy as new as the controller"
    )]
    UnknownEnum {
        /// The field.
        field: String,
        /// The number given.
        value: i32,
    },
    /// The resource arrived under a type URL this handler does not hold.
    #[error("{type_url} is not a type the waypoint configuration holds")]
    UnexpectedType {
        /// The type URL.
        type_url: String,
    },
}

/// Every problem found in one resource; the resource is rejected as a whole.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

/// Collects the errors of one resource while compiling it, so all of them are reported.
#[derive(Default)]
pub(crate) struct Problems(Vec<ConfigError>);

impl Problems {
    /// Keeps the value, or records the error and returns `None`.
    pub(crate) fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }

    /// Records an error.
    pub(crate) fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    /// `value` when nothing was recorded, otherwise every recorded error.
    pub(crate) fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

/// A protobuf duration as a `Duration`; negative or out-of-range ones are errors.
pub(crate) fn duration(
    value: &prost_types::Duration,
    field: impl Into<String>,
) -> Result<std::time::Duration, ConfigError> {
    std::time::Duration::try_from(*value).map_err(|_| ConfigError::BadDuration {
        field: field.into(),
    })
}

/// A percentage in 0-100.
pub(crate) fn percent(value: f64, field: impl Into<String>) -> Result<f64, ConfigError> {
    if (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::BadPercent {
            field: field.into(),
            value,
        })
    }
}

/// A TCP port, 1-65535.
pub(crate) fn port(value: u32, field: impl Into<String>) -> Result<u16, ConfigError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConfigError::BadPort {
            field: field.into(),
            value,
        }),
    }
}

/// A regex that must match the whole value (RE2 semantics, as Gateway API specifies).
pub(crate) fn whole_match_regex(
    pattern: &str,
    field: impl Into<String>,
) -> Result<regex::Regex, ConfigError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ConfigError::BadRegex {
            field: field.into(),
            pattern: pattern.to_string(),
            detail: e.to_string(),
        })
}

/// The most memory one compiled route regex may use.
///
/// Path and header regexes are short; 1 MiB rejects pathological patterns (huge counted
/// repetitions) that would otherwise cost every waypoint replica megabytes per route.
pub const REGEX_SIZE_LIMIT: usize = 1024 * 1024;
