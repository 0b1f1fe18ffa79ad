//! The waypoint: the mesh's shared L7 proxy.
//!
//! A ztunnel sends traffic for a service bound to this waypoint over HBONE with authority
//! `VIP:port`. The waypoint terminates the tunnel ([`inbound`]), serves HTTP/1.1 or HTTP/2 on
//! it (sniffed; anything else is proxied as TCP), and passes every request through a stack
//! of layers ([`proxy`]): telemetry, L7 authorization, routing, fault injection, mirroring,
//! deadlines, retries, load balancing with outlier detection, and finally an HTTP client
//! ([`upstream`]) that opens HBONE to the chosen endpoint under the waypoint's own identity.
//! What it only copies bytes for, proxied TCP and upgraded HTTP/1.1 connections, is a byte
//! relay ([`relay`]) with one idle timeout and the drain deadline.
//!
//! Shared pieces come from the `ztunnel` library (HBONE, TLS, identity, xDS client,
//! discovery state, certificate manager); this crate adds only what is L7, plus the binary's
//! wiring ([`app`]) and its operator endpoints ([`admin`]).

pub mod admin;
pub mod app;
pub mod balance;
pub mod body;
pub mod config;
pub mod inbound;
pub mod policy;
pub mod proxy;
pub mod relay;
pub mod routing;
pub mod telemetry;
pub mod upstream;

#[cfg(test)]
mod hbone_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod upgrade_tests;
