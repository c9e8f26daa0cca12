//! What deleting an EtcdCluster does before its finalizer goes: one last verified backup to a
//! destination the cluster is already backed up to (an EtcdBackup that targets it), then its
//! volumes when `reclaimPolicy` is Delete (unless an EtcdRestore of type Replace restores the
//! cluster into them). Nothing is deleted before that backup is stored:
//! until it is, the deletion waits and the `FinalBackup` condition and a Warning Event say why
//! and how to go on without it (the `etcd.etcd.io/skip-final-backup` annotation).
//!
//! The condition is also the record that the backup was taken: a pass after a crash finds it
//! true and does not take a second one.

use etcd_crds::conditions::types;
use etcd_crds::conditions::{condition, set_condition};
use etcd_crds::{EtcdCluster, REPLACED_BY_ANNOTATION, ReclaimPolicy, SKIP_FINAL_BACKUP_ANNOTATION};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{Context, Error, Problem, kube_err, write_status};
use crate::names;

/// The finalizer's cleanup; an error keeps the finalizer, and the cleanup is tried again.
pub async fn cleanup(cluster: &EtcdCluster, ctx: &Context) -> Result<Action, Error> {
    ensure_final_backup(cluster, ctx).await?;
    if let Some(restore) = cluster.annotations().get(REPLACED_BY_ANNOTATION) {
        let why = format!("kept for EtcdRestore {restore}, which restores the cluster into them");
        ctx.event(cluster, EventType::Normal, "VolumesKept", why).await;
    } else if cluster.spec.storage.reclaim_policy == ReclaimPolicy::Delete {
        let namespace = names::namespace(cluster);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
        crate::k8s::claims::delete_all(&api, &cluster.name_any())
            .await
            .map_err(kube_err("delete the cluster's PersistentVolumeClaims"))?;
        ctx.event(cluster, EventType::Normal, "VolumesDeleted", "reclaimPolicy Delete".into())
            .await;
    }
    ctx.clusters.forget(&super::cluster::metric_labels(cluster));
    ctx.owned.forget(&cluster.uid().unwrap_or_default());
    Ok(Action::await_change())
}

async fn ensure_final_backup(cluster: &EtcdCluster, ctx: &Context) -> Result<(), Error> {
    let previous = cluster.status.clone().unwrap_or_default();
    let done =
        previous.conditions.iter().any(|c| c.type_ == types::FINAL_BACKUP && c.status == "True");
    if done {
        return Ok(());
    }
    let name = cluster.name_any();
    let namespace = names::namespace(cluster);
    let generation = cluster.metadata.generation;
    let mut status = previous.clone();
    match final_backup(cluster, ctx, &namespace).await {
        Ok((reason, message)) => {
            let stored = condition(types::FINAL_BACKUP, true, reason, message.clone(), generation);
            set_condition(&mut status.conditions, stored);
            write_status::<EtcdCluster, _>(ctx, &namespace, &name, &status).await?;
            ctx.event(cluster, EventType::Normal, reason, message).await;
            Ok(())
        }
        Err(problem) => {
            let message = format!(
                "{}; the cluster is deleted once a final backup is stored, or without one after `kubectl annotate etcdcluster {name} {SKIP_FINAL_BACKUP_ANNOTATION}=<why>`",
                problem.message
            );
            let waiting =
                condition(types::FINAL_BACKUP, false, problem.reason, message.clone(), generation);
            set_condition(&mut status.conditions, waiting);
            // Said once per change of reason or message, not on every retry.
            if status != previous {
                write_status::<EtcdCluster, _>(ctx, &namespace, &name, &status).await?;
                ctx.event(cluster, EventType::Warning, problem.reason, message.clone()).await;
            }
            Err(Error::DeletionWaits { cluster: name, message })
        }
    }
}

/// Takes the final backup (to the first destination, by EtcdBackup name, that stores it), or
/// says why none is needed: the condition's reason and message.
async fn final_backup(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<(&'static str, String), Problem> {
    if let Some(why) = cluster.annotations().get(SKIP_FINAL_BACKUP_ANNOTATION) {
        return Ok((
            "FinalBackupSkipped",
            format!("deleted without a final backup: {SKIP_FINAL_BACKUP_ANNOTATION}={why}"),
        ));
    }
    let targets =
        super::backup::of_cluster(ctx, namespace, &cluster.name_any()).await.map_err(|err| {
            Problem::api("BackupsUnavailable", "cannot list the EtcdBackups".into(), err)
        })?;
    if targets.is_empty() {
        return Ok((
            "NoFinalBackup",
            "no EtcdBackup targets this cluster: deleted without a final backup".into(),
        ));
    }
    let mut failures = Vec::new();
    for backup in &targets {
        match super::backup::final_backup(backup, cluster, ctx, Timestamp::now()).await {
            Ok(location) => {
                return Ok((
                    "FinalBackupStored",
                    format!("final backup stored at {location} (EtcdBackup {})", backup.name_any()),
                ));
            }
            Err(problem) => {
                failures.push(format!("EtcdBackup {}: {}", backup.name_any(), problem.message))
            }
        }
    }
    Err(Problem::temporary(
        "FinalBackupFailed",
        format!(
            "no final backup could be stored, so nothing is deleted yet ({})",
            failures.join("; ")
        ),
    ))
}
