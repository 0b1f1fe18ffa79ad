//! Compiling what a rule does with a matching request: backends, header edits, redirects,
//! rewrites, deadlines, retries, mirrors and faults.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use mesh_proto::mesh::waypoint::v1 as wire;

use super::super::{ConfigError, Problems, duration, percent, port};
use super::{
    Backend, DEFAULT_RETRY_BACKOFF, Fault, FaultAbort, FaultDelay, HeaderModifier, Mirror,
    PathModifier, Redirect, RetryPolicy, Timeouts, UrlRewrite, absolute_path, header_name,
};

pub(super) fn backend(
    wire: &wire::Backend,
    namespace: &Arc<str>,
    field: &str,
) -> Result<Backend, ConfigError> {
    if wire.hostname.is_empty() {
        return Err(ConfigError::MissingField {
            field: format!("{field}.hostname"),
        });
    }
    Ok(Backend {
        hostname: wire.hostname.to_ascii_lowercase().into(),
        namespace: namespace.clone(),
        port: port(wire.port, format!("{field}.port"))?,
        weight: wire.weight,
    })
}

pub(super) fn header_modifier(
    wire: Option<&wire::HeaderModifier>,
    field: &str,
    problems: &mut Problems,
) -> HeaderModifier {
    let Some(wire) = wire else {
        return HeaderModifier::default();
    };
    let mut pairs = |list: &[wire::Header], part: &str| -> Vec<(HeaderName, HeaderValue)> {
        list.iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let at = format!("{field}.{part}[{i}]");
                let name = problems.check(header_name(&h.name, &format!("{at}.name")))?;
                let value = problems.check(HeaderValue::from_str(&h.value).map_err(|_| {
                    ConfigError::BadHeaderValue {
                        field: format!("{at}.value"),
                    }
                }))?;
                Some((name, value))
            })
            .collect()
    };
    let set = pairs(&wire.set, "set");
    let add = pairs(&wire.add, "add");
    let remove = wire
        .remove
        .iter()
        .enumerate()
        .filter_map(|(i, n)| problems.check(header_name(n, &format!("{field}.remove[{i}]"))))
        .collect();
    HeaderModifier { set, add, remove }
}

pub(super) fn path_modifier(
    wire: &wire::PathModifier,
    all_prefix: bool,
    field: &str,
) -> Result<Option<PathModifier>, ConfigError> {
    use wire::path_modifier::Kind;
    match &wire.kind {
        Some(Kind::Full(path)) => {
            absolute_path(path, &format!("{field}.full"))?;
            Ok(Some(PathModifier::Full(path.clone())))
        }
        Some(Kind::Prefix(prefix)) => {
            if !all_prefix {
                return Err(ConfigError::PrefixRewriteWithoutPrefixMatch {
                    field: format!("{field}.prefix"),
                });
            }
            if !prefix.is_empty() {
                absolute_path(prefix, &format!("{field}.prefix"))?;
            }
            Ok(Some(PathModifier::Prefix(prefix.clone())))
        }
        None => Ok(None),
    }
}

pub(super) fn hostname(value: &str, field: &str) -> Result<(), ConfigError> {
    if http::uri::Authority::try_from(value).is_ok() && !value.contains('@') {
        Ok(())
    } else {
        Err(ConfigError::BadHostname {
            field: field.to_string(),
            hostname: value.to_string(),
        })
    }
}

pub(super) fn redirect(
    wire: &wire::Redirect,
    all_prefix: bool,
    field: &str,
) -> Result<Redirect, ConfigError> {
    let scheme = match wire.scheme.as_str() {
        "" => None,
        "http" => Some("http"),
        "https" => Some("https"),
        other => {
            return Err(ConfigError::BadScheme {
                field: format!("{field}.scheme"),
                scheme: other.to_string(),
            });
        }
    };
    let hostname = if wire.hostname.is_empty() {
        None
    } else {
        hostname(&wire.hostname, &format!("{field}.hostname"))?;
        Some(wire.hostname.clone())
    };
    let path = match &wire.path {
        Some(p) => path_modifier(p, all_prefix, &format!("{field}.path"))?,
        None => None,
    };
    let port = match wire.port {
        0 => None,
        value => Some(port(value, format!("{field}.port"))?),
    };
    let status = match wire.status_code {
        301 | 302 | 303 | 307 | 308 => {
            StatusCode::from_u16(wire.status_code as u16).expect("a listed redirect status")
        }
        value => {
            return Err(ConfigError::BadStatus {
                field: format!("{field}.status_code"),
                value,
                allowed: "301, 302, 303, 307 or 308",
            });
        }
    };
    Ok(Redirect {
        scheme,
        hostname,
        path,
        port,
        status,
    })
}

pub(super) fn rewrite(
    wire: &wire::UrlRewrite,
    all_prefix: bool,
    field: &str,
) -> Result<UrlRewrite, ConfigError> {
    let hostname = if wire.hostname.is_empty() {
        None
    } else {
        hostname(&wire.hostname, &format!("{field}.hostname"))?;
        Some(
            HeaderValue::from_str(&wire.hostname).map_err(|_| ConfigError::BadHostname {
                field: format!("{field}.hostname"),
                hostname: wire.hostname.clone(),
            })?,
        )
    };
    let path = match &wire.path {
        Some(p) => path_modifier(p, all_prefix, &format!("{field}.path"))?,
        None => None,
    };
    Ok(UrlRewrite { hostname, path })
}

pub(super) fn timeouts(wire: &wire::Timeouts, field: &str) -> Result<Timeouts, ConfigError> {
    let request = wire
        .request
        .as_ref()
        .map(|d| duration(d, format!("{field}.request")))
        .transpose()?;
    let backend_request = wire
        .backend_request
        .as_ref()
        .map(|d| duration(d, format!("{field}.backend_request")))
        .transpose()?;
    // Zero means "no deadline" in Gateway API ("0s" disables the timeout).
    let request = request.filter(|d| !d.is_zero());
    let backend_request = backend_request.filter(|d| !d.is_zero());
    if let (Some(request), Some(backend)) = (request, backend_request)
        && backend > request
    {
        return Err(ConfigError::TimeoutOrder {
            field: field.to_string(),
            backend,
            request,
        });
    }
    Ok(Timeouts {
        request,
        backend_request,
    })
}

pub(super) fn retry(wire: &wire::RetryPolicy, field: &str) -> Result<RetryPolicy, ConfigError> {
    let codes = wire
        .codes
        .iter()
        .enumerate()
        .map(|(i, &code)| match code {
            100..=599 => Ok(code as u16),
            value => Err(ConfigError::BadStatus {
                field: format!("{field}.codes[{i}]"),
                value,
                allowed: "an HTTP status code (100-599)",
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let backoff = wire
        .backoff
        .as_ref()
        .map(|d| duration(d, format!("{field}.backoff")))
        .transpose()?
        .unwrap_or(DEFAULT_RETRY_BACKOFF);
    Ok(RetryPolicy {
        attempts: wire.attempts,
        codes,
        backoff,
        on_connect_failure: wire.retry_on_connect_failure,
        on_reset: wire.retry_on_reset,
    })
}

pub(super) fn mirror(
    wire: &wire::Mirror,
    namespace: &Arc<str>,
    field: &str,
) -> Result<Mirror, ConfigError> {
    let Some(target) = &wire.backend else {
        return Err(ConfigError::MissingField {
            field: format!("{field}.backend"),
        });
    };
    Ok(Mirror {
        backend: backend(target, namespace, &format!("{field}.backend"))?,
        percent: percent(wire.percent, format!("{field}.percent"))?,
    })
}

pub(super) fn fault(wire: &wire::FaultInjection, field: &str) -> Result<Fault, ConfigError> {
    let delay = match &wire.delay {
        Some(d) => {
            let Some(value) = &d.delay else {
                return Err(ConfigError::MissingField {
                    field: format!("{field}.delay.delay"),
                });
            };
            Some(FaultDelay {
                delay: duration(value, format!("{field}.delay.delay"))?,
                percent: percent(d.percent, format!("{field}.delay.percent"))?,
            })
        }
        None => None,
    };
    let abort = match &wire.abort {
        Some(a) => {
            let status = match a.http_status {
                200..=599 => StatusCode::from_u16(a.http_status as u16).expect("in range"),
                value => {
                    return Err(ConfigError::BadStatus {
                        field: format!("{field}.abort.http_status"),
                        value,
                        allowed: "200-599",
                    });
                }
            };
            Some(FaultAbort {
                status,
                percent: percent(a.percent, format!("{field}.abort.percent"))?,
            })
        }
        None => None,
    };
    Ok(Fault { delay, abort })
}
