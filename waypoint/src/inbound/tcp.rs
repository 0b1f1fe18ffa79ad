//! Opaque TCP through the waypoint: one endpoint of the destination service, chosen by the
//! balancer, and bytes copied both ways (starting with those sniffing read).

use std::sync::Arc;

use tracing::{debug, info};

use super::InboundParts;
use super::serve::Tunnel;
use super::sniff::Rewind;
use crate::balance::{Outcome, candidates};
use crate::upstream::{Connector, Io, UpstreamTarget};

pub(super) async fn proxy_tcp<C: Connector, T: Io>(
    shared: &Arc<InboundParts<C>>,
    tunnel: &Tunnel,
    mut downstream: Rewind<T>,
) {
    let destination = &tunnel.destination;
    let picked = {
        let snapshot = shared.discovery.borrow().clone();
        let candidates = candidates(&snapshot, &destination.service, destination.port);
        shared.balancer.pick(&candidates, &[], &mut rand::rng())
    };
    let Some(picked) = picked else {
        info!(dst.service = %destination.service.hostname, port = destination.port, "TCP tunnel closed: no healthy endpoint");
        return;
    };
    let target = UpstreamTarget {
        address: picked.candidate.address,
        workload: picked.candidate.workload.clone(),
        service: destination.service.clone(),
    };
    let mut upstream = match shared.client.connector().connect(&target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            shared.balancer.report(&picked, Outcome::Failure);
            info!(%error, "TCP tunnel closed: endpoint unreachable");
            return;
        }
    };
    shared.balancer.report(&picked, Outcome::Success);
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((sent, received)) => {
            debug!(dst.addr = %target.address, sent, received, "TCP tunnel closed")
        }
        Err(error) => debug!(dst.addr = %target.address, %error, "TCP tunnel ended with an error"),
    }
}
