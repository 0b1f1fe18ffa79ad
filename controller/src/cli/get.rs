//! `meshctl get` and `meshctl proxy-status`: what the controller reports, as tables.

use anyhow::bail;
use serde_json::Value;

use super::{Context, http, table};

/// Lists objects of a kind.
pub fn get(
    context: &Context,
    kind: &str,
    namespace: Option<&str>,
    output: Option<&str>,
) -> anyhow::Result<()> {
    let kind = plural(kind);
    let path = match namespace {
        Some(ns) => format!("/objects/{kind}?namespace={ns}"),
        None => format!("/objects/{kind}"),
    };
    let rows = http::get_json(&context.controller, &path)?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(&rows)?),
        Some("yaml") => print!("{}", serde_yaml_ng::to_string(&rows)?),
        Some("wide") => print_table(&kind, &rows, true)?,
        None => print_table(&kind, &rows, false)?,
        Some(other) => bail!("unknown output {other:?}: use wide, json or yaml"),
    }
    Ok(())
}

/// A table column: its header and the JSON field it shows.
type Column = (&'static str, &'static str);

/// Columns per kind: the default ones, and the extra ones `-o wide` adds.
fn columns(kind: &str) -> (&'static [Column], &'static [Column]) {
    match kind {
        "namespaces" => (
            &[
                ("NAME", "name"),
                ("ENROLLED", "enrolled"),
                ("WAYPOINT", "waypoint"),
            ],
            &[("LABELS", "labels")],
        ),
        "pods" => (
            &[
                ("NAMESPACE", "namespace"),
                ("NAME", "name"),
                ("NODE", "node"),
                ("IP", "ip"),
                ("ENROLLED", "enrolled"),
            ],
            &[
                ("SERVICE-ACCOUNT", "service_account"),
                ("PHASE", "phase"),
                ("LABELS", "labels"),
            ],
        ),
        "services" => (
            &[
                ("NAMESPACE", "namespace"),
                ("NAME", "name"),
                ("VIP", "vip"),
                ("PORTS", "ports"),
                ("WAYPOINT", "waypoint"),
            ],
            &[("ENDPOINTS", "endpoints"), ("SELECTOR", "selector")],
        ),
        "workloads" => (
            &[
                ("NAMESPACE", "namespace"),
                ("NAME", "name"),
                ("IP", "ip"),
                ("NODE", "node"),
                ("PROTOCOL", "protocol"),
                ("WAYPOINT", "waypoint"),
            ],
            &[("IDENTITY", "identity"), ("UID", "uid")],
        ),
        "authorizationpolicies" => (
            &[
                ("NAMESPACE", "namespace"),
                ("NAME", "name"),
                ("ACTION", "action"),
                ("APPLIES-TO", "applies_to"),
                ("RULES", "rules"),
            ],
            &[("DRY-RUN", "dry_run")],
        ),
        "gateways" => (
            &[
                ("NAMESPACE", "namespace"),
                ("NAME", "name"),
                ("CLASS", "class"),
                ("WAYPOINT", "waypoint"),
            ],
            &[("FOR", "waypoint_for"), ("LISTENERS", "listeners")],
        ),
        _ => (
            &[
                ("NAMESPACE", "namespace"),
                ("NAME", "name"),
                ("PARENTS", "parents"),
                ("RULES", "rules"),
            ],
            &[("HOSTNAMES", "hostnames")],
        ),
    }
}

fn print_table(kind: &str, rows: &[Value], wide: bool) -> anyhow::Result<()> {
    if rows.is_empty() {
        println!("No {kind} found.");
        return Ok(());
    }
    let (narrow, extra) = columns(kind);
    let cols: Vec<_> = narrow
        .iter()
        .chain(if wide { extra.iter() } else { [].iter() })
        .collect();
    let header: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| cols.iter().map(|(_, field)| cell(&row[*field])).collect())
        .collect();
    table::print(&header, &cells);
    Ok(())
}

/// A JSON value as a table cell.
pub(super) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) if map.is_empty() => "-".to_string(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn plural(kind: &str) -> String {
    match super::apply::kind_from_arg(kind) {
        Some(k) => match k.as_str() {
            "AuthorizationPolicy" => "authorizationpolicies".to_string(),
            other => format!("{}s", other.to_ascii_lowercase()),
        },
        None if kind.starts_with("workload") => "workloads".to_string(),
        None => kind.to_string(),
    }
}

/// Prints every connected proxy with its acknowledged versions, then problems.
pub fn proxy_status(context: &Context) -> anyhow::Result<()> {
    let status = http::get_json(&context.controller, "/status")?;
    let generation = status["generation"].as_u64().unwrap_or(0);
    let proxies = status["proxies"].as_array().cloned().unwrap_or_default();
    if proxies.is_empty() {
        println!("No proxies connected (configuration generation {generation}).");
    } else {
        let rows: Vec<Vec<String>> = proxies.iter().map(|p| proxy_row(p, generation)).collect();
        table::print(
            &[
                "NODE",
                "KIND",
                "PROXY",
                "ADDRESSES",
                "AUTHORIZATION",
                "ROUTES",
                "LAST NACK",
            ],
            &rows,
        );
    }
    for rejected in status["rejected"].as_array().into_iter().flatten() {
        println!("rejected: {}", cell(rejected));
    }
    for warning in status["warnings"].as_array().into_iter().flatten() {
        println!(
            "warning: {}: {}",
            cell(&warning["object"]),
            cell(&warning["message"])
        );
    }
    Ok(())
}

fn proxy_row(proxy: &Value, generation: u64) -> Vec<String> {
    let ack = |type_url: &str| {
        let t = &proxy["types"][type_url];
        match (t["acked_version"].as_u64(), t["sent_version"].as_u64()) {
            (_, None) => "-".to_string(),
            (Some(a), _) if a == generation => format!("SYNCED ({a})"),
            (Some(a), Some(s)) => format!("STALE (acked {a}, sent {s})"),
            (None, Some(s)) => format!("NOT ACKED (sent {s})"),
        }
    };
    let nack = proxy["types"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, t)| t["last_nack"].as_str())
        .next()
        .unwrap_or("-")
        .to_string();
    vec![
        cell(&proxy["node"]),
        cell(&proxy["kind"]),
        cell(&proxy["proxy_id"]),
        ack(mesh_proto::ADDRESS_TYPE_URL),
        ack(mesh_proto::AUTHORIZATION_TYPE_URL),
        ack(mesh_proto::ROUTE_CONFIGURATION_TYPE_URL),
        nack,
    ]
}
