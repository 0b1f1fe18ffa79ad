//! The syntax rules Kubernetes applies to names, label keys and label values, and the label
//! selector of workloads; checked here so that a manifest the API server would refuse is
//! refused here too, with the same words.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::rejection::{Findings, Problem};

/// Labels of an object, sorted by key.
pub type Labels = BTreeMap<String, String>;

const LABEL_RULE: &str = "at most 63 characters: letters, digits, '-', '_' or '.', starting and \
                          ending with a letter or digit";

/// Checks a DNS-1123 label (namespace and service names): at most 63 lower-case letters, digits
/// and '-', starting and ending with a letter or digit.
pub fn check_dns_label(value: &str) -> Result<(), Problem> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            value,
            "must be at most 63 lower-case letters, digits or '-', starting and ending with a \
             letter or digit",
        ))
    }
}

/// Checks a DNS-1123 subdomain (most object names, node names): dot-separated DNS labels, at most
/// 253 characters.
pub fn check_dns_subdomain(value: &str) -> Result<(), Problem> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| check_dns_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            value,
            "must be at most 253 characters of dot-separated parts, each made of lower-case \
             letters, digits or '-', starting and ending with a letter or digit",
        ))
    }
}

fn is_label_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a label key: an optional DNS subdomain prefix and '/', then a name of
/// at most 63 characters.
pub fn check_label_key(key: &str) -> Result<(), Problem> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && check_dns_subdomain(prefix).is_err()
    {
        return Err(Problem::invalid(
            key,
            "the prefix before '/' must be a DNS subdomain such as istio.io",
        ));
    }
    if is_label_name(name) {
        Ok(())
    } else {
        Err(Problem::invalid(
            key,
            format!("a label key is an optional prefix and '/', then {LABEL_RULE}"),
        ))
    }
}

/// Checks a label value: empty, or a name of at most 63 characters.
pub fn check_label_value(value: &str) -> Result<(), Problem> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(Problem::invalid(
            value,
            format!("a label value is empty or {LABEL_RULE}"),
        ))
    }
}

/// Checks every key and value of a label map found at `field` (e.g. `metadata.labels`).
pub(crate) fn check_labels(labels: &Labels, field: &str, findings: &mut Findings) {
    for (key, value) in labels {
        let at = format!("{field}[{key:?}]");
        findings.take(&at, check_label_key(key));
        findings.take(&at, check_label_value(value));
    }
}

/// Whether every `selector` entry is among `labels`.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// Checks a workload label selector at `field` and tells whether it selects `labels`;
/// problems are recorded and count as "does not select".
pub(crate) fn label_selector_selects(
    selector: &LabelSelector,
    labels: &Labels,
    field: &str,
    findings: &mut Findings,
) -> bool {
    let mut selects = true;
    if let Some(match_labels) = &selector.match_labels {
        check_labels(match_labels, &format!("{field}.matchLabels"), findings);
        selects &= selector_matches(match_labels, labels);
    }
    for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        findings.take(format!("{at}.key"), check_label_key(&expression.key));
        let values = expression.values.as_deref().unwrap_or_default();
        let value = labels.get(&expression.key);
        let holds = match expression.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                findings.push(
                    format!("{at}.operator"),
                    Problem::invalid(other, "must be In, NotIn, Exists or DoesNotExist"),
                );
                false
            }
        };
        selects &= holds;
    }
    selects
}

/// Converts a port number read as a signed integer, checking its range.
pub fn port_number(value: i64) -> Result<u16, Problem> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Problem::invalid_number(
            value,
            "a port must be between 1 and 65535",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn names_follow_kubernetes_rules() {
        let cases = [
            ("shop", true, true),
            ("shop-1", true, true),
            ("cart.v1", false, true),
            ("Shop", false, false),
            ("-shop", false, false),
            ("shop_", false, false),
            ("", false, false),
        ];
        for (name, label_ok, subdomain_ok) in cases {
            assert_eq!(check_dns_label(name).is_ok(), label_ok, "{name}");
            assert_eq!(check_dns_subdomain(name).is_ok(), subdomain_ok, "{name}");
        }
        assert!(check_dns_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes_rules() {
        let keys = [
            ("app", true),
            ("istio.io/dataplane-mode", true),
            ("app.kubernetes.io/name", true),
            ("Bad_Prefix/x", false),
            ("/x", false),
            ("a/", false),
            ("-x", false),
        ];
        for (key, ok) in keys {
            assert_eq!(check_label_key(key).is_ok(), ok, "{key}");
        }
        let values = [
            ("", true),
            ("v1.2_a-B", true),
            ("has space", false),
            ("x-", false),
        ];
        for (value, ok) in values {
            assert_eq!(check_label_value(value).is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: Labels = [("app".to_string(), "cart".to_string())].into();
        let expression = |operator: &str, values: &[&str]| LabelSelectorRequirement {
            key: "app".into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        let cases = [
            (expression("In", &["cart", "shop"]), true),
            (expression("NotIn", &["cart"]), false),
            (expression("Exists", &[]), true),
            (expression("DoesNotExist", &[]), false),
        ];
        for (requirement, expected) in cases {
            let selector = LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: Some(vec![requirement]),
            };
            let mut findings = Findings::default();
            let selects =
                label_selector_selects(&selector, &labels, "spec.selector", &mut findings);
            assert_eq!(selects, expected);
            assert!(findings.finish(()).is_ok());
        }
        let bad = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![expression("Near", &[])]),
        };
        let mut findings = Findings::default();
        assert!(!label_selector_selects(
            &bad,
            &labels,
            "spec.selector",
            &mut findings
        ));
        let problems = findings.finish(()).unwrap_err();
        assert_eq!(
            problems[0].field,
            "spec.selector.matchExpressions[0].operator"
        );
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(port_number(8080), Ok(8080));
        assert!(port_number(0).is_err());
        assert!(port_number(-3).is_err());
        assert!(port_number(65536).is_err());
    }
}
