//! Launch groups: consecutive launches of a plan that share one payer and an identical ladder
//! (so the same rung: image, type, subnet, capacity, security groups, instance profile, root
//! volume and template, which come from the payer and the ladder) go out as one RunInstances
//! of `k` instances. EC2's RunInstances request bucket refills at 2 calls/s, its resource
//! bucket at 2 instances/s from a burst of 1,000: one call per group, not per job, launches a
//! burst in seconds.
//!
//! Groups are runs of the plan's order, never reordered and never mixing payers, so a group
//! never lets a lower-ranked job take a slot a higher-ranked one could have used: the jobs a
//! pass launches are a prefix of the plan's launches. Grouping spends nothing the plan did not
//! already reserve: a group of `k` is `k` of the instance and vCPU caps and of the resource
//! bucket (the plan's), and one call of the request bucket.

use std::ops::Range;

use crate::plan::Launch;

/// The largest group one RunInstances may launch: DynamoDB's limit on a transaction's items, as
/// a group's jobs are marked `launching` in one transaction.
pub const MAX_GROUP: u32 = 100;

/// The deployment's default most jobs per group: large enough that a burst of a thousand
/// takes 20 calls (under 10 s of EC2's request bucket), small enough that one group's
/// user-data table stays well inside EC2's 16 KB once compressed.
pub const DEFAULT_MAX_GROUP: u32 = 50;

/// Splits `keys` (one per launch, in the plan's order) into runs of equal keys, each of at
/// most `max(key)` (at least 1) members, and returns at most `max_calls` of them, in order.
pub fn runs_by<K: PartialEq>(
    keys: &[K],
    max: impl Fn(&K) -> u32,
    max_calls: usize,
) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let joins = runs.last().is_some_and(|r| {
            keys[r.start] == *key && r.end == i && (r.len() as u32) < max(key).max(1)
        });
        if joins {
            if let Some(r) = runs.last_mut() {
                r.end = i + 1;
            }
        } else {
            if runs.len() == max_calls {
                break;
            }
            runs.push(i..i + 1);
        }
    }
    runs
}

/// The launch groups of a plan's launches: runs of one payer and ladder, at most
/// `max_group` each (or the payer's own maximum, `payer_max`, when it is lower), at most
/// `max_calls` groups.
pub fn group_launches(
    launches: &[Launch<'_>],
    max_group: u32,
    payer_max: impl Fn(&str) -> Option<u32>,
    max_calls: usize,
) -> Vec<Range<usize>> {
    let keys: Vec<(&str, &[crate::sizing::Rung])> = launches
        .iter()
        .map(|l| (l.payer_id, l.ladder.as_slice()))
        .collect();
    runs_by(
        &keys,
        |(payer, _)| payer_max(payer).map_or(max_group, |p| p.min(max_group)),
        max_calls,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_equal_keys_capped_in_size_and_count() {
        let keys = ["a", "a", "a", "b", "a", "a"];
        assert_eq!(runs_by(&keys, |_| 2, 10), vec![0..2, 2..3, 3..4, 4..6]);
        assert_eq!(runs_by(&keys, |_| 10, 10), vec![0..3, 3..4, 4..6]);
        assert_eq!(runs_by(&keys, |_| 10, 2), vec![0..3, 3..4]);
        assert_eq!(runs_by(&keys, |_| 0, 10).len(), 6, "0 means 1");
        assert!(runs_by::<&str>(&[], |_| 5, 10).is_empty());
    }
}
