//! What differs between two maps sorted by the same key: both are walked side by side, so the
//! comparison is O(old + new) with each key compared once. Used wherever the controller
//! reduces a new version of something large to what changed (snapshots, pods).

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// How a key differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Only in the new map.
    Added,
    /// In both, with values that are not the same.
    Changed,
    /// Only in the old map.
    Removed,
}

/// The keys that differ, in key order; `same` decides whether two values of a key are equal.
pub fn sorted_diff<'a, K: Ord, V>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
) -> Vec<(&'a K, Difference)> {
    let mut out = Vec::new();
    let mut old = old.iter().peekable();
    let mut new = new.iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((old_key, _)), Some((new_key, _))) => old_key.cmp(new_key),
        };
        match order {
            Ordering::Less => {
                let (key, _) = old.next().expect("peeked");
                out.push((key, Difference::Removed));
            }
            Ordering::Greater => {
                let (key, _) = new.next().expect("peeked");
                out.push((key, Difference::Added));
            }
            Ordering::Equal => {
                let (_, old_value) = old.next().expect("peeked");
                let (key, new_value) = new.next().expect("peeked");
                if !same(old_value, new_value) {
                    out.push((key, Difference::Changed));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_difference_is_found_in_key_order() {
        let old = BTreeMap::from([(1, 'a'), (2, 'b'), (4, 'd'), (6, 'f')]);
        let new = BTreeMap::from([(2, 'b'), (3, 'c'), (4, 'D'), (7, 'g')]);
        let diff = sorted_diff(&old, &new, |a, b| a == b);
        let got: Vec<(i32, Difference)> = diff.into_iter().map(|(k, d)| (*k, d)).collect();
        use Difference::*;
        assert_eq!(
            got,
            [
                (1, Removed),
                (3, Added),
                (4, Changed),
                (6, Removed),
                (7, Added)
            ]
        );
        assert!(sorted_diff(&old, &old, |a, b| a == b).is_empty());
    }
}
