//! Quorum loss: when fewer than a quorum of voters has answered for long enough, the cluster is
//! Failed, and the one way back that keeps its data is decided here. Pure.
//!
//! Recovery keeps the surviving member with the newest data (the highest raft index), restarts
//! it alone with `--force-new-cluster` (same data, same keys, same cluster ID), wipes every
//! other member so that none can come back with old data, and leaves growing back to the spec's
//! size to the planner (learner-first, as any scale-up). A person approves it unless the policy
//! is Automatic. It never forces while a lost member's process might still run: those are
//! fenced first (stopped and wiped), and the force waits until they are gone, which on
//! Kubernetes a pod on a node that does not answer never is until a person confirms it.

use std::collections::BTreeSet;
use std::time::Duration;

use super::planner::{Seen, Step, quorum_present};
use crate::etcd::EndpointStatus;

/// What the spec and the platform allow.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Recover without a person's approval.
    pub automatic: bool,
    /// How long the quorum must have been lost before the cluster is Failed.
    pub after: Duration,
    /// The approval a person gave (`etcd.etcd.io/approve-recovery`), if any.
    pub approval: Option<String>,
    /// The newest verified backup of this cluster, restored when no member survives (known on
    /// Kubernetes, from the EtcdBackups that target the cluster).
    pub newest_backup: Option<RestorePoint>,
    /// Members keep their data only as long as their pod (`storage.ephemeral` on Kubernetes;
    /// `local` keeps data directories whatever the spec says): the stop and start that forcing
    /// a new cluster takes would delete the survivor's data.
    pub ephemeral: bool,
}

/// A verified backup recovery can restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePoint {
    /// The EtcdBackup that holds it.
    pub backup: String,
    /// The record's location.
    pub location: String,
    pub revision: i64,
    /// When it was taken (RFC 3339).
    pub taken: String,
}

impl Policy {
    /// The policy of `cluster`: `spec.recovery` and its approval annotation.
    pub fn of(cluster: &etcd_crds::EtcdCluster) -> Self {
        let recovery = &cluster.spec.recovery;
        let annotations = cluster.metadata.annotations.as_ref();
        Self {
            automatic: recovery.policy == etcd_crds::RecoveryPolicy::Automatic,
            after: Duration::from_secs(recovery.quorum_loss_after_seconds.max(1).unsigned_abs()),
            approval: annotations
                .and_then(|a| a.get(etcd_crds::APPROVE_RECOVERY_ANNOTATION))
                .cloned(),
            newest_backup: None,
            ephemeral: false,
        }
    }
}

/// What quorum loss calls for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A quorum answers, or it has not been lost for long: nothing to do here.
    None,
    /// Lost: reported, and waiting (for approval, for a lost process to go, or for a person).
    Failed { message: String },
    /// Recover now.
    Recover { step: Step, message: String },
    /// No member survives: restore the newest verified backup into a new cluster.
    Restore { point: RestorePoint, message: String },
}

/// The one observation recovery decides from.
pub struct Lost<'a> {
    pub members: &'a [Seen],
    pub statuses: &'a [(String, EndpointStatus)],
    /// Members whose process might still run ([`super::MemberPort::may_run`]).
    pub may_run: &'a BTreeSet<String>,
    pub size: usize,
    /// How long the quorum has been lost, and the approval token of this loss (the cluster ID
    /// and when it began, so that an approval never applies to a later loss).
    pub lost_for: Duration,
    pub token: String,
    /// The highest commit index any member reported before (the status's record).
    pub highest_committed: Option<u64>,
}

pub fn decide(policy: &Policy, lost: &Lost<'_>) -> Decision {
    // By ordinal, so that messages and the members discarded read the same on every pass.
    let mut members: Vec<&Seen> = lost.members.iter().collect();
    members.sort_by_key(|m| etcd_certs::cluster::member_ordinal(&m.name));
    let voters: Vec<&Seen> = members.iter().copied().filter(|m| !m.is_learner).collect();
    let answering = |m: &&Seen| m.healthy && lost.statuses.iter().any(|(n, _)| *n == m.name);
    let survivors: Vec<&Seen> = voters.iter().copied().filter(answering).collect();
    let led = lost.statuses.iter().any(|(_, status)| status.leader != 0);
    if voters.is_empty()
        || quorum_present(voters.len(), survivors.len(), led)
        || lost.lost_for < policy.after
    {
        return Decision::None;
    }
    let index = |m: &Seen| {
        lost.statuses.iter().find(|(n, _)| *n == m.name).map_or(0, |(_, s)| s.raft_index)
    };
    let gone: Vec<&str> =
        voters.iter().filter(|m| !answering(m)).map(|m| m.name.as_str()).collect();
    let mut message = format!(
        "quorum lost for {}s: {} of {} voters answer; lost: {}",
        lost.lost_for.as_secs(),
        survivors.len(),
        voters.len(),
        gone.join(", ")
    );
    // The newest data wins; on a tie the lowest ordinal, so that every pass picks the same one.
    let keep = survivors.iter().max_by_key(|m| {
        (index(m), std::cmp::Reverse(etcd_certs::cluster::member_ordinal(&m.name)))
    });
    let Some(keep) = keep else {
        message.push_str("; no member survives with data");
        return restore_backup(policy, lost, message);
    };
    let survive: Vec<String> =
        survivors.iter().map(|m| format!("{} (raft index {})", m.name, index(m))).collect();
    if policy.ephemeral {
        message.push_str(&format!(
            "; survive: {}. Storage is ephemeral: forcing a new cluster restarts the survivor's pod, which deletes its data, so recovery does not force. Save a snapshot from {} now (etcdctl snapshot save needs no quorum) and restore it with an EtcdRestore of type Replace",
            survive.join(", "),
            keep.name
        ));
        return restore_backup(policy, lost, message);
    }
    let discard: Vec<String> =
        members.iter().filter(|m| m.name != keep.name).map(|m| m.name.clone()).collect();
    message.push_str(&format!(
        "; survive with data: {}. Recovery keeps {}, restarts it alone with --force-new-cluster (same data and keys), wipes {} and grows back to {} members",
        survive.join(", "),
        keep.name,
        discard.join(", "),
        lost.size
    ));
    // Forcing discards what the survivor has not seen committed: entries a quorum committed
    // beyond its index are gone with the force. A person decides that, whatever the policy.
    let behind = lost.highest_committed.and_then(|h| h.checked_sub(index(keep))).filter(|d| *d > 0);
    if let Some(behind) = behind {
        message.push_str(&format!(
            ". {} is {behind} raft entries behind the highest commit index seen ({}): forcing it loses them, so recovery is not automatic",
            keep.name,
            index(keep) + behind
        ));
    }
    let automatic = policy.automatic && behind.is_none();
    if !automatic && policy.approval.as_deref() != Some(lost.token.as_str()) {
        message.push_str(&format!(
            ". Approve with the annotation {}={}",
            etcd_crds::APPROVE_RECOVERY_ANNOTATION,
            lost.token
        ));
        return Decision::Failed { message };
    }
    let alive: Vec<&str> = gone.iter().copied().filter(|n| lost.may_run.contains(*n)).collect();
    if !alive.is_empty() {
        message.push_str(&format!(
            ". First {} {} stopped and wiped; the force waits until {} gone (a pod on a node that does not answer stays until a person confirms the node is down: kubectl delete pod NAME --force --grace-period=0)",
            alive.join(", "),
            if alive.len() == 1 { "is" } else { "are" },
            if alive.len() == 1 { "it is" } else { "they are" },
        ));
    }
    let step = Step::ForceNewCluster { keep: keep.name.clone(), discard };
    Decision::Recover { step, message }
}

/// No member survives: the newest verified backup, restored into a new cluster. Always a
/// person's decision, whatever the policy: the operator cannot look inside the volumes, so a
/// cluster whose every node is down with its data intact looks the same, and a restore loses
/// every write after the backup.
fn restore_backup(policy: &Policy, lost: &Lost<'_>, mut message: String) -> Decision {
    let Some(point) = &policy.newest_backup else {
        message.push_str(": no verified backup of this cluster is known; restore one with an EtcdRestore of type Replace");
        return Decision::Failed { message };
    };
    message.push_str(&format!(
        ". Recovery restores the newest verified backup, {} (EtcdBackup {}, revision {}, taken {}), into a new cluster (a new cluster ID): every write after it is lost",
        point.location, point.backup, point.revision, point.taken
    ));
    if policy.approval.as_deref() != Some(lost.token.as_str()) {
        message.push_str(&format!(
            ". If the members' data is gone, approve with the annotation {}={} (even under policy Automatic)",
            etcd_crds::APPROVE_RECOVERY_ANNOTATION,
            lost.token
        ));
        return Decision::Failed { message };
    }
    Decision::Restore { point: point.clone(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(i: u64, healthy: bool) -> Seen {
        let voter = crate::membership::planner::voter(i);
        Seen { id: i, running: healthy, healthy, has_data: healthy, ..voter }
    }

    fn status(i: u64, raft_index: u64) -> (String, EndpointStatus) {
        let s = EndpointStatus {
            member_id: i,
            cluster_id: 1,
            version: "3.5.1".into(),
            raft_index,
            ..EndpointStatus::default()
        };
        (format!("c-{i}"), s)
    }

    static NOTHING_RUNS: BTreeSet<String> = BTreeSet::new();

    /// A loss of `members` (as many as the size), `statuses` answering, lost for `seconds`.
    fn lost<'a>(
        members: &'a [Seen],
        statuses: &'a [(String, EndpointStatus)],
        seconds: u64,
    ) -> Lost<'a> {
        Lost {
            members,
            statuses,
            may_run: &NOTHING_RUNS,
            size: members.len(),
            lost_for: Duration::from_secs(seconds),
            token: "abc-1700000000".into(),
            highest_committed: None,
        }
    }

    fn policy(automatic: bool) -> Policy {
        Policy {
            automatic,
            after: Duration::from_secs(60),
            approval: None,
            newest_backup: None,
            ephemeral: false,
        }
    }

    /// Forcing restarts the survivor's pod; with an emptyDir that is its data gone.
    #[test]
    fn an_ephemeral_survivor_is_never_forced() {
        let members = vec![seen(0, true), seen(1, false), seen(2, false)];
        let statuses = vec![status(0, 7)];
        let lost = lost(&members, &statuses, 600);
        let ephemeral =
            Policy { approval: Some("abc-1700000000".into()), ephemeral: true, ..policy(true) };
        let Decision::Failed { message } = decide(&ephemeral, &lost) else { panic!() };
        assert!(
            message.contains("Storage is ephemeral") && message.contains("snapshot from c-0"),
            "{message}"
        );
    }

    #[test]
    fn a_lost_quorum_is_failed_until_approved_then_the_newest_survivor_is_kept() {
        let members =
            vec![seen(0, true), seen(1, false), seen(2, true), seen(3, false), seen(4, false)];
        let statuses = vec![status(0, 90), status(2, 120)];
        let lost = lost(&members, &statuses, 61);
        let Decision::Failed { message } = decide(&policy(false), &lost) else { panic!() };
        assert!(message.contains("lost: c-1, c-3, c-4"), "{message}");
        assert!(
            message.contains("c-2 (raft index 120)") && message.contains("keeps c-2"),
            "{message}"
        );
        // What `kubectl etcd approve-recovery` reads from the condition.
        assert_eq!(etcd_crds::approval_token(&message), Some("abc-1700000000"), "{message}");

        let approved = Policy { approval: Some("abc-1700000000".into()), ..policy(false) };
        let Decision::Recover { step, .. } = decide(&approved, &lost) else { panic!() };
        let discard = ["c-0", "c-1", "c-3", "c-4"].map(String::from).to_vec();
        assert_eq!(step, Step::ForceNewCluster { keep: "c-2".into(), discard });
        // An approval of another loss does nothing.
        let stale = Policy { approval: Some("abc-1600000000".into()), ..policy(false) };
        assert!(matches!(decide(&stale, &lost), Decision::Failed { .. }));
    }

    #[test]
    fn nothing_happens_with_a_quorum_or_before_the_delay_and_a_running_lost_process_is_fenced() {
        let members = vec![seen(0, true), seen(1, false), seen(2, false)];
        let statuses = vec![status(0, 7)];
        let mut lost = lost(&members, &statuses, 30);
        assert_eq!(decide(&policy(true), &lost), Decision::None, "not lost for long enough");
        lost.lost_for = Duration::from_secs(600);
        assert!(matches!(decide(&policy(true), &lost), Decision::Recover { .. }));
        let still_running: BTreeSet<String> = ["c-2".to_owned()].into();
        lost.may_run = &still_running;
        let Decision::Recover { message, .. } = decide(&policy(true), &lost) else { panic!() };
        assert!(message.contains("First c-2 is stopped and wiped; the force waits"), "{message}");

        let healthy = vec![seen(0, true), seen(1, true), seen(2, false)];
        let statuses = vec![status(0, 7), status(1, 7)];
        let ok = Lost { members: &healthy, statuses: &statuses, ..lost };
        assert_eq!(decide(&policy(true), &ok), Decision::None, "2 of 3 is a quorum");
    }

    /// One of three answers, long past the threshold, under Automatic: if it follows a leader,
    /// a majority the operator cannot reach is alive, and nothing is forced.
    #[test]
    fn a_member_that_follows_a_leader_proves_a_quorum() {
        let members = vec![seen(0, true), seen(1, false), seen(2, false)];
        let led = vec![(status(0, 7).0, EndpointStatus { leader: 2, ..status(0, 7).1 })];
        assert_eq!(decide(&policy(true), &lost(&members, &led, 600)), Decision::None);
        let leaderless = vec![status(0, 7)];
        let lost = lost(&members, &leaderless, 600);
        assert!(matches!(decide(&policy(true), &lost), Decision::Recover { .. }));
    }

    /// Entries committed beyond the survivor's index are lost by forcing it: never automatic.
    #[test]
    fn a_survivor_behind_the_highest_commit_seen_waits_for_a_person() {
        let members = vec![seen(0, true), seen(1, false), seen(2, false)];
        let statuses = vec![status(0, 90)];
        let mut lost = lost(&members, &statuses, 600);
        lost.highest_committed = Some(90);
        assert!(matches!(decide(&policy(true), &lost), Decision::Recover { .. }), "not behind");
        lost.highest_committed = Some(120);
        let Decision::Failed { message } = decide(&policy(true), &lost) else { panic!() };
        assert!(
            message.contains("c-0 is 30 raft entries behind the highest commit index seen (120)"),
            "{message}"
        );
        // What `kubectl etcd approve-recovery` reads from the condition.
        assert_eq!(etcd_crds::approval_token(&message), Some("abc-1700000000"), "{message}");
        let approved = Policy { approval: Some("abc-1700000000".into()), ..policy(true) };
        assert!(matches!(decide(&approved, &lost), Decision::Recover { .. }));
    }

    #[test]
    fn with_no_survivor_the_newest_verified_backup_is_restored_only_once_a_person_approves() {
        let members = vec![seen(0, false), seen(1, false), seen(2, false)];
        let lost = lost(&members, &[], 600);
        let Decision::Failed { message } = decide(&policy(true), &lost) else { panic!() };
        assert!(message.contains("no verified backup of this cluster is known"), "{message}");

        let point = RestorePoint {
            backup: "nightly".into(),
            location: "s3://b/prod/nightly/c-20261125T010000Z.db.zst".into(),
            revision: 4242,
            taken: "2026-11-25T01:00:04Z".into(),
        };
        let known = Policy { newest_backup: Some(point.clone()), ..policy(true) };
        let Decision::Failed { message } = decide(&known, &lost) else { panic!() };
        assert!(
            message.contains("revision 4242") && message.contains("every write after it is lost"),
            "{message}"
        );
        assert!(message.contains("(even under policy Automatic)"), "{message}");
        assert_eq!(etcd_crds::approval_token(&message), Some("abc-1700000000"), "{message}");

        let approved = Policy { approval: Some("abc-1700000000".into()), ..known };
        let Decision::Restore { point: chosen, .. } = decide(&approved, &lost) else { panic!() };
        assert_eq!(chosen, point);
    }
}
