//! The mesh's wire contract.
//!
//! Everything here is generated from the schemas under `proto/proto/` by
//! `build.rs` (protox + prost + tonic, no system `protoc`). The schemas are
//! written for this project but are wire-compatible with the upstream APIs
//! they name, so our proxies and control plane interoperate with Istio's:
//!
//! | module | upstream |
//! | --- | --- |
//! | [`envoy::service::discovery::v3`] | Envoy delta ADS (`AggregatedDiscoveryService/DeltaAggregatedResources`) |
//! | [`envoy::config::core::v3`] | Envoy `Node` |
//! | [`google::rpc`] | `google.rpc.Status` |
//! | [`istio::workload`] | Istio ambient workload API (`Address`, `Workload`, `Service`) |
//! | [`istio::security`] | Istio ambient L4 authorization (`Authorization`) |
//! | [`istio::v1::auth`] | Istio CA (`IstioCertificateService/CreateCertificate`) |
//! | [`mesh::waypoint::v1`] | our own waypoint routes and L7 policy |
//!
//! The module tree mirrors the protobuf package names because generated code
//! refers to other packages through relative `super::` paths.

/// Envoy's xDS API, reduced to what delta ADS needs.
pub mod envoy {
    /// Shared Envoy configuration types.
    pub mod config {
        /// Core types.
        pub mod core {
            /// `envoy.config.core.v3`: the `Node` a client identifies itself with.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }

    /// Envoy's gRPC services.
    pub mod service {
        /// Resource discovery.
        pub mod discovery {
            /// `envoy.service.discovery.v3`: the aggregated delta discovery
            /// service, with generated client and server.
            #[allow(missing_docs, clippy::all, clippy::pedantic)]
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }
}

/// Google API types used by the xDS protocol.
pub mod google {
    /// `google.rpc`: the `Status` carried by an xDS NACK.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Istio's APIs for ambient mode.
pub mod istio {
    /// `istio.workload`: the address feed (workloads and services).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod workload {
        tonic::include_proto!("istio.workload");
    }

    /// `istio.security`: L4 authorization policies enforced by node proxies.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod security {
        tonic::include_proto!("istio.security");
    }

    /// Istio's versioned service packages.
    pub mod v1 {
        /// `istio.v1.auth`: the certificate authority, with generated client
        /// and server.
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

/// This project's own APIs.
pub mod mesh {
    /// Configuration consumed only by waypoints.
    pub mod waypoint {
        /// `mesh.waypoint.v1`: HTTP routes and L7 authorization policies.
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("mesh.waypoint.v1");
        }
    }
}

/// Type URL of the workload/service address feed ([`istio::workload::Address`]).
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";

/// Type URL of L4 authorization policies ([`istio::security::Authorization`]).
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

/// Type URL of waypoint HTTP routes ([`mesh::waypoint::v1::RouteConfiguration`]).
pub const ROUTE_CONFIGURATION_TYPE_URL: &str =
    "type.googleapis.com/mesh.waypoint.v1.RouteConfiguration";

/// Type URL of waypoint L7 authorization policies ([`mesh::waypoint::v1::L7Policy`]).
pub const L7_POLICY_TYPE_URL: &str = "type.googleapis.com/mesh.waypoint.v1.L7Policy";

#[cfg(test)]
mod tests;
