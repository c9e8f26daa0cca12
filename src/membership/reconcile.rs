//! Observe → plan → act, shared by every member adapter: what etcd and the port say, the one step
//! the planner picks, the status object the CRD carries, and performing the step.
//!
//! The status is computed before the step is performed and written by the caller first, so the
//! record a restart from zero needs exists before any member stops.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use etcd_crds::{ClusterPhase, EtcdClusterStatus, MemberRole, MemberStatus, StoppedCluster};
use futures::future::join_all;

use super::planner::{Observed, Seen, Step, Wanted, next_step};
use super::{Error, MemberPort};
use crate::etcd::ClusterState;
use crate::etcd::{self, ClientTls, EndpointStatus, hex_id};
use etcd_crds::conditions::{condition, set_condition};

/// What to converge to.
#[derive(Clone, Debug)]
pub struct Target {
    pub cluster: String,
    pub size: usize,
    pub generation: Option<i64>,
    /// Cluster token: members of one cluster share it, so a stray member of another cannot join.
    pub token: String,
    /// A voter silent for this long is replaced; `None` never replaces.
    pub replace_after: Option<Duration>,
    /// The etcd version members should run; `None` where the operator does not choose it (`local`
    /// runs the etcd that is installed).
    pub version: Option<String>,
}

impl Target {
    /// `spec.replaceUnhealthyAfterSeconds` as a threshold (0 and below: never).
    pub fn replace_after_seconds(seconds: i64) -> Option<Duration> {
        u64::try_from(seconds).ok().filter(|s| *s > 0).map(Duration::from_secs)
    }
}

/// The members a target asks for: ordinals `0..size`.
pub fn wanted(port: &impl MemberPort, target: &Target) -> Result<Vec<Wanted>, Error> {
    (0..target.size)
        .map(|i| {
            let name = etcd_certs::cluster::member_name(&target.cluster, i as u32);
            Ok(Wanted { peer_url: port.urls(&name)?.peer, name })
        })
        .collect()
}

/// The observation, with the per-member facts status reports.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub planner: Observed,
    pub cluster_id: Option<u64>,
    /// Status of each member that answered, by name.
    pub statuses: Vec<(String, EndpointStatus)>,
    /// Why the member list could not be read, when members run but none answered.
    pub unreachable: Option<String>,
}

pub async fn observe(
    port: &impl MemberPort,
    wanted: &[Wanted],
    tls: Option<&ClientTls>,
    previous: &EtcdClusterStatus,
) -> Result<Observation, Error> {
    let running = port.running().await?;
    let with_data = port.with_data().await?;
    let mut observation = Observation::default();
    observation.planner.bootstrapped =
        previous.cluster_id.is_some() || !port.member_data().await?.is_empty();
    let endpoints: Vec<String> =
        running.iter().map(|n| port.urls(n).map(|u| u.client)).collect::<Result<_, _>>()?;
    let endpoints = accepting(endpoints).await;
    if endpoints.is_empty() && !running.is_empty() {
        observation.unreachable = Some("no running member accepts connections yet".to_owned());
    }
    if !endpoints.is_empty() {
        let listed = async {
            let mut client = etcd::connect(&endpoints, tls).await?;
            etcd::member_list(&mut client).await
        };
        match listed.await {
            Ok((cluster_id, members)) => {
                observation.cluster_id = Some(cluster_id);
                let named: Vec<(String, etcd::Member)> = members
                    .into_iter()
                    .map(|m| {
                        let name = wanted
                            .iter()
                            .find(|w| w.peer_url == m.peer_url)
                            .map(|w| w.name.clone())
                            .filter(|_| m.name.is_empty())
                            .unwrap_or_else(|| {
                                if m.name.is_empty() { hex_id(m.id) } else { m.name.clone() }
                            });
                        (name, m)
                    })
                    .collect();
                let statuses = join_all(named.iter().filter(|(n, _)| running.contains(n)).map(
                    |(name, _)| async move {
                        let url = port.urls(name).ok()?.client;
                        let status = tokio::time::timeout(
                            Duration::from_secs(3),
                            etcd::endpoint_status(&url, tls),
                        )
                        .await
                        .ok()?
                        .ok()?;
                        Some((name.clone(), status))
                    },
                ))
                .await;
                observation.statuses = statuses.into_iter().flatten().collect();
                observation.planner.leader =
                    observation.statuses.iter().map(|(_, s)| s.leader).find(|l| *l != 0);
                let seen: Vec<Seen> = named
                    .into_iter()
                    .map(|(name, m)| Seen {
                        id: m.id,
                        running: running.contains(&name),
                        healthy: observation.statuses.iter().any(|(n, _)| *n == name),
                        has_data: with_data.contains(&name),
                        name,
                        peer_url: m.peer_url,
                        is_learner: m.is_learner,
                        failing: false,
                    })
                    .collect();
                let down: BTreeSet<String> =
                    seen.iter().filter(|m: &&Seen| !m.running).map(|m| m.name.clone()).collect();
                if !down.is_empty() {
                    observation.planner.restarting = port.restarting(&down).await?;
                }
                observation.planner.members = Some(seen);
            }
            Err(err) => observation.unreachable = Some(err.to_string()),
        }
    }
    observation.planner.running = running;
    observation.planner.with_data = with_data;
    Ok(observation)
}

/// The endpoints that accept a TCP connection now. Members that are still starting are left out
/// here, in a few milliseconds, instead of holding the etcd client in gRPC's reconnect backoff
/// for a second or more.
async fn accepting(endpoints: Vec<String>) -> Vec<String> {
    let checks = endpoints.into_iter().map(|endpoint| async move {
        let url = url::Url::parse(&endpoint).ok()?;
        let address = (url.host_str()?.to_owned(), url.port_or_known_default()?);
        let connect = tokio::net::TcpStream::connect(address);
        let accepted = tokio::time::timeout(Duration::from_millis(500), connect).await;
        matches!(accepted, Ok(Ok(_))).then_some(endpoint)
    });
    join_all(checks).await.into_iter().flatten().collect()
}

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
            MemberStatus {
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
            }
        })
        .collect();
    let ready = members.iter().filter(|m| m.ready).count();
    let voters = members.iter().filter(|m| m.role == Some(MemberRole::Voter)).count();
    let quorum_ok = voters > 0 && ready >= super::planner::quorum(voters);
    let cluster_id = observation.cluster_id.map(hex_id).or_else(|| previous.cluster_id.clone());
    let phase = match step {
        _ if target.size == 0 && observation.planner.running.is_empty() => ClusterPhase::Stopped,
        Step::Bootstrap { .. } => ClusterPhase::Creating,
        Step::Restart { .. } => ClusterPhase::Recovering,
        Step::Done if ready == target.size => ClusterPhase::Running,
        // No member answers: Degraded at once, Failed only once that has lasted (a member
        // restarting, a DNS or network blip is not a lost cluster).
        _ if observation.unreachable.is_some() && observation.planner.bootstrapped => {
            if quorum_lost_for(previous) >= QUORUM_LOSS_AFTER {
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
    // A member that answers with another version than the spec's: a rolling upgrade is under way.
    let behind = |m: &MemberStatus| matches!((&target.version, &m.version), (Some(wanted), Some(runs)) if wanted != runs);
    let phase = match phase {
        ClusterPhase::Running | ClusterPhase::Degraded if members.iter().any(behind) => {
            ClusterPhase::Upgrading
        }
        phase => phase,
    };
    let mut conditions = previous.conditions.clone();
    let generation = target.generation;
    let summary = format!("{ready}/{} members ready", target.size);
    set_condition(
        &mut conditions,
        condition(
            "Ready",
            phase == ClusterPhase::Running,
            if phase == ClusterPhase::Running { "AllMembersReady" } else { "NotAllMembersReady" },
            summary.clone(),
            generation,
        ),
    );
    set_condition(
        &mut conditions,
        condition(
            "Available",
            quorum_ok,
            if quorum_ok { "QuorumHealthy" } else { "NoQuorum" },
            observation.unreachable.clone().unwrap_or(summary),
            generation,
        ),
    );
    let progressing = !matches!(step, Step::Done | Step::Wait { .. });
    let step_message = match step {
        Step::Wait { reason } => reason.clone(),
        other => other.kind().to_owned(),
    };
    set_condition(
        &mut conditions,
        condition(
            "Progressing",
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
            "Degraded",
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
        current_version: observation.statuses.first().map(|(_, s)| s.version.clone()),
        observed_generation: generation,
        stopped,
        selector: None,
        members,
    }
}

/// Performs one step. Steps etcd is not ready for yet ("learner not in sync") are not errors: the
/// next reconcile asks again.
///
/// `voters` are the client URLs of healthy voting members: membership calls go to them only
/// (a learner refuses them).
pub async fn act(
    port: &impl MemberPort,
    step: &Step,
    target: &Target,
    tls: Option<&ClientTls>,
    voters: &[String],
) -> Result<(), Error> {
    let endpoints = || -> Result<Vec<String>, Error> { Ok(voters.to_vec()) };
    let settle = |result: Result<(), etcd::Error>| match result {
        Err(etcd::Error::NotYet { call, reason }) => {
            tracing::info!(call, reason, "etcd is settling; will retry");
            Ok(())
        }
        other => other.map_err(Error::from),
    };
    match step {
        Step::Bootstrap { members } => {
            for member in members {
                port.start(&member.name, members, ClusterState::New, &target.token).await?;
            }
        }
        Step::Restart { names, initial } => {
            for name in names {
                port.start(name, initial, ClusterState::Existing, &target.token).await?;
            }
        }
        Step::AddLearner { member } => {
            // A name that was a member before may have stale data; it must join empty.
            port.wipe(&member.name).await?;
            let mut client = etcd::connect(&endpoints()?, tls).await?;
            settle(etcd::add_learner(&mut client, &member.peer_url).await.map(drop))?;
        }
        Step::StartLearner { member, initial } => {
            // The learner has a new member ID; what still holds its ordinal was the removed one.
            port.release_removed(&member.name).await?;
            port.start(&member.name, initial, ClusterState::Existing, &target.token).await?
        }
        Step::Promote { id, .. } => {
            let mut client = etcd::connect(&endpoints()?, tls).await?;
            settle(etcd::promote(&mut client, *id).await)?;
        }
        Step::MoveLeader { from, to } => {
            let mut client = etcd::connect(&endpoints()?, tls).await?;
            let (_, members) = etcd::member_list(&mut client).await?;
            if let Some(url) =
                members.iter().find(|m| m.id == *from).and_then(|m| m.client_url.clone())
            {
                settle(etcd::move_leader(&url, tls, *to).await)?;
            }
        }
        Step::Remove { id, .. } => {
            let mut client = etcd::connect(&endpoints()?, tls).await?;
            settle(etcd::remove(&mut client, *id).await)?;
        }
        Step::Retire { name } => {
            port.stop(name).await?;
            port.wipe(name).await?;
        }
        Step::StopAll { names } => {
            // Highest ordinal first: a StatefulSet only shrinks from the top.
            for name in names.iter().rev() {
                port.stop(name).await?;
            }
        }
        Step::Wait { .. } | Step::Done => {}
    }
    Ok(())
}

/// One observe + plan: the step, the status to write before performing it, and the client URLs
/// of the healthy voters to perform it through.
pub async fn plan(
    port: &impl MemberPort,
    target: &Target,
    tls: Option<&ClientTls>,
    previous: &EtcdClusterStatus,
) -> Result<(Step, EtcdClusterStatus, Vec<String>), Error> {
    let wanted = wanted(port, target)?;
    let mut observation = observe(port, &wanted, tls, previous).await?;
    mark_failing(&mut observation, target, previous, Timestamp::now());
    let step = next_step(&wanted, &observation.planner);
    let mut status = status(target, &observation, &step, previous);
    status.client_endpoints = wanted
        .iter()
        .filter(|w| status.members.iter().any(|m| m.name == w.name && m.ready))
        .map(|w| port.urls(&w.name).map(|u| u.client))
        .collect::<Result<_, _>>()?;
    for member in &mut status.members {
        member.client_url = port.urls(&member.name).ok().map(|u| u.client);
    }
    let voters =
        status.members.iter().filter(|m| m.ready).filter_map(|m| m.client_url.clone()).collect();
    tracing::debug!(step = step.kind(), "planned");
    Ok((step, status, voters))
}

/// How long no member may answer before the cluster is reported Failed.
pub const QUORUM_LOSS_AFTER: Duration = Duration::from_secs(300);

/// How long the cluster has been without quorum, by the previous status's Available condition
/// (zero when it had quorum).
fn quorum_lost_for(previous: &EtcdClusterStatus) -> Duration {
    let since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "Available" && c.status == "False")
        .map(|c| c.last_transition_time.0);
    since
        .and_then(|since| u64::try_from(Timestamp::now().as_second() - since.as_second()).ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// Since when `name` has been silent, as the previous status recorded it.
fn unhealthy_since(previous: &EtcdClusterStatus, name: &str) -> Option<Time> {
    previous.members.iter().find(|m| m.name == name).and_then(|m| m.unhealthy_since.clone())
}

/// Marks the voters that have been silent past the target's threshold, by the times the previous
/// status recorded (a member first seen silent now has only just started to be).
fn mark_failing(
    observation: &mut Observation,
    target: &Target,
    previous: &EtcdClusterStatus,
    now: Timestamp,
) {
    let Some(threshold) = target.replace_after else { return };
    for member in observation.planner.members.iter_mut().flatten() {
        let since = unhealthy_since(previous, &member.name).map(|t| t.0);
        let silent_for = since.map(|since| now.as_second() - since.as_second()).unwrap_or(0);
        member.failing = !member.healthy
            && !member.is_learner
            && u64::try_from(silent_for).is_ok_and(|s| s >= threshold.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(size: usize) -> Target {
        Target {
            cluster: "c".into(),
            size,
            generation: Some(4),
            token: "t".into(),
            replace_after: None,
            version: None,
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
        let seen = |id: u64| Seen {
            id,
            name: format!("c-{id}"),
            peer_url: format!("https://p{id}"),
            is_learner: false,
            running: true,
            healthy: true,
            has_data: true,
            failing: false,
        };
        let mut observation = Observation::default();
        observation.planner.members = Some((0..3).map(seen).collect());
        let version = |v: &str| EndpointStatus {
            member_id: 0,
            leader: 0,
            cluster_id: 1,
            version: v.into(),
            is_learner: false,
            raft_index: 1,
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
        let lost = Timestamp::now().as_second() - QUORUM_LOSS_AFTER.as_secs() as i64 - 1;
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
            name: format!("c-{id}"),
            peer_url: format!("https://p{id}"),
            is_learner: learner,
            running,
            healthy: running,
            has_data: running,
            failing: false,
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
