//! Space back after etcd's NOSPACE alarm, without a person. etcd raises it when a member's
//! backend file reaches `--quota-backend-bytes`; from then on the whole cluster refuses writes
//! until space is freed and the alarm disarmed. What frees it, in etcd's own order (its
//! maintenance guide): compact the history, defragment every member (a member's file shrinks
//! only then: etcd judges the quota by the file's size), disarm. Pure: one step at a time, taken
//! only when membership and upgrades have nothing left to do.
//!
//! A defragmentation stops the member from serving while it runs: one member at a time, only
//! while the others keep a quorum, followers first (highest ordinal first) and the leader last,
//! after handing leadership to another member, as a roll does.
//!
//! Whether a member was defragmented since the compaction cannot be read from etcd: after a
//! compaction the freed pages stay "pending", and counted as in use, until the backend's next
//! commit, which NOSPACE (no writes) never brings; a defragmented member and one not yet
//! defragmented both report their file as full of data. So the operator remembers, in its own
//! memory, which members it defragmented at the compacted revision ([`Defragmented`]); a
//! restarted operator defragments them once more, never in a loop. With every member
//! defragmented, what each file still holds is data: if that nearly fills the quota, it is
//! reported instead of disarmed (the next write would raise the alarm again).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use super::planner::{Seen, Step, quorum};
use crate::etcd::{AlarmKind, EndpointStatus};

/// The alarm etcd raises when a backend reaches its quota.
pub const NOSPACE: &str = "NOSPACE";

/// Data that fills more of the quota than this with the history compacted and every member
/// defragmented is more than the quota can hold.
const FULL_PERCENT: i64 = 90;

/// What the planner needs besides membership, observed only while NOSPACE is raised.
#[derive(Clone, Debug, Default)]
pub struct Space {
    /// Each member's `--quota-backend-bytes`.
    pub quota: i64,
    /// The current revision.
    pub revision: i64,
    /// The history before it is compacted away.
    pub compacted: bool,
    /// Members defragmented at this revision.
    pub defragmented: BTreeSet<String>,
}

/// The members the operator defragmented, by cluster, at the revision they were defragmented at
/// (under NOSPACE no write moves it). In the process's memory: see the module's documentation.
#[derive(Default)]
pub struct Defragmented(Mutex<HashMap<String, (i64, BTreeSet<String>)>>);

impl Defragmented {
    /// Those of `cluster` defragmented at `revision`.
    pub fn at(&self, cluster: &str, revision: i64) -> BTreeSet<String> {
        let memory = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match memory.get(cluster) {
            Some((at, names)) if *at == revision => names.clone(),
            _ => BTreeSet::new(),
        }
    }

    /// `member` of `cluster` was defragmented at `revision`.
    pub fn record(&self, cluster: &str, revision: i64, member: &str) {
        let mut memory = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = memory.entry(cluster.to_owned()).or_default();
        if entry.0 != revision {
            *entry = (revision, BTreeSet::new());
        }
        entry.1.insert(member.to_owned());
    }
}

/// The members NOSPACE is raised for, by ID; empty when it is not raised.
pub fn raised(statuses: &[(String, EndpointStatus)]) -> Vec<u64> {
    let mut ids: Vec<u64> = statuses
        .iter()
        .flat_map(|(_, s)| &s.alarms)
        .filter(|a| a.kind == NOSPACE)
        .map(|a| a.member_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The next step of freeing space, or `None` when NOSPACE is not raised.
pub fn next(
    members: &[Seen],
    statuses: &[(String, EndpointStatus)],
    leader: Option<u64>,
    space: &Space,
) -> Option<Step> {
    let alarmed = raised(statuses);
    if alarmed.is_empty() {
        return None;
    }
    let wait = |reason: String| Some(Step::Wait { reason });
    if !space.compacted {
        return Some(Step::Compact);
    }
    let status = |m: &Seen| statuses.iter().find(|(n, _)| *n == m.name).map(|(_, s)| s);
    let voters: Vec<&Seen> = members.iter().filter(|m| !m.is_learner).collect();
    let ordinal = |m: &&Seen| etcd_certs::cluster::member_ordinal(&m.name);
    let pending: Vec<&Seen> =
        voters.iter().copied().filter(|m| !space.defragmented.contains(&m.name)).collect();
    let defragment = |m: &Seen| Step::Defragment { name: m.name.clone(), revision: space.revision };
    if let Some(member) =
        pending.iter().copied().filter(|m| Some(m.id) != leader).max_by_key(ordinal)
    {
        let healthy = voters.iter().filter(|m| m.healthy && status(m).is_some()).count();
        let others_keep_quorum = healthy > quorum(voters.len());
        return match others_keep_quorum || voters.len() == 1 {
            true => Some(defragment(member)),
            false => wait(format!(
                "NOSPACE: defragmenting {} would leave fewer than a quorum serving; waiting for every member to be healthy",
                member.name
            )),
        };
    }
    if let Some(leading) = pending.first() {
        // Only the leader is left: hand leadership to another member first.
        let to =
            voters.iter().copied().filter(|m| m.id != leading.id && m.healthy).max_by_key(ordinal);
        return match to {
            Some(to) => Some(Step::MoveLeader { from: leading.id, to: to.id }),
            None => Some(defragment(leading)),
        };
    }
    if let Some((name, full)) = statuses
        .iter()
        .find(|(_, s)| s.db_size * 100 >= space.quota * FULL_PERCENT)
        .map(|(n, s)| (n, s.db_size))
    {
        return wait(format!(
            "NOSPACE: {name} holds {full} bytes of data with the history compacted and every member defragmented, {}% of quotaBackendBytes ({}): more than the quota can hold. Raise spec.options.quotaBackendBytes (etcd suggests at most 8 GiB) or delete keys (deletes are accepted under NOSPACE); the operator then compacts, defragments and disarms",
            full * 100 / space.quota.max(1),
            space.quota
        ));
    }
    Some(Step::Disarm { alarm: AlarmKind::Nospace, members: alarmed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::Alarm;

    const MIB: i64 = 1024 * 1024;
    const QUOTA: i64 = 4 * MIB;

    fn seen(i: u64) -> Seen {
        Seen { id: 10 + i, ..crate::membership::planner::voter(i) }
    }

    /// Member c-`i` with a backend file of `size` MiB, NOSPACE raised.
    fn status(i: u64, size: i64) -> (String, EndpointStatus) {
        let s = EndpointStatus {
            member_id: 10 + i,
            leader: 11,
            cluster_id: 1,
            version: "3.5.21".into(),
            raft_index: 100,
            alarms: vec![Alarm { member_id: 10, kind: NOSPACE.into() }],
            db_size: size * MIB,
            db_size_in_use: size * MIB,
            ..EndpointStatus::default()
        };
        (format!("c-{i}"), s)
    }

    fn space(compacted: bool, defragmented: &[&str]) -> Space {
        Space {
            quota: QUOTA,
            revision: 21,
            compacted,
            defragmented: defragmented.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn compact_then_defragment_followers_then_the_leader_after_handing_over_then_disarm() {
        let members: Vec<Seen> = (0..3).map(seen).collect();
        let at = |sizes: [i64; 3], leader: u64, space: Space| {
            let statuses: Vec<_> = (0..3).map(|i| status(i, sizes[i as usize])).collect();
            next(&members, &statuses, Some(leader), &space)
        };
        let full = [4, 4, 4];
        assert_eq!(at(full, 11, space(false, &[])), Some(Step::Compact));
        let defragment = |name: &str| Some(Step::Defragment { name: name.into(), revision: 21 });
        assert_eq!(at(full, 11, space(true, &[])), defragment("c-2"));
        assert_eq!(at([4, 4, 1], 11, space(true, &["c-2"])), defragment("c-0"));
        assert_eq!(
            at([1, 4, 1], 11, space(true, &["c-0", "c-2"])),
            Some(Step::MoveLeader { from: 11, to: 12 })
        );
        assert_eq!(at([1, 4, 1], 12, space(true, &["c-0", "c-2"])), defragment("c-1"));
        assert_eq!(
            at([1, 1, 1], 12, space(true, &["c-0", "c-1", "c-2"])),
            Some(Step::Disarm { alarm: AlarmKind::Nospace, members: vec![10] })
        );
    }

    #[test]
    fn nothing_without_nospace() {
        let members: Vec<Seen> = (0..3).map(seen).collect();
        let mut statuses: Vec<_> = (0..3).map(|i| status(i, 4)).collect();
        for (_, s) in &mut statuses {
            s.alarms = vec![Alarm { member_id: 10, kind: "CORRUPT".into() }];
        }
        assert_eq!(next(&members, &statuses, Some(11), &space(false, &[])), None);
    }

    /// Compacted and every member defragmented, the files still fill the quota: that is data.
    #[test]
    fn data_that_fills_the_quota_is_reported_not_looped_on() {
        let members: Vec<Seen> = (0..3).map(seen).collect();
        let statuses: Vec<_> = (0..3).map(|i| status(i, 4)).collect();
        let step = next(&members, &statuses, Some(11), &space(true, &["c-0", "c-1", "c-2"]));
        let Some(Step::Wait { reason }) = step else { panic!("{step:?}") };
        assert!(
            reason.contains("quotaBackendBytes (4194304)")
                && reason.contains("c-0 holds 4194304 bytes"),
            "{reason}"
        );
    }

    #[test]
    fn no_member_is_defragmented_while_that_would_leave_no_quorum() {
        let mut members: Vec<Seen> = (0..3).map(seen).collect();
        members[0].healthy = false;
        let statuses: Vec<_> = (1..3).map(|i| status(i, 4)).collect();
        let step = next(&members, &statuses, Some(11), &space(true, &[]));
        assert!(
            matches!(&step, Some(Step::Wait { reason }) if reason.contains("quorum")),
            "{step:?}"
        );
        // Five members, one down: defragmenting one more still leaves three.
        let mut five: Vec<Seen> = (0..5).map(seen).collect();
        five[0].healthy = false;
        let statuses: Vec<_> = (1..5).map(|i| status(i, 4)).collect();
        assert_eq!(
            next(&five, &statuses, Some(11), &space(true, &[])),
            Some(Step::Defragment { name: "c-4".into(), revision: 21 })
        );
    }

    #[test]
    fn the_memory_is_of_one_revision() {
        let memory = Defragmented::default();
        memory.record("ns/c", 21, "c-2");
        memory.record("ns/c", 21, "c-1");
        assert_eq!(memory.at("ns/c", 21).len(), 2);
        assert!(memory.at("ns/c", 22).is_empty(), "a write since: another round");
        assert!(memory.at("ns/other", 21).is_empty());
        memory.record("ns/c", 30, "c-0");
        assert_eq!(memory.at("ns/c", 30).into_iter().collect::<Vec<_>>(), ["c-0"]);
    }
}
