//! The status object an EtcdCluster carries, computed from one observation and the step about to
//! be taken: members with their roles, health and versions, the phase, and the conditions.

use etcd_crds::conditions::types;
use std::time::Duration;

use etcd_crds::conditions::{condition, set_condition};
use etcd_crds::{ClusterPhase, EtcdClusterStatus, MemberRole, MemberStatus, StoppedCluster};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::planner::{Step, quorum_present};
use super::reconcile::{Observation, Target};
use crate::etcd::hex_id;

/// The status for this observation and the step about to be taken.
pub fn status(
    target: &Target,
    observation: &Observation,
    step: &Step,
    previous: &EtcdClusterStatus,
) -> EtcdClusterStatus {
    let members: Vec<MemberStatus> = observation
        .planner
        .members
        .iter()
        .flatten()
        .map(|m| {
            let status = observation.statuses.iter().find(|(n, _)| *n == m.name).map(|(_, s)| s);
            let member = MemberStatus {
                name: m.name.clone(),
                id: Some(hex_id(m.id)),
                peer_url: Some(m.peer_url.clone()),
                client_url: None,
                ready: m.healthy && !m.is_learner,
                role: Some(if m.is_learner { MemberRole::Learner } else { MemberRole::Voter }),
                leader: observation.planner.leader == Some(m.id),
                version: status.map(|s| s.version.clone()),
                unhealthy_since: (!m.healthy).then(|| {
                    unhealthy_since(previous, &m.name).unwrap_or_else(|| Time(Timestamp::now()))
                }),
                alarms: alarms_of(observation, m.id),
                ..MemberStatus::default()
            };
            let before = previous.members.iter().find(|p| p.name == m.name);
            with_health(member, status, observation, m.running, before)
        })
        .collect();
    // No member answers (or none runs) in a bootstrapped cluster that should run: the last
    // membership seen stays, every member not ready, so that a person (and recovery, deciding
    // on a loss that lasts) still sees who they were.
    let keep_last = observation.planner.members.is_none()
        && observation.planner.bootstrapped
        && target.size > 0;
    let members = if keep_last {
        previous
            .members
            .iter()
            .map(|m| MemberStatus {
                ready: false,
                leader: false,
                client_url: None,
                last_error: observation.unreachable.clone(),
                unhealthy_since: m.unhealthy_since.clone().or_else(|| Some(Time(Timestamp::now()))),
                ..m.clone()
            })
            .collect()
    } else {
        members
    };
    let ready = members.iter().filter(|m| m.ready).count();
    let voters = members.iter().filter(|m| m.role == Some(MemberRole::Voter)).count();
    let quorum_ok = quorum_present(voters, ready, observation.planner.leader.is_some());
    let cluster_id = observation.cluster_id.map(hex_id).or_else(|| previous.cluster_id.clone());
    let phase = match step {
        _ if target.size == 0
            && observation.planner.running.is_empty()
            && observation.planner.stopping.is_empty() =>
        {
            ClusterPhase::Stopped
        }
        // Stopping to zero: the last processes are on their way out.
        _ if target.size == 0 => ClusterPhase::Scaling,
        Step::Bootstrap { .. } => ClusterPhase::Creating,
        Step::Restart { .. } | Step::ForceNewCluster { .. } | Step::EndForce { .. } => {
            ClusterPhase::Recovering
        }
        Step::Done if ready == target.size => ClusterPhase::Running,
        // No member answers: Degraded at once, Failed only once that has lasted (a member
        // restarting, a DNS or network blip is not a lost cluster).
        _ if observation.unreachable.is_some() && observation.planner.bootstrapped => {
            if quorum_lost_for(previous) >= target.recovery.after {
                ClusterPhase::Failed
            } else {
                ClusterPhase::Degraded
            }
        }
        Step::Wait { .. } if cluster_id.is_none() => ClusterPhase::Creating,
        // Waiting on a learner to start or catch up is a scale-up in progress.
        Step::Wait { .. } if members.iter().any(|m| m.role == Some(MemberRole::Learner)) => {
            ClusterPhase::Scaling
        }
        Step::Wait { .. } | Step::Done => ClusterPhase::Degraded,
        _ => ClusterPhase::Scaling,
    };
    // A member that answers with another version than the spec's: a rolling upgrade is under way,
    // and stays so while the member last restarted for it comes back (its version unknown).
    let behind = |m: &MemberStatus| matches!((&target.version, &m.version), (Some(wanted), Some(runs)) if wanted != runs);
    let rolling = members.iter().any(behind)
        || (previous.phase == Some(ClusterPhase::Upgrading)
            && members.iter().any(|m| m.version.is_none()));
    let phase = match (phase, step) {
        (_, Step::Upgrade { .. }) => ClusterPhase::Upgrading,
        (ClusterPhase::Running | ClusterPhase::Degraded, _) if rolling => ClusterPhase::Upgrading,
        (ClusterPhase::Scaling, Step::MoveLeader { .. }) if rolling => ClusterPhase::Upgrading,
        (phase, _) => phase,
    };
    let mut conditions = previous.conditions.clone();
    let generation = target.generation;
    let summary = format!("{ready}/{} members ready", target.size);
    set_condition(
        &mut conditions,
        condition(
            types::READY,
            phase == ClusterPhase::Running,
            if phase == ClusterPhase::Running { "AllMembersReady" } else { "NotAllMembersReady" },
            summary.clone(),
            generation,
        ),
    );
    set_condition(
        &mut conditions,
        condition(
            types::AVAILABLE,
            quorum_ok,
            if quorum_ok { "QuorumHealthy" } else { "NoQuorum" },
            observation.unreachable.clone().unwrap_or(summary),
            generation,
        ),
    );
    let alarms = alarms(observation);
    if !alarms.is_empty() || previous.conditions.iter().any(|c| c.type_ == types::ETCD_ALARMS) {
        set_condition(&mut conditions, alarms_condition(&alarms, generation));
    }
    let progressing = !matches!(step, Step::Done | Step::Wait { .. });
    let step_message = match step {
        Step::Wait { reason } => reason.clone(),
        other => other.kind().to_owned(),
    };
    set_condition(
        &mut conditions,
        condition(
            types::PROGRESSING,
            progressing,
            if progressing { "MembershipChange" } else { "Idle" },
            step_message.clone(),
            generation,
        ),
    );
    let degraded = matches!(phase, ClusterPhase::Degraded | ClusterPhase::Failed);
    set_condition(
        &mut conditions,
        condition(
            types::DEGRADED,
            degraded,
            if degraded { "MembersUnhealthy" } else { "AsExpected" },
            step_message,
            generation,
        ),
    );
    let stopped = match step {
        Step::StopAll { .. } => Some(StoppedCluster {
            cluster_id: cluster_id.clone().unwrap_or_default(),
            members: members.clone(),
            stopped_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            )),
        }),
        _ if target.size == 0 => previous.stopped.clone(),
        _ => None,
    };
    EtcdClusterStatus {
        phase: Some(phase),
        conditions,
        replicas: members.len() as i32,
        ready_replicas: ready as i32,
        leader_id: observation.planner.leader.map(hex_id),
        cluster_id,
        client_endpoints: Vec::new(),
        current_version: agreed_version(observation, members.len())
            .or_else(|| previous.current_version.clone()),
        observed_generation: generation,
        stopped,
        selector: None,
        highest_committed_index: highest_committed_index(observation, previous),
        // Recovery's to set (see reconcile).
        forced_start: None,
        scaling: (phase == ClusterPhase::Scaling).then(|| etcd_crds::ScalingProgress {
            current_size: voters as i32,
            target_size: target.size as i32,
            step: step.to_string(),
        }),
        members,
    }
}

/// The highest commit index reported so far, this observation's included; a new cluster ID (a
/// restore) starts again.
fn highest_committed_index(observation: &Observation, previous: &EtcdClusterStatus) -> Option<u64> {
    let same_cluster = match (observation.cluster_id, &previous.cluster_id) {
        (Some(now), Some(before)) => hex_id(now) == *before,
        _ => true,
    };
    let recorded = previous.highest_committed_index.filter(|_| same_cluster);
    let seen = observation.statuses.iter().map(|(_, s)| s.raft_index).max();
    recorded.max(seen)
}

/// The cluster's active alarms, as the members that answered report them, by member name (or ID
/// when the member is not in the list).
fn alarms(observation: &Observation) -> std::collections::BTreeSet<(String, String)> {
    let name = |id: u64| {
        let members = observation.planner.members.iter().flatten();
        members.clone().find(|m| m.id == id).map_or_else(|| hex_id(id), |m| m.name.clone())
    };
    observation
        .statuses
        .iter()
        .flat_map(|(_, status)| &status.alarms)
        .map(|alarm| (alarm.kind.clone(), name(alarm.member_id)))
        .collect()
}

/// `EtcdAlarms`: which alarm on which member, and what it stops.
fn alarms_condition(
    alarms: &std::collections::BTreeSet<(String, String)>,
    generation: Option<i64>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    if alarms.is_empty() {
        return condition(
            types::ETCD_ALARMS,
            false,
            "NoAlarms",
            "etcd raises no alarm".into(),
            generation,
        );
    }
    let mut kinds: Vec<&str> = alarms.iter().map(|(kind, _)| kind.as_str()).collect();
    kinds.dedup();
    // Every kind raised, comma-separated (a reason may hold commas): what /metrics reports.
    let reason = kinds.join(",");
    let message = kinds
        .into_iter()
        .map(|kind| {
            let on: Vec<&str> =
                alarms.iter().filter(|(k, _)| k == kind).map(|(_, m)| m.as_str()).collect();
            let meaning = match kind {
                "NOSPACE" => "the backend reached quotaBackendBytes, and etcd refuses writes until space is freed (compact, defragment) and the alarm is disarmed (etcdctl alarm disarm)",
                "CORRUPT" => "the members' data differ, and etcd refuses requests; the member whose hash differs (its log says, or etcdctl check hashkv) must be replaced before the alarm is disarmed",
                _ => "see etcd's log",
            };
            format!("{kind} on {}: {meaning}", on.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    condition(types::ETCD_ALARMS, true, &reason, message, generation)
}

/// The version every member runs, when all `members` answered and agree.
fn agreed_version(observation: &Observation, members: usize) -> Option<String> {
    let mut versions = observation.statuses.iter().map(|(_, s)| &s.version);
    let first = versions.next()?;
    (observation.statuses.len() == members && versions.all(|v| v == first)).then(|| first.clone())
}

/// How long the cluster has been without quorum, by the previous status's Available condition
/// (zero when it had quorum).
pub fn quorum_lost_for(previous: &EtcdClusterStatus) -> Duration {
    quorum_lost_since(previous)
        .and_then(|since| u64::try_from(Timestamp::now().as_second() - since.as_second()).ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// When the cluster last lost its quorum, by the previous status's Available condition.
pub fn quorum_lost_since(previous: &EtcdClusterStatus) -> Option<Timestamp> {
    previous
        .conditions
        .iter()
        .find(|c| c.type_ == types::AVAILABLE && c.status == "False")
        .map(|c| c.last_transition_time.0)
}

/// Since when `name` has been silent, as the previous status recorded it.
/// What a member said of itself when it answered: its sizes and raft position. When it did
/// not, what it said last stays (`unhealthySince` says since when), and why this call failed.
/// Nothing here changes while an idle member keeps answering the same, so an idle cluster's
/// status is not rewritten every pass.
fn with_health(
    member: MemberStatus,
    status: Option<&crate::etcd::EndpointStatus>,
    observation: &Observation,
    running: bool,
    before: Option<&MemberStatus>,
) -> MemberStatus {
    if let Some(s) = status {
        return MemberStatus {
            last_error: None,
            db_size: Some(s.db_size),
            db_size_in_use: Some(s.db_size_in_use),
            raft_term: Some(s.raft_term),
            raft_index: Some(s.raft_index),
            raft_applied_index: Some(s.raft_applied_index),
            ..member
        };
    }
    let error = observation.errors.iter().find(|(n, _)| *n == member.name).map(|(_, e)| e.clone());
    let last_error = error.or_else(|| (!running).then(|| "its process does not run".to_owned()));
    let Some(before) = before else { return MemberStatus { last_error, ..member } };
    MemberStatus {
        last_error,
        db_size: before.db_size,
        db_size_in_use: before.db_size_in_use,
        raft_term: before.raft_term,
        raft_index: before.raft_index,
        raft_applied_index: before.raft_applied_index,
        ..member
    }
}

/// The alarms the members that answered report for member `id`.
fn alarms_of(observation: &Observation, id: u64) -> Vec<String> {
    let raised = observation.statuses.iter().flat_map(|(_, s)| &s.alarms);
    let mut kinds: Vec<String> =
        raised.filter(|a| a.member_id == id).map(|a| a.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

pub(super) fn unhealthy_since(previous: &EtcdClusterStatus, name: &str) -> Option<Time> {
    previous.members.iter().find(|m| m.name == name).and_then(|m| m.unhealthy_since.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::EndpointStatus;
    use crate::membership::planner::{Seen, Wanted, next_step, voter};
    use crate::membership::recovery::Policy;

    fn target(size: usize) -> Target {
        Target {
            cluster: "c".into(),
            size,
            generation: Some(4),
            token: "t".into(),
            replace_after: None,
            version: None,
            rolls_versions: false,
            recovery: Policy { after: Duration::from_secs(300), ..Policy::default() },
            quota_backend_bytes: 0,
            check_consistency_every: None,
        }
    }

    fn condition<'a>(
        status: &'a EtcdClusterStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_member_on_another_version_than_the_spec_is_an_upgrade_in_progress() {
        let seen = |id: u64| Seen { id, ..voter(id) };
        let mut observation = Observation::default();
        observation.planner.members = Some((0..3).map(seen).collect());
        let version = |v: &str| EndpointStatus {
            cluster_id: 1,
            version: v.into(),
            raft_index: 1,
            ..EndpointStatus::default()
        };
        observation.statuses = vec![
            ("c-0".into(), version("3.5.9")),
            ("c-1".into(), version("3.5.9")),
            ("c-2".into(), version("3.6.1")),
        ];
        let target = Target { version: Some("3.6.1".into()), ..target(3) };
        assert_eq!(status_of(&target, &observation).phase, Some(ClusterPhase::Upgrading));
        observation.statuses.iter_mut().for_each(|(_, s)| s.version = "3.6.1".into());
        assert_eq!(status_of(&target, &observation).phase, Some(ClusterPhase::Running));
    }

    /// Each member's sizes, raft position and alarms as it answered; one that stops answering
    /// keeps what it said last and tells why it is silent.
    #[test]
    fn each_member_reports_its_health_and_a_silent_one_its_last_and_why() {
        let mut observation = Observation::default();
        observation.planner.members = Some((0..2).map(voter).collect());
        let answer = |member_id, raft_index| EndpointStatus {
            member_id,
            raft_term: 3,
            raft_index,
            raft_applied_index: raft_index - 1,
            db_size: 4096,
            db_size_in_use: 1024,
            alarms: vec![crate::etcd::Alarm { member_id: 101, kind: "NOSPACE".into() }],
            ..EndpointStatus::default()
        };
        observation.statuses =
            vec![("c-0".into(), answer(100, 50)), ("c-1".into(), answer(101, 49))];
        let first = status_of(&target(2), &observation);
        let c1 = &first.members[1];
        assert_eq!((c1.db_size, c1.db_size_in_use), (Some(4096), Some(1024)));
        assert_eq!(
            (c1.raft_term, c1.raft_index, c1.raft_applied_index),
            (Some(3), Some(49), Some(48))
        );
        assert_eq!(c1.alarms, ["NOSPACE"]);
        assert!(first.members[0].alarms.is_empty() && c1.last_error.is_none());

        observation.statuses.truncate(1);
        observation.errors = vec![("c-1".into(), "connection refused".into())];
        if let Some(members) = observation.planner.members.as_mut() {
            members[1].healthy = false;
        }
        let later = status(&target(2), &observation, &Step::Done, &first);
        let c1 = &later.members[1];
        assert_eq!(c1.raft_index, Some(49), "what it said last stays");
        assert_eq!(c1.last_error.as_deref(), Some("connection refused"));
        assert!(c1.unhealthy_since.is_some());
    }

    #[test]
    fn scaling_reports_current_and_target_size_and_the_step() {
        let mut observation = Observation::default();
        observation.planner.members = Some((0..3).map(|id| Seen { id, ..voter(id) }).collect());
        let step = Step::AddLearner { member: Wanted { name: "c-3".into(), peer_url: "p".into() } };
        let growing = status(&target(5), &observation, &step, &EtcdClusterStatus::default());
        assert_eq!(growing.phase, Some(ClusterPhase::Scaling), "{growing:#?}");
        let progress = growing.scaling.clone().expect("progress while scaling");
        assert_eq!((progress.current_size, progress.target_size), (3, 5));
        assert_eq!(progress.step, "adding c-3 as a learner");
        let done = status(&target(3), &observation, &Step::Done, &growing);
        assert_eq!(done.scaling, None, "{done:#?}");
    }

    #[test]
    fn stopped_only_once_no_process_may_still_run() {
        let mut observation = Observation::default();
        observation.planner.bootstrapped = true;
        observation.planner.stopping = ["c-0".to_owned()].into();
        let step = next_step(&[], &observation.planner);
        let stopping = status(&target(0), &observation, &step, &EtcdClusterStatus::default());
        assert_eq!(stopping.phase, Some(ClusterPhase::Scaling), "{stopping:#?}");
        observation.planner.stopping.clear();
        let step = next_step(&[], &observation.planner);
        let stopped = status(&target(0), &observation, &step, &stopping);
        assert_eq!(stopped.phase, Some(ClusterPhase::Stopped), "{stopped:#?}");
    }

    /// The record only grows, and a new cluster ID (a restore) starts it again.
    #[test]
    fn the_highest_commit_index_is_kept_per_cluster_id() {
        let mut observation = Observation { cluster_id: Some(0xa), ..Observation::default() };
        let index = |raft_index| EndpointStatus {
            cluster_id: 0xa,
            version: "3.5.9".into(),
            raft_index,
            ..EndpointStatus::default()
        };
        observation.statuses = vec![("c-0".into(), index(90)), ("c-1".into(), index(120))];
        let first = status_of(&target(3), &observation);
        assert_eq!(first.highest_committed_index, Some(120));
        observation.statuses = vec![("c-0".into(), index(100))];
        let later = status(&target(3), &observation, &Step::Done, &first);
        assert_eq!(later.highest_committed_index, Some(120), "a lagging member lowers nothing");
        observation.cluster_id = Some(0xb);
        observation.statuses = vec![("c-0".into(), index(5))];
        let restored = status(&target(3), &observation, &Step::Done, &later);
        assert_eq!(restored.highest_committed_index, Some(5));
    }

    fn status_of(target: &Target, observation: &Observation) -> EtcdClusterStatus {
        status(target, observation, &Step::Done, &EtcdClusterStatus::default())
    }

    #[test]
    fn members_running_but_unreachable_is_degraded_then_failed_once_it_lasts() {
        let mut observation = Observation::default();
        observation.planner.bootstrapped = true;
        observation.planner.running = ["c-0".to_owned()].into();
        observation.unreachable = Some("cannot connect to etcd at https://c-0: deadline".into());
        let step = Step::Wait { reason: "members are running but none answers yet".into() };
        let first = status(&target(3), &observation, &step, &EtcdClusterStatus::default());
        assert_eq!(first.phase, Some(ClusterPhase::Degraded), "a blip is not a lost cluster");
        let available = condition(&first, "Available");
        assert_eq!((available.status.as_str(), available.reason.as_str()), ("False", "NoQuorum"));
        assert!(available.message.contains("deadline"));
        assert_eq!(condition(&first, "Degraded").status, "True");
        assert_eq!(first.observed_generation, Some(4));

        // Still no answer, with quorum lost since longer ago than the threshold: Failed.
        let mut previous = first;
        let after = target(3).recovery.after.as_secs() as i64;
        let lost = Timestamp::now().as_second() - after - 1;
        for c in previous.conditions.iter_mut().filter(|c| c.type_ == "Available") {
            c.last_transition_time = Time(Timestamp::from_second(lost).unwrap());
        }
        let later = status(&target(3), &observation, &step, &previous);
        assert_eq!(later.phase, Some(ClusterPhase::Failed));
        assert_eq!(
            condition(&later, "Available").last_transition_time,
            previous
                .conditions
                .iter()
                .find(|c| c.type_ == "Available")
                .unwrap()
                .last_transition_time,
            "the time quorum was lost is kept"
        );
    }

    #[test]
    fn a_learner_that_never_starts_is_waited_for_without_a_destructive_step() {
        let seen = |id, learner: bool, running: bool| Seen {
            id,
            is_learner: learner,
            running,
            healthy: running,
            has_data: running,
            ..voter(id)
        };
        let mut observation = Observation::default();
        observation.planner.members = Some(vec![seen(0, false, true), seen(1, true, true)]);
        observation.planner.members.as_mut().unwrap()[1].healthy = false;
        observation.planner.leader = Some(0);
        observation.cluster_id = Some(7);
        let wanted: Vec<Wanted> = (0..3)
            .map(|i| Wanted { name: format!("c-{i}"), peer_url: format!("https://p{i}") })
            .collect();
        let step = next_step(&wanted, &observation.planner);
        assert_eq!(step, Step::Wait { reason: "learner c-1 is starting".into() });
        let status = status(&target(3), &observation, &step, &EtcdClusterStatus::default());
        assert_eq!(status.phase, Some(ClusterPhase::Scaling));
        assert_eq!(condition(&status, "Progressing").message, "learner c-1 is starting");
        assert_eq!(
            condition(&status, "Available").status,
            "True",
            "the voter keeps the quorum of one"
        );
    }
}
