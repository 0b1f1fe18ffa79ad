//! The per-node zero-trust tunnel.
//!
//! This library is also the home of the pieces every proxy shares (see ARCHITECTURE.md):
//! the waypoint depends on it for identity, TLS, HBONE and the xDS client.

pub mod admin;
pub mod app;
pub mod cert_manager;
pub mod hbone;
pub mod identity;
pub mod inpod;
pub mod proxy;
pub mod rbac;
pub mod state;
pub mod tls;
pub mod xds;
