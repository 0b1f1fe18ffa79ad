//! Indexes over the compiled resources, rebuilt after every update: routes by the service
//! and port they apply to, in Gateway API precedence order; policies by what they govern.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::policy::{L7Policy, PolicyTarget};
use super::route::{Parent, PathMatch, Route, RouteMatch, Rule};

/// One way to match a request: a rule and the index of one of its matches, with the
/// hostnames of its route (checked for gateway-attached routes only).
#[derive(Clone, Debug)]
pub struct MatchEntry {
    /// The rule applied when the match holds.
    pub rule: Arc<Rule>,
    /// Which of `rule.matches`.
    pub match_index: usize,
    /// The route's hostnames (lower case), empty for any.
    pub hostnames: Arc<[Arc<str>]>,
}

impl MatchEntry {
    /// The condition of this entry.
    pub fn condition(&self) -> &RouteMatch {
        &self.rule.matches[self.match_index]
    }
}

/// The match entries that apply to one destination, most specific first.
#[derive(Clone, Debug, Default)]
pub struct ServiceRoutes {
    /// Tried in order; the first that holds wins.
    pub entries: Vec<MatchEntry>,
}

/// Routes by destination.
///
/// Precedence, as Gateway API defines it for matches across all rules of all routes that
/// apply: an exact path before a regex (implementation-specific, as Envoy Gateway ranks it)
/// before a prefix; a longer path or prefix before a shorter one; a method match before
/// none; more header matches, then more query matches, first. Remaining ties go to the
/// route name (the wire carries no creation time), then rule order, then match order.
/// Hostname specificity is not ranked: waypoint routes are chosen by destination service.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Service hostname -> service port -> entries. Port 0 holds the entries of routes
    /// attached to every port, used for ports no route names.
    services: HashMap<Arc<str>, HashMap<u16, ServiceRoutes>>,
    /// Routes attached to this waypoint's Gateway, by destination port (0: every port).
    gateway: HashMap<u16, ServiceRoutes>,
    /// How many routes were indexed.
    routes: usize,
}

impl RouteTable {
    /// Indexes `routes`; gateway-attached ones count only when they name `gateway`.
    pub fn build<'a>(routes: impl IntoIterator<Item = &'a Arc<Route>>, gateway: &str) -> Self {
        let mut services: HashMap<Arc<str>, Vec<(u16, MatchEntry, Specificity)>> = HashMap::new();
        let mut gateway_entries: Vec<(u16, MatchEntry, Specificity)> = Vec::new();
        let mut count = 0;
        for route in routes {
            count += 1;
            let hostnames: Arc<[Arc<str>]> = route.hostnames.clone().into();
            for parent in &route.parents {
                let (list, port) = match parent {
                    Parent::Service { hostname, port } => {
                        (services.entry(hostname.clone()).or_default(), *port)
                    }
                    Parent::Gateway { name, port } if &**name == gateway => {
                        (&mut gateway_entries, *port)
                    }
                    Parent::Gateway { .. } => continue,
                };
                for (rule_index, rule) in route.rules.iter().enumerate() {
                    for (match_index, condition) in rule.matches.iter().enumerate() {
                        let entry = MatchEntry {
                            rule: rule.clone(),
                            match_index,
                            hostnames: hostnames.clone(),
                        };
                        let rank = Specificity::of(condition, &route.name, rule_index, match_index);
                        list.push((port, entry, rank));
                    }
                }
            }
        }
        Self {
            services: services
                .into_iter()
                .map(|(host, entries)| (host, by_port(entries)))
                .collect(),
            gateway: by_port(gateway_entries),
            routes: count,
        }
    }

    /// The routes attached to `hostname` that apply to `port`, if any route is attached.
    pub fn service_routes(&self, hostname: &str, port: u16) -> Option<&ServiceRoutes> {
        let ports = self.services.get(hostname)?;
        ports.get(&port).or_else(|| ports.get(&0))
    }

    /// The routes attached to this waypoint's Gateway that apply to `port`, if any.
    pub fn gateway_routes(&self, port: u16) -> Option<&ServiceRoutes> {
        self.gateway.get(&port).or_else(|| self.gateway.get(&0))
    }

    /// How many routes the table was built from.
    pub fn len(&self) -> usize {
        self.routes
    }

    /// Whether no route was indexed.
    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }
}

/// Sort key of a match entry: more specific first, then the tie-breakers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    specific: Reverse<(u8, usize, bool, usize, usize)>,
    route: Arc<str>,
    rule: usize,
    condition: usize,
}

impl Specificity {
    fn of(condition: &RouteMatch, route: &Arc<str>, rule: usize, index: usize) -> Self {
        let (kind, length) = match &condition.path {
            Some(PathMatch::Exact(p)) => (3, p.len()),
            Some(PathMatch::Regex(r)) => (2, r.as_str().len()),
            Some(PathMatch::Prefix(p)) => (1, p.len()),
            None => (1, 0),
        };
        Self {
            specific: Reverse((
                kind,
                length,
                condition.method.is_some(),
                condition.headers.len(),
                condition.query.len(),
            )),
            route: route.clone(),
            rule,
            condition: index,
        }
    }
}

/// Splits entries by parent port: each named port gets its own entries plus the every-port
/// ones; key 0 keeps only the every-port ones.
fn by_port(mut entries: Vec<(u16, MatchEntry, Specificity)>) -> HashMap<u16, ServiceRoutes> {
    entries.sort_by(|a, b| a.2.cmp(&b.2));
    let ports: BTreeSet<u16> = entries.iter().map(|(port, _, _)| *port).collect();
    ports
        .into_iter()
        .map(|port| {
            let entries = entries
                .iter()
                .filter(|(p, _, _)| *p == port || *p == 0)
                .map(|(_, entry, _)| entry.clone())
                .collect();
            (port, ServiceRoutes { entries })
        })
        .collect()
}

/// The policies that govern one destination.
pub type PolicyIter<'a> =
    std::iter::Chain<std::slice::Iter<'a, Arc<L7Policy>>, std::slice::Iter<'a, Arc<L7Policy>>>;

/// L7 policies by what they govern, each list ordered by policy name.
#[derive(Debug, Default)]
pub struct PolicyTable {
    gateway: Vec<Arc<L7Policy>>,
    services: HashMap<Arc<str>, Vec<Arc<L7Policy>>>,
}

impl PolicyTable {
    /// Indexes `policies`; gateway-wide ones count only when they name `gateway`.
    pub fn build<'a>(policies: impl IntoIterator<Item = &'a Arc<L7Policy>>, gateway: &str) -> Self {
        let mut table = Self::default();
        for policy in policies {
            match &policy.target {
                PolicyTarget::Gateway(name) if &**name == gateway => {
                    table.gateway.push(policy.clone())
                }
                PolicyTarget::Gateway(_) => {}
                PolicyTarget::Service(host) => {
                    table
                        .services
                        .entry(host.clone())
                        .or_default()
                        .push(policy.clone());
                }
            }
        }
        table.gateway.sort_by(|a, b| a.name.cmp(&b.name));
        for list in table.services.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        table
    }

    /// The policies that govern a request to the service `hostname`: the Gateway's, then
    /// the service's.
    pub fn for_service<'a>(&'a self, hostname: &str) -> PolicyIter<'a> {
        let service = self.services.get(hostname).map_or(&[][..], Vec::as_slice);
        self.gateway.iter().chain(service)
    }
}
