//! Network namespace handles and the socket calls that create sockets inside them.
//!
//! # How a socket ends up in a pod's namespace
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life; binding, connecting, reading and writing never look at the calling thread again.
//! So only the `socket()` call itself has to happen inside the pod's namespace.
//! [`Netns::run`] does exactly that on the current thread: `setns` into the pod's namespace,
//! run a short synchronous closure, `setns` back, also when the closure panics.
//!
//! The alternative, one helper thread parked inside each pod's namespace that creates sockets
//! on request, costs a thread per pod and two cross-thread wake-ups per socket, and buys
//! nothing: switching the current thread costs two `setns` calls (its own namespace is kept
//! open per thread), and the closure never awaits, so no other task can observe the thread
//! while it is away. A thread
//! that could not return to its namespace would create later sockets in the wrong place, so
//! that case aborts the process rather than carrying on.
//!
//! Child processes inherit the namespace of the thread that spawns them, which is how
//! [`super::rules`] runs `iptables-restore` inside a pod without `nsenter` and without
//! `unsafe` `pre_exec` hooks.

use std::cell::{Cell, OnceCell};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The calling thread's own network namespace, as the kernel names it.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// The backlog of every listener bound in a pod: large enough for connection bursts from the
/// new-connections benchmark, small next to the kernel's default `somaxconn` of 4096.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Why a namespace could not be opened or entered, or a socket in it could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace path could not be opened.
    #[error(
        "cannot open the network namespace {path}: {source}; check that the pod still exists \
         and that the path is /var/run/netns/<name> or /proc/<pid>/ns/net"
    )]
    Open {
        /// The path given.
        path: PathBuf,
        /// Why `open` failed.
        source: io::Error,
    },
    /// The path opened, but it is not a namespace file.
    #[error(
        "{path} is not a namespace file (nsfs); pass /var/run/netns/<name> or /proc/<pid>/ns/net"
    )]
    NotANamespace {
        /// The path given.
        path: PathBuf,
    },
    /// The calling thread's own namespace could not be opened, so it could not leave it.
    #[error("cannot open {THREAD_NETNS} to remember the current namespace: {source}")]
    Current {
        /// Why `open` failed.
        source: io::Error,
    },
    /// `setns` into the namespace failed.
    #[error(
        "cannot enter the network namespace {path}: {errno}; ztunnel needs CAP_SYS_ADMIN, and \
         the path must be a network namespace (not another kind)"
    )]
    Enter {
        /// The namespace's path.
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },
    /// Creating, binding or listening on a socket inside the namespace failed.
    #[error("cannot listen on {addr} in the network namespace {path}: {source}")]
    Listen {
        /// The namespace's path.
        path: PathBuf,
        /// The address to listen on.
        addr: SocketAddr,
        /// What the socket call said.
        source: io::Error,
    },
    /// Creating or connecting a socket inside the namespace failed.
    #[error("cannot connect to {dst} from the network namespace {path}: {source}")]
    Connect {
        /// The namespace's path.
        path: PathBuf,
        /// The destination.
        dst: SocketAddr,
        /// What the socket call said.
        source: io::Error,
    },
    /// `SO_MARK` could not be set on a socket.
    #[error(
        "cannot set the packet mark {mark:#x} on a socket: {errno}; ztunnel needs CAP_NET_ADMIN"
    )]
    Mark {
        /// The mark asked for.
        mark: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The connection's original destination is not known to the kernel.
    #[error(
        "cannot read the original destination of a connection to {local}: {errno}; only \
         connections redirected by the capture rules (or tracked by conntrack) have one"
    )]
    OriginalDestination {
        /// The local address the connection arrived on.
        local: SocketAddr,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The connection's local address could not be read.
    #[error("cannot read the local address of a connection: {source}")]
    LocalAddress {
        /// What `getsockname` said.
        source: io::Error,
    },
}

/// An open handle on a network namespace; cheap to clone, closed when the last clone drops.
///
/// Holding the handle keeps the namespace alive even after its pod's processes are gone, so
/// the proxy drops it when the pod is removed.
#[derive(Debug, Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Opens the namespace at `path`: `/var/run/netns/<name>` or `/proc/<pid>/ns/net`.
    ///
    /// Opening needs no privilege; entering it ([`Netns::run`]) needs CAP_SYS_ADMIN.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        match fstatfs(&file) {
            Ok(stat) if stat.filesystem_type() == NSFS_MAGIC => {}
            _ => return Err(NetnsError::NotANamespace { path }),
        }
        Ok(Self {
            inner: Arc::new(Inner { path, file }),
        })
    }

    /// The namespace of the calling thread (the node's, for ztunnel's own threads).
    pub fn current() -> Result<Self, NetnsError> {
        Self::open(THREAD_NETNS)
    }

    /// The path the namespace was opened from, for messages and the config dump.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the current thread inside this namespace, then returns to the thread's
    /// original namespace, also when `f` panics.
    ///
    /// Keep `f` short and synchronous: a socket or a process created inside it belongs to
    /// this namespace. If the thread cannot return, the process aborts (see the module doc).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let current = |source| NetnsError::Current { source };
        // Outside `run` a thread is in its own namespace, which never changes: it is opened
        // once per thread rather than for every socket (a path walk and a close per
        // connection). Inside (a nested call) the current namespace is opened afresh.
        let nested = AWAY.get();
        let return_to = if nested {
            Some(File::open(THREAD_NETNS).map_err(current)?)
        } else {
            HOME.with(|home| match home.get() {
                Some(_) => Ok(()),
                None => File::open(THREAD_NETNS).map(|file| drop(home.set(file))),
            })
            .map_err(current)?;
            None
        };
        setns(self.inner.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| {
            NetnsError::Enter {
                path: self.inner.path.clone(),
                errno,
            }
        })?;
        AWAY.set(true);
        let _return = Return {
            to: return_to,
            nested,
        };
        Ok(f())
    }
}

thread_local! {
    /// The thread's own network namespace, opened the first time it enters another.
    static HOME: OnceCell<File> = const { OnceCell::new() };
    /// The thread is inside [`Netns::run`].
    static AWAY: Cell<bool> = const { Cell::new(false) };
}

/// Moves the thread back where it was when dropped, on return or on unwind: to the
/// namespace opened for a nested call, else home.
struct Return {
    to: Option<File>,
    nested: bool,
}

impl Drop for Return {
    fn drop(&mut self) {
        let returned = match &self.to {
            Some(file) => setns(file.as_fd(), CloneFlags::CLONE_NEWNET),
            None => HOME.with(|home| {
                let home = home.get().expect("opened before the thread left");
                setns(home.as_fd(), CloneFlags::CLONE_NEWNET)
            }),
        };
        if let Err(errno) = returned {
            // Carrying on would create later sockets inside a pod: fail hard instead.
            tracing::error!(%errno, "cannot return to the original network namespace; aborting");
            eprintln!(
                "ztunnel: cannot return to the original network namespace ({errno}); aborting"
            );
            std::process::abort();
        }
        AWAY.set(self.nested);
    }
}

/// Binds a TCP listener on `addr` inside the namespace `ns`; call it from a tokio runtime.
///
/// `SO_REUSEADDR` is set so that a listener can be re-bound right after a pod is re-added.
pub fn bind_listener(ns: &Netns, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
    let listen_error = |source| NetnsError::Listen {
        path: ns.path().to_path_buf(),
        addr,
        source,
    };
    let socket = ns.run(|| new_socket(addr))?.map_err(listen_error)?;
    socket.set_reuseaddr(true).map_err(listen_error)?;
    socket.bind(addr).map_err(listen_error)?;
    socket.listen(LISTEN_BACKLOG).map_err(listen_error)
}

/// Connects to `dst` from inside the namespace `ns`, with the packet mark `mark` (when given)
/// set before the first packet leaves.
///
/// The proxy passes `Some(PROXY_MARK)` so that its own connections pass the capture rules.
pub async fn connect(
    ns: &Netns,
    dst: SocketAddr,
    mark: Option<u32>,
) -> Result<TcpStream, NetnsError> {
    let connect_error = |source| NetnsError::Connect {
        path: ns.path().to_path_buf(),
        dst,
        source,
    };
    let socket = ns.run(|| new_socket(dst))?.map_err(connect_error)?;
    if let Some(mark) = mark {
        setsockopt(&socket, sockopt::Mark, &mark)
            .map_err(|errno| NetnsError::Mark { mark, errno })?;
    }
    socket.connect(dst).await.map_err(connect_error)
}

/// The address a redirected connection was originally sent to (`SO_ORIGINAL_DST`).
///
/// Works for IPv4 and IPv6 connections (`IP6T_SO_ORIGINAL_DST`), and for IPv4 connections
/// accepted on a dual-stack `[::]` listener, whose local address is IPv4-mapped.
pub fn original_destination(stream: &TcpStream) -> Result<SocketAddr, NetnsError> {
    let local = stream
        .local_addr()
        .map_err(|source| NetnsError::LocalAddress { source })?;
    let failed = |errno| NetnsError::OriginalDestination { local, errno };
    let is_v4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    if is_v4 {
        let raw = getsockopt(stream, sockopt::OriginalDst).map_err(failed)?;
        let ip = Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr));
        Ok(SocketAddrV4::new(ip, u16::from_be(raw.sin_port)).into())
    } else {
        let raw = getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(failed)?;
        let ip = Ipv6Addr::from(raw.sin6_addr.s6_addr);
        Ok(SocketAddrV6::new(ip, u16::from_be(raw.sin6_port), 0, raw.sin6_scope_id).into())
    }
}

/// A TCP socket of the family of `addr`, created in the current thread's namespace.
fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}
