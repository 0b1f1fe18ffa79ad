//! The one JSON line `testapp get` always prints last; tests read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::load::Outcome;

/// The totals of a load run.
///
/// `by_pod` and `by_version` count every answered request (also 5xx), since balancing tests
/// want to see who answered, not only who succeeded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests attempted.
    pub requests: u64,
    /// Requests answered with 2xx (for gRPC: 2xx and `grpc-status` 0).
    pub ok: u64,
    /// Answered requests by HTTP status.
    pub status: BTreeMap<String, u64>,
    /// gRPC calls by `grpc-status` (`"missing"` when the answer had none); empty for HTTP.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grpc_status: BTreeMap<String, u64>,
    /// Requests that got no answer (connect failure, reset, timeout, unreadable body).
    pub errors: u64,
    /// Answered requests by the pod that answered.
    pub by_pod: BTreeMap<String, u64>,
    /// Answered requests by the version that answered.
    pub by_version: BTreeMap<String, u64>,
    /// Median latency of answered requests, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency of answered requests, in milliseconds.
    pub p99_ms: Option<f64>,
    /// The first error seen, to explain a non-zero `errors` without the per-request lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Accumulates outcomes into a [`Summary`].
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    summary: Summary,
    latencies_ms: Vec<f64>,
}

impl SummaryBuilder {
    /// Counts one request.
    pub fn add(&mut self, outcome: &Outcome) {
        let summary = &mut self.summary;
        summary.requests += 1;
        let Some(status) = outcome.status else {
            summary.errors += 1;
            if summary.first_error.is_none() {
                summary.first_error.clone_from(&outcome.error);
            }
            return;
        };
        if outcome.is_ok() {
            summary.ok += 1;
        }
        *summary.status.entry(status.to_string()).or_default() += 1;
        if outcome.grpc {
            let code = outcome
                .grpc_status
                .map_or_else(|| "missing".to_owned(), |code| code.to_string());
            *summary.grpc_status.entry(code).or_default() += 1;
        }
        if let Some(pod) = &outcome.pod {
            *summary.by_pod.entry(pod.clone()).or_default() += 1;
        }
        if let Some(version) = &outcome.version {
            *summary.by_version.entry(version.clone()).or_default() += 1;
        }
        self.latencies_ms.push(outcome.latency_ms);
    }

    /// The summary with its latency percentiles.
    pub fn finish(mut self) -> Summary {
        self.latencies_ms.sort_by(f64::total_cmp);
        self.summary.p50_ms = percentile(&self.latencies_ms, 50);
        self.summary.p99_ms = percentile(&self.latencies_ms, 99);
        self.summary
    }
}

/// Nearest-rank percentile of sorted values; `None` when there are none.
fn percentile(sorted: &[f64], percent: usize) -> Option<f64> {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, pod: &str, version: &str, latency_ms: f64) -> Outcome {
        Outcome {
            status: Some(status),
            pod: Some(pod.to_owned()),
            version: Some(version.to_owned()),
            latency_ms,
            ..Outcome::default()
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50), Some(50.0));
        assert_eq!(percentile(&values, 99), Some(99.0));
        assert_eq!(percentile(&[7.0], 99), Some(7.0));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn statuses_pods_versions_and_errors_are_counted() {
        let mut builder = SummaryBuilder::default();
        builder.add(&answered(200, "a", "v1", 3.0));
        builder.add(&answered(200, "b", "v2", 1.0));
        builder.add(&answered(503, "a", "v1", 2.0));
        builder.add(&Outcome {
            error: Some("connect refused".into()),
            ..Outcome::default()
        });
        let summary = builder.finish();
        assert_eq!((summary.requests, summary.ok, summary.errors), (4, 2, 1));
        assert_eq!(
            summary.status,
            BTreeMap::from([("200".into(), 2), ("503".into(), 1)])
        );
        assert_eq!(
            summary.by_pod,
            BTreeMap::from([("a".into(), 2), ("b".into(), 1)])
        );
        assert_eq!(
            summary.by_version,
            BTreeMap::from([("v1".into(), 2), ("v2".into(), 1)])
        );
        assert_eq!((summary.p50_ms, summary.p99_ms), (Some(2.0), Some(3.0)));
        assert_eq!(summary.first_error.as_deref(), Some("connect refused"));
        assert!(summary.grpc_status.is_empty());

        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["status"]["503"], 1);
        assert!(json.get("grpc_status").is_none());
    }

    #[test]
    fn grpc_ok_needs_status_zero() {
        let mut builder = SummaryBuilder::default();
        let grpc = |code| Outcome {
            grpc: true,
            grpc_status: code,
            ..answered(200, "a", "v1", 1.0)
        };
        builder.add(&grpc(Some(0)));
        builder.add(&grpc(Some(14)));
        builder.add(&grpc(None));
        let summary = builder.finish();
        assert_eq!(summary.ok, 1);
        let expected = BTreeMap::from([("0".into(), 1), ("14".into(), 1), ("missing".into(), 1)]);
        assert_eq!(summary.grpc_status, expected);
    }
}
