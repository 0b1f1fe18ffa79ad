//! Capture in real network namespaces. These tests need root, `ip` and `iptables`; without
//! them they fail and say what is missing (see `test_netns`).
//!
//! Every test makes its own namespaces and links them with a veth pair (10.240.0.1/30 in A,
//! 10.240.0.2/30 in B); every packet stays inside those namespaces.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use super::test_netns::{TestNetns, link};
use super::*;

const WAIT: Duration = Duration::from_secs(5);
/// How long a listener that should get nothing is watched.
const QUIET: Duration = Duration::from_millis(300);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 2);

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Two namespaces linked by a veth pair.
fn linked_pair() -> (TestNetns, TestNetns) {
    let a = TestNetns::new();
    let b = TestNetns::new();
    link(&a, "10.240.0.1/30", &b, "10.240.0.2/30");
    (a, b)
}

fn listen(ns: &TestNetns, at: SocketAddr) -> TcpListener {
    bind_listener(ns.netns(), at).unwrap_or_else(|e| panic!("{e}"))
}

async fn accept_one(listener: &TcpListener, what: &str) -> TcpStream {
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap_or_else(|_| panic!("{what}: no connection within {WAIT:?}"))
        .unwrap();
    stream
}

async fn assert_quiet(listener: &TcpListener, what: &str) {
    if let Ok(accepted) = tokio::time::timeout(QUIET, listener.accept()).await {
        panic!(
            "{what}: unexpected connection from {:?}",
            accepted.map(|(_, peer)| peer)
        );
    }
}

async fn dial(ns: &TestNetns, dst: SocketAddr, mark: Option<u32>) -> TcpStream {
    tokio::time::timeout(WAIT, connect(ns.netns(), dst, mark))
        .await
        .unwrap_or_else(|_| panic!("connecting to {dst} took longer than {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts a separate process in `ns` (bash's /dev/tcp, no mark) that dials `dst` and sends
/// "hello"; it is killed when dropped and gives up by itself after 5 s.
fn dial_from_process(ns: &TestNetns, dst: SocketAddr) -> tokio::process::Child {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && printf hello >&3 && sleep 1",
        dst.ip(),
        dst.port()
    );
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "timeout",
            "5",
            "bash",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting a client process")
}

async fn read_hello(stream: &mut TcpStream) {
    let mut buf = [0u8; 5];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("no data within 5s")
        .unwrap();
    assert_eq!(&buf, b"hello");
}

fn thread_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

#[test]
fn run_returns_to_the_original_namespace_even_after_a_panic() {
    let a = TestNetns::new();
    let home = thread_netns_inode();
    let pod = std::fs::metadata(a.path()).unwrap().ino();
    assert_ne!(home, pod);
    assert_eq!(a.netns().run(thread_netns_inode).unwrap(), pod);
    assert_eq!(thread_netns_inode(), home);
    let panicked = std::panic::catch_unwind(|| a.netns().run(|| panic!("inside the pod")));
    assert!(panicked.is_err());
    assert_eq!(
        thread_netns_inode(),
        home,
        "the thread came back after the panic"
    );
}

/// A call inside another returns to the outer pod's namespace, and the thread still gets
/// home afterwards, also on its next calls (its own namespace is kept open per thread).
#[test]
fn nested_runs_return_where_they_were() {
    let (a, b) = (TestNetns::new(), TestNetns::new());
    let inode = |ns: &TestNetns| std::fs::metadata(ns.path()).unwrap().ino();
    let home = thread_netns_inode();
    let (inner, outer_after) = a
        .netns()
        .run(|| {
            let inner = b.netns().run(thread_netns_inode).unwrap();
            (inner, thread_netns_inode())
        })
        .unwrap();
    assert_eq!(inner, inode(&b));
    assert_eq!(
        outer_after,
        inode(&a),
        "the nested call came back to A, not home"
    );
    assert_eq!(thread_netns_inode(), home);
    for _ in 0..3 {
        assert_eq!(b.netns().run(thread_netns_inode).unwrap(), inode(&b));
        assert_eq!(thread_netns_inode(), home);
    }
}

#[tokio::test]
async fn a_listener_bound_in_a_namespace_accepts_connections_made_inside_it() {
    let (a, _b) = linked_pair();
    // 10.240.0.1 exists only inside A: binding it proves the socket lives there.
    let listener = listen(&a, addr(A_IP, 7000));
    let mut from_us = dial(&a, addr(A_IP, 7000), None).await;
    from_us.write_all(b"hello").await.unwrap();
    read_hello(&mut accept_one(&listener, "connect() inside A").await).await;

    let mut process = dial_from_process(&a, addr(A_IP, 7000));
    read_hello(&mut accept_one(&listener, "a process inside A").await).await;
    let status = tokio::time::timeout(WAIT, process.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the client process failed: {status}");
}

#[tokio::test]
async fn outbound_tcp_is_redirected_with_its_original_destination() {
    let (a, b) = linked_pair();
    rules::install(a.netns())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let capture = listen(&a, addr(Ipv4Addr::LOCALHOST, OUTBOUND_CAPTURE_PORT));
    let server = listen(&b, addr(B_IP, 8080));

    let _process = dial_from_process(&a, addr(B_IP, 8080));
    let mut captured = accept_one(&capture, "the outbound capture listener").await;
    assert_eq!(original_destination(&captured).unwrap(), addr(B_IP, 8080));
    read_hello(&mut captured).await;

    let captured = {
        let _app = dial(&a, addr(B_IP, 9090), None).await;
        accept_one(&capture, "the outbound capture listener").await
    };
    assert_eq!(original_destination(&captured).unwrap(), addr(B_IP, 9090));
    assert_quiet(&server, "B's server behind the capture").await;
}

#[tokio::test]
async fn proxy_marked_and_loopback_connections_are_not_redirected() {
    let (a, b) = linked_pair();
    rules::install(a.netns())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let capture = listen(&a, addr(Ipv4Addr::UNSPECIFIED, OUTBOUND_CAPTURE_PORT));
    let server = listen(&b, addr(B_IP, 8080));
    let local = listen(&a, addr(Ipv4Addr::LOCALHOST, 9000));
    let own_ip = listen(&a, addr(A_IP, 9001));

    let _proxy = dial(&a, addr(B_IP, 8080), Some(PROXY_MARK)).await;
    accept_one(&server, "B's server, dialled with the proxy mark").await;
    let _to_localhost = dial(&a, addr(Ipv4Addr::LOCALHOST, 9000), None).await;
    accept_one(&local, "a localhost listener in A").await;
    let _to_self = dial(&a, addr(A_IP, 9001), None).await;
    accept_one(&own_ip, "a listener on A's own address").await;
    assert_quiet(&capture, "the outbound capture listener").await;
}

#[tokio::test]
async fn removing_rules_restores_direct_traffic_and_leaves_no_chain() {
    let (a, b) = linked_pair();
    a.exec(&[
        "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN",
    ]);
    rules::install(a.netns())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rules::install(a.netns())
        .await
        .expect("installing twice is fine");

    let saved = a.exec(&["iptables-save", "-t", "nat"]);
    let ours: Vec<&str> = saved
        .lines()
        .filter(|l| l.contains("MESH_") && l.starts_with("-A"))
        .collect();
    assert_eq!(
        ours,
        [
            "-A PREROUTING -p tcp -j MESH_PREROUTING",
            "-A OUTPUT -p tcp -j MESH_OUTPUT",
            "-A MESH_OUTPUT -m mark --mark 0x539/0xfff -j RETURN",
            "-A MESH_OUTPUT -o lo -j RETURN",
            "-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
            "-A MESH_PREROUTING -i lo -j RETURN",
            "-A MESH_PREROUTING -p tcp -m tcp --dport 15008 -j RETURN",
            "-A MESH_PREROUTING -p tcp -j REDIRECT --to-ports 15006",
        ],
        "exactly one copy, our jump first:\n{saved}"
    );
    let first_output = saved.lines().find(|l| l.starts_with("-A OUTPUT"));
    assert_eq!(
        first_output,
        Some("-A OUTPUT -p tcp -j MESH_OUTPUT"),
        "{saved}"
    );
    let saved6 = a.exec(&["ip6tables-save", "-t", "nat"]);
    assert!(
        saved6.contains("-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001"),
        "{saved6}"
    );

    rules::remove(a.netns())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rules::remove(a.netns())
        .await
        .expect("removing twice is fine");
    for tool in ["iptables-save", "ip6tables-save"] {
        let saved = a.exec(&[tool]);
        assert!(
            !saved.contains("MESH_"),
            "{tool} still shows our rules:\n{saved}"
        );
    }
    let saved = a.exec(&["iptables-save", "-t", "nat"]);
    assert!(
        saved.contains("--dport 9999 -j RETURN"),
        "somebody else's rule survives:\n{saved}"
    );

    let capture = listen(&a, addr(Ipv4Addr::UNSPECIFIED, OUTBOUND_CAPTURE_PORT));
    let server = listen(&b, addr(B_IP, 8080));
    let _process = dial_from_process(&a, addr(B_IP, 8080));
    read_hello(&mut accept_one(&server, "B's server, directly").await).await;
    assert_quiet(&capture, "the outbound capture listener after removal").await;
}

#[tokio::test]
async fn inbound_tcp_is_redirected_except_hbone() {
    let (a, b) = linked_pair();
    rules::install(a.netns())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let inbound = listen(&a, addr(Ipv4Addr::UNSPECIFIED, INBOUND_CAPTURE_PORT));
    let hbone = listen(&a, addr(Ipv4Addr::UNSPECIFIED, HBONE_PORT));
    let app = listen(&a, addr(Ipv4Addr::UNSPECIFIED, 8080));

    let _client = dial(&b, addr(A_IP, 8080), None).await;
    let captured = accept_one(&inbound, "the inbound capture listener").await;
    assert_eq!(original_destination(&captured).unwrap(), addr(A_IP, 8080));
    assert_eq!(
        captured.peer_addr().unwrap().ip(),
        B_IP,
        "the source is kept"
    );

    let _tunnel = dial(&b, addr(A_IP, HBONE_PORT), None).await;
    accept_one(&hbone, "the HBONE listener, directly").await;
    assert_quiet(&app, "the app behind the inbound capture").await;
    assert_quiet(&inbound, "the inbound capture listener, for HBONE").await;
}
