//! Whether one policy matches one connection; the rules are in the parent module's documentation.

use std::net::IpAddr;

use mesh_proto::istio::security::string_match::MatchType;
use mesh_proto::istio::security::{
    Address, Authorization, Match, ServiceAccountMatch, StringMatch,
};

use super::Connection;
use crate::identity::SpiffeId;

/// A connection as the matchers see it: addresses in canonical form, identity borrowed.
pub(super) struct Subject<'c> {
    identity: Option<&'c SpiffeId>,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    dst_port: u32,
}

impl<'c> Subject<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Self {
            identity: conn.src_identity.as_ref(),
            src_ip: conn.src_ip.to_canonical(),
            dst_ip: conn.dst_ip.to_canonical(),
            dst_port: conn.dst_port.into(),
        }
    }
}

pub(super) fn policy_matches(policy: &Authorization, subject: &Subject<'_>) -> bool {
    policy.groups.iter().any(|group| {
        group.rules.iter().all(|rules| {
            rules.matches.is_empty() || rules.matches.iter().any(|m| match_matches(m, subject))
        })
    })
}

/// Cheap integer checks first: most policies are decided by them before any string is compared.
fn match_matches(m: &Match, s: &Subject<'_>) -> bool {
    field(&m.destination_ports, &m.not_destination_ports, |&p| {
        p == s.dst_port
    }) && field(&m.source_ips, &m.not_source_ips, |a| contains(a, s.src_ip))
        && field(&m.destination_ips, &m.not_destination_ips, |a| {
            contains(a, s.dst_ip)
        })
        && field(&m.namespaces, &m.not_namespaces, |p| {
            s.identity
                .is_some_and(|id| string_matches(p, &[id.namespace()]))
        })
        && field(&m.principals, &m.not_principals, |p| {
            s.identity
                .is_some_and(|id| string_matches(p, &principal(id)))
        })
        && field(&m.service_accounts, &m.not_service_accounts, |sa| {
            s.identity.is_some_and(|id| service_account_matches(sa, id))
        })
}

/// One field and its `not_` form: some positive entry must hit (when there are any) and no
/// negative entry may.
fn field<T>(positive: &[T], negative: &[T], mut hit: impl FnMut(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&mut hit)) && !negative.iter().any(hit)
}

/// `<td>/ns/<ns>/sa/<sa>` as pieces, so that matching it needs no allocation.
fn principal(id: &SpiffeId) -> [&str; 5] {
    [
        id.trust_domain(),
        "/ns/",
        id.namespace(),
        "/sa/",
        id.service_account(),
    ]
}

fn service_account_matches(m: &ServiceAccountMatch, id: &SpiffeId) -> bool {
    m.namespace == id.namespace() && m.service_account == id.service_account()
}

/// Matches a pattern against the concatenation of `pieces`.
fn string_matches(m: &StringMatch, pieces: &[&str]) -> bool {
    match &m.match_type {
        Some(MatchType::Exact(value)) => {
            value.len() == pieces.iter().map(|p| p.len()).sum::<usize>()
                && starts_with(pieces, value)
        }
        Some(MatchType::Prefix(prefix)) => starts_with(pieces, prefix),
        Some(MatchType::Suffix(suffix)) => ends_with(pieces, suffix),
        Some(MatchType::Presence(())) => pieces.iter().any(|p| !p.is_empty()),
        None => false,
    }
}

fn starts_with(pieces: &[&str], prefix: &str) -> bool {
    let mut rest = prefix.as_bytes();
    for piece in pieces.iter().map(|p| p.as_bytes()) {
        if rest.len() <= piece.len() {
            return piece.starts_with(rest);
        }
        match rest.strip_prefix(piece) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

fn ends_with(pieces: &[&str], suffix: &str) -> bool {
    let mut rest = suffix.as_bytes();
    for piece in pieces.iter().rev().map(|p| p.as_bytes()) {
        if rest.len() <= piece.len() {
            return piece.ends_with(rest);
        }
        match rest.strip_suffix(piece) {
            Some(before) => rest = before,
            None => return false,
        }
    }
    rest.is_empty()
}

/// An address range from a policy, in canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Network {
    V4 { bits: u32, prefix: u32 },
    V6 { bits: u128, prefix: u32 },
}

/// Reads a policy address; `None` when [`super::validate`] would reject it.
pub(super) fn network(address: &Address) -> Option<Network> {
    let prefix = address.length;
    match address.address.len() {
        4 if prefix <= 32 => {
            let bytes: [u8; 4] = address.address.as_slice().try_into().ok()?;
            Some(Network::V4 {
                bits: u32::from_be_bytes(bytes),
                prefix,
            })
        }
        16 if prefix <= 128 => {
            let bytes: [u8; 16] = address.address.as_slice().try_into().ok()?;
            let bits = u128::from_be_bytes(bytes);
            // `::ffff:a.b.c.d/n` with n >= 96 is the IPv4 range a.b.c.d/(n-96).
            if prefix >= 96 && bits >> 32 == 0xffff {
                Some(Network::V4 {
                    // The low 32 bits are the IPv4 address; dropping the rest is the point.
                    bits: bits as u32,
                    prefix: prefix - 96,
                })
            } else {
                Some(Network::V6 { bits, prefix })
            }
        }
        _ => None,
    }
}

fn contains(address: &Address, ip: IpAddr) -> bool {
    match (network(address), ip) {
        (Some(Network::V4 { bits, prefix }), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            (bits ^ u32::from(ip)) & mask == 0
        }
        (Some(Network::V6 { bits, prefix }), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            (bits ^ u128::from(ip)) & mask == 0
        }
        _ => false,
    }
}
