//! The per-node zero-trust tunnel.
//!
//! This library is also the home of the pieces every proxy shares (see ARCHITECTURE.md):
//! the waypoint depends on it for identity, TLS, HBONE and the xDS client.

pub mod hbone;
pub mod identity;
pub mod tls;
