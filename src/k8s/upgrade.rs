//! Rolling version upgrades on Kubernetes. A version change changes the StatefulSet's image; the
//! StatefulSet's rolling update is held back by its partition (ordinals at or above it take the
//! new template), which the operator lowers one ordinal at a time, highest first, and only while
//! every member is a ready voter and every member already moved reports the new version. A member
//! that does not come back healthy on the new version stops the roll where it is.
//!
//! The leader is never restarted while it leads: when the next ordinal to move is the leader's,
//! the partition holds and leadership first moves to another member, one already on the new
//! version when there is one (the rule `local` follows, in `membership::upgrade`).

use etcd_crds::{EtcdClusterStatus, MemberRole, MemberStatus};

/// What the roll does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roll {
    /// The partition to apply.
    pub partition: i32,
    /// Leadership to move first, from the leader to this member (the partition holds meanwhile).
    pub hand_over: Option<HandOver>,
}

/// A leadership transfer, by what the status recorded of the two members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOver {
    pub leader_url: String,
    pub to_id: u64,
    pub to: String,
}

/// The roll of a StatefulSet of `replicas` whose spec asks for `version`, given the last observed
/// status and the partition the StatefulSet has now (`None`: it does not exist yet).
pub fn roll(
    cluster: &str,
    version: &str,
    replicas: i32,
    status: &EtcdClusterStatus,
    current: Option<i32>,
) -> Roll {
    let partition = partition(cluster, version, replicas, status, current);
    let ordinal = |m: &MemberStatus| {
        let ordinal = etcd_certs::cluster::member_ordinal(m.name.strip_prefix(cluster)?)?;
        i32::try_from(ordinal).ok()
    };
    let behind = |m: &MemberStatus| m.version.as_deref() != Some(version);
    // What keeps every pod where it is: the partition now, or above every ordinal when the roll
    // is only starting (the template changes in this very apply).
    let starting = current == Some(0) && status.members.iter().all(behind);
    let hold = if starting { replicas } else { current.unwrap_or(partition) };
    let go = Roll { partition, hand_over: None };
    if partition >= hold {
        return go;
    }
    // The pods this partition restarts: those at or above it still on the old version.
    let moving = |m: &MemberStatus| behind(m) && ordinal(m).is_some_and(|o| o >= partition);
    let Some(leader) = status.members.iter().find(|m| m.leader && moving(m)) else {
        return go;
    };
    let id = |m: &MemberStatus| u64::from_str_radix(m.id.as_deref()?, 16).ok();
    let candidates = status.members.iter().filter(|m| !moving(m) && m.ready && id(m).is_some());
    let to = candidates
        .clone()
        .filter(|m| !behind(m))
        .max_by_key(|m| ordinal(m))
        .or_else(|| candidates.max_by_key(|m| ordinal(m)));
    match (to, &leader.client_url) {
        (Some(to), Some(leader_url)) => Roll {
            partition: hold,
            hand_over: Some(HandOver {
                leader_url: leader_url.clone(),
                to_id: id(to).unwrap_or_default(),
                to: to.name.clone(),
            }),
        },
        // A single member, or nobody to hand over to: it restarts as leader (etcd's graceful
        // stop hands over if it can).
        _ => go,
    }
}

fn partition(
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
            roll("c", "3.6.1", 3, &status(versions), Some(current)).partition
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
        assert_eq!(roll("c", "3.6.1", 3, &s, Some(0)).partition, 3);
    }

    #[test]
    fn a_member_that_comes_back_unhealthy_stops_the_roll() {
        let s = status(&[("3.5.9", true), ("3.5.9", false), ("3.6.1", true)]);
        assert_eq!(roll("c", "3.6.1", 3, &s, Some(2)).partition, 2);
    }

    #[test]
    fn a_new_statefulset_and_an_unchanged_version_have_no_partition() {
        assert_eq!(roll("c", "3.6.1", 3, &EtcdClusterStatus::default(), None).partition, 0);
        // Members not observed yet (a cluster being created): the partition stays as it is.
        assert_eq!(roll("c", "3.6.1", 3, &EtcdClusterStatus::default(), Some(0)).partition, 0);
        let s = status(&[("3.6.1", true), ("3.6.1", true), ("3.6.1", true)]);
        assert_eq!(roll("c", "3.6.1", 3, &s, Some(0)).partition, 0);
    }

    #[test]
    fn the_leader_hands_over_before_its_pod_restarts() {
        let mut s = status(&[("3.5.9", true), ("3.5.9", true), ("3.6.1", true)]);
        for (i, m) in s.members.iter_mut().enumerate() {
            m.id = Some(format!("{i:x}"));
            m.client_url = Some(format!("https://c-{i}:2379"));
        }
        s.members[1].leader = true;
        // c-1 is next and leads: the partition holds, leadership goes to c-2 (on 3.6.1).
        let next = roll("c", "3.6.1", 3, &s, Some(2));
        assert_eq!(next.partition, 2);
        let hand_over = next.hand_over.unwrap();
        assert_eq!(
            (hand_over.to.as_str(), hand_over.leader_url.as_str()),
            ("c-2", "https://c-1:2379")
        );
        // At the start of a roll, a leading c-2 hands over before any pod moves.
        let mut start = status(&[("3.5.9", true), ("3.5.9", true), ("3.5.9", true)]);
        start.members.clone_from(&s.members);
        start.members.iter_mut().for_each(|m| m.version = Some("3.5.9".into()));
        start.members[1].leader = false;
        start.members[2].leader = true;
        let first = roll("c", "3.6.1", 3, &start, Some(0));
        assert_eq!(first.partition, 3, "nothing moves yet");
        assert_eq!(first.hand_over.map(|h| h.to), Some("c-1".to_owned()));
        // Once c-2 leads, c-1 moves.
        s.members[1].leader = false;
        s.members[2].leader = true;
        assert_eq!(roll("c", "3.6.1", 3, &s, Some(2)), Roll { partition: 1, hand_over: None });
    }
}
