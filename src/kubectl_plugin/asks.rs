//! What each `kubectl etcd` command asks of the API, decided from the objects it read: the
//! annotation to set, the object to create, or why there is nothing to do. No I/O here.

use etcd_crds::conditions::types;
use etcd_crds::{
    APPROVE_RECOVERY_ANNOTATION, BackupReference, EtcdBackup, EtcdCluster, EtcdRestore,
    EtcdRestoreSpec, ROTATE_CA_ANNOTATION, RestoreSource, RestoreType,
    SKIP_FINAL_BACKUP_ANNOTATION,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// An annotation to set on an EtcdCluster, and what it will make the operator do.
#[derive(Debug, PartialEq, Eq)]
pub struct Annotate {
    pub key: &'static str,
    pub value: String,
    /// Shown before it is set: what the operator will do.
    pub effect: String,
}

impl Annotate {
    /// The kubectl command that does the same.
    pub fn kubectl(&self, namespace: &str, cluster: &str) -> String {
        format!(
            "kubectl -n {namespace} annotate etcdcluster {cluster} --overwrite {}={}",
            self.key,
            shell_quoted(&self.value)
        )
    }
}

fn shell_quoted(value: &str) -> String {
    if value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c)) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The approval of the quorum loss the cluster reports now, with the plan it approves; refused
/// when the cluster waits for no approval (an approval applies to one loss only: the token names
/// the cluster ID and when the quorum was lost).
pub fn approve_recovery(cluster: &EtcdCluster) -> Result<Annotate, String> {
    let name = cluster.name_any();
    let lost = cluster.status.as_ref().and_then(|s| {
        s.conditions.iter().find(|c| c.type_ == types::QUORUM_LOST && c.status == "True")
    });
    let Some(lost) = lost else {
        return Err(format!("{name} has not lost its quorum: there is nothing to approve"));
    };
    let Some(token) = etcd_crds::approval_token(&lost.message) else {
        return Err(format!(
            "{name} is recovering without waiting for an approval ({}): {}",
            lost.reason, lost.message
        ));
    };
    if cluster.annotations().get(APPROVE_RECOVERY_ANNOTATION).map(String::as_str) == Some(token) {
        return Err(format!("the recovery of {name} is approved already: {}", lost.message));
    }
    Ok(Annotate {
        key: APPROVE_RECOVERY_ANNOTATION,
        value: token.to_owned(),
        effect: lost.message.clone(),
    })
}

/// Deletion without the final backup, saying why.
pub fn skip_final_backup(cluster: &EtcdCluster, reason: &str) -> Result<Annotate, String> {
    if reason.trim().is_empty() {
        return Err("--reason: say why the cluster may go without a final backup".into());
    }
    let name = cluster.name_any();
    Ok(Annotate {
        key: SKIP_FINAL_BACKUP_ANNOTATION,
        value: reason.to_owned(),
        effect: format!(
            "when {name} is deleted, it goes without a final backup; its data is then lost unless an earlier backup holds it"
        ),
    })
}

/// A new CA, asked for by a token the cluster has not seen (the time of asking).
pub fn rotate_ca(cluster: &EtcdCluster, now: Timestamp) -> Result<Annotate, String> {
    let name = cluster.name_any();
    let token = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    if cluster.annotations().get(ROTATE_CA_ANNOTATION) == Some(&token) {
        return Err(format!("a CA rotation of {name} was asked for this second already"));
    }
    Ok(Annotate {
        key: ROTATE_CA_ANNOTATION,
        value: token,
        effect: format!(
            "{name} gets a new CA: members restart one at a time trusting both CAs, then their certificates move to the new one, without downtime"
        ),
    })
}

/// A one-shot EtcdBackup of `cluster` now, stored where `like` stores its backups: `like` named,
/// or else the cluster's only EtcdBackup.
pub fn backup_now(
    cluster: &str,
    backups: &[EtcdBackup],
    like: Option<&str>,
    now: Timestamp,
) -> Result<EtcdBackup, String> {
    let of_cluster: Vec<&EtcdBackup> =
        backups.iter().filter(|b| b.spec.cluster_ref.name == cluster).collect();
    let template = match like {
        Some(like) => of_cluster
            .iter()
            .find(|b| b.name_any() == like)
            .copied()
            .ok_or_else(|| format!("--like {like}: no EtcdBackup of {cluster} has that name"))?,
        None => match of_cluster.as_slice() {
            [only] => *only,
            [] => {
                return Err(format!(
                    "no EtcdBackup of {cluster} says where its backups go: create one (examples/etcdbackup.yaml)"
                ));
            }
            several => {
                let names: Vec<String> = several.iter().map(|b| b.name_any()).collect();
                return Err(format!(
                    "{cluster} has several EtcdBackups ({}): name the one whose destination to use with --like",
                    names.join(", ")
                ));
            }
        },
    };
    let mut spec = template.spec.clone();
    spec.schedule = None;
    spec.time_zone = None;
    spec.suspend = false;
    // A one-shot object keeps its own backup; the template's retention counts the template's.
    spec.retention = 1;
    let name = format!("{cluster}-now-{}", now.strftime("%Y%m%d%H%M%S"));
    Ok(EtcdBackup::new(&name, spec))
}

/// An EtcdRestore of `cluster` from `backup`'s newest verified record: Replace when the cluster
/// exists (stopped, restored, started again), New otherwise, with `spec` for the new cluster.
pub fn restore(
    cluster: &str,
    exists: bool,
    backup: &str,
    spec: Option<etcd_crds::EtcdClusterSpec>,
    now: Timestamp,
) -> Result<EtcdRestore, String> {
    if exists && spec.is_some() {
        return Err(format!(
            "{cluster} exists: a restore replaces its data and keeps its spec; --size and --version apply to a new cluster only"
        ));
    }
    let restore_type = if exists { RestoreType::Replace } else { RestoreType::New };
    let name = format!("{cluster}-{}", now.strftime("%Y%m%d%H%M%S"));
    Ok(EtcdRestore::new(
        &name,
        EtcdRestoreSpec {
            cluster_name: cluster.to_owned(),
            restore_type,
            source: RestoreSource {
                backup_ref: Some(BackupReference { name: backup.to_owned(), record: None }),
                location: None,
            },
            cluster_spec: spec,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn cluster(conditions: Vec<Condition>) -> EtcdCluster {
        let mut cluster: EtcdCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "demo", "namespace": "default"},
            "spec": {"size": 3},
        }))
        .unwrap();
        cluster.status = Some(etcd_crds::EtcdClusterStatus { conditions, ..Default::default() });
        cluster
    }

    fn condition(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "QuorumLost".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    #[test]
    fn an_approval_carries_the_token_of_this_loss_and_shows_the_plan() {
        let plan = "lost: demo-1, demo-2; recovery keeps demo-0. Approve with the annotation etcd.etcd.io/approve-recovery=9f3a-1765000000";
        let mut lost = cluster(vec![condition("True", "QuorumLost", plan)]);
        let approval = approve_recovery(&lost).unwrap();
        assert_eq!(approval.value, "9f3a-1765000000");
        assert_eq!(approval.effect, plan);
        assert_eq!(
            approval.kubectl("default", "demo"),
            "kubectl -n default annotate etcdcluster demo --overwrite etcd.etcd.io/approve-recovery=9f3a-1765000000"
        );
        lost.metadata.annotations =
            Some([(APPROVE_RECOVERY_ANNOTATION.to_owned(), "9f3a-1765000000".to_owned())].into());
        assert!(approve_recovery(&lost).unwrap_err().contains("approved already"));
    }

    #[test]
    fn nothing_to_approve_is_refused() {
        let healthy = cluster(vec![condition("False", "QuorumHealthy", "a quorum answers")]);
        assert!(approve_recovery(&healthy).unwrap_err().contains("nothing to approve"));
        assert!(approve_recovery(&cluster(vec![])).unwrap_err().contains("nothing to approve"));
        let automatic = cluster(vec![condition("True", "Recovering", "recovery keeps demo-0")]);
        assert!(approve_recovery(&automatic).unwrap_err().contains("without waiting"));
    }

    #[test]
    fn a_reason_is_needed_to_skip_the_final_backup_and_is_quoted_for_the_shell() {
        let demo = cluster(vec![]);
        assert!(skip_final_backup(&demo, " ").is_err());
        let skip = skip_final_backup(&demo, "test data, it's gone").unwrap();
        assert_eq!(
            skip.kubectl("default", "demo"),
            r"kubectl -n default annotate etcdcluster demo --overwrite etcd.etcd.io/skip-final-backup='test data, it'\''s gone'"
        );
    }

    fn backup(name: &str, cluster: &str) -> EtcdBackup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdBackup",
            "metadata": {"name": name},
            "spec": {"clusterRef": {"name": cluster}, "schedule": "0 * * * *", "retention": 24,
                     "destination": {"s3": {"bucket": "b", "prefix": "p"}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_backup_now_copies_the_destination_of_the_clusters_backup_without_its_schedule() {
        let now: Timestamp = "2026-12-07T14:05:09Z".parse().unwrap();
        let backups = vec![backup("hourly", "demo"), backup("other", "prod")];
        let one = backup_now("demo", &backups, None, now).unwrap();
        assert_eq!(one.name_any(), "demo-now-20261207140509");
        assert_eq!(one.spec.schedule, None);
        assert_eq!(one.spec.retention, 1);
        assert_eq!(one.spec.destination, backups[0].spec.destination);

        let several = vec![backup("hourly", "demo"), backup("daily", "demo")];
        let err = backup_now("demo", &several, None, now).unwrap_err();
        assert!(err.contains("hourly, daily") && err.contains("--like"), "{err}");
        assert_eq!(backup_now("demo", &several, Some("daily"), now).unwrap().spec.retention, 1);
        assert!(backup_now("demo", &several, Some("other"), now).is_err());
        assert!(backup_now("demo", &[], None, now).unwrap_err().contains("no EtcdBackup"));
    }

    #[test]
    fn a_restore_replaces_an_existing_cluster_and_creates_a_missing_one() {
        let now: Timestamp = "2026-12-07T14:05:09Z".parse().unwrap();
        let replace = restore("demo", true, "hourly", None, now).unwrap();
        assert_eq!(replace.spec.restore_type, RestoreType::Replace);
        let spec: etcd_crds::EtcdClusterSpec = serde_json::from_str(r#"{"size": 1}"#).unwrap();
        assert!(restore("demo", true, "hourly", Some(spec.clone()), now).is_err());
        let new = restore("copy", false, "hourly", Some(spec), now).unwrap();
        assert_eq!(new.spec.restore_type, RestoreType::New);
        assert_eq!(new.spec.cluster_spec.map(|s| s.size), Some(1));
    }
}
