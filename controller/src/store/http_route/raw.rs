//! The HTTPRoute fields as written, decoded leniently: unknown fields are ignored and every
//! field is optional here, so that a missing one is reported by name when the route is checked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawHttpRoute {
    pub(super) metadata: ObjectMeta,
    pub(super) spec: Option<RawRouteSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawRouteSpec {
    pub(super) parent_refs: Vec<RawParentRef>,
    pub(super) hostnames: Vec<String>,
    pub(super) rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawParentRef {
    pub(super) group: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) name: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) port: Option<i64>,
    pub(super) section_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawRule {
    pub(super) matches: Vec<RawMatch>,
    pub(super) filters: Vec<RawFilter>,
    pub(super) backend_refs: Vec<RawBackendRef>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) retry: Option<RawRetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawMatch {
    pub(super) path: Option<RawPathMatch>,
    pub(super) headers: Vec<RawNameValue>,
    pub(super) query_params: Vec<RawNameValue>,
    pub(super) method: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawPathMatch {
    #[serde(rename = "type")]
    pub(super) type_: Option<String>,
    pub(super) value: Option<String>,
}

/// A header or query parameter: a match (with `type`) or a header modifier entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawNameValue {
    #[serde(rename = "type")]
    pub(super) type_: Option<String>,
    pub(super) name: Option<String>,
    pub(super) value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawFilter {
    #[serde(rename = "type")]
    pub(super) type_: Option<String>,
    pub(super) request_header_modifier: Option<RawHeaderModifier>,
    pub(super) response_header_modifier: Option<RawHeaderModifier>,
    pub(super) request_redirect: Option<RawRedirect>,
    #[serde(rename = "urlRewrite")]
    pub(super) url_rewrite: Option<RawRewrite>,
    pub(super) request_mirror: Option<RawMirror>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawHeaderModifier {
    pub(super) set: Vec<RawNameValue>,
    pub(super) add: Vec<RawNameValue>,
    pub(super) remove: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawRedirect {
    pub(super) scheme: Option<String>,
    pub(super) hostname: Option<String>,
    pub(super) path: Option<RawPathModifier>,
    pub(super) port: Option<i64>,
    pub(super) status_code: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRewrite {
    pub(super) hostname: Option<String>,
    pub(super) path: Option<RawPathModifier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawPathModifier {
    #[serde(rename = "type")]
    pub(super) type_: Option<String>,
    pub(super) replace_full_path: Option<String>,
    pub(super) replace_prefix_match: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawMirror {
    pub(super) backend_ref: Option<RawBackendRef>,
    pub(super) percent: Option<i64>,
    pub(super) fraction: Option<RawFraction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawFraction {
    pub(super) numerator: i64,
    pub(super) denominator: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawBackendRef {
    pub(super) group: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) name: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) port: Option<i64>,
    pub(super) weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawTimeouts {
    pub(super) request: Option<String>,
    pub(super) backend_request: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRetry {
    pub(super) codes: Vec<i64>,
    pub(super) attempts: Option<i64>,
    pub(super) backoff: Option<String>,
}
