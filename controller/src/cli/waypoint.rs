//! `meshctl waypoint apply|list|delete|status`, as `istioctl waypoint` manages waypoints: a
//! waypoint is a Gateway of class `istio-waypoint` with one listener `mesh` on 15008/HBONE;
//! the controller deploys it (a Service and a pod) and binds traffic to it through
//! `istio.io/use-waypoint` labels. `apply` and `delete` edit the manifest directory like
//! `meshctl apply`; `list` and `status` read the controller's status API.

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use super::get::cell;
use super::{Context, http, table};
use crate::store::gateway::{WAYPOINT_FOR_LABEL, WAYPOINT_GATEWAY_CLASS};
use crate::store::waypoint::{GATEWAY_NAME_LABEL, WAYPOINT_PORT_NAME};
use crate::store::{Kind, ManifestDir, ObjectKey};

/// The name a waypoint gets when none is given, as istioctl names it.
pub const DEFAULT_WAYPOINT_NAME: &str = "waypoint";

/// The namespace label that binds a namespace's traffic to a waypoint.
const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";

/// A `meshctl waypoint` command.
#[derive(Subcommand)]
pub enum WaypointCommand {
    /// Create or update a waypoint (a Gateway of class istio-waypoint).
    Apply {
        /// The waypoint's namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The waypoint's name.
        #[arg(long, default_value = DEFAULT_WAYPOINT_NAME)]
        name: String,
        /// Which traffic it serves (`istio.io/waypoint-for`); service when not given.
        #[arg(long = "for", value_enum)]
        traffic: Option<Traffic>,
        /// Also bind the namespace to it (`istio.io/use-waypoint` on the namespace).
        #[arg(long)]
        enroll_namespace: bool,
    },
    /// List the waypoints.
    List {
        /// Only this namespace.
        #[arg(short, long, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Every namespace (the default without --namespace).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Delete waypoints.
    Delete {
        /// The waypoints' names.
        #[arg(default_value = DEFAULT_WAYPOINT_NAME)]
        names: Vec<String>,
        /// Their namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Whether each waypoint runs and is connected, and what is bound to it.
    Status {
        /// The waypoints' namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Only this waypoint.
        #[arg(long)]
        name: Option<String>,
    },
}

/// The values of `--for`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Traffic {
    /// Traffic addressed to services.
    Service,
    /// Traffic addressed to workloads directly.
    Workload,
    /// Both.
    All,
    /// Neither (the waypoint is deployed but serves nothing).
    None,
}

impl Traffic {
    fn label_value(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Workload => "workload",
            Self::All => "all",
            Self::None => "none",
        }
    }
}

/// Runs a waypoint command.
pub fn run(context: &Context, command: WaypointCommand) -> anyhow::Result<()> {
    match command {
        WaypointCommand::Apply {
            namespace,
            name,
            traffic,
            enroll_namespace,
        } => apply(context, &namespace, &name, traffic, enroll_namespace),
        WaypointCommand::List {
            namespace,
            all_namespaces: _,
        } => list(context, namespace.as_deref()),
        WaypointCommand::Delete { names, namespace } => delete(context, &namespace, &names),
        WaypointCommand::Status { namespace, name } => status(context, &namespace, name.as_deref()),
    }
}

/// The Gateway manifest of a waypoint.
pub fn gateway_manifest(namespace: &str, name: &str, traffic: Option<Traffic>) -> String {
    let labels = traffic.map_or_else(String::new, |t| {
        format!("\n  labels: {{{WAYPOINT_FOR_LABEL}: {}}}", t.label_value())
    });
    let port = ztunnel::hbone::HBONE_PORT;
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}{labels}\nspec:\n  gatewayClassName: {WAYPOINT_GATEWAY_CLASS}\n  \
         listeners:\n  - {{name: {WAYPOINT_PORT_NAME}, port: {port}, protocol: HBONE}}\n"
    )
}

fn apply(
    context: &Context,
    namespace: &str,
    name: &str,
    traffic: Option<Traffic>,
    enroll_namespace: bool,
) -> anyhow::Result<()> {
    let dir = ManifestDir::new(context.manifest_dir()?);
    let file = format!("{namespace}-gateway-{name}.yaml");
    dir.apply(&file, &gateway_manifest(namespace, name, traffic))?;
    println!("waypoint {namespace}/{name} applied");
    if enroll_namespace {
        let key = ObjectKey::namespace(namespace);
        dir.set_label(&key, USE_WAYPOINT_LABEL, Some(name))?;
        println!("namespace {namespace} labeled {USE_WAYPOINT_LABEL}={name}");
    }
    Ok(())
}

fn delete(context: &Context, namespace: &str, names: &[String]) -> anyhow::Result<()> {
    let dir = ManifestDir::new(context.manifest_dir()?);
    for name in names {
        dir.delete(&ObjectKey::namespaced(Kind::Gateway, namespace, name))?;
        println!("waypoint {namespace}/{name} deleted");
    }
    Ok(())
}

/// The waypoint Gateways the controller knows, optionally of one namespace.
fn waypoints(context: &Context, namespace: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let path = match namespace {
        Some(ns) => format!("/objects/gateways?namespace={ns}"),
        None => "/objects/gateways".to_string(),
    };
    let rows = http::get_json(&context.controller, &path)?;
    Ok(rows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["waypoint"] == true)
        .cloned()
        .collect())
}

fn list(context: &Context, namespace: Option<&str>) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = waypoints(context, namespace)?
        .iter()
        .map(|g| {
            vec![
                cell(&g["namespace"]),
                cell(&g["name"]),
                cell(&g["waypoint_for"]),
                cell(&g["listeners"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("No waypoints.");
    } else {
        table::print(&["NAMESPACE", "NAME", "FOR", "LISTENERS"], &rows);
    }
    Ok(())
}

/// What the controller reports about the things a waypoint's status is made of.
struct Reports {
    pods: Value,
    services: Value,
    workloads: Value,
    proxies: Vec<Value>,
}

fn status(context: &Context, namespace: &str, name: Option<&str>) -> anyhow::Result<()> {
    let gateways: Vec<Value> = waypoints(context, Some(namespace))?
        .into_iter()
        .filter(|g| name.is_none_or(|n| g["name"] == n))
        .collect();
    if gateways.is_empty() {
        match name {
            Some(name) => bail!(
                "no waypoint {namespace}/{name}; create it with `meshctl waypoint apply -n {namespace} --name {name}`"
            ),
            None => bail!(
                "no waypoint in namespace {namespace}; create one with `meshctl waypoint apply -n {namespace}`"
            ),
        }
    }
    let controller = &context.controller;
    let reports = Reports {
        pods: http::get_json(controller, &format!("/objects/pods?namespace={namespace}"))?,
        services: http::get_json(controller, "/objects/services")?,
        workloads: http::get_json(controller, "/objects/workloads")?,
        proxies: http::get_json(controller, "/status")?["proxies"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    for gateway in &gateways {
        print_status(gateway, &reports);
    }
    Ok(())
}

fn print_status(gateway: &Value, reports: &Reports) {
    let (namespace, name) = (cell(&gateway["namespace"]), cell(&gateway["name"]));
    let bound_to_us =
        |row: &&Value| row["waypoint"].as_str() == Some(&format!("{namespace}/{name}"));
    let names = |rows: &Value| {
        let list: Vec<String> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(bound_to_us)
            .map(|row| format!("{}/{}", cell(&row["namespace"]), cell(&row["name"])))
            .collect();
        if list.is_empty() {
            "-".to_string()
        } else {
            list.join(", ")
        }
    };
    let pods: Vec<&Value> = reports
        .pods
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["labels"][GATEWAY_NAME_LABEL] == name.as_str())
        .collect();
    println!(
        "waypoint {namespace}/{name} (for {})",
        cell(&gateway["waypoint_for"])
    );
    if pods.is_empty() {
        println!("  pod:       none yet");
    }
    for pod in pods {
        let pod_name = cell(&pod["name"]);
        let suffix = format!("~{pod_name}.{namespace}~");
        let connected = reports.proxies.iter().any(|p| {
            p["proxy_id"]
                .as_str()
                .is_some_and(|id| id.contains(&suffix))
        });
        println!(
            "  pod:       {pod_name} on {}, {}, {}; {}",
            cell(&pod["node"]),
            cell(&pod["ip"]),
            cell(&pod["phase"]),
            if connected {
                "connected to the controller"
            } else {
                "not connected to the controller"
            }
        );
    }
    // A binding only counts for the traffic the waypoint serves.
    let traffic = cell(&gateway["waypoint_for"]);
    let bound = |kind: &str, rows: &Value| {
        if traffic == kind || traffic == "all" {
            names(rows)
        } else {
            format!("- (not a waypoint for {kind} traffic)")
        }
    };
    println!("  services:  {}", bound("service", &reports.services));
    println!("  workloads: {}", bound("workload", &reports.workloads));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Object, WaypointFor, validate_manifest_text};

    #[test]
    fn a_waypoint_is_a_valid_gateway_that_says_what_it_serves() {
        for (traffic, expected) in [
            (None, WaypointFor::Service),
            (Some(Traffic::Service), WaypointFor::Service),
            (Some(Traffic::Workload), WaypointFor::Workload),
            (Some(Traffic::All), WaypointFor::All),
            (Some(Traffic::None), WaypointFor::None),
        ] {
            let text = gateway_manifest("shop", "wp", traffic);
            let objects = validate_manifest_text("wp.yaml", &text)
                .unwrap_or_else(|e| panic!("{text}: {e:?}"));
            let [Object::Gateway(gateway)] = objects.as_slice() else {
                panic!("one Gateway expected from {text}");
            };
            assert!(gateway.is_waypoint, "{text}");
            assert_eq!(gateway.waypoint_for, expected, "{text}");
            assert_eq!((&*gateway.namespace, &*gateway.name), ("shop", "wp"));
            let listener = &gateway.listeners[0];
            assert_eq!(
                (
                    listener.name.as_str(),
                    listener.port,
                    listener.protocol.as_str()
                ),
                ("mesh", 15008, "HBONE")
            );
        }
    }
}
