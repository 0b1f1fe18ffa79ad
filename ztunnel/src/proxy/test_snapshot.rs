//! Discovery snapshots for the data path's unit tests, built from wire records through the
//! real discovery store, so that tests see what the proxy sees.

use std::net::IpAddr;

use mesh_proto::istio::workload::{self as wl, address, gateway_address};
use prost::Message;

use crate::state::{DiscoverySnapshot, DiscoveryStore, MeshDefaults};
use crate::xds::{NamedResource, ResourceHandler, ResourceUpdate};

/// The raw bytes of an address, as the workload API carries them.
pub(crate) fn bytes(ip: &str) -> Vec<u8> {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A pod of namespace `shop` with its own service account, backing `services` as
/// (service key, service port, target port).
pub(crate) fn pod(
    name: &str,
    ip: &str,
    hbone: bool,
    node: &str,
    services: &[(&str, u32, u32)],
) -> wl::Workload {
    wl::Workload {
        uid: format!("Kubernetes//Pod/shop/{name}"),
        name: name.into(),
        namespace: "shop".into(),
        addresses: vec![bytes(ip)],
        tunnel_protocol: if hbone {
            wl::TunnelProtocol::Hbone
        } else {
            wl::TunnelProtocol::None
        }
        .into(),
        service_account: name.into(),
        node: node.into(),
        services: services
            .iter()
            .map(|(key, port, target)| {
                (
                    key.to_string(),
                    wl::PortList {
                        ports: vec![wl::Port {
                            service_port: *port,
                            target_port: *target,
                        }],
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

/// A service of namespace `shop`, optionally bound to the waypoint service `waypoint`.
pub(crate) fn service(
    name: &str,
    vip: &str,
    port: u32,
    target: u32,
    waypoint: Option<&str>,
) -> wl::Service {
    wl::Service {
        name: name.into(),
        namespace: "shop".into(),
        hostname: format!("{name}.shop.svc.cluster.local"),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: bytes(vip),
        }],
        ports: vec![wl::Port {
            service_port: port,
            target_port: target,
        }],
        waypoint: waypoint.map(|w| wl::GatewayAddress {
            destination: Some(gateway_address::Destination::Hostname(
                wl::NamespacedHostname {
                    namespace: "shop".into(),
                    hostname: format!("{w}.shop.svc.cluster.local"),
                },
            )),
            hbone_mtls_port: 15008,
        }),
        ..Default::default()
    }
}

/// A snapshot built through the real discovery store from wire records.
pub(crate) fn snapshot(
    workloads: Vec<wl::Workload>,
    services: Vec<wl::Service>,
) -> std::sync::Arc<DiscoverySnapshot> {
    let mut store = DiscoveryStore::new(MeshDefaults::default());
    let encode = |name: String, body: address::Type| NamedResource {
        name,
        body: wl::Address { r#type: Some(body) }.encode_to_vec(),
    };
    let mut resources: Vec<NamedResource> = workloads
        .into_iter()
        .map(|w| encode(w.uid.clone(), address::Type::Workload(w)))
        .collect();
    resources.extend(
        services
            .into_iter()
            .map(|s| encode(format!("shop/{}", s.hostname), address::Type::Service(s))),
    );
    let rejected = store.apply(
        mesh_proto::ADDRESS_TYPE_URL,
        ResourceUpdate {
            resources,
            removed: vec![],
        },
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    store.snapshot()
}
