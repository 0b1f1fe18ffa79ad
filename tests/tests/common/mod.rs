//! The harness of the end-to-end tests: a real lab per test, driven through the lab's own
//! driver (`mesh_lab::drive`, the same code the demo uses) and removed when the test ends,
//! also when it fails. Failures panic with the evidence.
//!
//! These tests need root (network namespaces, iptables) and the workspace binaries
//! (`cargo build --workspace --bins`); without either they fail with a message saying so.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mesh_lab::drive::{self, LabDriver};
#[allow(unused_imports)]
pub use mesh_lab::drive::{contains, tcp_segments_with_port, text};

/// The directory holding the workspace binaries (target/debug when tests run in debug).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests create network namespaces and iptables rules: run them as root"
    );
    for binary in [
        "mesh-lab",
        "meshctl",
        "controller",
        "ztunnel",
        "waypoint",
        "testapp",
    ] {
        let path = bin_dir().join(binary);
        assert!(
            path.exists(),
            "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
            path.display()
        );
    }
}

/// A unique, short lab name per test (namespace and interface names derive from it).
fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id() % 10000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running lab; `down` when dropped.
pub struct Lab {
    pub name: String,
    driver: LabDriver,
}

impl Lab {
    /// Brings a lab up with `nodes` nodes and a ztunnel on each.
    pub fn up(tag: &str, nodes: u8) -> Lab {
        Self::up_with(tag, nodes, &[])
    }

    /// Brings a lab up with extra `mesh-lab up` options.
    pub fn up_with(tag: &str, nodes: u8, options: &[&str]) -> Lab {
        require_prerequisites();
        let name = unique_name(tag);
        let driver = LabDriver::new(name.parse().expect("a valid lab name"), bin_dir());
        let lab = Lab { name, driver };
        let nodes = nodes.to_string();
        let mut args = vec!["up", "--nodes", &nodes, "--no-context"];
        args.extend_from_slice(options);
        let out = lab.lab(&args);
        assert!(out.status.success(), "mesh-lab up failed:\n{}", text(&out));
        lab
    }

    /// Runs `mesh-lab <args>` for this lab.
    pub fn lab(&self, args: &[&str]) -> Output {
        self.driver.lab(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `meshctl <args>` against this lab's controller.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        self.driver.meshctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `meshctl apply`; panics with meshctl's message when refused.
    pub fn apply(&self, yaml: &str) {
        self.driver.apply(yaml).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs a command inside a pod's namespace.
    pub fn exec(&self, pod: &str, command: &[&str]) -> Output {
        self.driver
            .exec(pod, command)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends `message` through a TCP echo at `target` from `pod`.
    pub fn echo(&self, pod: &str, target: &str, message: &str) -> Output {
        self.driver
            .echo(pod, target, message)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends HTTP requests from `pod` (`testapp get <url> <options>`) and returns the
    /// summary: `requests`, `ok`, `status` (by code), `errors`, `by_version`, `p50_ms`, ...
    pub fn http_load(&self, pod: &str, url: &str, options: &[&str]) -> serde_json::Value {
        self.try_http_load(pod, url, options)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::http_load`] for polling: a client that could not run is an `Err`.
    pub fn try_http_load(
        &self,
        pod: &str,
        url: &str,
        options: &[&str],
    ) -> Result<serde_json::Value, String> {
        self.driver
            .http_load(pod, url, options)
            .map_err(|e| e.to_string())
    }

    /// A pod's row from the lab's status (`node`, `ip`, ...), by `ns/name`.
    pub fn pod(&self, pod: &str) -> serde_json::Value {
        let (namespace, name) = pod.split_once('/').expect("pods are named ns/name");
        self.pods()
            .into_iter()
            .find(|p| p["namespace"] == namespace && p["name"] == name)
            .unwrap_or_else(|| panic!("{pod} is not running"))
    }

    /// The value of one sample of a node's ztunnel metrics: the line that starts with
    /// `series` (a name with its labels, as Prometheus prints it); 0 when it is absent.
    pub fn ztunnel_metric(&self, node: u8, series: &str) -> f64 {
        self.node_http(node, 15020, "/metrics")
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The lab's state directory.
    pub fn state(&self) -> PathBuf {
        self.driver.paths().root().to_path_buf()
    }

    /// The pid of a live lab process (`controller`, `ztunnel node-1`).
    pub fn pid_of(&self, component: &str) -> u32 {
        self.driver
            .pid_of(component)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no live {component} in the lab"))
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) to a lab process (`controller`, or `ztunnel` with
    /// its node) and returns its pid at once, without waiting for it to act.
    pub fn signal(&self, component: &str, node: Option<&str>, signal: &str) -> u32 {
        let mut args = vec!["signal", component, "--signal", signal];
        if let Some(node) = node {
            args.extend(["--node", node]);
        }
        let out = self.lab(&args);
        assert!(out.status.success(), "mesh-lab {args:?}: {}", text(&out));
        let component = match node {
            Some(node) => format!("{component} {node}"),
            None => component.to_string(),
        };
        let status = self.driver.status().unwrap_or_else(|e| panic!("{e}"));
        status["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["component"] == component.as_str())
            .and_then(|p| p["pid"].as_u64())
            .map(|pid| pid as u32)
            .unwrap_or_else(|| panic!("the lab lists no {component}: {status}"))
    }

    /// Removes the lab now and checks that nothing of it is left: no namespace, no process
    /// started with its state directory, no state directory. (Dropping the lab runs `down`
    /// again, which then finds nothing.)
    pub fn down_and_check_clean(&self) {
        let out = self.lab(&["down"]);
        assert!(out.status.success(), "mesh-lab down: {}", text(&out));
        let name = &self.driver.name;
        let listed = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let namespaces: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| name.owns_netns(ns))
            .map(str::to_string)
            .collect();
        assert!(
            namespaces.is_empty(),
            "namespaces of lab {name} remain: {namespaces:?}"
        );
        let state = self.state();
        let state_text = state.display().to_string();
        let processes = mesh_lab::process::find(|argv| {
            argv.iter().any(|a| a.contains(&state_text))
                || mesh_lab::teardown::is_supervisor_of(argv, name)
        });
        assert!(
            processes.is_empty(),
            "processes of lab {name} remain: {processes:?}"
        );
        assert!(!state.exists(), "{} remains", state.display());
    }

    /// The pods of the lab with their placement and restart counts.
    pub fn pods(&self) -> Vec<serde_json::Value> {
        self.driver.pods().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The ztunnel log of a node.
    pub fn ztunnel_log(&self, node: &str) -> String {
        self.driver
            .log("ztunnel", Some(node))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// GETs a path from an HTTP endpoint on a node's loopback (metrics, admin).
    pub fn node_http(&self, node: u8, port: u16, path: &str) -> String {
        self.driver
            .node_http(node, port, path)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (bounded) until `check` returns Ok; panics with the last detail and the
    /// supervisor's log.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut() -> Result<(), String>,
    ) {
        if let Err(e) = self.driver.wait_until(what, timeout, check) {
            let supervisor = self.driver.log("supervisor", None).unwrap_or_default();
            panic!("{e}\n--- supervisor ---\n{supervisor}");
        }
    }

    /// Waits until every listed pod runs with an IP.
    pub fn wait_for_pods(&self, pods: &[&str]) {
        self.driver
            .wait_for_pods(pods)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits until the controller reports every workload of `namespace` with `protocol`.
    pub fn wait_for_protocol(&self, namespace: &str, protocol: &str) {
        self.driver
            .wait_for_protocol(namespace, protocol)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A lab with the demo app (server on node-2, `clients` on node-1) deployed and its
    /// namespace enrolled, each client's traffic seen flowing over the mesh.
    pub fn enrolled(tag: &str, clients: &[&str], options: &[&str]) -> Lab {
        let lab = Lab::up_with(tag, 2, options);
        lab.apply(&demo_app("demo", clients));
        let mut pods: Vec<String> = clients.iter().map(|c| format!("demo/{c}")).collect();
        pods.push("demo/server".into());
        lab.wait_for_pods(&pods.iter().map(String::as_str).collect::<Vec<_>>());
        let out = lab.meshctl(&[
            "label",
            "namespace",
            "demo",
            "istio.io/dataplane-mode=ambient",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        lab.wait_for_protocol("demo", "HBONE");
        lab.wait_until(
            "every client's traffic over the mesh",
            Duration::from_secs(30),
            || {
                for client in clients {
                    let out = lab.echo(&format!("demo/{client}"), "server:9000", "hello");
                    let identity =
                        format!("src.identity=spiffe://cluster.local/ns/demo/sa/{client}");
                    if !out.status.success() || !lab.ztunnel_log("node-2").contains(&identity) {
                        return Err(text(&out));
                    }
                }
                Ok(())
            },
        );
        lab
    }

    /// Starts an echo from `pod` to the demo server, held open for `hold_ms` and echoing
    /// every 100 ms; the caller waits for it.
    pub fn hold_echo(&self, pod: &str, message: &str, hold_ms: u64) -> std::process::Child {
        self.hold_echo_to(pod, "server:9000", message, hold_ms)
    }

    /// Starts an echo from `pod` to `target` (`HOST:PORT`), held open for `hold_ms` and
    /// echoing every 100 ms; the caller waits for it.
    pub fn hold_echo_to(
        &self,
        pod: &str,
        target: &str,
        message: &str,
        hold_ms: u64,
    ) -> std::process::Child {
        std::process::Command::new(bin_dir().join("mesh-lab"))
            .env("MESH_LAB", &self.name)
            .args(["exec", pod, "--"])
            .arg(bin_dir().join("testapp"))
            .args([
                "echo",
                target,
                "--message",
                message,
                "--hold-ms",
                &hold_ms.to_string(),
            ])
            .args(["--timeout-ms", "3000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the long-lived client")
    }

    /// Starts capturing node `node`'s link.
    pub fn capture(&self, node: u8) -> drive::Capture {
        drive::Capture::start(&self.driver, node).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        match self.driver.lab(&["down"]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("mesh-lab down failed for {}:\n{}", self.name, text(&out)),
            Err(e) => eprintln!("mesh-lab down failed for {}: {e}", self.name),
        }
    }
}

/// Stops a capture and returns its bytes.
pub fn finish(capture: drive::Capture) -> Vec<u8> {
    capture.finish().unwrap_or_else(|e| panic!("{e}"))
}

/// A marker unlikely to appear by chance.
pub fn marker(tag: &str) -> String {
    format!("MARKER-{tag}-{}", unique_name("m"))
}

/// The demo application (see [`drive::demo_manifests`]) with the workspace's test app.
pub fn demo_app(namespace: &str, clients: &[&str]) -> String {
    drive::demo_manifests(&bin_dir().join("testapp"), namespace, clients)
}
