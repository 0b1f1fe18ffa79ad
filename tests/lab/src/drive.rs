//! Driving a running lab as a user would: `meshctl` against its controller, commands inside
//! pods, traffic probes, captures of a node's link, a node's metrics. The demo, the
//! end-to-end tests and the benchmarks all drive a lab through this one module.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::name::LabName;
use crate::paths::LabPaths;

/// How long one `meshctl` or `mesh-lab` invocation may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// Why driving the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{what} did not finish within {limit:?}")]
    Hung { what: String, limit: Duration },
    #[error("{what} failed:\n{output}")]
    Failed { what: String, output: String },
    #[error("timed out after {limit:?} waiting for {what}: {detail}")]
    Timeout {
        what: String,
        limit: Duration,
        detail: String,
    },
    #[error("{tool} is missing: install it with `apt-get install {package}`")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A lab to drive, by name, with the binaries that run it.
#[derive(Clone, Debug)]
pub struct LabDriver {
    /// The lab's name.
    pub name: LabName,
    /// Where `meshctl`, `mesh-lab`, `testapp` live.
    pub bin_dir: PathBuf,
}

impl LabDriver {
    /// A driver for the lab `name` using the binaries in `bin_dir`.
    pub fn new(name: LabName, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            name,
            bin_dir: bin_dir.into(),
        }
    }

    /// The lab's paths.
    pub fn paths(&self) -> LabPaths {
        LabPaths::new(&self.name)
    }

    /// Runs `mesh-lab <args>` for this lab.
    pub fn lab(&self, args: &[&str]) -> Result<Output, DriveError> {
        let mut cmd = Command::new(self.bin_dir.join("mesh-lab"));
        cmd.args(args)
            .env("MESH_LAB", self.name.as_str())
            .env("MESH_BIN_DIR", &self.bin_dir);
        run(cmd, &format!("mesh-lab {}", args.join(" ")), COMMAND_LIMIT)
    }

    /// Runs `meshctl <args>` against this lab's controller.
    pub fn meshctl(&self, args: &[&str]) -> Result<Output, DriveError> {
        let paths = self.paths();
        let mut cmd = Command::new(self.bin_dir.join("meshctl"));
        cmd.args(args).env("MESH_MANIFESTS", paths.manifests()).env(
            "MESH_CONTROLLER",
            format!("unix:{}", paths.status_socket().display()),
        );
        run(cmd, &format!("meshctl {}", args.join(" ")), COMMAND_LIMIT)
    }

    /// `meshctl <args>`, which must succeed; returns its output as text.
    pub fn meshctl_ok(&self, args: &[&str]) -> Result<String, DriveError> {
        let out = self.meshctl(args)?;
        if !out.status.success() {
            return Err(DriveError::Failed {
                what: format!("meshctl {}", args.join(" ")),
                output: text(&out),
            });
        }
        Ok(text(&out))
    }

    /// Applies manifests with `meshctl apply`. Each call uses a file of its own name:
    /// `meshctl apply` stores a file under its name, so reusing one would replace what an
    /// earlier call applied.
    pub fn apply(&self, yaml: &str) -> Result<String, DriveError> {
        static APPLIED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = APPLIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .paths()
            .root()
            .join(format!("applied-{}-{n}.yaml", std::process::id()));
        std::fs::write(&path, yaml).map_err(|source| DriveError::Read {
            path: path.clone(),
            source,
        })?;
        let result = self.meshctl_ok(&["apply", "-f", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Runs a command inside a pod's namespace.
    pub fn exec(&self, pod: &str, command: &[&str]) -> Result<Output, DriveError> {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(command);
        self.lab(&args)
    }

    /// Sends `message` to a TCP echo at `target` from `pod` with the test app.
    pub fn echo(&self, pod: &str, target: &str, message: &str) -> Result<Output, DriveError> {
        let testapp = self.bin_dir.join("testapp").display().to_string();
        self.exec(
            pod,
            &[
                &testapp,
                "echo",
                target,
                "--message",
                message,
                "--timeout-ms",
                "3000",
            ],
        )
    }

    /// Sends HTTP requests from `pod` with `testapp get <url> <options>` and returns its
    /// summary (the last line it prints: `requests`, `ok`, `status`, `errors`, `by_version`,
    /// `by_pod`, `p50_ms`, ...). Requests that fail count in the summary; only a client that
    /// could not run at all is an error.
    pub fn http_load(
        &self,
        pod: &str,
        url: &str,
        options: &[&str],
    ) -> Result<serde_json::Value, DriveError> {
        let testapp = self.bin_dir.join("testapp").display().to_string();
        let mut command = vec![testapp.as_str(), "get", url];
        command.extend_from_slice(options);
        let out = self.exec(pod, &command)?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|summary| summary.get("requests").is_some())
            .ok_or_else(|| DriveError::Failed {
                what: format!("testapp get {url} in {pod}"),
                output: text(&out),
            })
    }

    /// `mesh-lab status --json`.
    pub fn status(&self) -> Result<serde_json::Value, DriveError> {
        let out = self.lab(&["status", "--json"])?;
        serde_json::from_slice(&out.stdout).map_err(|e| DriveError::Failed {
            what: "mesh-lab status --json".into(),
            output: format!("{e}: {}", text(&out)),
        })
    }

    /// The pods listed by `status`.
    pub fn pods(&self) -> Result<Vec<serde_json::Value>, DriveError> {
        let status = self.status()?;
        let pods = &status["pods"];
        Ok(pods
            .as_array()
            .or_else(|| pods["pods"].as_array())
            .cloned()
            .unwrap_or_default())
    }

    /// The pid of a live lab process (`controller`, `ztunnel node-1`, `supervisor`).
    pub fn pid_of(&self, component: &str) -> Result<Option<u32>, DriveError> {
        let status = self.status()?;
        Ok(status["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["component"] == component && p["alive"] == true)
            .and_then(|p| p["pid"].as_u64())
            .map(|pid| pid as u32))
    }

    /// A log of the lab: `controller`, `supervisor`, `ns/pod`, or a node's ztunnel.
    pub fn log(&self, source: &str, node: Option<&str>) -> Result<String, DriveError> {
        let mut args = vec!["logs", source];
        if let Some(node) = node {
            args.extend(["--node", node]);
        }
        Ok(text(&self.lab(&args)?))
    }

    /// A node's network namespace (node 1 is `node-1`).
    pub fn node_netns(&self, node: u8) -> String {
        format!("{}-n{node}", self.name.as_str())
    }

    /// GETs `path` from an HTTP endpoint on a node's loopback (metrics 15020, admin 15000).
    pub fn node_http(&self, node: u8, port: u16, path: &str) -> Result<String, DriveError> {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n' >&3 && cat <&3"
        );
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.node_netns(node),
            "bash",
            "-c",
            &script,
        ]);
        Ok(text(&run(
            cmd,
            "a node's HTTP endpoint",
            Duration::from_secs(10),
        )?))
    }

    /// Waits until `check` succeeds, for at most `limit`.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Result<(), String>,
    ) -> Result<(), DriveError> {
        let deadline = Instant::now() + limit;
        loop {
            match check() {
                Ok(()) => return Ok(()),
                Err(detail) if Instant::now() >= deadline => {
                    return Err(DriveError::Timeout {
                        what: what.to_string(),
                        limit,
                        detail,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Waits until every listed pod (`ns/name`) runs with an IP.
    pub fn wait_for_pods(&self, pods: &[&str]) -> Result<(), DriveError> {
        self.wait_until("pods to run", Duration::from_secs(60), || {
            let listed = self.pods().map_err(|e| e.to_string())?;
            for pod in pods {
                let running = listed.iter().any(|p| {
                    format!(
                        "{}/{}",
                        p["namespace"].as_str().unwrap_or(""),
                        p["name"].as_str().unwrap_or("")
                    ) == *pod
                        && p["ip"].is_string()
                });
                if !running {
                    return Err(format!("{pod} is not running yet"));
                }
            }
            Ok(())
        })
    }

    /// Waits until the controller reports every workload of `namespace` with `protocol`
    /// (`HBONE` or `TCP`).
    pub fn wait_for_protocol(&self, namespace: &str, protocol: &str) -> Result<(), DriveError> {
        self.wait_until(
            "workloads to change protocol",
            Duration::from_secs(30),
            || {
                let out = self
                    .meshctl(&["get", "workloads", "-n", namespace, "-o", "json"])
                    .map_err(|e| e.to_string())?;
                let rows: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .map_err(|e| format!("{e}: {}", text(&out)))?;
                let done = rows
                    .as_array()
                    .is_some_and(|r| !r.is_empty() && r.iter().all(|w| w["protocol"] == protocol));
                done.then_some(()).ok_or_else(|| rows.to_string())
            },
        )
    }
}

/// A packet capture on a node's link to the switch (`eth0` in the node's namespace).
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing every packet of `node`'s link.
    pub fn start(lab: &LabDriver, node: u8) -> Result<Capture, DriveError> {
        let tcpdump = ["/usr/bin/tcpdump", "/usr/sbin/tcpdump"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or(DriveError::MissingTool {
                tool: "tcpdump",
                package: "tcpdump",
            })?;
        let file = lab
            .paths()
            .root()
            .join(format!("capture-n{node}-{}.pcap", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let child = Command::new("ip")
            // Immediate mode: otherwise packets wait in the kernel ring for up to a second and
            // a capture stopped sooner loses them. No filter: in these namespaces tcpdump's
            // compiled filter dropped every packet, while the unfiltered capture sees them all.
            .args([
                "netns",
                "exec",
                &lab.node_netns(node),
                tcpdump,
                "--immediate-mode",
                "-i",
                "eth0",
                "-U",
                "-n",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| DriveError::Spawn {
                program: "tcpdump".into(),
                source,
            })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(Capture { child, file })
    }

    /// Stops the capture and returns the pcap bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, DriveError> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read(&self.file).map_err(|source| DriveError::Read {
            path: self.file.clone(),
            source,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The demo application: a server (HTTP on 8080, TCP echo on 9000) on node-2 behind a Service
/// `server` (ports 80 and 9000), and one client pod per name on node-1, each with its own
/// service account. `testapp` is the path of the test application.
pub fn demo_manifests(testapp: &Path, namespace: &str, clients: &[&str]) -> String {
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

/// How many captured TCP segments have `port` as source or destination, reading the pcap
/// records' Ethernet, IPv4 and TCP headers.
pub fn tcp_segments_with_port(pcap: &[u8], port: u16) -> usize {
    const GLOBAL_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    let mut offset = GLOBAL_HEADER;
    let mut count = 0;
    while offset + RECORD_HEADER <= pcap.len() {
        let captured =
            u32::from_le_bytes(pcap[offset + 8..offset + 12].try_into().unwrap_or_default())
                as usize;
        let start = offset + RECORD_HEADER;
        let Some(frame) = pcap.get(start..start + captured) else {
            break;
        };
        offset = start + captured;
        // Ethernet II carrying IPv4 carrying TCP.
        if frame.len() < 14 + 20 + 4 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 6 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        if let Some(tcp) = frame.get(14 + ihl..14 + ihl + 4) {
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
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// stdout and stderr of a finished command.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command with a time limit; one still running then is killed. Its output is read
/// while it runs: a command that prints more than a pipe holds (a long log) would otherwise
/// block on its write and never exit.
fn run(mut cmd: Command, what: &str, limit: Duration) -> Result<Output, DriveError> {
    let spawn_error = |source| DriveError::Spawn {
        program: what.to_string(),
        source,
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(Output {
                status,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DriveError::Hung {
                what: what.to_string(),
                limit,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}
