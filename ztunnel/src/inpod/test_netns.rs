//! Network namespaces that a test creates for itself and always removes.
//!
//! Every namespace is named `ztinpod-<pid>-<n>`, so a test only ever touches namespaces of
//! its own process. Interfaces are created directly inside those namespaces (`ip -n`), and
//! addresses live only there: nothing reaches the host's network. A test that cannot create
//! them (not root, `ip` or `iptables` missing) panics and says why: it never passes quietly.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::inpod::Netns;

/// How long one `ip` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Programs the namespace tests need, and the Debian package of each.
const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("iptables-save", "iptables"),
    ("iptables-restore", "iptables"),
    ("ip6tables-save", "iptables"),
    ("bash", "bash"),
];

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace created by this test process, deleted on drop (also on panic).
pub(crate) struct TestNetns {
    name: String,
    netns: Option<Netns>,
}

impl TestNetns {
    /// Creates a fresh namespace with its loopback up, or panics saying what is missing.
    pub(crate) fn new() -> Self {
        require_tools();
        let name = format!(
            "ztinpod-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let added = run(Command::new("ip").args(["netns", "add", &name]));
        assert!(
            added.status.success(),
            "this test needs root to create a network namespace (`ip netns add {name}` failed: \
             {}); run it as root, e.g. `sudo -E cargo test -p ztunnel inpod`",
            String::from_utf8_lossy(&added.stderr).trim()
        );
        // From here on, Drop removes the namespace even if the rest of the setup fails.
        let mut created = Self { name, netns: None };
        created.ip(&["link", "set", "lo", "up"]);
        let path = created.path();
        created.netns =
            Some(Netns::open(&path).unwrap_or_else(|e| panic!("cannot open {path:?}: {e}")));
        created
    }

    /// The namespace's name under `/var/run/netns`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's path.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// An open handle on the namespace.
    pub(crate) fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("opened in new()")
    }

    /// Runs `ip -n <this> ARGS`, panicking with its stderr when it fails.
    pub(crate) fn ip(&self, args: &[&str]) {
        let output = run(Command::new("ip").args(["-n", &self.name]).args(args));
        assert!(
            output.status.success(),
            "`ip -n {} {}` failed: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    /// Runs `CMD ARGS` inside the namespace and returns its stdout, panicking when it fails.
    pub(crate) fn exec(&self, args: &[&str]) -> String {
        let output = run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args));
        assert!(
            output.status.success(),
            "`{}` in {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        self.netns = None;
        let problem = match try_run(Command::new("ip").args(["netns", "del", &self.name])) {
            Ok(output) if output.status.success() => return,
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
            Err(problem) => problem,
        };
        eprintln!(
            "cannot delete the test namespace {}: {problem}; remove it with `ip netns del {}`",
            self.name, self.name
        );
    }
}

/// Links `a` and `b` with a veth pair, `a_cidr` on `a`'s end and `b_cidr` on `b`'s (both
/// inside one private /30). The pair is created inside `a` with its peer moved straight into
/// `b`, so it never appears in the host's namespace; it disappears with the namespaces.
pub(crate) fn link(a: &TestNetns, a_cidr: &str, b: &TestNetns, b_cidr: &str) {
    a.ip(&[
        "link",
        "add",
        "zt-a",
        "type",
        "veth",
        "peer",
        "name",
        "zt-b",
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", a_cidr, "dev", "zt-a"]);
    b.ip(&["addr", "add", b_cidr, "dev", "zt-b"]);
    a.ip(&["link", "set", "zt-a", "up"]);
    b.ip(&["link", "set", "zt-b", "up"]);
}

/// Panics naming the first missing program and its package.
fn require_tools() {
    for (tool, package) in TOOLS {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .any(|dir| dir.join(tool).is_file());
        assert!(
            found,
            "this test needs `{tool}`, which is not installed: `apt-get install {package}` \
             (and run the test as root)"
        );
    }
}

/// Runs a command to completion within [`COMMAND_TIMEOUT`], panicking when it cannot.
fn run(command: &mut Command) -> Output {
    try_run(command).unwrap_or_else(|problem| panic!("{problem}"))
}

/// Runs a command to completion within [`COMMAND_TIMEOUT`], killing it when it overruns.
/// Never panics, so that `Drop` can use it while a failed test unwinds.
fn try_run(command: &mut Command) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{command:?} did not finish within {COMMAND_TIMEOUT:?}"
                ));
            }
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("cannot collect the output of {command:?}: {e}"))
}
