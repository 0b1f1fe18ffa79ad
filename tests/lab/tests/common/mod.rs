//! What the lab tests share: a lab driven through the `mesh-lab` binary, removed by a guard
//! however the test ends, and the checks that nothing of it remains.
//!
//! These tests create network namespaces: they need root and the controller binary, and they
//! fail (never skip) when either is missing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mesh_lab::LabName;
use mesh_lab::paths::{ETC_NETNS, LabPaths};
use mesh_lab::record::{LabRecord, PodReport, PodsReport};

/// How long a test waits for the supervisor to act on a manifest.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `mesh-lab` binary cargo built for this test.
pub fn mesh_lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mesh-lab"))
}

/// Where the lab's binaries are: beside `mesh-lab`.
pub fn bin_dir() -> PathBuf {
    mesh_lab_bin()
        .parent()
        .expect("the binary has a directory")
        .to_path_buf()
}

/// Fails the test unless it can run: root and the controller binary.
pub fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the lab tests create network namespaces and need root: run them with sudo (tests/run does)"
    );
    let controller = bin_dir().join("controller");
    assert!(
        controller.is_file(),
        "{} is missing: build it first with `cargo build -p controller -p mesh-lab`",
        controller.display()
    );
    for tool in [
        "ip",
        "iptables",
        "iptables-restore",
        "iptables-save",
        "bash",
        "timeout",
    ] {
        assert!(
            mesh_lab::preflight::find_on_path(tool).is_some(),
            "the lab tests need `{tool}` on PATH"
        );
    }
}

/// A lab name unique to this test process and a tag.
pub fn unique_name(tag: &str) -> LabName {
    format!("t{}{tag}", std::process::id())
        .parse()
        .expect("a valid lab name")
}

/// A lab for one test; dropping it runs `down`, so a failing test leaves nothing behind.
pub struct Lab {
    /// The lab's name.
    pub name: LabName,
    /// Its paths.
    pub paths: LabPaths,
}

impl Lab {
    /// Brings a lab up without ztunnels; panics with the binary's output when it fails.
    pub fn up(tag: &str, nodes: u8) -> Self {
        Self::up_with(
            tag,
            &[
                "--nodes",
                &nodes.to_string(),
                "--no-ztunnel",
                "--no-context",
            ],
        )
    }

    /// Brings a lab up with a ztunnel per node.
    pub fn up_with_ztunnel(tag: &str, nodes: u8) -> Self {
        Self::up_with(tag, &["--nodes", &nodes.to_string(), "--no-context"])
    }

    fn up_with(tag: &str, options: &[&str]) -> Self {
        require_prerequisites();
        let name = unique_name(tag);
        let lab = Self {
            paths: LabPaths::new(&name),
            name,
        };
        let mut args = vec!["up"];
        args.extend_from_slice(options);
        let out = lab.run(&args);
        assert_success("up", &out);
        lab
    }

    /// Runs `mesh-lab --name <lab> <args>` (the name first: `exec` passes on what follows `--`).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(mesh_lab_bin())
            .args(["--name", self.name.as_str()])
            .args(args)
            .env("MESH_BIN_DIR", bin_dir())
            .output()
            .expect("mesh-lab runs")
    }

    /// Runs a command in a pod (`exec NS/POD -- ...`).
    pub fn exec(&self, pod: &str, command: &[&str]) -> Output {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(command);
        self.run(&args)
    }

    /// Connects from `pod` to `host:port` with bash, sends `message` and returns the line that
    /// comes back (or the error output).
    pub fn echo(&self, pod: &str, host: &str, port: u16, message: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/{host}/{port} && echo {message} >&3 && read -r line <&3 && echo \"$line\""
        );
        let out = self.exec(pod, &["timeout", "5", "bash", "-c", &script]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Writes a manifest into the lab's manifest directory atomically.
    pub fn apply(&self, file: &str, text: &str) {
        let dir = self.paths.manifests();
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write the manifest");
        std::fs::rename(&tmp, dir.join(file)).expect("move the manifest in place");
    }

    /// The lab record.
    pub fn record(&self) -> LabRecord {
        LabRecord::load(&self.name, &self.paths.record()).expect("the lab record")
    }

    /// The supervisor's report.
    pub fn pods(&self) -> PodsReport {
        PodsReport::load(&self.paths.pods_report()).expect("the pods report")
    }

    /// Waits until the supervisor runs pod `ns/name` with its namespace in place.
    pub fn wait_for_pod(&self, namespace: &str, name: &str) -> PodReport {
        wait_until(
            &format!("pod {namespace}/{name} runs"),
            SETTLE_TIMEOUT,
            || {
                let pods = self.pods();
                let pod = pods.find(namespace, name)?.clone();
                let netns = netns_exists(&pod.netns);
                (netns && !pod.pids.is_empty()).then_some(pod)
            },
        )
    }

    /// The supervisor's log, for failure messages.
    pub fn supervisor_log(&self) -> String {
        std::fs::read_to_string(self.paths.supervisor_log()).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.run(&["down"]);
        if !out.status.success() {
            eprintln!(
                "down of lab {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Panics with the command's output unless it succeeded.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `probe` every 100 ms until it returns something; panics after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a named network namespace exists.
pub fn netns_exists(netns: &str) -> bool {
    Path::new("/var/run/netns").join(netns).exists()
}

/// Every named namespace of the machine.
pub fn all_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Checks that nothing of lab `name` remains: no namespace, no process (by the given pids and
/// by command line), no `/etc/netns` directory, no state directory, no context file of it.
pub fn assert_nothing_remains(name: &LabName, pids: &[u32]) {
    let namespaces: Vec<String> = all_namespaces()
        .into_iter()
        .filter(|ns| name.owns_netns(ns))
        .collect();
    assert!(
        namespaces.is_empty(),
        "namespaces of lab {name} remain: {namespaces:?}"
    );
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| mesh_lab::process::is_alive(p))
        .collect();
    assert!(
        alive.is_empty(),
        "processes of lab {name} remain: {alive:?}"
    );
    let state = LabPaths::new(name).root().display().to_string();
    let by_cmdline = mesh_lab::process::find(|argv| {
        argv.iter().any(|a| a.contains(&state)) || mesh_lab::teardown::is_supervisor_of(argv, name)
    });
    assert!(
        by_cmdline.is_empty(),
        "processes of lab {name} remain: {by_cmdline:?}"
    );
    let etc: Vec<String> = std::fs::read_dir(ETC_NETNS)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| name.owns_netns(n))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        etc.is_empty(),
        "/etc/netns entries of lab {name} remain: {etc:?}"
    );
    assert!(
        !Path::new(&state).exists(),
        "the state directory {state} remains"
    );
    let context = std::fs::read_to_string(mesh_lab::context::CONTEXT_FILE).unwrap_or_default();
    assert!(
        !context.contains(&state),
        "the context file still points at lab {name}: {context}"
    );
}

/// Every pid the lab runs: its processes and its pods' containers.
pub fn lab_pids(lab: &Lab) -> Vec<u32> {
    let record = lab.record();
    let mut pids: Vec<u32> = record
        .controller
        .iter()
        .chain(record.supervisor.iter())
        .chain(record.nodes.iter().filter_map(|n| n.ztunnel.as_ref()))
        .map(|p| p.pid)
        .collect();
    pids.extend(lab.pods().pods.iter().flat_map(|p| p.pids.iter().copied()));
    pids
}

/// A TCP echo server command for a pod: the project's `testapp` when it is built, otherwise
/// a few lines of Python 3.
pub fn echo_server_command(port: u16) -> Vec<String> {
    let testapp = bin_dir().join("testapp");
    if testapp.is_file() {
        return vec![
            testapp.display().to_string(),
            "serve".into(),
            "--http".into(),
            (port + 1).to_string(),
            "--tcp-echo".into(),
            port.to_string(),
        ];
    }
    assert!(
        mesh_lab::preflight::find_on_path("python3").is_some(),
        "the lab tests need an echo server: build testapp (`cargo build -p mesh-testapp`) or install python3"
    );
    let script = format!(
        "import socket, threading\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port}))\n\
         s.listen()\n\
         def serve(c):\n    \
             with c:\n        \
                 while True:\n            \
                     data = c.recv(4096)\n            \
                     if not data:\n                \
                         return\n            \
                     c.sendall(data)\n\
         while True:\n    \
             c, _ = s.accept()\n    \
             threading.Thread(target=serve, args=(c,), daemon=True).start()\n"
    );
    vec!["python3".into(), "-u".into(), "-c".into(), script]
}

/// A YAML flow sequence of strings, for a manifest's `command`.
pub fn yaml_list(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings serialize")
}

/// Keeps the context file a developer's lab wrote, and puts it back when dropped.
pub struct ContextBackup(Option<Vec<u8>>);

impl ContextBackup {
    /// Remembers the current context file, if any.
    pub fn take() -> Self {
        Self(std::fs::read(mesh_lab::context::CONTEXT_FILE).ok())
    }
}

impl Drop for ContextBackup {
    fn drop(&mut self) {
        if let Some(bytes) = &self.0 {
            let _ = std::fs::write(mesh_lab::context::CONTEXT_FILE, bytes);
        }
    }
}
