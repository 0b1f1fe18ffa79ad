//! Fault injection from HTTPRoute annotations (the syntax is in the parent module's doc).

use std::time::Duration;

use mesh_proto::mesh::waypoint::v1::{FaultAbort, FaultDelay, FaultInjection};

use super::proto_duration;
use crate::store::http_route::parse_gateway_duration;
use crate::store::{Labels, Problem};

/// The prefix of the annotations this mesh reads.
pub const ANNOTATION_PREFIX: &str = "mesh.dev/";

/// Delays a share of the route's requests: `"<duration>[:<percent>]"`.
pub const FAULT_DELAY_ANNOTATION: &str = "mesh.dev/fault-delay";

/// Aborts a share of the route's requests: `"<status>[:<percent>]"`.
pub const FAULT_ABORT_ANNOTATION: &str = "mesh.dev/fault-abort";

/// The share of requests a fault hits when the annotation gives none.
pub const DEFAULT_FAULT_PERCENT: f64 = 100.0;

/// Why a fault annotation cannot be used.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FaultAnnotationError {
    /// The delay is not a Gateway API duration.
    #[error("{0}")]
    Delay(Problem),
    /// The abort status is not an HTTP status a proxy can answer with.
    #[error("status {0:?} must be a number from 200 to 599, such as 503")]
    Status(String),
    /// The share is not a percentage.
    #[error("share {0:?} must be a percentage from 0 to 100, such as 10 or 0.5")]
    Percent(String),
    /// The annotation is one of ours but not one this mesh knows.
    #[error(
        "unknown annotation; this mesh reads {FAULT_DELAY_ANNOTATION} (\"<duration>[:<percent>]\", \
         e.g. \"100ms:10\") and {FAULT_ABORT_ANNOTATION} (\"<status>[:<percent>]\", e.g. \"503:50\")"
    )]
    Unknown,
}

/// The faults the annotations of a route ask for: `None` when there are none. Each annotation
/// that cannot be used is reported with its key, and the route keeps the other one.
pub(super) fn fault_injection(
    annotations: &Labels,
    mut report: impl FnMut(&str, FaultAnnotationError),
) -> Option<FaultInjection> {
    let mut fault = FaultInjection::default();
    for (key, value) in annotations.range(ANNOTATION_PREFIX.to_string()..) {
        if !key.starts_with(ANNOTATION_PREFIX) {
            break;
        }
        let parsed = match key.as_str() {
            FAULT_DELAY_ANNOTATION => parse_delay(value).map(|d| fault.delay = Some(d)),
            FAULT_ABORT_ANNOTATION => parse_abort(value).map(|a| fault.abort = Some(a)),
            _ => Err(FaultAnnotationError::Unknown),
        };
        if let Err(error) = parsed {
            report(key, error);
        }
    }
    (fault != FaultInjection::default()).then_some(fault)
}

/// Reads `"<duration>[:<percent>]"`, the duration in the Gateway API's format (`100ms`, `2s`).
pub fn parse_delay(text: &str) -> Result<FaultDelay, FaultAnnotationError> {
    let (value, percent) = split_percent(text)?;
    let delay: Duration = parse_gateway_duration(value).map_err(FaultAnnotationError::Delay)?;
    Ok(FaultDelay {
        delay: Some(proto_duration(delay)),
        percent,
    })
}

/// Reads `"<status>[:<percent>]"`.
pub fn parse_abort(text: &str) -> Result<FaultAbort, FaultAnnotationError> {
    let (value, percent) = split_percent(text)?;
    let http_status = value
        .parse::<u32>()
        .ok()
        .filter(|code| (200..=599).contains(code))
        .ok_or_else(|| FaultAnnotationError::Status(value.to_string()))?;
    Ok(FaultAbort {
        http_status,
        percent,
    })
}

/// Splits `"<value>[:<percent>]"`; the percentage may end in `%`.
fn split_percent(text: &str) -> Result<(&str, f64), FaultAnnotationError> {
    let text = text.trim();
    let Some((value, share)) = text.split_once(':') else {
        return Ok((text, DEFAULT_FAULT_PERCENT));
    };
    let bad = || FaultAnnotationError::Percent(share.to_string());
    let number = share.trim().strip_suffix('%').unwrap_or(share.trim());
    let percent = number
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(bad)?;
    Ok((value.trim(), percent))
}
