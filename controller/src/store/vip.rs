//! Virtual IPs of services: `spec.clusterIP` when the manifest gives one, otherwise an address
//! from the service CIDR. The table of who holds what is kept in the state directory, so that a
//! service keeps its address across restarts and across changes to other services.
//!
//! The rule when two services want one address: the service that already holds it keeps it, the
//! other is rejected. A deleted service releases its address; the table remembers the address
//! for a while, so that a service that comes back (say, after its file had a syntax error at
//! start-up) gets the same one when nobody took it meanwhile, and fresh services are given
//! addresses nobody had recently.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::object::NamespacedName;
use super::rejection::Problem;

/// The file in the state directory that holds the table.
pub const VIPS_FILE: &str = "vips.json";

/// The service CIDR used when none is configured (Kubernetes' usual default).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";

/// How many released addresses the table remembers for their former services.
const RELEASED_MEMORY: usize = 1024;

/// Why the table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VipTableError {
    /// The table could not be read.
    #[error("cannot read the virtual IP table {path}: {source}")]
    Read {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error(
        "the virtual IP table {path} is not valid: {source}; fix it or move it away (services then \
         get new addresses)"
    )]
    Parse {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The table could not be written.
    #[error("cannot write the virtual IP table {path}: {source}")]
    Write {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Who holds which virtual IP, and which addresses were released by whom.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VipTable {
    assigned: BTreeMap<NamespacedName, IpAddr>,
    released: BTreeMap<NamespacedName, IpAddr>,
}

/// The outcome of giving addresses to a set of services.
#[derive(Debug)]
pub struct VipAssignment {
    /// The table after the assignment.
    pub table: VipTable,
    /// The address of every service that got one.
    pub vips: BTreeMap<NamespacedName, IpAddr>,
    /// Services that got none, and why.
    pub conflicts: Vec<(NamespacedName, Problem)>,
}

#[derive(Serialize, Deserialize)]
struct VipFile {
    assigned: BTreeMap<String, IpAddr>,
    #[serde(default)]
    released: BTreeMap<String, IpAddr>,
}

impl VipTable {
    /// Reads the table from the state directory; a missing file is an empty table.
    pub fn read(state_dir: &Path) -> Result<Self, VipTableError> {
        let path = state_dir.join(VIPS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(VipTableError::Read { path, source }),
        };
        let file: VipFile = serde_json::from_str(&text).map_err(|source| VipTableError::Parse {
            path: path.clone(),
            source,
        })?;
        let parse = |map: BTreeMap<String, IpAddr>| {
            map.into_iter()
                .filter_map(|(key, ip)| {
                    let (namespace, name) = key.split_once('/')?;
                    Some((NamespacedName::new(namespace, name), ip))
                })
                .collect()
        };
        Ok(VipTable {
            assigned: parse(file.assigned),
            released: parse(file.released),
        })
    }

    /// Writes the table atomically into the state directory.
    pub fn write(&self, state_dir: &Path) -> Result<(), VipTableError> {
        let path = state_dir.join(VIPS_FILE);
        let render = |map: &BTreeMap<NamespacedName, IpAddr>| {
            map.iter().map(|(key, ip)| (key.to_string(), *ip)).collect()
        };
        let file = VipFile {
            assigned: render(&self.assigned),
            released: render(&self.released),
        };
        let mut text = serde_json::to_vec_pretty(&file).expect("a map of strings serializes");
        text.push(b'\n');
        crate::fs::write_private_atomically(&path, &text)
            .map_err(|source| VipTableError::Write { path, source })
    }

    /// The address a service holds, if any.
    pub fn get(&self, service: &NamespacedName) -> Option<IpAddr> {
        self.assigned.get(service).copied()
    }

    /// Gives every requested service an address: `Some(ip)` asks for that one (`spec.clusterIP`),
    /// `None` for one from `cidr`. Services missing from `requests` release theirs. `self` is
    /// not changed: the caller adopts the new table once it accepts the outcome.
    pub fn assign(
        &self,
        requests: &BTreeMap<NamespacedName, Option<IpAddr>>,
        cidr: IpNet,
    ) -> VipAssignment {
        let mut next = Allocation {
            table: VipTable {
                assigned: BTreeMap::new(),
                released: self.released.clone(),
            },
            holders: BTreeMap::new(),
            conflicts: Vec::new(),
        };
        for (service, ip) in &self.assigned {
            if !requests.contains_key(service) {
                next.table.released.insert(service.clone(), *ip);
            }
        }
        // Services that keep what they hold go first: they win any contest.
        let mut movers = Vec::new();
        for (service, requested) in requests {
            let keeps = match (self.assigned.get(service), requested) {
                (Some(held), Some(requested)) => held == requested,
                (Some(held), None) => cidr.contains(held),
                (None, _) => false,
            };
            match self.assigned.get(service) {
                Some(held) if keeps => next.take(service, *held),
                _ => movers.push((service, *requested)),
            }
        }
        for (service, requested) in &movers {
            if let Some(ip) = requested {
                next.take(service, *ip);
            }
        }
        for (service, requested) in &movers {
            if requested.is_none() {
                next.allocate(service, cidr);
            }
        }
        next.table.forget_oldest_releases();
        let vips = next.table.assigned.clone();
        VipAssignment {
            table: next.table,
            vips,
            conflicts: next.conflicts,
        }
    }

    fn forget_oldest_releases(&mut self) {
        while self.released.len() > RELEASED_MEMORY {
            self.released.pop_first();
        }
    }
}

/// The table being built by one assignment.
struct Allocation {
    table: VipTable,
    holders: BTreeMap<IpAddr, NamespacedName>,
    conflicts: Vec<(NamespacedName, Problem)>,
}

impl Allocation {
    fn take(&mut self, service: &NamespacedName, ip: IpAddr) {
        if let Some(holder) = self.holders.get(&ip) {
            let problem = Problem::VipTaken {
                ip,
                holder: holder.to_string(),
            };
            self.conflicts.push((service.clone(), problem));
            return;
        }
        self.holders.insert(ip, service.clone());
        self.table.assigned.insert(service.clone(), ip);
        self.table.released.retain(|_, released| *released != ip);
        self.table.released.remove(service);
    }

    fn allocate(&mut self, service: &NamespacedName, cidr: IpNet) {
        let free = |ip: &IpAddr| !self.holders.contains_key(ip);
        let own = self
            .table
            .released
            .get(service)
            .copied()
            .filter(|ip| cidr.contains(ip) && free(ip));
        let remembered: BTreeSet<IpAddr> = self.table.released.values().copied().collect();
        let ip = own
            .or_else(|| cidr.hosts().find(|ip| free(ip) && !remembered.contains(ip)))
            .or_else(|| cidr.hosts().find(free));
        match ip {
            Some(ip) => self.take(service, ip),
            None => self
                .conflicts
                .push((service.clone(), Problem::VipsExhausted { cidr })),
        }
    }
}

#[cfg(test)]
mod tests;
