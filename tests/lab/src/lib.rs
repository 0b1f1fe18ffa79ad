//! The lab: the whole mesh on one Linux machine, in network namespaces, with real packets.
//!
//! ```text
//!              LAB-sw (bridge br0, 172.30.0.0/24)
//!          ctl /        n1 |                   \ n2
//!   LAB-ctl 172.30.0.2   LAB-n1 172.30.0.11    LAB-n2 172.30.0.12
//!   controller           ztunnel, cbr0         ztunnel, cbr0
//!                        10.244.1.1/24         10.244.2.1/24
//!                          |  vp<id>             |
//!                        LAB-p<id> eth0 10.244.1.k/32 ...
//! ```
//!
//! `up` ([`lifecycle::up`]) builds the network ([`topology`]), starts the controller and one
//! ztunnel per node ([`components`]) and the [`supervisor`], which plays kubelet, CNI agent
//! and kube-proxy. `down` ([`lifecycle::down`], [`teardown`]) removes every process, namespace
//! and file. The lab has no route, NAT or veth to anything outside itself: every address it
//! uses lives in namespaces it created ([`addressing`]), named after the lab ([`name`]).

pub mod addressing;
pub mod cli;
pub mod command;
pub mod components;
pub mod context;
pub mod demo;
pub mod drive;
pub mod inspect;
pub mod lifecycle;
pub mod name;
pub mod paths;
pub mod preflight;
pub mod process;
pub mod record;
pub mod status_client;
pub mod supervisor;
pub mod sysctl;
pub mod teardown;
pub mod topology;

pub use lifecycle::{Component, LifecycleError, UpOptions, down, restart, signal, up};
pub use name::{DEFAULT_LAB_NAME, LabName};
