//! The control plane of the mesh: the desired-state store, the translation into the wire
//! contract, the certificate authority, the delta xDS server and the status API.
//!
//! See ARCHITECTURE.md for how the pieces fit together.

pub mod app;
pub mod auth;
pub mod ca;
pub mod cli;
pub mod fs;
pub mod grpc;
pub mod sorted_diff;
pub mod status;
pub mod store;
pub mod translate;
pub mod xds;
