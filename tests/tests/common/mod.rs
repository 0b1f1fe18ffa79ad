//! The harness of the end-to-end tests: a real lab (`mesh-lab up`) per test, driven through
//! the same binaries a user runs (`mesh-lab`, `meshctl`), removed when the test ends, also
//! when it fails.
//!
//! These tests need root (network namespaces, iptables) and the workspace binaries
//! (`cargo build --workspace --bins`); without either they fail with a message saying so.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the lab keeps its state, as `mesh-lab` lays it out.
const STATE_ROOT: &str = "/var/lib/mesh-lab";

/// The directory holding the workspace binaries (target/debug when tests run in debug).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/<test> -> target/debug
    exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps").to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

fn require_root() {
    let uid = unsafe_free_uid();
    assert_eq!(uid, 0, "the end-to-end tests create network namespaces and iptables rules: run them as root");
}

/// The effective uid, read from /proc so no unsafe call is needed.
fn unsafe_free_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc is mounted");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("/proc/self/status has a Uid line")
}

/// A unique lab name per test: short (namespace and interface names are derived from it).
fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{tag}{}x{}", std::process::id() % 10000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A running lab; `down` when dropped.
pub struct Lab {
    pub name: String,
}

impl Lab {
    /// Brings a lab up with `nodes` nodes (and a ztunnel on each).
    pub fn up(tag: &str, nodes: u8) -> Lab {
        require_root();
        let lab = Lab { name: unique_name(tag) };
        let out = lab.lab(&["up", "--nodes", &nodes.to_string()]);
        assert!(out.status.success(), "mesh-lab up failed:\n{}", text(&out));
        lab
    }

    /// Runs `mesh-lab <args> --name <lab>`.
    pub fn lab(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("mesh-lab"));
        cmd.args(args).env("MESH_LAB", &self.name).env("MESH_BIN_DIR", bin_dir());
        run(cmd, Duration::from_secs(120))
    }

    /// Runs `meshctl <args>` against this lab's controller.
    pub fn meshctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("meshctl"));
        cmd.args(args)
            .env("MESH_MANIFESTS", self.state().join("manifests"))
            .env("MESH_CONTROLLER", format!("unix:{}", self.state().join("controller/status.sock").display()));
        run(cmd, Duration::from_secs(30))
    }

    /// `meshctl apply -f -` with this text; panics with meshctl's message when refused.
    pub fn apply(&self, yaml: &str) {
        let path = self.state().join(format!("apply-{}.yaml", unique_name("a")));
        std::fs::write(&path, yaml).expect("write the manifest to apply");
        let out = self.meshctl(&["apply", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "meshctl apply failed:\n{}", text(&out));
    }

    /// Runs a command inside a pod's namespace.
    pub fn exec(&self, pod: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(command);
        self.lab(&args)
    }

    /// Sends `message` through a TCP echo at `target` from `pod`; whether it came back intact.
    pub fn echo(&self, pod: &str, target: &str, message: &str) -> Output {
        let testapp = binary("testapp");
        self.exec(pod, &[testapp.to_str().unwrap(), "echo", target, "--message", message, "--timeout-ms", "3000"])
    }

    /// The lab's state directory.
    pub fn state(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.name)
    }

    /// A node's network namespace.
    pub fn node_netns(&self, node: u8) -> String {
        format!("{}-n{node}", self.name)
    }

    /// The ztunnel log of a node.
    pub fn ztunnel_log(&self, node: &str) -> String {
        text(&self.lab(&["logs", "ztunnel", "--node", node]))
    }

    /// GETs a path from an HTTP endpoint inside a node's namespace (metrics, admin).
    pub fn node_http(&self, node: u8, port: u16, path: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node_netns(node), "bash", "-c", &script]);
        text(&run(cmd, Duration::from_secs(10)))
    }

    /// Waits (bounded) until `check` returns true; panics with `what` and the last detail.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
        let deadline = Instant::now() + timeout;
        loop {
            match check() {
                Ok(()) => return,
                Err(detail) if Instant::now() >= deadline => {
                    panic!("timed out after {timeout:?} waiting for {what}: {detail}\n--- supervisor ---\n{}", text(&self.lab(&["logs", "supervisor"])))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Waits until every listed pod of the lab has an IP and runs.
    pub fn wait_for_pods(&self, pods: &[&str]) {
        self.wait_until("pods to run", Duration::from_secs(60), || {
            let out = self.lab(&["status", "--json"]);
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let listed = pod_list(&status);
            for pod in pods {
                let found = listed.iter().any(|p| {
                    let name = format!("{}/{}", p["namespace"].as_str().unwrap_or(""), p["name"].as_str().unwrap_or(""));
                    name == *pod && p["ip"].is_string()
                });
                if !found {
                    return Err(format!("{pod} not running yet: {status}"));
                }
            }
            Ok(())
        });
    }

    /// Waits until the controller reports these pods with the given protocol (HBONE or TCP).
    pub fn wait_for_protocol(&self, namespace: &str, protocol: &str) {
        self.wait_until("workloads to change protocol", Duration::from_secs(30), || {
            let out = self.meshctl(&["get", "workloads", "-n", namespace, "-o", "json"]);
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
            let all = rows.as_array().map(|r| !r.is_empty() && r.iter().all(|w| w["protocol"] == protocol));
            if all == Some(true) { Ok(()) } else { Err(rows.to_string()) }
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.lab(&["down"]);
        if !out.status.success() {
            eprintln!("mesh-lab down failed for {}:\n{}", self.name, text(&out));
        }
    }
}

/// The pods of `mesh-lab status --json`.
pub fn pod_list(status: &serde_json::Value) -> Vec<serde_json::Value> {
    let pods = &status["pods"];
    pods.as_array().or_else(|| pods["pods"].as_array()).cloned().unwrap_or_default()
}

/// A packet capture on a node's link to the switch; stopped and read with [`Capture::finish`].
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing TCP on `eth0` (the node's link to the switch) in a node's namespace.
    pub fn start(lab: &Lab, node: u8) -> Capture {
        let tcpdump = ["/usr/bin/tcpdump", "/usr/sbin/tcpdump"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("tcpdump is missing: tests/run installs it (apt-get install tcpdump)");
        let file = lab.state().join(format!("capture-{}.pcap", unique_name("c")));
        let child = Command::new("ip")
            // Immediate mode: without it packets wait in the kernel ring for up to a second
            // and a capture stopped sooner loses them.
            .args(["netns", "exec", &lab.node_netns(node), tcpdump, "--immediate-mode", "-i", "eth0", "-U", "-n", "-s", "0", "-w"])
            // No capture filter: in these namespaces tcpdump's compiled filter dropped every
            // packet, while the unfiltered capture sees them all.
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tcpdump");
        // tcpdump needs a moment to open the interface before traffic flows.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Capture { child, file }
    }

    /// Stops the capture and returns the captured bytes.
    pub fn finish(mut self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("the capture file exists")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// How many captured TCP segments have port `port` as source or destination, reading the
/// pcap records' Ethernet, IPv4 and TCP headers.
pub fn tcp_segments_with_port(pcap: &[u8], port: u16) -> usize {
    const GLOBAL_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    let mut offset = GLOBAL_HEADER;
    let mut count = 0;
    while offset + RECORD_HEADER <= pcap.len() {
        let captured = u32::from_le_bytes(pcap[offset + 8..offset + 12].try_into().unwrap()) as usize;
        let start = offset + RECORD_HEADER;
        let Some(frame) = pcap.get(start..start + captured) else { break };
        offset = start + captured;
        // Ethernet II carrying IPv4 carrying TCP.
        if frame.len() < 14 + 20 + 4 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 6 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let tcp = &frame[14 + ihl..];
        if tcp.len() >= 4 {
            let src = u16::from_be_bytes([tcp[0], tcp[1]]);
            let dst = u16::from_be_bytes([tcp[2], tcp[3]]);
            if src == port || dst == port {
                count += 1;
            }
        }
    }
    count
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A marker unlikely to appear by chance.
pub fn marker(tag: &str) -> String {
    format!("MARKER-{tag}-{}-{}", std::process::id(), unique_name("m"))
}

/// stdout and stderr of a finished command.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs a command with a time limit; a command still running then is killed.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!("{cmd:?} did not finish in {limit:?}:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The demo application: a server (HTTP 8080, TCP echo 9000) on node-2 behind a Service,
/// and clients on node-1 with their own service accounts.
pub fn demo_app(namespace: &str, clients: &[&str]) -> String {
    let testapp = bin_dir().join("testapp");
    let testapp = testapp.display();
    let mut yaml = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: {namespace}, labels: {{app: server}}}}
spec:
  nodeName: node-2
  serviceAccountName: server
  containers:
  - name: app
    image: testapp
    command: ["{testapp}", serve, --http, "8080", --tcp-echo, "9000"]
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {namespace}}}
spec:
  selector: {{app: server}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: echo, port: 9000, targetPort: 9000}}
"#
    );
    for client in clients {
        yaml.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {client}, namespace: {namespace}, labels: {{app: {client}}}}}
spec:
  nodeName: node-1
  serviceAccountName: {client}
  containers:
  - name: app
    image: sleep
    command: [sleep, "86400"]
"#
        ));
    }
    yaml
}
