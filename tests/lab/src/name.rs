//! Names of a lab and of everything it creates.
//!
//! Every network namespace of a lab is `<LAB>-<suffix>`, where the suffix is `sw` (the switch),
//! `ctl` (the controller), `n<i>` (node i) or `p<id>` (a pod). Suffixes never contain `-`, so
//! the lab a namespace belongs to is everything before its last `-`: labs `mesh` and `mesh-2`
//! never claim each other's namespaces, and clean-up can match names exactly.

use std::fmt;
use std::str::FromStr;

/// The lab name used when none is given.
pub const DEFAULT_LAB_NAME: &str = "mesh";

/// The longest lab name accepted; namespace names stay short enough to read in `ip netns`.
pub const MAX_LAB_NAME_LEN: usize = 20;

/// Why a lab name was refused.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// The name breaks the naming rule.
    #[error(
        "invalid lab name {name:?}: use 1 to {MAX_LAB_NAME_LEN} characters from a-z, 0-9 and \
         '-', starting with a letter and not ending with '-'"
    )]
    InvalidLabName {
        /// The name given.
        name: String,
    },
    /// A node name is not `node-<i>` for a node of the lab.
    #[error("unknown node {name:?}: the lab's nodes are named node-1 .. node-{nodes}")]
    UnknownNode {
        /// The name given.
        name: String,
        /// How many nodes the lab has.
        nodes: u8,
    },
}

/// A validated lab name: the prefix of every namespace the lab creates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabName(String);

impl FromStr for LabName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, NameError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_LAB_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(name.to_string()))
        } else {
            Err(NameError::InvalidLabName {
                name: name.to_string(),
            })
        }
    }
}

impl fmt::Display for LabName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl LabName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The switch's namespace.
    pub fn switch_netns(&self) -> String {
        format!("{}-sw", self.0)
    }

    /// The controller's namespace.
    pub fn controller_netns(&self) -> String {
        format!("{}-ctl", self.0)
    }

    /// The namespace of node `index` (1-based).
    pub fn node_netns(&self, index: u8) -> String {
        format!("{}-n{index}", self.0)
    }

    /// The namespace of the pod with short id `id`.
    pub fn pod_netns(&self, id: u32) -> String {
        format!("{}-p{id}", self.0)
    }

    /// Whether `netns` is a namespace of this lab (exact match on the naming rule).
    pub fn owns_netns(&self, netns: &str) -> bool {
        netns
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(is_lab_suffix)
    }

    /// Whether `netns` is a pod namespace of this lab.
    pub fn owns_pod_netns(&self, netns: &str) -> bool {
        self.owns_netns(netns) && netns[self.0.len() + 1..].starts_with('p')
    }
}

fn is_lab_suffix(suffix: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match suffix {
        "sw" | "ctl" => true,
        _ => {
            suffix.strip_prefix('n').is_some_and(digits)
                || suffix.strip_prefix('p').is_some_and(digits)
        }
    }
}

/// The Kubernetes name of node `index` (1-based), as pods name it in `spec.nodeName`.
pub fn node_name(index: u8) -> String {
    format!("node-{index}")
}

/// The index of a node name of a lab with `nodes` nodes.
pub fn node_index(name: &str, nodes: u8) -> Result<u8, NameError> {
    name.strip_prefix("node-")
        .and_then(|i| i.parse::<u8>().ok())
        .filter(|i| (1..=nodes).contains(i))
        .ok_or_else(|| NameError::UnknownNode {
            name: name.to_string(),
            nodes,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_checked() {
        for good in ["mesh", "t12345a", "a-b", "lab2"] {
            assert!(good.parse::<LabName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Mesh",
            "1lab",
            "lab-",
            "a_b",
            "averyveryverylonglabname",
        ] {
            let err = bad.parse::<LabName>().unwrap_err();
            assert!(err.to_string().contains("invalid lab name"), "{err}");
        }
    }

    #[test]
    fn a_lab_owns_exactly_its_namespaces() {
        let mesh: LabName = "mesh".parse().unwrap();
        for own in ["mesh-sw", "mesh-ctl", "mesh-n1", "mesh-n12", "mesh-p7"] {
            assert!(mesh.owns_netns(own), "{own}");
        }
        for other in [
            "mesh",
            "mesh-",
            "mesh-2-sw",
            "mesh-n1-sw",
            "meshy-sw",
            "mesh-px",
            "mesh-n",
            "x-sw",
        ] {
            assert!(!mesh.owns_netns(other), "{other}");
        }
        assert!(mesh.owns_pod_netns("mesh-p3"));
        assert!(!mesh.owns_pod_netns("mesh-n3"));
        let dashed: LabName = "mesh-n1".parse().unwrap();
        assert!(dashed.owns_netns("mesh-n1-sw"));
        assert!(!dashed.owns_netns("mesh-n1"));
    }

    #[test]
    fn node_names_map_to_indices() {
        assert_eq!(node_name(2), "node-2");
        assert_eq!(node_index("node-2", 2).unwrap(), 2);
        assert!(node_index("node-3", 2).is_err());
        assert!(node_index("node-0", 2).is_err());
        assert!(node_index("worker", 2).is_err());
    }
}
