//! The protocol state the client keeps across streams: which types it subscribes to, the
//! version of every resource it holds, and which types have had their first response.
//! Pure logic, no I/O, so the protocol is tested without a network.

use std::collections::{HashMap, HashSet};

use mesh_proto::envoy::config::core::v3::Node;
use mesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_proto::google::rpc::Status;

use super::config::MAX_NACK_MESSAGE_BYTES;
use super::{NACK_CODE, NamedResource, Rejection, ResourceHandler, ResourceUpdate};

/// What the client subscribed to and holds.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    types: Vec<&'static str>,
    /// type URL -> resource name -> version held.
    held: HashMap<&'static str, HashMap<String, String>>,
    /// Types that had at least one response, on any stream.
    synced: HashSet<&'static str>,
}

/// The result of applying one response.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The response's type URL.
    pub(crate) type_url: String,
    /// The ACK or NACK to send.
    pub(crate) reply: DeltaDiscoveryRequest,
    /// The resources that could not be used.
    pub(crate) rejections: Vec<Rejection>,
}

impl Subscriptions {
    pub(crate) fn new(types: Vec<&'static str>) -> Self {
        Self {
            types,
            held: HashMap::new(),
            synced: HashSet::new(),
        }
    }

    /// The first requests of a stream: one wildcard subscription per type, declaring what
    /// is held. The node rides on the first only, as the protocol asks.
    pub(crate) fn initial_requests(&self, node: Node) -> Vec<DeltaDiscoveryRequest> {
        let mut node = Some(node);
        self.types
            .iter()
            .map(|type_url| DeltaDiscoveryRequest {
                node: node.take(),
                type_url: type_url.to_string(),
                initial_resource_versions: self.held.get(type_url).cloned().unwrap_or_default(),
                ..Default::default()
            })
            .collect()
    }

    /// Whether every type has had its first response.
    pub(crate) fn synced(&self) -> bool {
        self.types.iter().all(|t| self.synced.contains(t))
    }

    /// Applies one response through `handler` and builds the reply.
    pub(crate) fn apply(
        &mut self,
        handler: &mut dyn ResourceHandler,
        response: DeltaDiscoveryResponse,
    ) -> Applied {
        let Some(type_url) = self.types.iter().copied().find(|t| *t == response.type_url) else {
            return unsubscribed(response);
        };
        let total = response.resources.len();
        let Unpacked {
            resources,
            versions,
            mut rejections,
        } = unpack(type_url, response.resources);
        let removed = response.removed_resources;
        let update = ResourceUpdate {
            resources,
            removed: removed.clone(),
        };
        let refused = handler.apply(type_url, update);
        let held = self.held.entry(type_url).or_default();
        let refused_names: HashSet<&str> = refused.iter().map(|r| r.name.as_str()).collect();
        for (name, version) in versions {
            if !refused_names.contains(name.as_str()) {
                held.insert(name, version);
            }
        }
        for name in &removed {
            held.remove(name);
        }
        rejections.extend(refused);
        self.synced.insert(type_url);
        let message = (!rejections.is_empty()).then(|| nack_message(type_url, total, &rejections));
        let reply = reply(type_url, response.nonce, message);
        Applied {
            type_url: type_url.to_string(),
            reply,
            rejections,
        }
    }

    /// The versions held of one type (for tests and the admin dump).
    #[cfg(test)]
    pub(crate) fn held(&self, type_url: &str) -> HashMap<String, String> {
        self.held.get(type_url).cloned().unwrap_or_default()
    }
}

/// The well-formed resources of a response, their versions, and the malformed ones.
struct Unpacked {
    resources: Vec<NamedResource>,
    versions: Vec<(String, String)>,
    rejections: Vec<Rejection>,
}

/// Keeps the resources whose body is present and of the response's type; the handler only
/// ever sees those.
fn unpack(type_url: &str, resources: Vec<Resource>) -> Unpacked {
    let mut unpacked = Unpacked {
        resources: Vec::with_capacity(resources.len()),
        versions: Vec::with_capacity(resources.len()),
        rejections: Vec::new(),
    };
    for resource in resources {
        match resource.resource {
            Some(body) if body.type_url == type_url => {
                unpacked
                    .versions
                    .push((resource.name.clone(), resource.version));
                unpacked.resources.push(NamedResource {
                    name: resource.name,
                    body: body.value,
                });
            }
            Some(body) => unpacked.rejections.push(Rejection::new(
                &resource.name,
                format!("its body is a {}, not a {type_url}", body.type_url),
            )),
            None => unpacked
                .rejections
                .push(Rejection::new(&resource.name, "it has no body")),
        }
    }
    unpacked
}

/// A NACK of a response for a type nobody subscribed to.
fn unsubscribed(response: DeltaDiscoveryResponse) -> Applied {
    let reason = format!(
        "{} is not a type this proxy subscribed to",
        response.type_url
    );
    let rejections = response
        .resources
        .iter()
        .map(|r| Rejection::new(&r.name, &reason))
        .collect();
    let reply = reply(&response.type_url, response.nonce, Some(reason));
    Applied {
        type_url: response.type_url,
        reply,
        rejections,
    }
}

/// An ACK, or a NACK when there is a message.
fn reply(type_url: &str, nonce: String, nack: Option<String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        response_nonce: nonce,
        error_detail: nack.map(|message| Status {
            code: NACK_CODE,
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

/// "rejected 2 of 5 resources of <type>: <name>: <reason>; ...", cut at
/// [`MAX_NACK_MESSAGE_BYTES`] with a count of what was left out.
fn nack_message(type_url: &str, total: usize, rejections: &[Rejection]) -> String {
    let mut message = format!(
        "rejected {} of {total} resources of {type_url}: ",
        rejections.len()
    );
    for (i, rejection) in rejections.iter().enumerate() {
        let entry = if i == 0 {
            rejection.to_string()
        } else {
            format!("; {rejection}")
        };
        if message.len() + entry.len() > MAX_NACK_MESSAGE_BYTES {
            message.push_str(&format!("; and {} more", rejections.len() - i));
            break;
        }
        message.push_str(&entry);
    }
    message
}

#[cfg(test)]
mod tests;
