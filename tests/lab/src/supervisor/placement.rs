//! Where pods go: the node a pod names in `spec.nodeName`, or the next node in turn; and an
//! address from that node's pod CIDR.

use std::net::Ipv4Addr;

use crate::addressing::{AddressError, PodAddressPool};
use crate::name::{self, NameError};

/// Why a pod cannot be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// The pod names a node the lab does not have.
    #[error(transparent)]
    UnknownNode(NameError),
    /// The node is full.
    #[error(transparent)]
    Address(#[from] AddressError),
}

/// A pod's place: its node and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The node's index (1-based).
    pub node: u8,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

/// The scheduler of a lab with a fixed set of nodes.
#[derive(Debug)]
pub struct Scheduler {
    pools: Vec<PodAddressPool>,
    next: usize,
}

impl Scheduler {
    /// A scheduler for `nodes` nodes.
    pub fn new(nodes: u8) -> Self {
        Self {
            pools: (1..=nodes).map(PodAddressPool::new).collect(),
            next: 0,
        }
    }

    /// Places a pod: on `wanted` when it names a node, otherwise on the next node in turn.
    pub fn place(&mut self, wanted: Option<&str>) -> Result<Place, PlacementError> {
        let index = match wanted {
            Some(node) => {
                usize::from(
                    name::node_index(node, self.pools.len() as u8)
                        .map_err(PlacementError::UnknownNode)?,
                ) - 1
            }
            None => {
                let index = self.next % self.pools.len();
                self.next = index + 1;
                index
            }
        };
        let ip = self.pools[index].allocate()?;
        Ok(Place {
            node: index as u8 + 1,
            ip,
        })
    }

    /// Frees a pod's address.
    pub fn release(&mut self, place: Place) {
        if let Some(pool) = self.pools.get_mut(usize::from(place.node) - 1) {
            pool.release(place.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_without_a_node_go_round_robin() {
        let mut scheduler = Scheduler::new(2);
        let nodes: Vec<u8> = (0..4)
            .map(|_| scheduler.place(None).unwrap().node)
            .collect();
        assert_eq!(nodes, [1, 2, 1, 2]);
    }

    #[test]
    fn pods_with_a_node_keep_it() {
        let mut scheduler = Scheduler::new(2);
        let place = scheduler.place(Some("node-2")).unwrap();
        assert_eq!(
            place,
            Place {
                node: 2,
                ip: Ipv4Addr::new(10, 244, 2, 2)
            }
        );
        scheduler.release(place);
        assert_eq!(scheduler.place(Some("node-2")).unwrap().ip, place.ip);
        let err = scheduler.place(Some("node-9")).unwrap_err();
        assert!(err.to_string().contains("node-9"), "{err}");
    }
}
