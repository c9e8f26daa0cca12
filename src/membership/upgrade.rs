//! Rolling a cluster onto another etcd version where the operator restarts members itself
//! (`local`; on Kubernetes the StatefulSet's rolling update does it). Pure: one step at a time,
//! taken only when membership has nothing left to do.
//!
//! The rules, as etcd's upgrade guide gives them: one member at a time, each back, caught up
//! and healthy before the next; followers first (highest ordinal first), the leader last, and
//! the leader never stopped while it leads: leadership first moves to a member already on the
//! new version.

use super::planner::{Seen, Step, Wanted};
use crate::etcd::EndpointStatus;

/// A member whose raft index trails the leader's by more than this is still catching up.
pub const CAUGHT_UP_ENTRIES: u64 = 1000;

/// The next step of a roll to `version`, or `None` when every member runs it.
/// `members` is etcd's member list, `statuses` what each answering member reported.
pub fn next(
    version: &str,
    members: &[Seen],
    statuses: &[(String, EndpointStatus)],
    leader: Option<u64>,
    initial: &[Wanted],
) -> Option<Step> {
    let status = |m: &Seen| statuses.iter().find(|(n, _)| *n == m.name).map(|(_, s)| s);
    let behind: Vec<&Seen> =
        members.iter().filter(|m| status(m).is_none_or(|s| s.version != version)).collect();
    if behind.is_empty() {
        return None;
    }
    let wait = |reason: String| Some(Step::Wait { reason });
    if let Some(down) = members.iter().find(|m| !m.healthy || status(m).is_none()) {
        return wait(format!("upgrade to {version}: waiting for {} to be healthy", down.name));
    }
    if let Some(learner) = members.iter().find(|m| m.is_learner) {
        return wait(format!(
            "upgrade to {version}: waiting for learner {} to be promoted",
            learner.name
        ));
    }
    let indexes = statuses.iter().map(|(_, s)| s.raft_index);
    let newest = indexes.clone().max().unwrap_or_default();
    if let Some((name, _)) =
        statuses.iter().find(|(_, s)| newest.saturating_sub(s.raft_index) > CAUGHT_UP_ENTRIES)
    {
        return wait(format!("upgrade to {version}: waiting for {name} to catch up"));
    }
    let ordinal = |m: &&&Seen| etcd_certs::cluster::member_ordinal(&m.name);
    let follower = behind.iter().filter(|m| Some(m.id) != leader).max_by_key(ordinal);
    let member = match follower {
        Some(member) => member,
        None => {
            // Only the leader is left. Hand leadership to a member on the new version first.
            let leader_id = leader?;
            let upgraded = members
                .iter()
                .filter(|m| m.id != leader_id)
                .max_by_key(|m| etcd_certs::cluster::member_ordinal(&m.name));
            if let Some(to) = upgraded {
                return Some(Step::MoveLeader { from: leader_id, to: to.id });
            }
            behind.first()?
        }
    };
    Some(Step::Upgrade {
        name: member.name.clone(),
        version: version.to_owned(),
        initial: initial.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(i: u64) -> Seen {
        Seen { id: 10 + i, ..crate::membership::planner::voter(i) }
    }

    fn status(i: u64, version: &str, raft_index: u64) -> (String, EndpointStatus) {
        let s = EndpointStatus {
            member_id: 10 + i,
            leader: 10,
            cluster_id: 1,
            version: version.into(),
            raft_index,
            ..EndpointStatus::default()
        };
        (format!("c-{i}"), s)
    }

    #[test]
    fn followers_roll_first_highest_ordinal_first_and_the_leader_last_after_handing_over() {
        let members: Vec<Seen> = (0..3).map(seen).collect();
        let leader = Some(11); // c-1 leads
        let at = |versions: [&str; 3]| {
            let statuses: Vec<_> = (0..3).map(|i| status(i, versions[i as usize], 100)).collect();
            next("3.5.1", &members, &statuses, leader, &[])
        };
        let upgrade = |name: &str| Step::Upgrade {
            name: name.into(),
            version: "3.5.1".into(),
            initial: Vec::new(),
        };
        assert_eq!(at(["3.4.23", "3.4.23", "3.4.23"]), Some(upgrade("c-2")));
        assert_eq!(at(["3.4.23", "3.4.23", "3.5.1"]), Some(upgrade("c-0")));
        assert_eq!(at(["3.5.1", "3.4.23", "3.5.1"]), Some(Step::MoveLeader { from: 11, to: 12 }));
        assert_eq!(at(["3.5.1", "3.5.1", "3.5.1"]), None);
    }

    #[test]
    fn nothing_rolls_while_a_member_is_down_a_learner_or_behind_in_the_log() {
        let mut members: Vec<Seen> = (0..3).map(seen).collect();
        let statuses: Vec<_> =
            vec![status(0, "3.4.23", 100), status(1, "3.4.23", 100), status(2, "3.5.1", 100)];
        members[2].healthy = false;
        let step = next("3.5.1", &members, &statuses[..2], Some(10), &[]);
        assert!(matches!(&step, Some(Step::Wait { reason }) if reason.contains("c-2")), "{step:?}");

        members[2].healthy = true;
        let lagging =
            vec![status(0, "3.4.23", 5000), status(1, "3.4.23", 5000), status(2, "3.5.1", 100)];
        let step = next("3.5.1", &members, &lagging, Some(10), &[]);
        assert!(matches!(&step, Some(Step::Wait { reason }) if reason.contains("catch up")));

        members[1].is_learner = true;
        let step = next("3.5.1", &members, &statuses, Some(10), &[]);
        assert!(matches!(&step, Some(Step::Wait { reason }) if reason.contains("learner")));
    }

    #[test]
    fn a_single_member_is_simply_restarted() {
        let members = vec![seen(0)];
        let statuses = vec![status(0, "3.4.23", 1)];
        let step = next("3.5.1", &members, &statuses, Some(10), &[]);
        assert!(matches!(step, Some(Step::Upgrade { name, .. }) if name == "c-0"));
    }
}
