//! The delta ADS server: pushes the translated resources to every connected proxy.

pub mod connection;
pub mod registry;
pub mod resources;
pub mod server;

pub use registry::{ProxyRegistry, ProxyStatus};
pub use resources::{ResourceSnapshot, TypedResources, VersionedResource, by_name};
pub use server::{AdsMetrics, AdsService};
