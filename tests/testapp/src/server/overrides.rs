//! Per-request overrides carried in the query string, so one server can be told by each test
//! request what to do: `?status=500&delay_ms=100`, or for gRPC `?grpc_status=5`.

use std::time::Duration;

use http::StatusCode;

use crate::grpc;

/// The longest delay a request may ask for; longer asks are refused rather than left hanging.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// What one request asked the server to do instead of its configured behaviour.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Overrides {
    /// Answer with this status (`status=`), bypassing the configured fail share.
    pub status: Option<StatusCode>,
    /// Wait this long before answering (`delay_ms=`), instead of the configured delay.
    pub delay: Option<Duration>,
    /// For a gRPC call, end it with this `grpc-status` in the trailers (`grpc_status=`),
    /// instead of the one that maps from the HTTP status.
    pub grpc_status: Option<u32>,
}

/// A query parameter the server understands but could not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverrideError {
    /// `status=` is not a number in 100..=599.
    #[error("query parameter status={value:?} is not an HTTP status between 100 and 599")]
    InvalidStatus {
        /// The value as sent.
        value: String,
    },
    /// `grpc_status=` is not a gRPC status code (0..=16).
    #[error("query parameter grpc_status={value:?} is not a gRPC status between 0 and {max}", max = grpc::MAX_STATUS)]
    InvalidGrpcStatus {
        /// The value as sent.
        value: String,
    },
    /// `delay_ms=` is not a number of milliseconds.
    #[error("query parameter delay_ms={value:?} is not a whole number of milliseconds")]
    InvalidDelay {
        /// The value as sent.
        value: String,
    },
    /// `delay_ms=` is longer than [`MAX_DELAY`].
    #[error("query parameter delay_ms={millis} is longer than the limit of {max} ms", max = MAX_DELAY.as_millis())]
    DelayTooLong {
        /// The delay asked for.
        millis: u64,
    },
}

impl Overrides {
    /// Reads the overrides from a query string; other parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Result<Self, OverrideError> {
        let mut overrides = Self::default();
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='));
        for (key, value) in pairs {
            match key {
                "status" => overrides.status = Some(parse_status(value)?),
                "delay_ms" => overrides.delay = Some(parse_delay(value)?),
                "grpc_status" => overrides.grpc_status = Some(parse_grpc_status(value)?),
                _ => {}
            }
        }
        Ok(overrides)
    }
}

fn parse_status(value: &str) -> Result<StatusCode, OverrideError> {
    let invalid = || OverrideError::InvalidStatus {
        value: value.to_owned(),
    };
    let code: u16 = value.parse().map_err(|_| invalid())?;
    if !(100..=599).contains(&code) {
        return Err(invalid());
    }
    StatusCode::from_u16(code).map_err(|_| invalid())
}

fn parse_grpc_status(value: &str) -> Result<u32, OverrideError> {
    value
        .parse()
        .ok()
        .filter(|code| *code <= grpc::MAX_STATUS)
        .ok_or_else(|| OverrideError::InvalidGrpcStatus {
            value: value.to_owned(),
        })
}

fn parse_delay(value: &str) -> Result<Duration, OverrideError> {
    let millis: u64 = value.parse().map_err(|_| OverrideError::InvalidDelay {
        value: value.to_owned(),
    })?;
    let delay = Duration::from_millis(millis);
    if delay > MAX_DELAY {
        return Err(OverrideError::DelayTooLong { millis });
    }
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_query_means_no_overrides() {
        assert_eq!(Overrides::from_query(None), Ok(Overrides::default()));
        assert_eq!(
            Overrides::from_query(Some("a=b&flag")),
            Ok(Overrides::default())
        );
    }

    #[test]
    fn status_and_delay_are_read() {
        let overrides =
            Overrides::from_query(Some("x=1&status=500&delay_ms=100&grpc_status=5")).unwrap();
        assert_eq!(overrides.status, Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(overrides.delay, Some(Duration::from_millis(100)));
        assert_eq!(overrides.grpc_status, Some(5));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in ["status=abc", "status=99", "status=600", "status="] {
            let error = Overrides::from_query(Some(bad)).unwrap_err();
            assert!(
                matches!(error, OverrideError::InvalidStatus { .. }),
                "{bad}: {error}"
            );
        }
        for bad in ["grpc_status=17", "grpc_status=-1", "grpc_status=ok"] {
            let error = Overrides::from_query(Some(bad)).unwrap_err();
            assert!(
                matches!(error, OverrideError::InvalidGrpcStatus { .. }),
                "{bad}: {error}"
            );
        }
        let error = Overrides::from_query(Some("delay_ms=-1")).unwrap_err();
        assert!(
            matches!(error, OverrideError::InvalidDelay { .. }),
            "{error}"
        );
        let error = Overrides::from_query(Some("delay_ms=60001")).unwrap_err();
        assert_eq!(error, OverrideError::DelayTooLong { millis: 60_001 });
    }
}
