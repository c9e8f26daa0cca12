//! The EtcdRestore controller. A restore resolves its snapshot (a backup's record, or a location
//! named directly) and creates the cluster with `spec.restore` set: each member's init container
//! verifies the snapshot's checksum and restores its data before etcd starts.
//!
//! Type New creates a cluster that must not exist yet. Type Replace first checks that the
//! snapshot can be read, keeps the existing cluster's spec in the restore's status, deletes the
//! cluster but not its volumes, then creates it again under the same name from the snapshot:
//! each member sets the old data on its volume aside before restoring, and drops it once the new
//! cluster runs, so a restore that fails leaves the old data in place. Every step is decided
//! from what exists now (the new cluster carries the restore's label), so an interrupted restore
//! resumes where it stopped.

use etcd_crds::conditions::types;
use std::sync::Arc;
use std::time::Duration;

use etcd_crds::conditions::{condition, set_condition};
use etcd_crds::{
    ClusterPhase, EtcdBackup, EtcdCluster, EtcdClusterSpec, EtcdRestore, EtcdRestoreStatus,
    REPLACED_BY_ANNOTATION, RestorePhase, RestoreType, SKIP_FINAL_BACKUP_ANNOTATION,
    SnapshotLocation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{Context, Error, Problem, RETRY_AFTER_PROBLEM, namespace_of, write_status};
use crate::backup::Location;
use crate::backup::location::Access;

/// Label on a cluster created by a restore, naming the EtcdRestore.
pub const RESTORED_BY: &str = "etcd.etcd.io/restored-by";

pub async fn reconcile(restore: Arc<EtcdRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciles.measure("etcdrestore", reconcile_once(restore, &ctx)).await
}

async fn reconcile_once(restore: Arc<EtcdRestore>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = namespace_of(&*restore)?;
    let previous = restore.status.clone().unwrap_or_default();
    if matches!(previous.phase, Some(RestorePhase::Succeeded | RestorePhase::Failed)) {
        return Ok(Action::await_change());
    }
    let mut status = previous.clone();
    status.observed_generation = restore.metadata.generation;
    let result = step(&restore, ctx, &namespace, &mut status).await;
    let action = match result {
        Ok(action) => action,
        Err(problem) if problem.temporary => {
            tracing::warn!(restore = %restore.name_any(), reason = problem.reason, message = %problem.message, "restore waits; trying again");
            set_condition(&mut status.conditions, problem.condition(restore.metadata.generation));
            Action::requeue(RETRY_AFTER_PROBLEM)
        }
        Err(problem) => {
            status.phase = Some(RestorePhase::Failed);
            set_condition(&mut status.conditions, problem.condition(restore.metadata.generation));
            ctx.event(&*restore, EventType::Warning, problem.reason, problem.message).await;
            Action::await_change()
        }
    };
    if status != previous {
        write_status::<EtcdRestore, _>(ctx, &namespace, &restore.name_any(), &status).await?;
    }
    Ok(action)
}

/// One step towards the restored cluster, from what exists now.
async fn step(
    restore: &EtcdRestore,
    ctx: &Context,
    namespace: &str,
    status: &mut EtcdRestoreStatus,
) -> Result<Action, Problem> {
    let spec = &restore.spec;
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = clusters.get_opt(&spec.cluster_name).await.map_err(|err| {
        Problem::api(
            "ClusterUnavailable",
            format!("cannot read EtcdCluster {}", spec.cluster_name),
            err,
        )
    })?;
    let ours =
        existing.as_ref().is_some_and(|c| c.labels().get(RESTORED_BY) == Some(&restore.name_any()));
    if ours {
        return Ok(track(restore, existing.as_ref(), status));
    }
    // Before anything is deleted: a snapshot that cannot be found stops the restore here.
    let source = resolve_source(restore, ctx, namespace, status).await?;
    let cluster_spec = match (spec.restore_type, existing) {
        (RestoreType::New, Some(_)) => {
            return Err(Problem::lasting(
                "ClusterExists",
                format!(
                    "EtcdCluster {} already exists; a restore of type New creates a cluster (use type Replace to replace it)",
                    spec.cluster_name
                ),
            ));
        }
        (RestoreType::New, None) => match spec.cluster_spec.clone() {
            Some(cluster_spec) => cluster_spec,
            // Every field has a serde default: the defaults the CRD schema declares.
            None => serde_json::from_value(serde_json::json!({}))
                .map_err(|err| Problem::lasting("InvalidSpec", err.to_string()))?,
        },
        (RestoreType::Replace, Some(old)) => {
            // Keep the spec before anything is deleted: the restore needs it to bring the
            // cluster back even if it is interrupted once the old one is gone.
            if status.cluster_spec.is_none() {
                check_snapshot(ctx, namespace, &source).await?;
                status.cluster_spec = Some(EtcdClusterSpec { restore: None, ..old.spec.clone() });
                progress(
                    restore,
                    status,
                    "SavedClusterSpec",
                    "kept the replaced cluster's spec".into(),
                );
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            mark_replaced(&clusters, &old, restore).await?;
            delete_cluster(&clusters, &spec.cluster_name).await?;
            ctx.event(
                restore,
                EventType::Normal,
                "DeletingCluster",
                format!("deleting EtcdCluster {} to replace it", spec.cluster_name),
            )
            .await;
            progress(
                restore,
                status,
                "DeletingCluster",
                format!("waiting for EtcdCluster {} to be gone", spec.cluster_name),
            );
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        (RestoreType::Replace, None) => match status.cluster_spec.clone() {
            // The old cluster is gone; its claims stay, and its members set the old data aside.
            Some(saved) => saved,
            None => {
                return Err(Problem::lasting(
                    "ClusterNotFound",
                    format!(
                        "EtcdCluster {} does not exist: nothing to replace (use type New)",
                        spec.cluster_name
                    ),
                ));
            }
        },
    };
    let cluster = EtcdCluster {
        metadata: ObjectMeta {
            name: Some(spec.cluster_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some([(RESTORED_BY.to_owned(), restore.name_any())].into()),
            ..ObjectMeta::default()
        },
        spec: EtcdClusterSpec { restore: Some(source.clone()), ..cluster_spec },
        status: None,
    };
    clusters.create(&PostParams::default(), &cluster).await.map_err(|err| {
        Problem::api(
            "CreateFailed",
            format!("cannot create EtcdCluster {}", spec.cluster_name),
            err,
        )
    })?;
    status.start_time.get_or_insert(Time(Timestamp::now()));
    let note = format!(
        "created EtcdCluster {} from {}/{}",
        spec.cluster_name,
        describe(&source),
        source.key
    );
    ctx.event(restore, EventType::Normal, "ClusterCreated", note.clone()).await;
    progress(restore, status, "ClusterCreated", note);
    Ok(Action::requeue(Duration::from_secs(10)))
}

/// Follows the restored cluster until it runs.
fn track(
    restore: &EtcdRestore,
    cluster: Option<&EtcdCluster>,
    status: &mut EtcdRestoreStatus,
) -> Action {
    let phase = cluster.and_then(|c| c.status.as_ref()).and_then(|s| s.phase);
    if phase == Some(ClusterPhase::Running) {
        status.phase = Some(RestorePhase::Succeeded);
        status.completion_time = Some(Time(Timestamp::now()));
        let message = format!("EtcdCluster {} runs from the snapshot", restore.spec.cluster_name);
        set_condition(
            &mut status.conditions,
            condition(types::READY, true, "Restored", message, restore.metadata.generation),
        );
        return Action::await_change();
    }
    progress(
        restore,
        status,
        "WaitingForCluster",
        format!("EtcdCluster {} is {phase:?}", restore.spec.cluster_name),
    );
    Action::requeue(Duration::from_secs(10))
}

fn progress(restore: &EtcdRestore, status: &mut EtcdRestoreStatus, reason: &str, message: String) {
    status.phase = Some(RestorePhase::Restoring);
    set_condition(
        &mut status.conditions,
        condition(types::READY, false, reason, message, restore.metadata.generation),
    );
}

/// The snapshot to restore, as the cluster's `spec.restore`: the named location, or a record of
/// the named EtcdBackup (its newest, or the one asked for) in that backup's destination.
async fn resolve_source(
    restore: &EtcdRestore,
    ctx: &Context,
    namespace: &str,
    status: &mut EtcdRestoreStatus,
) -> Result<SnapshotLocation, Problem> {
    let source = &restore.spec.source;
    if let Some(location) = &source.location {
        return Ok(location.clone());
    }
    let Some(reference) = &source.backup_ref else {
        return Err(Problem::lasting(
            "NoSource",
            "spec.source names neither a backup nor a location".into(),
        ));
    };
    let backups: Api<EtcdBackup> = Api::namespaced(ctx.client.clone(), namespace);
    let backup = backups.get_opt(&reference.name).await.map_err(|err| {
        Problem::api("BackupUnavailable", format!("cannot read EtcdBackup {}", reference.name), err)
    })?;
    let Some(backup) = backup else {
        return Err(Problem::lasting(
            "BackupNotFound",
            format!("EtcdBackup {} does not exist in {namespace}", reference.name),
        ));
    };
    let records = backup.status.map(|s| s.backups).unwrap_or_default();
    // The newest record is chosen once: a backup that runs while the restore goes on (a
    // scheduled one, or the replaced cluster's final backup) must not change what is restored.
    let pinned = status.restored.as_ref().map(|r| &r.location);
    let record = match reference.record.as_ref().or(pinned) {
        Some(wanted) => records.into_iter().find(|r| &r.location == wanted),
        None => records.into_iter().next(),
    };
    let Some(record) = record else {
        return Err(Problem::lasting(
            "NoBackupRecord",
            format!(
                "EtcdBackup {} has no stored backup {}",
                reference.name,
                reference.record.as_deref().unwrap_or("yet")
            ),
        ));
    };
    let root = Location::url_of(&backup.spec.destination)
        .map_err(|err| Problem::lasting("InvalidDestination", err.to_string()))?;
    let key = record.location.strip_prefix(&root).map(|k| k.trim_start_matches('/').to_owned());
    let Some(key) = key else {
        return Err(Problem::lasting(
            "InvalidDestination",
            format!("record {} is not under the backup's destination {}", record.location, root),
        ));
    };
    let location = SnapshotLocation {
        destination: backup.spec.destination.clone(),
        key,
        sha256: Some(record.sha256.clone()),
        compression: record.compression,
        credentials_secret_ref: backup.spec.credentials_secret_ref.clone(),
        encryption: backup.spec.encryption.clone(),
    };
    status.restored = Some(record);
    Ok(location)
}

/// A Replace deletes the cluster it replaces, so the snapshot that will take its place is read
/// first, whole, and its checksum compared (with the restore's own credentials): a mistyped key,
/// a record whose object retention pruned, or an object changed since it was recorded fails the
/// restore while the cluster is still there.
async fn check_snapshot(
    ctx: &Context,
    namespace: &str,
    source: &SnapshotLocation,
) -> Result<(), Problem> {
    let credentials = match &source.credentials_secret_ref {
        Some(reference) => super::backup::secret_strings(ctx, namespace, &reference.name).await?,
        None => Default::default(),
    };
    let access = Access::Tenant { credentials: &credentials, endpoints: &ctx.backup_endpoints };
    let unusable = |err: crate::backup::Error| {
        let message = format!("nothing was deleted: {}", err.for_tenant());
        tracing::warn!(error = %crate::telemetry::chain(&err), "a Replace restore's snapshot is unusable");
        match err {
            // The store did not answer as a store: worth asking again.
            crate::backup::Error::Store { source, .. }
                if !matches!(source, object_store::Error::NotFound { .. }) =>
            {
                Problem::temporary("SnapshotUnreachable", message)
            }
            _ => Problem::lasting("SnapshotUnusable", message),
        }
    };
    let location = Location::for_destination(&source.destination, &access)
        .map_err(unusable)?
        .child(&source.key);
    crate::backup::fetch::check(&location, source.sha256.as_deref()).await.map_err(unusable)
}

fn describe(location: &SnapshotLocation) -> String {
    Location::url_of(&location.destination)
        .unwrap_or_else(|_| format!("{:?}", location.destination.backends()))
}

/// A replaced cluster is deleted without a final backup: its data is being replaced on
/// purpose, it is often broken (the reason to restore), and its pods go first (foreground
/// deletion), so the backup would only hold the deletion up. Its claims are kept whatever its
/// `reclaimPolicy`: the restored cluster starts on them.
async fn mark_replaced(
    clusters: &Api<EtcdCluster>,
    cluster: &EtcdCluster,
    restore: &EtcdRestore,
) -> Result<(), Problem> {
    let annotations = cluster.annotations();
    if annotations.get(REPLACED_BY_ANNOTATION) == Some(&restore.name_any()) {
        return Ok(());
    }
    let why = format!("replaced by EtcdRestore {}", restore.name_any());
    let skip = annotations.get(SKIP_FINAL_BACKUP_ANNOTATION).cloned().unwrap_or(why);
    let patch = serde_json::json!({"metadata": {"annotations": {
        SKIP_FINAL_BACKUP_ANNOTATION: skip,
        REPLACED_BY_ANNOTATION: restore.name_any(),
    }}});
    clusters
        .patch(&cluster.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|err| {
            let what = format!("cannot annotate EtcdCluster {}", cluster.name_any());
            Problem::api("AnnotateFailed", what, err)
        })?;
    Ok(())
}

async fn delete_cluster(clusters: &Api<EtcdCluster>, name: &str) -> Result<(), Problem> {
    crate::retry::ignore_not_found(clusters.delete(name, &DeleteParams::foreground()).await)
        .map_err(|err| {
            Problem::api("DeleteFailed", format!("cannot delete EtcdCluster {name}"), err)
        })
}
