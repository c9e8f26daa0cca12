//! The planner: from what is desired and what is observed, the ONE next membership step.
//!
//! Pure and total. The rules (summed up in the README's architecture section): bootstrap
//! statically; grow by a learner that is started and then promoted, one member at a time;
//! shrink one member at a time, leader last, never below quorum; stop and restart from zero on
//! the same data; never add a voting member; never two learners.

use std::collections::BTreeSet;

use crate::etcd::AlarmKind;

/// A member the spec asks for: ordinal `i` of a cluster is `NAME-i` with a fixed peer URL.
pub type Wanted = crate::etcd::config::Peer;

/// One member in etcd's member list, with what the operator sees of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: u64,
    /// Known name: etcd's, or the wanted name whose peer URL matches (a learner has no name
    /// until it starts).
    pub name: String,
    pub peer_url: String,
    pub is_learner: bool,
    /// Its process (pod) runs.
    pub running: bool,
    /// It answered a status call.
    pub healthy: bool,
    /// Its data directory (volume) holds member data.
    pub has_data: bool,
    /// It has not answered for longer than the cluster's replacement threshold.
    pub failing: bool,
}

/// Everything the planner decides on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// etcd's member list, when some member answered; `None` when none did (or none runs).
    pub members: Option<Vec<Seen>>,
    /// Names whose process runs, member or not.
    pub running: BTreeSet<String>,
    /// Names whose data directory holds member data.
    pub with_data: BTreeSet<String>,
    /// Names whose process is on its way out but may still run (on Kubernetes, a Terminating
    /// pod within its grace period); looked for only when nothing should run.
    pub stopping: BTreeSet<String>,
    /// Names whose process a recovery started with `--force-new-cluster` and that would force
    /// again if it restarted (on Kubernetes, a container restart reuses the configuration its
    /// pod started with).
    pub forced: BTreeSet<String>,
    /// Names the platform is already starting again on its own (on Kubernetes, a rolled or
    /// crashed pod the StatefulSet and kubelet bring back): nothing for the operator to do.
    pub restarting: BTreeSet<String>,
    pub leader: Option<u64>,
    /// The cluster was bootstrapped before: a recorded cluster ID, or member data the adapter
    /// saw itself (never merely a volume that exists).
    pub bootstrapped: bool,
}

/// The one next action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Start every wanted member at once with a static initial cluster (`state=new`).
    Bootstrap {
        members: Vec<Wanted>,
    },
    /// Start members that have data but are not running (after a crash, or restart from zero):
    /// their data decides who they are; `initial` is the cluster they belong to.
    Restart {
        names: Vec<String>,
        initial: Vec<Wanted>,
    },
    /// Add a learner for this member.
    AddLearner {
        member: Wanted,
    },
    /// Start a learner that etcd already knows, joining `initial` (state=existing).
    StartLearner {
        member: Wanted,
        initial: Vec<Wanted>,
    },
    Promote {
        id: u64,
        name: String,
    },
    /// Move leadership off a member about to be removed.
    MoveLeader {
        from: u64,
        to: u64,
    },
    Remove {
        id: u64,
        name: String,
    },
    /// Stop a process that is no longer a member, and wipe its data so it can never rejoin stale.
    Retire {
        name: String,
    },
    /// Restart a member on another etcd version, keeping its data (where the operator rolls
    /// versions itself; see [`super::upgrade`]).
    Upgrade {
        name: String,
        version: String,
        initial: Vec<Wanted>,
    },
    /// Recover from quorum loss (see [`super::recovery`]): stop and wipe every member in
    /// `discard`, then restart `keep` alone on its data with `--force-new-cluster`.
    ForceNewCluster {
        keep: String,
        discard: Vec<String>,
    },
    /// The member a recovery forced answers alone: restart it on a configuration that does not
    /// force, before any learner joins, so that a later restart of its process cannot force a
    /// second new cluster beside the members that joined since.
    EndForce {
        name: String,
    },
    /// NOSPACE (see [`super::space`]): compact the history up to the current revision.
    Compact,
    /// NOSPACE: defragment one member's backend; it does not serve meanwhile. `revision` is the
    /// compacted revision it is defragmented at.
    Defragment {
        name: String,
        revision: i64,
    },
    /// What raised `alarm` is mended (NOSPACE: space is free again; CORRUPT: the members it
    /// was raised for are replaced); disarm it for these members.
    Disarm {
        alarm: AlarmKind,
        members: Vec<u64>,
    },
    /// Scale to zero: record the membership, then stop every member, keeping data.
    StopAll {
        names: Vec<String>,
    },
    Wait {
        reason: String,
    },
    Done,
}

impl Step {
    /// A short name, for logs, Events and the crash-test hook.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Bootstrap { .. } => "bootstrap",
            Step::Restart { .. } => "restart",
            Step::AddLearner { .. } => "add-learner",
            Step::StartLearner { .. } => "start-member",
            Step::Promote { .. } => "promote",
            Step::MoveLeader { .. } => "move-leader",
            Step::Remove { .. } => "remove",
            Step::Retire { .. } => "retire",
            Step::Upgrade { .. } => "upgrade",
            Step::ForceNewCluster { .. } => "force-new-cluster",
            Step::EndForce { .. } => "end-force",
            Step::Compact => "compact",
            Step::Defragment { .. } => "defragment",
            Step::Disarm { .. } => "disarm",
            Step::StopAll { .. } => "stop-all",
            Step::Wait { .. } => "wait",
            Step::Done => "done",
        }
    }
}

/// The step in words, for logs and Events: "adding demo-3 as a learner".
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |members: &[Wanted]| {
            members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
        };
        match self {
            Step::Bootstrap { members } => {
                write!(f, "bootstrapping a new cluster of {}", names(members))
            }
            Step::Restart { names, .. } => write!(f, "restarting {} on its data", names.join(", ")),
            Step::AddLearner { member } => write!(f, "adding {} as a learner", member.name),
            Step::StartLearner { member, .. } => write!(f, "starting learner {}", member.name),
            Step::Promote { name, .. } => write!(f, "promoting {name} to a voting member"),
            Step::MoveLeader { from, to } => {
                write!(
                    f,
                    "moving leadership from {from:x} to {to:x} before {from:x} is stopped or defragmented"
                )
            }
            Step::Remove { name, .. } => write!(f, "removing {name} from the cluster"),
            Step::Retire { name } => {
                write!(f, "stopping {name}, no longer a member, and wiping its data")
            }
            Step::Upgrade { name, version, .. } => {
                write!(f, "restarting {name} on etcd {version}, keeping its data")
            }
            Step::ForceNewCluster { keep, discard } => write!(
                f,
                "recovering from quorum loss: wiping {} and restarting {keep} alone on its data (--force-new-cluster)",
                discard.join(", ")
            ),
            Step::EndForce { name } => write!(
                f,
                "restarting {name}, recovered alone, on a configuration that no longer forces a new cluster"
            ),
            Step::Compact => write!(
                f,
                "NOSPACE: compacting the history up to the current revision to free space (older revisions can no longer be read or watched from)"
            ),
            Step::Defragment { name, .. } => {
                write!(f, "NOSPACE: defragmenting {name}, which serves nothing meanwhile")
            }
            Step::Disarm { alarm, members } => {
                let members = members.iter().map(|m| format!("{m:x}")).collect::<Vec<_>>();
                match alarm {
                    AlarmKind::Nospace => write!(
                        f,
                        "NOSPACE: space freed on every member; disarming the alarm of {}, writes are accepted again",
                        members.join(", ")
                    ),
                    AlarmKind::Corrupt => write!(
                        f,
                        "CORRUPT: the voters' data agree again; disarming the alarm of {} (0: raised for no member), requests are served again",
                        members.join(", ")
                    ),
                }
            }
            Step::StopAll { names } => {
                write!(f, "stopping every member ({}), keeping their data", names.join(", "))
            }
            Step::Wait { reason } => write!(f, "waiting: {reason}"),
            Step::Done => write!(f, "nothing to do"),
        }
    }
}

/// Votes needed for a majority of `voters`.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Whether the cluster has a quorum, seen from the operator: a majority of `voters` answers it,
/// or a member that answers follows a leader (`led`). The second holds when the operator is cut
/// off from a live majority (a NetworkPolicy, a CNI fault): etcd's leader steps down when it has
/// not heard from a quorum for an election timeout (raft's CheckQuorum, always on in etcd), and a
/// follower forgets its leader when it stops hearing from it, so a leader reported is a quorum
/// that worked within about a second. Counting only the members that answer would fence that
/// majority and force the minority.
pub fn quorum_present(voters: usize, answering: usize, led: bool) -> bool {
    voters > 0 && (answering >= quorum(voters) || led)
}

fn wait(reason: impl Into<String>) -> Step {
    Step::Wait { reason: reason.into() }
}

/// The next step towards `wanted` (ordinals `0..size`, in order).
pub fn next_step(wanted: &[Wanted], observed: &Observed) -> Step {
    let Some(members) = &observed.members else {
        return without_member_list(wanted, observed);
    };
    let voters: Vec<&Seen> = members.iter().filter(|m| !m.is_learner).collect();
    let healthy_voters = voters.iter().filter(|m| m.healthy).count();
    let as_wanted = |m: &Seen| Wanted { name: m.name.clone(), peer_url: m.peer_url.clone() };
    let current: Vec<Wanted> = members.iter().map(as_wanted).collect();
    let is_wanted = |m: &Seen| wanted.iter().any(|w| w.peer_url == m.peer_url);

    if wanted.is_empty() {
        return stop_all(observed);
    }

    // A voter that has not answered for too long (crash-looping, corrupt data, a lost node):
    // replace it while the others keep quorum. It is removed first; Retire then stops it and wipes
    // its data, and it joins again as a new learner. Without quorum to spare, it is restarted.
    if let Some(failed) = voters.iter().find(|m| m.failing && !m.healthy)
        && voters.len() > 1
        && healthy_voters >= quorum(voters.len() - 1)
    {
        return Step::Remove { id: failed.id, name: failed.name.clone() };
    }

    // Members that should run but do not, and still have their data: start them again, unless
    // the platform already is.
    let down: Vec<&Seen> =
        members.iter().filter(|m| !m.is_learner && !m.running && m.has_data).collect();
    let (coming_back, to_start): (Vec<&Seen>, Vec<&Seen>) =
        down.into_iter().partition(|m| observed.restarting.contains(&m.name));
    if !to_start.is_empty() {
        return Step::Restart {
            names: to_start.iter().map(|m| m.name.clone()).collect(),
            initial: current,
        };
    }
    if let Some(member) = coming_back.first() {
        return wait(format!("{} is restarting", member.name));
    }

    // Processes that are no longer members (removed, or a learner removed before it started).
    if let Some(name) = observed.running.iter().find(|n| !members.iter().any(|m| &m.name == *n)) {
        return Step::Retire { name: name.clone() };
    }

    // Recovered alone: no longer forcing before anyone joins it. Not before it leads: the
    // member list it answers with comes from the forced entries applied at its start, which
    // are durable only once it has led (its first commit as leader is written with them); a
    // restart before that finds the old membership and never gets a quorum (seen in CI).
    if let [only] = members.as_slice()
        && observed.forced.contains(&only.name)
    {
        return if only.healthy && observed.leader == Some(only.id) {
            Step::EndForce { name: only.name.clone() }
        } else {
            wait(format!("{} forced a new cluster and is not leading yet", only.name))
        };
    }

    // A learner in flight: finish it (or drop it if it is no longer wanted).
    let learners: Vec<&Seen> = members.iter().filter(|m| m.is_learner).collect();
    if let Some(learner) = learners.first() {
        if !is_wanted(learner) {
            return Step::Remove { id: learner.id, name: learner.name.clone() };
        }
        if !learner.running {
            if observed.restarting.contains(&learner.name) {
                return wait(format!("learner {} is restarting", learner.name));
            }
            if learner.has_data {
                // Started before, with data of its own: etcd remembers it; just run it.
                return Step::Restart { names: vec![learner.name.clone()], initial: current };
            }
            return Step::StartLearner { member: as_wanted(learner), initial: current };
        }
        if !learner.healthy {
            return wait(format!("learner {} is starting", learner.name));
        }
        return Step::Promote { id: learner.id, name: learner.name.clone() };
    }

    // A voter lost its data (volume gone): replace it, remove first, if quorum allows.
    if let Some(lost) = voters.iter().find(|m| !m.running && !m.has_data) {
        return if voters.len() > 1 && healthy_voters >= quorum(voters.len() - 1) {
            Step::Remove { id: lost.id, name: lost.name.clone() }
        } else {
            wait(format!("member {} lost its data but removing it would break quorum", lost.name))
        };
    }

    if let Some(sick) = voters.iter().find(|m| !m.healthy) {
        return wait(format!("member {} does not answer", sick.name));
    }

    // Grow: the lowest wanted ordinal that is not a member becomes a learner.
    if let Some(missing) = wanted.iter().find(|w| !members.iter().any(|m| m.peer_url == w.peer_url))
    {
        return Step::AddLearner { member: missing.clone() };
    }

    // Shrink: the highest ordinal first (a StatefulSet only removes pods from the top);
    // leadership moves off it before it goes.
    if let Some(extra) = voters
        .iter()
        .filter(|m| !is_wanted(m))
        .max_by_key(|m| etcd_certs::cluster::member_ordinal(&m.name))
    {
        if voters.len() == 1 || healthy_voters.saturating_sub(1) < quorum(voters.len() - 1) {
            return wait("a removal now could lose quorum");
        }
        if observed.leader == Some(extra.id) {
            if let Some(to) = voters.iter().find(|m| is_wanted(m) && m.healthy) {
                return Step::MoveLeader { from: extra.id, to: to.id };
            }
            return wait("no healthy member to hand leadership to");
        }
        return Step::Remove { id: extra.id, name: extra.name.clone() };
    }
    Step::Done
}

/// Size zero: every process stopped, and done only once none may still run (a stopped cluster
/// whose last member still writes to its disk is not stopped).
fn stop_all(observed: &Observed) -> Step {
    if !observed.running.is_empty() {
        return Step::StopAll { names: observed.running.iter().cloned().collect() };
    }
    if observed.stopping.is_empty() {
        return Step::Done;
    }
    let names: Vec<&str> = observed.stopping.iter().map(String::as_str).collect();
    wait(format!("{} still stopping", names.join(", ")))
}

/// No member answers: bootstrap, restart from data, or wait.
fn without_member_list(wanted: &[Wanted], observed: &Observed) -> Step {
    if wanted.is_empty() {
        return stop_all(observed);
    }
    if !observed.bootstrapped {
        // A bootstrap cut short between two members' starts (a crash, a failed call, a new
        // leader) is finished: starting a bootstrap member again writes the same entry.
        let unstarted = wanted
            .iter()
            .any(|w| !observed.running.contains(&w.name) && !observed.restarting.contains(&w.name));
        return if observed.running.is_empty() || unstarted {
            Step::Bootstrap { members: wanted.to_vec() }
        } else {
            wait("members are starting")
        };
    }
    // Restart from zero, or every member crashed: bring back every member with data, together,
    // so that they can form a quorum again.
    let stopped: Vec<String> =
        observed.with_data.iter().filter(|n| !observed.running.contains(*n)).cloned().collect();
    if !stopped.is_empty() {
        return Step::Restart { names: stopped, initial: wanted.to_vec() };
    }
    wait("members are running but none answers yet")
}

/// Test fixture of the membership modules: `c-<i>` (ID `100 + i`), a running, healthy voter
/// with data.
#[cfg(test)]
pub(crate) fn voter(i: u64) -> Seen {
    Seen {
        id: 100 + i,
        name: format!("c-{i}"),
        peer_url: format!("https://p{i}"),
        is_learner: false,
        running: true,
        healthy: true,
        has_data: true,
        failing: false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn wanted(n: usize) -> Vec<Wanted> {
        (0..n)
            .map(|i| Wanted { name: format!("c-{i}"), peer_url: format!("https://p{i}") })
            .collect()
    }

    fn observed(members: Vec<Seen>, leader: u64) -> Observed {
        Observed {
            running: members.iter().filter(|m| m.running).map(|m| m.name.clone()).collect(),
            with_data: members.iter().filter(|m| m.has_data).map(|m| m.name.clone()).collect(),
            members: Some(members),
            leader: Some(100 + leader),
            bootstrapped: true,
            ..Observed::default()
        }
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_whatever_the_member_ids() {
        // etcd lists members by ID, which has nothing to do with the ordinal.
        let mut members: Vec<Seen> = (0..5).map(voter).collect();
        for (member, id) in members.iter_mut().zip([900, 300, 700, 100, 500]) {
            member.id = id;
        }
        members.sort_by_key(|m| m.id);
        let observed = Observed { leader: Some(900), ..observed(members, 0) };
        assert_eq!(next_step(&wanted(3), &observed), Step::Remove { id: 500, name: "c-4".into() });
    }

    #[test]
    fn volumes_without_evidence_of_a_cluster_still_bootstrap() {
        // A StatefulSet creates every claim before its pod runs: claims are no evidence.
        let observed = Observed {
            with_data: ["c-0", "c-1", "c-2"].map(String::from).into(),
            ..Observed::default()
        };
        assert_eq!(next_step(&wanted(3), &observed), Step::Bootstrap { members: wanted(3) });
    }

    /// After a force, the survivor is restarted not forcing before it grows back; a member that
    /// does not answer alone (the force has not taken effect) is not.
    #[test]
    fn a_forced_member_stops_forcing_before_anyone_joins_it() {
        let forced = |members: Vec<Seen>| Observed {
            forced: ["c-0".to_owned()].into(),
            ..observed(members, 0)
        };
        assert_eq!(
            next_step(&wanted(3), &forced(vec![voter(0)])),
            Step::EndForce { name: "c-0".into() }
        );
        let grown = observed(vec![voter(0)], 0);
        assert!(matches!(next_step(&wanted(3), &grown), Step::AddLearner { .. }));
        let old_membership = forced(vec![voter(0), voter(1), voter(2)]);
        assert_eq!(next_step(&wanted(3), &old_membership), Step::Done);
        let silent = forced(vec![Seen { healthy: false, ..voter(0) }]);
        assert!(matches!(next_step(&wanted(3), &silent), Step::Wait { .. }));
        // Answering, but no leader yet: neither restarted nor grown.
        let leaderless = Observed { leader: None, ..forced(vec![voter(0)]) };
        assert!(matches!(next_step(&wanted(3), &leaderless), Step::Wait { .. }));
    }

    /// The operator's leader changed after starting c-0 of three: c-1 and c-2 have no entry
    /// and would never start, and c-0 alone never answers.
    #[test]
    fn a_bootstrap_cut_short_is_finished() {
        let started = Observed { running: ["c-0".to_owned()].into(), ..Observed::default() };
        assert_eq!(next_step(&wanted(3), &started), Step::Bootstrap { members: wanted(3) });
        let starting =
            Observed { restarting: ["c-1", "c-2"].map(String::from).into(), ..started.clone() };
        assert!(matches!(next_step(&wanted(3), &starting), Step::Wait { .. }));
    }

    #[test]
    fn new_cluster_bootstraps_statically() {
        assert_eq!(
            next_step(&wanted(3), &Observed::default()),
            Step::Bootstrap { members: wanted(3) }
        );
    }

    #[test]
    fn scale_up_is_learner_then_start_then_promote() {
        let mut members = vec![voter(0)];
        assert_eq!(
            next_step(&wanted(3), &observed(members.clone(), 0)),
            Step::AddLearner { member: wanted(3)[1].clone() }
        );
        let learner = Seen {
            is_learner: true,
            running: false,
            healthy: false,
            has_data: false,
            name: String::new(),
            ..voter(1)
        };
        members.push(learner.clone());
        let mut seen = observed(members.clone(), 0);
        // etcd reports no name for a learner that never started; the adapter fills the wanted one.
        seen.members.as_mut().unwrap()[1].name = "c-1".into();
        assert!(
            matches!(next_step(&wanted(3), &seen), Step::StartLearner { member, .. } if member.name == "c-1")
        );
        members[1] = Seen { running: true, healthy: true, has_data: true, ..learner };
        members[1].name = "c-1".into();
        assert_eq!(
            next_step(&wanted(3), &observed(members.clone(), 0)),
            Step::Promote { id: 101, name: "c-1".into() }
        );
        members[1].is_learner = false;
        assert_eq!(
            next_step(&wanted(3), &observed(members, 0)),
            Step::AddLearner { member: wanted(3)[2].clone() }
        );
    }

    #[test]
    fn scale_down_moves_leadership_then_removes_highest_then_retires() {
        let members = vec![voter(0), voter(1), voter(2)];
        assert_eq!(
            next_step(&wanted(1), &observed(members.clone(), 2)),
            Step::MoveLeader { from: 102, to: 100 }
        );
        assert_eq!(
            next_step(&wanted(1), &observed(members.clone(), 0)),
            Step::Remove { id: 102, name: "c-2".into() }
        );
        let mut after = observed(members[..2].to_vec(), 0);
        after.running.insert("c-2".into());
        assert_eq!(next_step(&wanted(1), &after), Step::Retire { name: "c-2".into() });
    }

    #[test]
    fn stop_and_restart_from_zero() {
        let members = vec![voter(0), voter(1), voter(2)];
        assert!(
            matches!(next_step(&[], &observed(members, 0)), Step::StopAll { names } if names.len() == 3)
        );
        let stopped = Observed {
            members: None,
            running: BTreeSet::new(),
            with_data: ["c-0", "c-1", "c-2"].map(String::from).into(),
            leader: None,
            bootstrapped: true,
            stopping: BTreeSet::new(),
            restarting: BTreeSet::new(),
            forced: BTreeSet::new(),
        };
        // A process on its way out (a Terminating pod) may still write: not done until it is gone.
        let stopping = Observed { stopping: ["c-2".to_owned()].into(), ..stopped.clone() };
        assert!(
            matches!(next_step(&[], &stopping), Step::Wait { reason } if reason.contains("c-2"))
        );
        assert_eq!(next_step(&[], &stopped), Step::Done);
        assert!(
            matches!(next_step(&wanted(3), &stopped), Step::Restart { names, .. } if names.len() == 3)
        );
    }

    #[test]
    fn a_crashed_member_with_data_is_restarted_not_replaced() {
        let mut members = vec![voter(0), voter(1), voter(2)];
        members[1].running = false;
        members[1].healthy = false;
        assert!(
            matches!(next_step(&wanted(3), &observed(members, 0)), Step::Restart { names, .. } if names == ["c-1"])
        );
    }

    #[test]
    fn steps_read_as_words() {
        let member = wanted(4).remove(3);
        assert_eq!(Step::AddLearner { member }.to_string(), "adding c-3 as a learner");
        assert_eq!(
            Step::Promote { id: 103, name: "c-3".into() }.to_string(),
            "promoting c-3 to a voting member"
        );
        assert_eq!(
            Step::Remove { id: 104, name: "c-4".into() }.to_string(),
            "removing c-4 from the cluster"
        );
        assert_eq!(
            Step::Bootstrap { members: wanted(3) }.to_string(),
            "bootstrapping a new cluster of c-0, c-1, c-2"
        );
    }

    #[test]
    fn a_member_the_platform_is_bringing_back_is_waited_for_not_restarted() {
        let mut members = vec![voter(0), voter(1), voter(2)];
        members[1].running = false;
        members[1].healthy = false;
        let mut seen = observed(members, 0);
        seen.restarting.insert("c-1".into());
        assert_eq!(next_step(&wanted(3), &seen), wait("c-1 is restarting"));
        // A learner likewise.
        let mut members = vec![voter(0), voter(1), voter(2)];
        members[2] = Seen { is_learner: true, running: false, healthy: false, ..voter(2) };
        let mut seen = observed(members, 0);
        seen.restarting.insert("c-2".into());
        assert_eq!(next_step(&wanted(3), &seen), wait("learner c-2 is restarting"));
    }

    #[test]
    fn a_member_that_lost_its_data_is_removed_then_re_added() {
        let mut members = vec![voter(0), voter(1), voter(2)];
        members[2] = Seen { running: false, healthy: false, has_data: false, ..voter(2) };
        assert_eq!(
            next_step(&wanted(3), &observed(members.clone(), 0)),
            Step::Remove { id: 102, name: "c-2".into() }
        );
        assert_eq!(
            next_step(&wanted(3), &observed(members[..2].to_vec(), 0)),
            Step::AddLearner { member: wanted(3)[2].clone() }
        );
    }

    #[test]
    fn a_member_failing_past_the_threshold_is_replaced_while_quorum_allows() {
        let mut members = vec![voter(0), voter(1), voter(2)];
        members[2].healthy = false;
        members[2].failing = true;
        assert_eq!(
            next_step(&wanted(3), &observed(members.clone(), 0)),
            Step::Remove { id: 102, name: "c-2".into() }
        );
        // Once removed, its process is retired (stopped, data wiped) and it joins as a learner.
        let after: Vec<Seen> = members[..2].to_vec();
        let mut seen = observed(after.clone(), 0);
        seen.running.insert("c-2".into());
        assert_eq!(next_step(&wanted(3), &seen), Step::Retire { name: "c-2".into() });
        assert_eq!(
            next_step(&wanted(3), &observed(after, 0)),
            Step::AddLearner { member: wanted(3)[2].clone() }
        );
        // With a second member down there is no quorum to spare: it is restarted instead.
        members[1].healthy = false;
        members[1].running = false;
        assert!(matches!(next_step(&wanted(3), &observed(members, 0)), Step::Restart { .. }));
    }

    #[test]
    fn an_unwanted_learner_is_dropped_first() {
        let members = vec![voter(0), Seen { is_learner: true, ..voter(1) }];
        assert_eq!(
            next_step(&wanted(1), &observed(members, 0)),
            Step::Remove { id: 101, name: "c-1".into() }
        );
    }

    fn arbitrary_observed() -> impl Strategy<Value = (usize, Observed)> {
        let member =
            (0u64..9, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
        (
            prop::sample::select(vec![0usize, 1, 3, 5, 7, 9]),
            prop::collection::vec(member, 0..9),
            any::<bool>(),
            0u64..9,
        )
            .prop_map(|(size, raw, reachable, leader)| {
                let mut members: Vec<Seen> = Vec::new();
                for (i, learner, running, healthy, data, failing) in raw {
                    if members.iter().any(|m| m.id == 100 + i) {
                        continue;
                    }
                    members.push(Seen {
                        is_learner: learner,
                        running,
                        healthy: healthy && running,
                        has_data: data || running,
                        failing: failing && !(healthy && running),
                        ..voter(i)
                    });
                }
                let mut observed = observed(members, leader);
                if !reachable {
                    observed.members = None;
                }
                (size, observed)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever is observed, the next step never lowers healthy voters below quorum, never adds
        /// a second learner, never removes the last member, and never adds a voter.
        #[test]
        fn safety((size, observed) in arbitrary_observed()) {
            let step = next_step(&wanted(size), &observed);
            let members = observed.members.clone().unwrap_or_default();
            let voters: Vec<&Seen> = members.iter().filter(|m| !m.is_learner).collect();
            let healthy = voters.iter().filter(|m| m.healthy).count();
            match &step {
                Step::AddLearner { .. } => {
                    prop_assert!(members.iter().all(|m| !m.is_learner), "second learner: {observed:?}");
                }
                Step::Remove { id, .. } => {
                    let target = members.iter().find(|m| m.id == *id).unwrap();
                    if !target.is_learner {
                        prop_assert!(voters.len() > 1, "removes the last voter");
                        let healthy_after = healthy - usize::from(target.healthy);
                        prop_assert!(healthy_after >= quorum(voters.len() - 1), "below quorum: {observed:?}");
                        prop_assert!(!(target.healthy && observed.leader == Some(*id)), "removes a live leader");
                    }
                }
                Step::Retire { name } => {
                    prop_assert!(!members.iter().any(|m| &m.name == name), "retires a member");
                }
                Step::StopAll { .. } => prop_assert_eq!(size, 0),
                Step::Bootstrap { .. } => {
                    prop_assert!(!observed.bootstrapped && observed.members.is_none());
                }
                _ => {}
            }
        }
    }
}
