//! Observe → plan → act, shared by every member adapter: what etcd and the port say, the one step
//! the planner picks, the status object the CRD carries (see [`super::status`]), and performing
//! the step.
//!
//! The status is computed before the step is performed and written by the caller first, so the
//! record a restart from zero needs exists before any member stops.

use etcd_crds::conditions::types;
use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use etcd_crds::EtcdClusterStatus;
use futures::future::join_all;

use super::consistency::{self, Verdict};
use super::planner::{Observed, Seen, Step, Wanted, next_step};
use super::recovery::{self, Decision, Lost};
use super::status::{quorum_lost_for, quorum_lost_since, status, unhealthy_since};
use super::{Error, MemberPort};
use super::{space, upgrade};
use crate::etcd::ClusterState;
use crate::etcd::{self, ClientTls, EndpointStatus, hex_id};

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
    /// The etcd version members should run; `None` where the operator does not choose it.
    pub version: Option<String>,
    /// The operator restarts members onto `version` itself, one at a time (`local`); on
    /// Kubernetes the StatefulSet's rolling update does.
    pub rolls_versions: bool,
    /// What quorum loss may lead to.
    pub recovery: recovery::Policy,
    /// Each member's `--quota-backend-bytes` (0: etcd's default): what NOSPACE is judged by.
    pub quota_backend_bytes: i64,
    /// How often the voters' data is compared ([`consistency`]); `None` never.
    pub check_consistency_every: Option<Duration>,
}

impl Target {
    /// A spec's seconds as a period (0 and below: never): `replaceUnhealthyAfterSeconds`,
    /// `maintenance.consistencyCheckSeconds`.
    pub fn seconds(seconds: i64) -> Option<Duration> {
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
    /// Why each running member that did not answer its status call failed, by name.
    pub errors: Vec<(String, String)>,
    /// Why the member list could not be read, when members run but none answered, or when no
    /// member is left that could (none runs, none has its data).
    pub unreachable: Option<String>,
    /// The current revision and whether the history before it is compacted away; asked only
    /// while NOSPACE is raised (see [`super::space`]).
    pub revision: i64,
    pub compacted: bool,
}

/// The members this process defragmented under NOSPACE (see [`space`]'s documentation for why
/// this is remembered here rather than read from etcd).
static DEFRAGMENTED: std::sync::LazyLock<space::Defragmented> =
    std::sync::LazyLock::new(space::Defragmented::default);

/// The last consistency check of each cluster (see [`consistency::Checks`]).
static CHECKS: std::sync::LazyLock<consistency::Checks> =
    std::sync::LazyLock::new(consistency::Checks::default);

impl Target {
    /// The key of this cluster in the process's memory of defragmentations and checks.
    fn memory_key(&self) -> String {
        format!("{}/{}", self.token, self.cluster)
    }
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
        match etcd::member_list_from_any(&endpoints, tls).await {
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
                        let answer = async {
                            let url = port.urls(name).map_err(|e| e.to_string())?.client;
                            tokio::time::timeout(
                                Duration::from_secs(3),
                                etcd::endpoint_status(&url, tls),
                            )
                            .await
                            .map_err(|_| "no answer to a status call in 3 s".to_owned())?
                            .map_err(|e| e.to_string())
                        };
                        (name.clone(), answer.await)
                    },
                ))
                .await;
                for (name, answer) in statuses {
                    match answer {
                        Ok(status) => observation.statuses.push((name, status)),
                        Err(why) => observation.errors.push((name, why)),
                    }
                }
                observation.planner.leader =
                    observation.statuses.iter().map(|(_, s)| s.leader).find(|l| *l != 0);
                if !space::raised(&observation.statuses).is_empty() {
                    (observation.revision, observation.compacted) =
                        compacted(&endpoints, tls).await;
                }
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
                // Only a member that answers alone can have been forced; looked for only then.
                if seen.len() == 1 {
                    observation.planner.forced = port.forced().await?;
                }
                observation.planner.members = Some(seen);
            }
            Err(err) => observation.unreachable = Some(err.to_string()),
        }
    }
    if wanted.is_empty() && running.is_empty() {
        observation.planner.stopping = port.may_run().await?;
    }
    // Members of a bootstrap under way that do not run yet: which ones the platform is
    // starting, and which were never started (the bootstrap was cut short).
    if observation.planner.members.is_none()
        && !observation.planner.bootstrapped
        && !running.is_empty()
    {
        let down: BTreeSet<String> =
            wanted.iter().map(|w| w.name.clone()).filter(|n| !running.contains(n)).collect();
        if !down.is_empty() {
            observation.planner.restarting = port.restarting(&down).await?;
        }
    }
    // Nothing left to answer: no member runs and none has its data (every volume lost, or an
    // ephemeral cluster whose pods all went). A loss like members that run and never answer:
    // after `quorumLossAfterSeconds` it is Failed, and only a backup can bring it back.
    if observation.planner.bootstrapped
        && observation.planner.members.is_none()
        && !wanted.is_empty()
        && running.is_empty()
        && with_data.is_empty()
    {
        observation.unreachable = Some("no member runs and none has its data".to_owned());
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

/// The current revision and whether the history is compacted away; when no member says, not
/// yet (a compaction that is not needed is a no-op).
async fn compacted(endpoints: &[String], tls: Option<&ClientTls>) -> (i64, bool) {
    let asked = async {
        let mut client = etcd::connect(endpoints, tls).await?;
        etcd::history_compacted(&mut client).await
    };
    asked
        .await
        .inspect_err(|err| tracing::debug!(%err, "compaction not known"))
        .unwrap_or((0, false))
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
        Step::Promote { id, name } => {
            // Marked first: a crash in between leaves a learner that needs its data, never a
            // voter that may start without it.
            port.require_data(name).await?;
            let mut client = etcd::connect(&endpoints()?, tls).await?;
            settle(etcd::promote(&mut client, *id).await)?;
        }
        Step::MoveLeader { from, to } => {
            let (_, members) = etcd::member_list_from_any(&endpoints()?, tls).await?;
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
        Step::Upgrade { name, version, initial } => {
            port.upgrade(name, version, initial, &target.token).await?;
        }
        Step::ForceNewCluster { keep, discard } => {
            // Every other member first: none may come back with the old membership or data,
            // and none may still run when the kept one forces (a lost majority still serving
            // would be a second cluster). Until they are gone, the next pass tries again.
            for name in discard {
                port.fence(name).await?;
            }
            let may_run = port.may_run().await?;
            if let Some(name) = discard.iter().find(|n| may_run.contains(*n)) {
                tracing::warn!(member = %name, "recovery waits until the process of a fenced member is gone");
                return Ok(());
            }
            port.stop(keep).await?;
            let alone = [Wanted { name: keep.clone(), peer_url: port.urls(keep)?.peer }];
            port.start(keep, &alone, ClusterState::ForceNew, &target.token).await?;
        }
        Step::EndForce { name } => port.end_force(name).await?,
        Step::Compact => {
            let mut client = etcd::connect(&endpoints()?, tls).await?;
            let revision = etcd::compact_history(&mut client).await?;
            tracing::info!(cluster = %target.cluster, revision, "NOSPACE: history compacted");
        }
        Step::Defragment { name, revision } => {
            etcd::defragment(&port.urls(name)?.client, tls).await?;
            DEFRAGMENTED.record(&target.memory_key(), *revision, name);
        }
        Step::Disarm { alarm, members } => {
            let mut client = etcd::connect(&endpoints()?, tls).await?;
            etcd::disarm(&mut client, *alarm, members).await?;
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

/// What one observe + plan decided.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The one next step.
    pub step: Step,
    /// The status to write before performing it.
    pub status: EtcdClusterStatus,
    /// Client URLs of the healthy voters to perform it through.
    pub voters: Vec<String>,
    /// No member survives and a person approved restoring this backup into a new cluster:
    /// the platform's to carry out (on Kubernetes, an EtcdRestore of type Replace).
    pub restore: Option<recovery::RestorePoint>,
}

/// One observe + plan.
pub async fn plan(
    port: &impl MemberPort,
    target: &Target,
    tls: Option<&ClientTls>,
    previous: &EtcdClusterStatus,
) -> Result<Plan, Error> {
    let wanted = wanted(port, target)?;
    let mut observation = observe(port, &wanted, tls, previous).await?;
    mark_failing(&mut observation, target, previous, Timestamp::now());
    let mut step = next_step(&wanted, &observation.planner);
    if let (Step::Done, true, Some(version), Some(members)) =
        (&step, target.rolls_versions, &target.version, &observation.planner.members)
    {
        let current: Vec<Wanted> = members
            .iter()
            .map(|m| Wanted { name: m.name.clone(), peer_url: m.peer_url.clone() })
            .collect();
        let (statuses, leader) = (&observation.statuses, observation.planner.leader);
        step = upgrade::next(version, members, statuses, leader, &current).unwrap_or(Step::Done);
    }
    if let (Step::Done, Some(members)) = (&step, &observation.planner.members) {
        let quota = match target.quota_backend_bytes {
            0 => etcd::DEFAULT_QUOTA_BYTES,
            set => set,
        };
        let space = space::Space {
            quota,
            revision: observation.revision,
            compacted: observation.compacted,
            defragmented: DEFRAGMENTED.at(&target.memory_key(), observation.revision),
        };
        let (statuses, leader) = (&observation.statuses, observation.planner.leader);
        step = space::next(members, statuses, leader, &space).unwrap_or(Step::Done);
    }
    // etcd's CORRUPT alarm is mended even where periodic checks are off: it refuses requests.
    let corrupt = !consistency::corrupt(&observation.statuses).is_empty();
    if let (Step::Done, Some(members), Some(every)) = (
        &step,
        &observation.planner.members,
        target.check_consistency_every.or(corrupt.then_some(Duration::MAX)),
    ) {
        step = check_consistency(port, target, members, &observation, tls, every).await;
    }
    let lost_long_enough = quorum_lost_for(previous) >= target.recovery.after;
    // The approval token: the cluster ID and when the quorum was lost, so that an approval
    // never applies to a later loss.
    let token = {
        let cluster_id = observation.cluster_id.map(hex_id).or_else(|| previous.cluster_id.clone());
        let since = quorum_lost_since(previous).map_or(0, |t| t.as_second());
        format!("{}-{since}", cluster_id.unwrap_or_default())
    };
    let decide = |members: &[Seen], statuses: &[(String, EndpointStatus)], may_run| {
        let lost = Lost {
            members,
            statuses,
            may_run,
            size: target.size,
            lost_for: quorum_lost_for(previous),
            token: token.clone(),
            highest_committed: previous.highest_committed_index,
        };
        recovery::decide(&target.recovery, &lost)
    };
    let decision = match &observation.planner.members {
        // Worth asking the platform what might still run only when recovery could act.
        Some(members) if lost_long_enough => {
            decide(members, &observation.statuses, &port.may_run().await?)
        }
        Some(_) => Decision::None,
        // The kept member was restarted to force a new cluster and answers nothing yet (on
        // Kubernetes its pod is being recreated, the others wait for entries on new, empty
        // claims): every other step would be taken on the old membership. Wait for it, unless
        // nothing brings it back.
        None if recovering(previous) => {
            let kept = previous.forced_start.as_ref().map(|f| f.member.as_str());
            let coming = match kept {
                Some(name) => {
                    let name = BTreeSet::from([name.to_owned()]);
                    port.running().await?.is_superset(&name)
                        || port.restarting(&name).await?.is_superset(&name)
                }
                None => true,
            };
            while_forcing(kept, coming)
        }
        // Members run but none answers, for long: decided on the voters the last status
        // recorded (none survives, so only a backup can bring the cluster back).
        None if lost_long_enough
            && observation.unreachable.is_some()
            && observation.planner.bootstrapped =>
        {
            decide(&recorded_voters(previous), &[], &BTreeSet::new())
        }
        None => Decision::None,
    };
    let mut restore = None;
    match &decision {
        Decision::Recover { step: recover, .. } => step = recover.clone(),
        Decision::Failed { message } => step = Step::Wait { reason: message.clone() },
        Decision::Restore { point, message } => {
            step = Step::Wait { reason: message.clone() };
            restore = Some(point.clone());
        }
        Decision::None => {}
    }
    let mut status = status(target, &observation, &step, previous);
    if let Some((ok, reason, message)) =
        CHECKS.last(&target.memory_key()).and_then(|check| check.verdict.condition())
    {
        let condition = etcd_crds::conditions::condition(
            types::DATA_CONSISTENT,
            ok,
            reason,
            message,
            target.generation,
        );
        etcd_crds::conditions::set_condition(&mut status.conditions, condition);
    }
    if observation.planner.members.is_none() && recovering(previous) {
        // Still recovering: the condition says what recovery did, until the member answers, or
        // for how long it has not.
        let (phase, stalled) = recovery_wait(previous, Timestamp::now());
        status.phase = Some(phase);
        if let Some(message) = stalled {
            let condition = etcd_crds::conditions::condition(
                types::QUORUM_LOST,
                true,
                "Recovering",
                message,
                target.generation,
            );
            etcd_crds::conditions::set_condition(&mut status.conditions, condition);
        }
    } else {
        report_quorum_loss(&mut status, &decision, previous, target.generation);
    }
    // The last pass that decided to force is the one whose step stopped and started the kept
    // member (earlier ones waited for the fenced members to go): the wait counts from there.
    status.forced_start = match &decision {
        Decision::Recover { step: Step::ForceNewCluster { keep, .. }, .. } => {
            Some(etcd_crds::ForcedStart { member: keep.clone(), at: Time(Timestamp::now()) })
        }
        _ if recovering(&status) && observation.planner.members.is_none() => {
            previous.forced_start.clone()
        }
        _ => None,
    };
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
    Ok(Plan { step, status, voters, restore })
}

/// While recovery's kept member answers nothing: wait for it to come up alone, unless nothing
/// runs it and the platform is not bringing it back. Then the operator stopped it and was
/// interrupted before starting it alone (killed, or its leader lease lapsed), and it is started
/// alone again. That is never a second cluster: while none answers, no member can have joined
/// the kept one, so forcing its data again makes the same one-member cluster.
fn while_forcing(kept: Option<&str>, coming: bool) -> Decision {
    match kept {
        Some(keep) if !coming => Decision::Recover {
            step: Step::ForceNewCluster { keep: keep.to_owned(), discard: Vec::new() },
            message: format!(
                "recovering: {keep} is stopped and nothing starts it (the operator was interrupted between stopping it and starting it alone); starting it alone with --force-new-cluster"
            ),
        },
        _ => Decision::Failed {
            message:
                "recovering: waiting for the kept member to start alone with --force-new-cluster"
                    .into(),
        },
    }
}

/// The voters' data compared when a check is due (every voter answering), and the step that
/// replaces a member whose data differs from a quorum's or that etcd raised CORRUPT for, or
/// disarms that alarm ([`consistency`]); `Done` when there is none.
async fn check_consistency(
    port: &impl MemberPort,
    target: &Target,
    members: &[Seen],
    observation: &Observation,
    tls: Option<&ClientTls>,
    every: Duration,
) -> Step {
    let key = target.memory_key();
    let voters: Vec<&Seen> = members.iter().filter(|m| !m.is_learner).collect();
    let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
    let corrupt = consistency::corrupt(&observation.statuses);
    let alarmed = !corrupt.is_empty();
    if voters.iter().all(|m| m.healthy)
        && consistency::due(CHECKS.last(&key).as_ref(), every, &ids, alarmed)
    {
        let verdict = hash_voters(port, &voters, &observation.statuses, tls).await;
        match &verdict {
            Verdict::Consistent { .. } => {
                tracing::debug!(cluster = %target.cluster, ?verdict, "data consistent")
            }
            Verdict::Unknown { reason } => {
                tracing::info!(cluster = %target.cluster, %reason, "consistency not checked")
            }
            _ => tracing::warn!(cluster = %target.cluster, ?verdict, "the members' data differ"),
        }
        CHECKS.record(&key, verdict, alarmed);
    }
    let last = CHECKS.last(&key);
    consistency::next(members, observation.planner.leader, last.as_ref(), &corrupt)
        .unwrap_or(Step::Done)
}

/// Every voter's hash at the lowest revision any of them reported with its status (all have
/// applied it). Status and HashKV are maintenance calls, answered under CORRUPT too.
async fn hash_voters(
    port: &impl MemberPort,
    voters: &[&Seen],
    statuses: &[(String, EndpointStatus)],
    tls: Option<&ClientTls>,
) -> Verdict {
    let revisions: Vec<i64> = voters
        .iter()
        .filter_map(|m| statuses.iter().find(|(n, _)| *n == m.name).map(|(_, s)| s.revision))
        .collect();
    let Some(revision) =
        revisions.iter().copied().min().filter(|_| revisions.len() == voters.len())
    else {
        return Verdict::Unknown { reason: "a voter gave no status".into() };
    };
    let hashes = join_all(voters.iter().map(|m| async move {
        let url = port.urls(&m.name).ok()?.client;
        etcd::hash_kv(&url, tls, revision)
            .await
            .inspect_err(|err| tracing::info!(member = %m.name, %err, "no hash"))
            .ok()
            .map(|hash| (m.id, m.name.clone(), hash))
    }))
    .await;
    let hashes: Vec<_> = hashes.into_iter().flatten().collect();
    consistency::judge(revision, voters.len(), &hashes)
}

/// The voters the last status recorded, none of them answering.
fn recorded_voters(previous: &EtcdClusterStatus) -> Vec<Seen> {
    previous
        .members
        .iter()
        .filter(|m| m.role == Some(etcd_crds::MemberRole::Voter))
        .map(|m| Seen {
            id: m.id.as_deref().and_then(|id| u64::from_str_radix(id, 16).ok()).unwrap_or(0),
            name: m.name.clone(),
            peer_url: m.peer_url.clone().unwrap_or_default(),
            is_learner: false,
            running: false,
            healthy: false,
            has_data: false,
            failing: false,
        })
        .collect()
}

/// How long the kept member may take to answer alone after its forced start (a pod scheduled,
/// its image pulled, etcd opening and checking a large backend) before the cluster is Failed.
pub const RECOVERY_STALLED_AFTER: Duration = Duration::from_secs(600);

/// The phase while the kept member has not answered since its forced start: Recovering, then
/// Failed once that has lasted past [`RECOVERY_STALLED_AFTER`], with what to look at. Nothing
/// else is forced meanwhile: the kept member had the newest data, and a second force from
/// another member would be a second cluster if the first one came up after all.
fn recovery_wait(
    previous: &EtcdClusterStatus,
    now: Timestamp,
) -> (etcd_crds::ClusterPhase, Option<String>) {
    let Some(forced) = &previous.forced_start else {
        return (etcd_crds::ClusterPhase::Recovering, None);
    };
    let waited = u64::try_from(now.as_second() - forced.at.0.as_second()).unwrap_or_default();
    let waited = Duration::from_secs(waited);
    if waited < RECOVERY_STALLED_AFTER {
        return (etcd_crds::ClusterPhase::Recovering, None);
    }
    let kept = &forced.member;
    let message = format!(
        "recovery stalled: {kept} has not answered for {}s since it was restarted alone with --force-new-cluster; its logs say why (on Kubernetes: kubectl logs {kept} -c etcd, and its pod's events). Nothing else is forced meanwhile: it holds the newest data. Once it answers, recovery goes on",
        waited.as_secs()
    );
    (etcd_crds::ClusterPhase::Failed, Some(message))
}

/// The previous pass started recovery (the QuorumLost condition says Recovering).
fn recovering(previous: &EtcdClusterStatus) -> bool {
    previous
        .conditions
        .iter()
        .any(|c| c.type_ == types::QUORUM_LOST && c.status == "True" && c.reason == "Recovering")
}

/// A lost quorum is phase Failed until recovery starts, with the whole story in a condition;
/// the condition stays (False) once the quorum is back, saying so.
fn report_quorum_loss(
    status: &mut EtcdClusterStatus,
    decision: &Decision,
    previous: &EtcdClusterStatus,
    generation: Option<i64>,
) {
    let (lost, reason, message) = match decision {
        Decision::Failed { message } => {
            status.phase = Some(etcd_crds::ClusterPhase::Failed);
            (true, "QuorumLost", message.clone())
        }
        Decision::Recover { message, .. } => (true, "Recovering", message.clone()),
        Decision::Restore { message, .. } => {
            status.phase = Some(etcd_crds::ClusterPhase::Recovering);
            (true, "RestoringBackup", message.clone())
        }
        Decision::None => {
            let reported = previous.conditions.iter().any(|c| c.type_ == types::QUORUM_LOST);
            if !reported {
                return;
            }
            (false, "QuorumHealthy", "a quorum of voters answers".to_owned())
        }
    };
    let condition =
        etcd_crds::conditions::condition(types::QUORUM_LOST, lost, reason, message, generation);
    etcd_crds::conditions::set_condition(&mut status.conditions, condition);
}

/// Marks the voters that have been silent past the target's threshold, by the times the previous
/// status recorded (a member first seen silent now has only just started to be). A member the
/// platform is still starting (on Kubernetes a pod Pending, pulling its image, attaching its
/// volume, in member-init) is not failing however long that takes: replacing it would start the
/// same way again, and a mistyped image during a roll would cost a member. Only a member whose
/// process ran and went silent is replaced (one whose data is lost is the planner's other case).
fn mark_failing(
    observation: &mut Observation,
    target: &Target,
    previous: &EtcdClusterStatus,
    now: Timestamp,
) {
    let Some(threshold) = target.replace_after else { return };
    let restarting = &observation.planner.restarting;
    for member in observation.planner.members.iter_mut().flatten() {
        let since = unhealthy_since(previous, &member.name).map(|t| t.0);
        let silent_for = since.map(|since| now.as_second() - since.as_second()).unwrap_or(0);
        let starting = !member.running && restarting.contains(&member.name);
        member.failing = !member.healthy
            && !member.is_learner
            && !starting
            && u64::try_from(silent_for).is_ok_and(|s| s >= threshold.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use etcd_crds::{EtcdClusterStatus, MemberStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    /// The kept member the operator stopped but did not start alone (it was interrupted
    /// between the two) is started alone again; one that is starting, or runs but does not
    /// answer yet, is waited for.
    #[test]
    fn a_force_interrupted_after_the_stop_is_started_again_and_nothing_else_is() {
        let again = Step::ForceNewCluster { keep: "c-2".into(), discard: Vec::new() };
        assert!(
            matches!(while_forcing(Some("c-2"), false), Decision::Recover { step, .. } if step == again)
        );
        assert!(matches!(while_forcing(Some("c-2"), true), Decision::Failed { .. }));
        assert!(matches!(while_forcing(None, false), Decision::Failed { .. }));
    }

    /// The kept member that never answers after its forced start: Recovering for ten minutes,
    /// then Failed saying which member to look at; nothing else is forced meanwhile.
    #[test]
    fn a_forced_start_that_never_answers_fails_after_a_bound() {
        let at = Timestamp::from_second(2_000_000).unwrap();
        let previous = EtcdClusterStatus {
            forced_start: Some(etcd_crds::ForcedStart { member: "c-2".into(), at: Time(at) }),
            ..EtcdClusterStatus::default()
        };
        let later = |seconds: i64| Timestamp::from_second(2_000_000 + seconds).unwrap();
        assert_eq!(
            recovery_wait(&previous, later(599)),
            (etcd_crds::ClusterPhase::Recovering, None)
        );
        let (phase, message) = recovery_wait(&previous, later(600));
        assert_eq!(phase, etcd_crds::ClusterPhase::Failed);
        let message = message.unwrap();
        assert!(message.contains("c-2 has not answered for 600s"), "{message}");
        assert!(message.contains("kubectl logs c-2 -c etcd"), "{message}");
    }

    /// A voter silent for ten minutes is replaced if its process ran; not while the platform is
    /// still starting its pod (an image that cannot be pulled, a volume that will not attach).
    #[test]
    fn a_member_still_starting_is_not_failing_however_long_it_takes() {
        let target = Target {
            cluster: "c".into(),
            size: 3,
            generation: None,
            token: "t".into(),
            replace_after: Some(Duration::from_secs(300)),
            version: None,
            rolls_versions: false,
            recovery: recovery::Policy::default(),
            quota_backend_bytes: 0,
            check_consistency_every: None,
        };
        let now = Timestamp::from_second(2_000_000).unwrap();
        let silent_since = Time(Timestamp::from_second(2_000_000 - 600).unwrap());
        let previous = EtcdClusterStatus {
            members: vec![MemberStatus {
                name: "c-1".into(),
                unhealthy_since: Some(silent_since),
                ..MemberStatus::default()
            }],
            ..EtcdClusterStatus::default()
        };
        let failing = |running: bool, restarting: bool| {
            let mut observation = Observation::default();
            observation.planner.members = Some(vec![Seen {
                id: 2,
                name: "c-1".into(),
                peer_url: "https://c-1:2380".into(),
                is_learner: false,
                running,
                healthy: false,
                has_data: true,
                failing: false,
            }]);
            if restarting {
                observation.planner.restarting.insert("c-1".into());
            }
            mark_failing(&mut observation, &target, &previous, now);
            observation.planner.members.unwrap()[0].failing
        };
        assert!(!failing(false, true), "a pod being started is not replaced");
        assert!(failing(true, false), "a process that ran and went silent is");
        assert!(failing(false, false), "so is one nobody is bringing back");
    }
}
