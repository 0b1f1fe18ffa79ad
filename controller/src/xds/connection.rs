//! The state of one delta ADS stream: what the proxy subscribed to, what it already has, and
//! what it acknowledged. Pure logic, no I/O, so the protocol is tested without a network.
//!
//! Delta xDS in short: the proxy subscribes per type, by name or with the wildcard; the server
//! sends only resources whose version the proxy does not have and names the ones that went
//! away; every response carries a nonce that the proxy's next request echoes, with an
//! `error_detail` when it rejected the response (NACK).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use mesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use serde::Serialize;

use super::resources::{ResourceSnapshot, TypeChanges, TypedResources, VersionedResource};

/// The wildcard resource name of the delta protocol.
const WILDCARD: &str = "*";

/// A response is split when its resources add up to more than this. A first sync of a large
/// mesh so stays far under the 4 MiB default message limit of gRPC clients, and a stream holds
/// little memory at a time: responses are built one by one as the proxy reads them, and each
/// is buffered whole while it is encoded and sent. (100 proxies syncing 11,000 resources at
/// once peaked above 500 MiB with 1 MiB responses built all at once, and near 250 MiB with
/// 64 KiB responses built one by one; the extra responses and ACKs cost nothing measurable.)
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What one proxy subscribed to for one type and what it already has.
#[derive(Debug, Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<Arc<str>>,
    /// name -> version the proxy has (as far as we know: sent, or declared on reconnect).
    known: HashMap<Arc<str>, Arc<str>>,
    /// The generation of the snapshot `known` was last brought up to date with.
    synced: Option<u64>,
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Acknowledgement state of one type on one stream, for the status API.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TypeStatus {
    /// The snapshot generation of the last response sent.
    pub sent_version: Option<u64>,
    /// The snapshot generation of the last response the proxy accepted.
    pub acked_version: Option<u64>,
    /// Responses sent and not yet answered.
    pub pending: usize,
    /// The message of the last NACK, if the proxy rejected something.
    pub last_nack: Option<String>,
    /// How many responses the proxy rejected on this stream.
    pub nacks: u64,
}

/// A response decided on and numbered, not yet built: its resources stay shared with the
/// snapshot until [`PendingResponse::build`] copies them into the wire form, just before the
/// response is sent.
#[derive(Debug)]
pub struct PendingResponse {
    type_url: String,
    generation: u64,
    nonce: String,
    resources: Vec<Arc<VersionedResource>>,
    removed: Vec<String>,
}

impl PendingResponse {
    /// The wire form.
    pub fn build(self) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: self.generation.to_string(),
            resources: self.resources.iter().map(|r| wire_resource(r)).collect(),
            type_url: self.type_url,
            removed_resources: self.removed,
            nonce: self.nonce,
        }
    }

    /// The type of the resources.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }
}

/// What the proxy said about an earlier response.
#[derive(Debug, PartialEq)]
pub enum Acknowledgement {
    /// The proxy applied the response.
    Ack { type_url: String, version: u64 },
    /// The proxy rejected (part of) the response.
    Nack {
        type_url: String,
        version: u64,
        message: String,
    },
}

/// The state of one delta ADS stream.
#[derive(Debug, Default)]
pub struct AdsConnection {
    subscriptions: BTreeMap<String, Subscription>,
    status: BTreeMap<String, TypeStatus>,
    /// nonce -> (type, generation) of responses not yet answered.
    pending: HashMap<String, (String, u64)>,
    next_nonce: u64,
}

impl AdsConnection {
    /// Handles one request and returns the acknowledgement it carried (if any) and the
    /// responses to send.
    pub fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &ResourceSnapshot,
    ) -> (Option<Acknowledgement>, Vec<PendingResponse>) {
        let type_url = request.type_url.clone();
        let ack = self.acknowledge(&request);
        let first = !self.subscriptions.contains_key(&type_url);
        let subscription = self.subscriptions.entry(type_url.clone()).or_default();
        if first {
            // An empty first subscription means "everything", as in the protocol's legacy
            // wildcard form that Istio's ztunnel uses.
            subscription.wildcard = request.resource_names_subscribe.is_empty();
            subscription.known = request
                .initial_resource_versions
                .into_iter()
                .map(|(name, version)| (name.into(), version.into()))
                .collect();
        }
        let mut changed = first;
        for name in request.resource_names_subscribe {
            changed = true;
            if name == WILDCARD {
                subscription.wildcard = true;
            } else {
                subscription.names.insert(name.into());
            }
        }
        for name in request.resource_names_unsubscribe {
            changed = true;
            if name == WILDCARD {
                subscription.wildcard = false;
            } else {
                subscription.names.remove(name.as_str());
                // Forget it, so a later subscription sends it again.
                subscription.known.remove(name.as_str());
            }
        }
        let responses = if changed {
            self.respond(&type_url, snapshot, Trigger::Subscription { first })
        } else {
            Vec::new()
        };
        (ack, responses)
    }

    /// Computes what a new snapshot means for this proxy: one or more responses per type
    /// whose subscribed resources changed.
    pub fn on_snapshot(&mut self, snapshot: &ResourceSnapshot) -> Vec<PendingResponse> {
        let types: Vec<String> = self.subscriptions.keys().cloned().collect();
        types
            .iter()
            .flat_map(|t| self.respond(t, snapshot, Trigger::Snapshot))
            .collect()
    }

    /// The acknowledgement state per type, for the status API.
    pub fn status(&self) -> &BTreeMap<String, TypeStatus> {
        &self.status
    }

    fn acknowledge(&mut self, request: &DeltaDiscoveryRequest) -> Option<Acknowledgement> {
        if request.response_nonce.is_empty() {
            return None;
        }
        // A nonce we do not know is stale (from before a newer response) or forged; either
        // way it acknowledges nothing.
        let (type_url, version) = self.pending.remove(&request.response_nonce)?;
        let status = self.status.entry(type_url.clone()).or_default();
        status.pending = status.pending.saturating_sub(1);
        match &request.error_detail {
            Some(error) => {
                status.nacks += 1;
                status.last_nack = Some(error.message.clone());
                Some(Acknowledgement::Nack {
                    type_url,
                    version,
                    message: error.message.clone(),
                })
            }
            None => {
                status.acked_version = Some(version);
                Some(Acknowledgement::Ack { type_url, version })
            }
        }
    }

    /// Brings what the proxy has of one type up to date with the snapshot. The first answer
    /// to a subscription is sent even when nothing differs: it tells the proxy it is in sync.
    fn respond(
        &mut self,
        type_url: &str,
        snapshot: &ResourceSnapshot,
        trigger: Trigger,
    ) -> Vec<PendingResponse> {
        let empty = TypedResources::new();
        let current = snapshot.of_type(type_url).unwrap_or(&empty);
        let Some(subscription) = self.subscriptions.get_mut(type_url) else {
            return Vec::new();
        };
        let catch_up = match trigger {
            // New names or a new wildcard: everything must be looked at.
            Trigger::Subscription { .. } => CatchUp::Full,
            Trigger::Snapshot => CatchUp::choose(subscription.synced, snapshot, type_url),
        };
        let (updated, removed) = match catch_up {
            CatchUp::Current => (Vec::new(), Vec::new()),
            CatchUp::Changes(changes) => apply_changes(subscription, current, changes),
            CatchUp::Full => diff(subscription, current),
        };
        subscription.synced = Some(snapshot.generation);
        let always = matches!(trigger, Trigger::Subscription { first: true });
        if updated.is_empty() && removed.is_empty() && !always {
            return Vec::new();
        }
        let batches = batch(updated, removed);
        batches
            .into_iter()
            .map(|(resources, removed)| {
                self.response(type_url, snapshot.generation, resources, removed)
            })
            .collect()
    }

    fn response(
        &mut self,
        type_url: &str,
        generation: u64,
        resources: Vec<Arc<VersionedResource>>,
        removed: Vec<String>,
    ) -> PendingResponse {
        self.next_nonce += 1;
        let nonce = format!("{generation}-{}", self.next_nonce);
        self.pending
            .insert(nonce.clone(), (type_url.to_string(), generation));
        let status = self.status.entry(type_url.to_string()).or_default();
        status.sent_version = Some(generation);
        status.pending += 1;
        PendingResponse {
            type_url: type_url.to_string(),
            generation,
            nonce,
            resources,
            removed,
        }
    }
}

/// Why a type is brought up to date.
#[derive(Clone, Copy)]
enum Trigger {
    /// The proxy changed its subscription (`first`: it subscribed to the type just now).
    Subscription { first: bool },
    /// A new snapshot was published.
    Snapshot,
}

/// How much of a snapshot a subscription must look at.
enum CatchUp<'a> {
    /// Nothing: it was brought up to date with this very snapshot already.
    Current,
    /// Only what changed: it was up to date with the snapshot just before (the type may have
    /// no changes at all).
    Changes(Option<&'a TypeChanges>),
    /// Every resource of the type.
    Full,
}

impl<'a> CatchUp<'a> {
    fn choose(synced: Option<u64>, snapshot: &'a ResourceSnapshot, type_url: &str) -> Self {
        // Only a snapshot that records its changes comes from the publisher, whose
        // generations name one content each; test snapshots may reuse a generation.
        let Some(changes) = &snapshot.changes else {
            return CatchUp::Full;
        };
        match synced {
            Some(generation) if generation == snapshot.generation => CatchUp::Current,
            Some(generation) if generation == changes.since => {
                CatchUp::Changes(changes.types.get(type_url))
            }
            _ => CatchUp::Full,
        }
    }
}

fn wire_resource(resource: &VersionedResource) -> Resource {
    Resource {
        name: resource.name.to_string(),
        version: resource.version.to_string(),
        resource: Some(resource.body.clone()),
        ..Default::default()
    }
}

/// What [`diff`] would find, when `subscription` matched the snapshot these changes lead
/// from and its names did not change since: only the changed names are looked at.
fn apply_changes(
    subscription: &mut Subscription,
    current: &TypedResources,
    changes: Option<&TypeChanges>,
) -> (Vec<Arc<VersionedResource>>, Vec<String>) {
    let Some(changes) = changes else {
        return (Vec::new(), Vec::new());
    };
    let mut updated = Vec::new();
    for name in &changes.updated {
        let Some(resource) = current.get(name) else {
            continue;
        };
        if subscription.wants(name) && subscription.known.get(name) != Some(&resource.version) {
            subscription
                .known
                .insert(name.clone(), resource.version.clone());
            updated.push(resource.clone());
        }
    }
    let removed = changes
        .removed
        .iter()
        .filter(|name| subscription.known.remove(*name).is_some())
        .map(|name| name.to_string())
        .collect();
    (updated, removed)
}

/// Resources to send and names to remove so that the proxy matches `current`, recording the
/// result as what the proxy now has.
fn diff(
    subscription: &mut Subscription,
    current: &TypedResources,
) -> (Vec<Arc<VersionedResource>>, Vec<String>) {
    let mut updated = Vec::new();
    if subscription.known.is_empty() && subscription.wildcard {
        // A first wildcard sync: size the table once rather than doubling it ~14 times.
        subscription.known.reserve(current.len());
    }
    let mut wanted = 0;
    for (name, resource) in current {
        if !subscription.wants(name) {
            continue;
        }
        wanted += 1;
        if subscription.known.get(name) != Some(&resource.version) {
            subscription
                .known
                .insert(name.clone(), resource.version.clone());
            updated.push(resource.clone());
        }
    }
    // Every wanted resource is known now; anything more is gone.
    if subscription.known.len() == wanted {
        return (updated, Vec::new());
    }
    let gone: Vec<Arc<str>> = subscription
        .known
        .keys()
        .filter(|name| !current.contains_key(*name) || !subscription.wants(name))
        .cloned()
        .collect();
    let mut removed = Vec::with_capacity(gone.len());
    for name in gone {
        subscription.known.remove(&name);
        removed.push(name.to_string());
    }
    removed.sort();
    (updated, removed)
}

/// Splits one diff into responses of at most [`MAX_RESPONSE_BYTES`] each; removals ride with
/// the last one. Always returns at least one response.
type Batch = (Vec<Arc<VersionedResource>>, Vec<String>);

fn batch(updated: Vec<Arc<VersionedResource>>, removed: Vec<String>) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for resource in updated {
        let len = resource.body.value.len() + resource.name.len();
        if size + len > MAX_RESPONSE_BYTES && !current.is_empty() {
            batches.push((std::mem::take(&mut current), Vec::new()));
            size = 0;
        }
        size += len;
        current.push(resource);
    }
    batches.push((current, removed));
    batches
}

#[cfg(test)]
mod tests;
