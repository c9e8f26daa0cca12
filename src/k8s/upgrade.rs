//! Rolling version upgrades on Kubernetes. A version change changes the StatefulSet's image; the
//! StatefulSet's rolling update is held back by its partition (ordinals at or above it take the
//! new template), which the operator lowers one ordinal at a time, highest first, and only while
//! every member is a ready voter and every member already moved reports the new version. A member
//! that does not come back healthy on the new version stops the roll where it is.

use etcd_crds::{EtcdClusterStatus, MemberRole};

/// The partition to apply with a StatefulSet of `replicas` whose spec asks for `version`, given the
/// last observed status and the partition the StatefulSet has now (`None`: it does not exist yet).
pub fn partition(
    cluster: &str,
    version: &str,
    replicas: i32,
    status: &EtcdClusterStatus,
    current: Option<i32>,
) -> i32 {
    let Some(current) = current else { return 0 };
    let ordinal = |name: &str| {
        let ordinal = etcd_certs::cluster::member_ordinal(name.strip_prefix(cluster)?)?;
        i32::try_from(ordinal).ok()
    };
    let behind: Vec<i32> = status
        .members
        .iter()
        .filter(|m| m.version.as_deref() != Some(version))
        .filter_map(|m| ordinal(&m.name))
        .collect();
    if behind.is_empty() && status.members.len() == usize::try_from(replicas).unwrap_or(0) {
        return 0;
    }
    let healthy = status.members.len() == usize::try_from(replicas).unwrap_or(0)
        && status.members.iter().all(|m| m.ready && m.role == Some(MemberRole::Voter));
    let starting =
        !status.members.is_empty() && behind.len() == status.members.len() && current == 0;
    match behind.iter().max() {
        // The next member to move is the highest ordinal still behind (those above it have moved).
        Some(next) if healthy => *next,
        // A roll about to start on an unhealthy cluster: hold every pod back until it is healthy.
        _ if starting => replicas,
        // Mid-roll and unhealthy (or versions unknown): nothing more moves, nothing moves back.
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use etcd_crds::MemberStatus;

    use super::*;

    fn status(versions: &[(&str, bool)]) -> EtcdClusterStatus {
        EtcdClusterStatus {
            members: versions
                .iter()
                .enumerate()
                .map(|(i, (version, ready))| MemberStatus {
                    name: format!("c-{i}"),
                    version: Some((*version).to_owned()),
                    ready: *ready,
                    role: Some(MemberRole::Voter),
                    ..MemberStatus::default()
                })
                .collect(),
            ..EtcdClusterStatus::default()
        }
    }

    #[test]
    fn rolls_one_member_at_a_time_highest_first_while_all_are_healthy() {
        let at = |versions: &[(&str, bool)], current| {
            partition("c", "3.6.1", 3, &status(versions), Some(current))
        };
        // The version just changed (partition 0 until now): c-2 goes first.
        assert_eq!(at(&[("3.5.9", true), ("3.5.9", true), ("3.5.9", true)], 0), 2);
        // c-2 restarting on the new image (not ready): hold.
        assert_eq!(at(&[("3.5.9", true), ("3.5.9", true), ("3.5.9", false)], 2), 2);
        // c-2 back, on 3.6.1: c-1 next, then c-0, then done.
        assert_eq!(at(&[("3.5.9", true), ("3.5.9", true), ("3.6.1", true)], 2), 1);
        assert_eq!(at(&[("3.5.9", true), ("3.6.1", true), ("3.6.1", true)], 1), 0);
        assert_eq!(at(&[("3.6.1", true), ("3.6.1", true), ("3.6.1", true)], 0), 0);
    }

    #[test]
    fn a_roll_does_not_start_on_an_unhealthy_cluster() {
        let s = status(&[("3.5.9", true), ("3.5.9", false), ("3.5.9", true)]);
        assert_eq!(partition("c", "3.6.1", 3, &s, Some(0)), 3);
    }

    #[test]
    fn a_member_that_comes_back_unhealthy_stops_the_roll() {
        let s = status(&[("3.5.9", true), ("3.5.9", false), ("3.6.1", true)]);
        assert_eq!(partition("c", "3.6.1", 3, &s, Some(2)), 2);
    }

    #[test]
    fn a_new_statefulset_and_an_unchanged_version_have_no_partition() {
        assert_eq!(partition("c", "3.6.1", 3, &EtcdClusterStatus::default(), None), 0);
        // Members not observed yet (a cluster being created): the partition stays as it is.
        assert_eq!(partition("c", "3.6.1", 3, &EtcdClusterStatus::default(), Some(0)), 0);
        let s = status(&[("3.6.1", true), ("3.6.1", true), ("3.6.1", true)]);
        assert_eq!(partition("c", "3.6.1", 3, &s, Some(0)), 0);
    }
}
