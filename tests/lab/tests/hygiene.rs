//! Lab hygiene: a lab that is up refuses a second `up`; a lab whose supervisor and controller
//! were killed (a crash) is cleaned by the next `up` of the same name, which then works.
//! Needs root (see `common`).

mod common;

use common::{Lab, SETTLE_TIMEOUT, assert_nothing_remains, assert_success, lab_pids, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SLEEPER: &str = "apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  namespace: default
spec:
  containers:
  - name: sleep
    image: ignored
    command: [sleep, '3600']
";

#[test]
fn a_crashed_lab_is_cleaned_by_the_next_up() {
    let lab = Lab::up("b", 1);
    lab.apply("sleeper.yaml", SLEEPER);
    let before = lab.wait_for_pod("default", "sleeper");

    let refused = lab.run(&["up", "--nodes", "1", "--no-ztunnel", "--no-context"]);
    assert!(!refused.status.success(), "a second up must refuse");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("already up"), "{message}");

    // The crash: supervisor and controller die without cleaning anything.
    let record = lab.record();
    let old_pids = lab_pids(&lab);
    for process in [record.supervisor.as_ref(), record.controller.as_ref()]
        .into_iter()
        .flatten()
    {
        kill(Pid::from_raw(process.pid as i32), Signal::SIGKILL).unwrap();
    }
    wait_until("the killed processes are gone", SETTLE_TIMEOUT, || {
        let dead = [&record.supervisor, &record.controller]
            .iter()
            .all(|p| p.as_ref().is_none_or(|p| !p.is_alive()));
        dead.then_some(())
    });
    let status = lab.run(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("DEAD"));

    // This `up` points meshctl at the lab; whatever context was there comes back at the end.
    let _context = common::ContextBackup::take();
    let up = lab.run(&["up", "--nodes", "1", "--no-ztunnel"]);
    assert_success("up after a crash", &up);
    let context = std::fs::read_to_string(mesh_lab::context::CONTEXT_FILE).unwrap();
    let socket = lab.paths.status_socket();
    assert!(
        context.contains(&format!("unix:{}", socket.display())),
        "{context}"
    );
    // The old pod's processes and namespace went with the remains.
    let orphans: Vec<u32> = old_pids
        .iter()
        .copied()
        .filter(|&p| mesh_lab::process::is_alive(p))
        .collect();
    assert!(
        orphans.is_empty(),
        "processes of the crashed lab survived: {orphans:?}"
    );
    assert!(
        lab.pods().pods.is_empty(),
        "the new lab starts without pods"
    );
    assert!(
        !common::netns_exists(&before.netns),
        "the crashed lab's pod namespace survived"
    );
    let new = lab.record();
    assert_ne!(
        new.controller.as_ref().unwrap().pid,
        record.controller.as_ref().unwrap().pid
    );

    // And the new lab works.
    lab.apply("sleeper.yaml", SLEEPER);
    let after = lab.wait_for_pod("default", "sleeper");
    assert_eq!(after.ip, before.ip, "the same placement on a fresh node");
    let ping = lab.exec("default/sleeper", &["true"]);
    assert_success("exec in the new pod", &ping);

    let pids = lab_pids(&lab);
    assert_success("down", &lab.run(&["down"]));
    assert_nothing_remains(&lab.name, &pids);
}

#[test]
fn a_failing_test_leaves_nothing_behind() {
    let name = common::unique_name("c");
    let mut pids = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::up("c", 1);
        lab.apply("sleeper.yaml", SLEEPER);
        lab.wait_for_pod("default", "sleeper");
        pids = lab_pids(&lab);
        panic!("a simulated test failure; the lab's guard must remove the lab");
    }));
    assert!(outcome.is_err());
    assert!(!pids.is_empty());
    assert_nothing_remains(&name, &pids);
}
