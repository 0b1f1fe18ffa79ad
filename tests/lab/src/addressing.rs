//! The lab's address plan. Every address lives inside the lab's own namespaces; nothing is
//! routed to or from the host.
//!
//! - Switch LAN `172.30.0.0/24`: the controller at `.2`, node i at `.(10+i)`.
//! - Pod CIDR of node i: `10.244.i.0/24`, its gateway `10.244.i.1` on the node's `cbr0`.
//!   Pods get `/32` addresses with the gateway as their only next hop, so traffic between
//!   two pods of one node is routed by the node, not bridged: the node's connection tracking
//!   sees both directions, and service VIPs work between pods of the same node.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The most nodes a lab may have (node addresses and pod CIDRs are derived from the index).
pub const MAX_NODES: u8 = 50;

/// The switch LAN.
pub const LAN: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(172, 30, 0, 0), 24);

/// The controller's address on the LAN.
pub const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);

/// The controller's gRPC port (delta ADS and CA).
pub const CONTROLLER_GRPC_PORT: u16 = 15012;

/// The controller's status API port, inside its own namespace only.
pub const CONTROLLER_STATUS_PORT: u16 = 15014;

/// The LAN address of node `index` (1-based).
pub fn node_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 10 + index)
}

/// The pod CIDR of node `index`.
pub fn pod_cidr(index: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(10, 244, index, 0), 24)
}

/// The pods' gateway on node `index`: the address of its `cbr0`.
pub fn pod_gateway(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index, 1)
}

/// Why no address could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Every address of the node's pod CIDR is taken.
    #[error("node-{node} has no free pod address left in {cidr}; delete pods or add nodes")]
    Exhausted {
        /// The node index.
        node: u8,
        /// Its pod CIDR.
        cidr: Ipv4Net,
    },
}

/// The pod addresses of one node: `.2` to `.254` of its CIDR, lowest free first.
#[derive(Debug, Default)]
pub struct PodAddressPool {
    node: u8,
    taken: BTreeSet<u8>,
}

impl PodAddressPool {
    /// The pool of node `index`.
    pub fn new(node: u8) -> Self {
        Self {
            node,
            taken: BTreeSet::new(),
        }
    }

    /// Takes the lowest free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, AddressError> {
        let host =
            (2..=254u8)
                .find(|h| !self.taken.contains(h))
                .ok_or(AddressError::Exhausted {
                    node: self.node,
                    cidr: pod_cidr(self.node),
                })?;
        self.taken.insert(host);
        Ok(Ipv4Addr::new(10, 244, self.node, host))
    }

    /// Gives an address back.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if pod_cidr(self.node).contains(&ip) {
            self.taken.remove(&ip.octets()[3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_derived_from_the_node_index() {
        assert_eq!(node_ip(1), Ipv4Addr::new(172, 30, 0, 11));
        assert_eq!(pod_cidr(2).to_string(), "10.244.2.0/24");
        assert_eq!(pod_gateway(2), Ipv4Addr::new(10, 244, 2, 1));
        assert!(LAN.contains(&node_ip(MAX_NODES)));
        assert!(LAN.contains(&CONTROLLER_IP));
    }

    #[test]
    fn pools_hand_out_the_lowest_free_address() {
        let mut pool = PodAddressPool::new(3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 3, 3));
        pool.release(a);
        assert_eq!(pool.allocate().unwrap(), a);
        for _ in 4..=254 {
            pool.allocate().unwrap();
        }
        let err = pool.allocate().unwrap_err();
        assert!(err.to_string().contains("no free pod address"), "{err}");
    }
}
