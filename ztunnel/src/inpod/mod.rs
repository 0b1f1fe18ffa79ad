//! In-pod capture: the node side of enrollment (DESIGN.md, "The three flows: Enrollment").
//!
//! The node's ztunnel serves every enrolled pod from its own process, in the node's network
//! namespace, yet its listeners and its connections to the apps live inside each pod's
//! namespace. Three pieces make that work:
//!
//! - [`Netns`]: a handle on a network namespace, and the socket calls that create sockets
//!   inside it ([`bind_listener`], [`connect`]) plus [`original_destination`] for captured
//!   connections.
//! - [`rules`]: the redirection rules installed inside a pod's namespace (outbound TCP to
//!   [`OUTBOUND_CAPTURE_PORT`], inbound TCP to [`INBOUND_CAPTURE_PORT`] except
//!   [`HBONE_PORT`], the proxy's own packets, marked with [`PROXY_MARK`], exempt).
//! - [`enrollment`]: the Unix-socket API the node agent (the lab now, a CNI plugin later) uses
//!   to add and remove pods, and the [`EnrollmentEvent`]s it hands to the proxy.
//!
//! What the proxy does with an [`EnrollmentEvent::Add`]: install the rules
//! ([`rules::install`]), bind its listeners for the pod with [`bind_listener`] (outbound on
//! `0.0.0.0:15001`, inbound plaintext on `0.0.0.0:15006`, HBONE on `0.0.0.0:15008`, and the
//! `[::]` ones when the pod has IPv6: the rules capture both families, so a family without a
//! listener fails closed), and reply. On [`EnrollmentEvent::Remove`]: remove the rules, close
//! the listeners and the pod's open connections, and reply.

pub mod enrollment;
mod netns;
pub mod rules;

#[cfg(test)]
mod test_netns;
#[cfg(test)]
mod tests;

pub use crate::hbone::HBONE_PORT;
pub use enrollment::{
    EnrollmentClient, EnrollmentError, EnrollmentEvent, EnrollmentServer, PodUid, Responder,
};
pub use netns::{Netns, NetnsError, bind_listener, connect, original_destination};
pub use rules::RulesError;

/// The port, inside the pod's namespace, that the pod's outbound TCP is redirected to.
///
/// The redirect happens in the `nat` table's OUTPUT hook, so the listener sees the connection
/// arrive on `127.0.0.1:15001` (or `[::1]:15001`); [`original_destination`] recovers the
/// address the app dialled.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;

/// The port, inside the pod's namespace, that inbound plaintext TCP is redirected to.
///
/// Every inbound TCP connection except those to [`HBONE_PORT`] lands here; the source address
/// is kept (only the destination is rewritten), so policy sees the real client.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;

/// The packet mark (`SO_MARK`) on every socket the proxy opens inside a pod's namespace.
///
/// The redirection rules let packets carrying this mark (under [`PROXY_MARK_MASK`]) pass
/// untouched, which is what keeps the proxy's own connections from being captured again. The
/// value is Istio's (1337), so rules and tooling that know Istio's mark recognise ours.
pub const PROXY_MARK: u32 = 0x539;

/// The bits of the packet mark that [`PROXY_MARK`] owns; other bits stay free for others.
pub const PROXY_MARK_MASK: u32 = 0xfff;
