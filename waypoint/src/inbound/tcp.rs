//! Opaque TCP through the waypoint: one endpoint of the destination service, chosen by the
//! balancer, and bytes relayed both ways (starting with those sniffing read) until both
//! sides close, no byte moves for the idle timeout, or the drain deadline passes
//! ([`crate::relay`], under [`super::InboundSettings::relays`]). How each connection ended
//! is counted in `waypoint_tcp_connections_ended_total{reason}`.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tracing::{Instrument, info};

use super::InboundParts;
use super::serve::Tunnel;
use super::sniff::Rewind;
use crate::balance::{Outcome, candidates};
use crate::relay::relay;
use crate::upstream::{Connector, Io, UpstreamTarget};

pub(super) async fn proxy_tcp<C: Connector, T: Io>(
    shared: &Arc<InboundParts<C>>,
    tunnel: &Tunnel,
    downstream: Rewind<T>,
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
    let upstream = match shared.client.connector().connect(&target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            shared.balancer.report(&picked, Outcome::Failure);
            info!(%error, "TCP tunnel closed: endpoint unreachable");
            return;
        }
    };
    shared.balancer.report(&picked, Outcome::Success);
    let (settings, drain) = (shared.settings.relays, shared.drain.clone());
    // Within the tunnel's span, which names the client and the service's VIP.
    let span = tracing::info_span!("tcp", endpoint = %target.address);
    async {
        let relayed = relay(downstream, upstream, settings, drain).await;
        shared.metrics.tcp_connection_ended(relayed.ending.reason());
        relayed.log("TCP connection");
    }
    .instrument(span)
    .await;
}
