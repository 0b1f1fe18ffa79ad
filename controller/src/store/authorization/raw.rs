//! The AuthorizationPolicy fields as written, decoded leniently: unknown fields are ignored and
//! absent lists are empty, as Istio reads them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::store::kube_syntax::Labels;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawAuthorizationPolicy {
    pub(super) metadata: ObjectMeta,
    pub(super) spec: RawPolicySpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawPolicySpec {
    pub(super) selector: Option<RawSelector>,
    pub(super) target_ref: Option<RawTargetRef>,
    pub(super) target_refs: Vec<RawTargetRef>,
    pub(super) action: Option<String>,
    pub(super) provider: Option<RawProvider>,
    pub(super) rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawSelector {
    pub(super) match_labels: Labels,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTargetRef {
    pub(super) group: String,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawProvider {
    pub(super) name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRule {
    pub(super) from: Vec<RawFrom>,
    pub(super) to: Vec<RawTo>,
    pub(super) when: Vec<RawCondition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawFrom {
    pub(super) source: Option<RawSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawSource {
    pub(super) principals: Vec<String>,
    pub(super) not_principals: Vec<String>,
    pub(super) request_principals: Vec<String>,
    pub(super) not_request_principals: Vec<String>,
    pub(super) namespaces: Vec<String>,
    pub(super) not_namespaces: Vec<String>,
    pub(super) ip_blocks: Vec<String>,
    pub(super) not_ip_blocks: Vec<String>,
    pub(super) remote_ip_blocks: Vec<String>,
    pub(super) not_remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTo {
    pub(super) operation: Option<RawOperation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawOperation {
    pub(super) hosts: Vec<String>,
    pub(super) not_hosts: Vec<String>,
    pub(super) ports: Vec<PortText>,
    pub(super) not_ports: Vec<PortText>,
    pub(super) methods: Vec<String>,
    pub(super) not_methods: Vec<String>,
    pub(super) paths: Vec<String>,
    pub(super) not_paths: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawCondition {
    pub(super) key: String,
    pub(super) values: Vec<String>,
    pub(super) not_values: Vec<String>,
}

/// A port in an operation: Istio's schema says string, but a bare number is unambiguous and
/// common, so both are read.
#[derive(Debug)]
pub(super) struct PortText(pub(super) String);

impl<'de> Deserialize<'de> for PortText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number, as a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortText, E> {
                Ok(PortText(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
