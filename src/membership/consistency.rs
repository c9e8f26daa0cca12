//! Data consistency: every voter's key-value store compared at one revision, as etcd's own
//! corruption check compares them (`HashKV` at the same revision, compared only between members
//! compacted at the same revision). A member whose data differs from what a quorum of voters
//! holds serves wrong reads, and raft cannot mend it (its log says the entries were applied): it
//! is replaced, learner-first from the others, under the same guards as any replacement. A
//! member etcd itself raised `CORRUPT` for is replaced the same way. etcd 3.5's compaction
//! check raises it for no member (ID 0: "it isn't clear which member's data is corrupted"),
//! and refuses requests meanwhile: then the hashes say which, and the alarm is disarmed once a
//! check made under it finds every voter agrees. When no quorum agrees, nothing is replaced:
//! which copy is right is a person's call. Pure: what the hashes say, what to do about it, and
//! when to look again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::planner::{Seen, Step, quorum};
use crate::etcd::{AlarmKind, EndpointStatus, KvHash};

/// The alarm etcd raises when its own check finds members' data differ.
pub const CORRUPT: &str = "CORRUPT";

/// A check that could not compare is tried again this soon, not a whole interval later.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every voter holds the same data at `revision`.
    Consistent { revision: i64, members: usize },
    /// A quorum of voters agrees at `revision`; these members (ID, name) hold other data.
    Inconsistent { revision: i64, odd: Vec<(u64, String)> },
    /// The voters differ and no quorum agrees: nothing is replaced.
    Split { revision: i64, groups: Vec<Vec<String>> },
    /// Nothing could be compared (why); asked again after [`RETRY_AFTER`].
    Unknown { reason: String },
}

impl Verdict {
    /// The condition `DataConsistent` (status, reason, message); none from a check that could
    /// not compare (the last one that could stands).
    pub fn condition(&self) -> Option<(bool, &'static str, String)> {
        match self {
            Verdict::Consistent { revision, members } => Some((
                true,
                "Consistent",
                format!("the {members} voters hold the same data at revision {revision}"),
            )),
            Verdict::Inconsistent { revision, odd } => {
                let names: Vec<&str> = odd.iter().map(|(_, n)| n.as_str()).collect();
                Some((
                    false,
                    "Inconsistent",
                    format!(
                        "{} {} other data than a quorum of voters at revision {revision}; replaced from the others (learner first)",
                        names.join(", "),
                        if names.len() == 1 { "holds" } else { "hold" }
                    ),
                ))
            }
            Verdict::Split { revision, groups } => {
                let groups: Vec<String> = groups.iter().map(|g| g.join(", ")).collect();
                Some((
                    false,
                    "NoQuorumAgrees",
                    format!(
                        "the voters hold different data at revision {revision} and no quorum agrees ({}); nothing is replaced: restore a verified backup, or replace the members whose data is wrong",
                        groups.join(" / ")
                    ),
                ))
            }
            Verdict::Unknown { .. } => None,
        }
    }

    /// The members to replace, by ID.
    pub fn odd(&self) -> BTreeSet<u64> {
        match self {
            Verdict::Inconsistent { odd, .. } => odd.iter().map(|(id, _)| *id).collect(),
            _ => BTreeSet::new(),
        }
    }
}

/// Judges the voters' hashes at `revision` (`voters` of them in the member list; those whose
/// hash could not be read are missing from `hashes`).
pub fn judge(revision: i64, voters: usize, hashes: &[(u64, String, KvHash)]) -> Verdict {
    if hashes.len() < voters {
        return Verdict::Unknown {
            reason: format!("{} of {voters} voters gave their hash", hashes.len()),
        };
    }
    let compactions: BTreeSet<i64> = hashes.iter().map(|(_, _, h)| h.compact_revision).collect();
    if compactions.len() > 1 {
        return Verdict::Unknown {
            reason: format!("a compaction is being applied (compacted at {compactions:?})"),
        };
    }
    let mut groups: BTreeMap<u32, Vec<&(u64, String, KvHash)>> = BTreeMap::new();
    for entry in hashes {
        groups.entry(entry.2.hash).or_default().push(entry);
    }
    if groups.len() <= 1 {
        return Verdict::Consistent { revision, members: hashes.len() };
    }
    let largest = groups.values().map(Vec::len).max().unwrap_or(0);
    let agreed =
        groups.values().filter(|g| g.len() == largest).count() == 1 && largest >= quorum(voters);
    if !agreed {
        let mut groups: Vec<Vec<String>> = groups
            .into_values()
            .map(|g| g.into_iter().map(|(_, n, _)| n.clone()).collect())
            .collect();
        groups.sort();
        return Verdict::Split { revision, groups };
    }
    let odd = groups
        .into_values()
        .filter(|g| g.len() < largest)
        .flatten()
        .map(|(id, name, _)| (*id, name.clone()))
        .collect();
    Verdict::Inconsistent { revision, odd }
}

/// The last check of a cluster: how long ago, what it found, and whether etcd's CORRUPT alarm
/// was raised while it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub ago: Duration,
    pub verdict: Verdict,
    pub under_alarm: bool,
}

/// Whether to check now: never checked, the interval passed, a check that could not compare
/// was a while ago, a member found odd has since left the member list (replaced: the new one
/// is checked as soon as membership is settled), or CORRUPT is raised (`alarmed`) and no check
/// was made under it.
pub fn due(last: Option<&Check>, every: Duration, members: &BTreeSet<u64>, alarmed: bool) -> bool {
    let Some(Check { ago, verdict, under_alarm }) = last else { return true };
    let ago = *ago;
    if alarmed && !under_alarm {
        return true;
    }
    match verdict {
        Verdict::Unknown { .. } => ago >= RETRY_AFTER.min(every),
        Verdict::Inconsistent { odd, .. } if odd.iter().any(|(id, _)| !members.contains(id)) => {
            true
        }
        _ => ago >= every,
    }
}

/// The members etcd raised `CORRUPT` for, by ID.
pub fn corrupt(statuses: &[(String, EndpointStatus)]) -> BTreeSet<u64> {
    statuses
        .iter()
        .flat_map(|(_, s)| &s.alarms)
        .filter(|a| a.kind == CORRUPT)
        .map(|a| a.member_id)
        .collect()
}

/// The next step after `last` check, with etcd's CORRUPT alarm raised for `corrupt` (by member
/// ID; 0 names none). A member the check found odd, or the alarm names, is removed while the
/// other voters keep a quorum that answers (the planner then stops it, wipes its data and adds
/// it back as a learner), the leader after handing leadership to a voter whose data agrees. The
/// alarm is disarmed for a member no longer in the list, and for none (0) once a check made
/// under it found every voter agrees. `None` when there is nothing to do, or no quorum to spare.
pub fn next(
    members: &[Seen],
    leader: Option<u64>,
    last: Option<&Check>,
    corrupt: &BTreeSet<u64>,
) -> Option<Step> {
    let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
    let agreed =
        last.is_some_and(|c| c.under_alarm && matches!(c.verdict, Verdict::Consistent { .. }));
    let cleared: Vec<u64> = corrupt
        .iter()
        .copied()
        .filter(|id| if *id == 0 { agreed } else { !ids.contains(id) })
        .collect();
    if !cleared.is_empty() {
        return Some(Step::Disarm { alarm: AlarmKind::Corrupt, members: cleared });
    }
    let mut odd = last.map(|c| c.verdict.odd()).unwrap_or_default();
    odd.extend(corrupt.iter().copied().filter(|id| *id != 0));
    let voters: Vec<&Seen> = members.iter().filter(|m| !m.is_learner).collect();
    let member = voters.iter().find(|m| odd.contains(&m.id))?;
    let sound: Vec<&&Seen> = voters.iter().filter(|m| m.healthy && !odd.contains(&m.id)).collect();
    if voters.len() < 2 || sound.len() < quorum(voters.len() - 1) {
        return None;
    }
    if leader == Some(member.id) {
        let to = sound.first()?;
        return Some(Step::MoveLeader { from: member.id, to: to.id });
    }
    Some(Step::Remove { id: member.id, name: member.name.clone() })
}

/// The last check of each cluster, in the process's memory: a restarted operator checks at
/// once, which costs one hash per member.
#[derive(Default)]
pub struct Checks(Mutex<HashMap<String, (Instant, Verdict, bool)>>);

impl Checks {
    pub fn last(&self, cluster: &str) -> Option<Check> {
        let memory = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        memory.get(cluster).map(|(at, verdict, under_alarm)| Check {
            ago: at.elapsed(),
            verdict: verdict.clone(),
            under_alarm: *under_alarm,
        })
    }

    pub fn record(&self, cluster: &str, verdict: Verdict, under_alarm: bool) {
        let mut memory = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        memory.insert(cluster.to_owned(), (Instant::now(), verdict, under_alarm));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(id: u64, hash: u32) -> (u64, String, KvHash) {
        (id, format!("c-{id}"), KvHash { hash, compact_revision: 7 })
    }

    fn seen(id: u64, healthy: bool) -> Seen {
        Seen {
            id,
            name: format!("c-{id}"),
            peer_url: format!("https://c-{id}:2380"),
            is_learner: false,
            running: true,
            healthy,
            has_data: true,
            failing: false,
        }
    }

    #[test]
    fn the_member_a_quorum_disagrees_with_is_odd_and_without_a_quorum_nobody_is() {
        assert_eq!(
            judge(10, 3, &[hash(0, 1), hash(1, 1), hash(2, 1)]),
            Verdict::Consistent { revision: 10, members: 3 }
        );
        assert_eq!(
            judge(10, 3, &[hash(0, 1), hash(1, 9), hash(2, 1)]),
            Verdict::Inconsistent { revision: 10, odd: vec![(1, "c-1".into())] }
        );
        // Five voters, two differ from three.
        let five = [hash(0, 1), hash(1, 2), hash(2, 1), hash(3, 2), hash(4, 1)];
        assert_eq!(judge(10, 5, &five).odd(), BTreeSet::from([1, 3]));
        // Three ways apart: no quorum agrees, so nothing is odd.
        let split = judge(10, 3, &[hash(0, 1), hash(1, 2), hash(2, 3)]);
        assert!(matches!(split, Verdict::Split { .. }), "{split:?}");
        assert!(split.odd().is_empty());
        // Two of four agree: not a quorum.
        let even = judge(10, 4, &[hash(0, 1), hash(1, 1), hash(2, 2), hash(3, 2)]);
        assert!(matches!(even, Verdict::Split { .. }), "{even:?}");
        let (ok, _, message) = split.condition().unwrap();
        assert!(!ok);
        assert!(message.contains("c-0 / c-1 / c-2"), "{message}");
    }

    #[test]
    fn hashes_are_compared_only_when_every_voter_gave_one_at_the_same_compaction() {
        let missing = judge(10, 3, &[hash(0, 1), hash(1, 9)]);
        assert!(matches!(missing, Verdict::Unknown { .. }), "{missing:?}");
        let mut compacting = [hash(0, 1), hash(1, 9), hash(2, 1)];
        compacting[1].2.compact_revision = 8;
        let verdict = judge(10, 3, &compacting);
        assert!(matches!(verdict, Verdict::Unknown { .. }), "{verdict:?}");
        assert!(verdict.odd().is_empty());
    }

    fn check(seconds: u64, verdict: &Verdict, under_alarm: bool) -> Check {
        Check { ago: Duration::from_secs(seconds), verdict: verdict.clone(), under_alarm }
    }

    #[test]
    fn checked_every_interval_sooner_after_a_failed_check_a_replacement_or_an_alarm() {
        let every = Duration::from_secs(300);
        let members = BTreeSet::from([0, 1, 2]);
        let fine = Verdict::Consistent { revision: 1, members: 3 };
        assert!(due(None, every, &members, false));
        assert!(!due(Some(&check(299, &fine, false)), every, &members, false));
        assert!(due(Some(&check(300, &fine, false)), every, &members, false));
        let unknown = Verdict::Unknown { reason: "r".into() };
        assert!(!due(Some(&check(29, &unknown, false)), every, &members, false));
        assert!(due(Some(&check(30, &unknown, false)), every, &members, false));
        let odd = Verdict::Inconsistent { revision: 1, odd: vec![(2, "c-2".into())] };
        assert!(!due(Some(&check(5, &odd, false)), every, &members, false));
        let replaced = BTreeSet::from([0, 1, 3]);
        assert!(due(Some(&check(5, &odd, false)), every, &replaced, false));
        // CORRUPT raised since the last check: at once, then as usual.
        assert!(due(Some(&check(1, &fine, false)), every, &members, true));
        assert!(!due(Some(&check(1, &fine, true)), every, &members, true));
    }

    #[test]
    fn an_odd_member_is_removed_while_the_others_keep_a_quorum_the_leader_after_a_handover() {
        let none = BTreeSet::new();
        let odd =
            check(1, &Verdict::Inconsistent { revision: 1, odd: vec![(2, "c-2".into())] }, false);
        let members = [seen(0, true), seen(1, true), seen(2, true)];
        assert_eq!(
            next(&members, Some(0), Some(&odd), &none),
            Some(Step::Remove { id: 2, name: "c-2".into() })
        );
        assert_eq!(
            next(&members, Some(2), Some(&odd), &none),
            Some(Step::MoveLeader { from: 2, to: 0 })
        );
        let fine = check(1, &Verdict::Consistent { revision: 1, members: 3 }, false);
        assert_eq!(next(&members, Some(0), Some(&fine), &none), None);
        assert_eq!(next(&members, Some(0), None, &none), None);
        // Another voter down: removing the odd one would leave one of two.
        let members = [seen(0, true), seen(1, false), seen(2, true)];
        assert_eq!(next(&members, Some(0), Some(&odd), &none), None);
    }

    /// A member etcd raised CORRUPT for is replaced like one whose hash differs; the alarm is
    /// disarmed once it is no longer a member (etcd refuses requests while it is raised). One
    /// raised for no member (etcd 3.5) is disarmed only once a check under it found the voters
    /// agree: before, the hashes say whom to replace.
    #[test]
    fn a_member_raised_corrupt_for_is_replaced_then_the_alarm_disarmed() {
        let members = [seen(0, true), seen(1, true), seen(2, true)];
        assert_eq!(
            next(&members, Some(0), None, &BTreeSet::from([1])),
            Some(Step::Remove { id: 1, name: "c-1".into() })
        );
        let replaced = [seen(0, true), seen(3, true), seen(2, true)];
        assert_eq!(
            next(&replaced, Some(0), None, &BTreeSet::from([1])),
            Some(Step::Disarm { alarm: AlarmKind::Corrupt, members: vec![1] })
        );
        let anonymous = BTreeSet::from([0]);
        let fine = Verdict::Consistent { revision: 1, members: 3 };
        assert_eq!(next(&members, Some(0), None, &anonymous), None);
        assert_eq!(next(&members, Some(0), Some(&check(1, &fine, false)), &anonymous), None);
        assert_eq!(
            next(&members, Some(0), Some(&check(1, &fine, true)), &anonymous),
            Some(Step::Disarm { alarm: AlarmKind::Corrupt, members: vec![0] })
        );
        let odd = Verdict::Inconsistent { revision: 1, odd: vec![(2, "c-2".into())] };
        assert_eq!(
            next(&members, Some(0), Some(&check(1, &odd, true)), &anonymous),
            Some(Step::Remove { id: 2, name: "c-2".into() })
        );
    }
}
