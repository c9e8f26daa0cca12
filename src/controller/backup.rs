//! The EtcdBackup controller: one backup now (no schedule), or one per cron tick, each a
//! [`Job`] run against the cluster's members with the operator's client certificate, then
//! retention. Status keeps the records that remain; a failure is retried with backoff and shows
//! as a condition and a Warning Event. The time is a parameter ([`reconcile_at`]) so that
//! schedules can be driven by a test's clock.

use etcd_crds::conditions::types;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_crds::conditions::{condition, set_condition};
use etcd_crds::{BackupPhase, EtcdBackup, EtcdBackupStatus, EtcdCluster};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Context, Error, Problem, RETRY_AFTER_PROBLEM, namespace_of};
use crate::backup::Location;
use crate::backup::encrypt::Key;
use crate::backup::fetch::snapshot_bound;
use crate::backup::job::Job;
use crate::backup::location::Access;
use crate::backup::schedule::Schedule;
use crate::etcd::ClientTls;
use crate::membership::recovery::RestorePoint;

pub async fn reconcile(backup: Arc<EtcdBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciles.measure("etcdbackup", reconcile_at(&backup, &ctx, Timestamp::now())).await
}

/// One reconcile as of `now`: runs the backup that is due, if any, and says when to look again.
pub async fn reconcile_at(
    backup: &EtcdBackup,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, Error> {
    let namespace = namespace_of(backup)?;
    let name = backup.name_any();
    let previous = backup.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.observed_generation = backup.metadata.generation;

    let (due, action) = match when(backup, &previous, now) {
        Ok(when) => when,
        Err(problem) => {
            status.phase = Some(BackupPhase::Failed);
            set_condition(&mut status.conditions, problem.condition(backup.metadata.generation));
            write_status(ctx, &namespace, &name, &previous, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let Some(due) = due else {
        status.phase = Some(if backup.spec.suspend {
            BackupPhase::Suspended
        } else if backup.spec.schedule.is_some() {
            BackupPhase::Scheduled
        } else {
            BackupPhase::Succeeded
        });
        write_status(ctx, &namespace, &name, &previous, &status).await?;
        return Ok(action);
    };

    let started = std::time::Instant::now();
    let outcome = match job(backup, ctx, &namespace).await {
        // A failed run counts as one, whatever the cause: the next is tried with backoff.
        Ok(job) => job.run(due).await.map_err(|err| {
            let reason = match err {
                crate::backup::Error::Unverified { .. }
                | crate::backup::Error::ChecksumMismatch { .. } => "BackupUnverified",
                _ => "BackupFailed",
            };
            tracing::warn!(backup = %name, error = %crate::telemetry::chain(&err), "backup failed");
            Problem::lasting(reason, err.for_tenant())
        }),
        Err(problem) => Err(problem),
    };
    let labels = BackupLabels::of(backup, &namespace);
    match outcome {
        Ok(outcome) => {
            ctx.backups.record_success(&labels, &outcome.record, started.elapsed(), now);
            let note = format!("stored {}", describe(&outcome.record));
            status.backups = outcome.kept.into_iter().map(|stored| stored.record).collect();
            status.last_schedule_time = Some(Time(due));
            status.last_successful_time = Some(Time(now));
            status.consecutive_failures = 0;
            status.phase = Some(if backup.spec.schedule.is_some() {
                BackupPhase::Scheduled
            } else {
                BackupPhase::Succeeded
            });
            status.next_schedule_time = next_run(backup, now).map(Time);
            let ready = condition(
                types::READY,
                true,
                "BackupSucceeded",
                note.clone(),
                backup.metadata.generation,
            );
            set_condition(&mut status.conditions, ready);
            write_status(ctx, &namespace, &name, &previous, &status).await?;
            ctx.event(backup, EventType::Normal, "BackupSucceeded", note).await;
            Ok(match status.next_schedule_time.as_ref() {
                Some(next) => requeue_at(next.0, now),
                None => Action::await_change(),
            })
        }
        // No run happened (the API server or the cluster is not there yet): the phase and the
        // failure count stay, and the run is tried again soon.
        Err(problem) if problem.temporary => {
            tracing::warn!(backup = %name, reason = problem.reason, message = %problem.message, "backup waits; trying again");
            set_condition(&mut status.conditions, problem.condition(backup.metadata.generation));
            write_status(ctx, &namespace, &name, &previous, &status).await?;
            Ok(Action::requeue(RETRY_AFTER_PROBLEM))
        }
        Err(problem) => {
            // An unverified backup is its own result, for an alert of its own.
            let result = if problem.reason == "BackupUnverified" { "unverified" } else { "failed" };
            ctx.backups.runs.get_or_create(&RunLabels::new(&labels, result)).inc();
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
            status.phase = Some(BackupPhase::Failed);
            set_condition(&mut status.conditions, problem.condition(backup.metadata.generation));
            write_status(ctx, &namespace, &name, &previous, &status).await?;
            ctx.event(backup, EventType::Warning, problem.reason, problem.message).await;
            Ok(Action::requeue(retry_delay(status.consecutive_failures)))
        }
    }
}

/// The scheduled time of the run due now (if any), and when to look again when none is.
fn when(
    backup: &EtcdBackup,
    status: &EtcdBackupStatus,
    now: Timestamp,
) -> Result<(Option<Timestamp>, Action), Problem> {
    if backup.spec.suspend {
        return Ok((None, Action::await_change()));
    }
    let Some(expression) = &backup.spec.schedule else {
        // One-shot: done once a run has succeeded.
        let due = status.last_successful_time.is_none().then_some(now);
        return Ok((due, Action::await_change()));
    };
    let schedule = Schedule::parse(expression, backup.spec.time_zone.as_deref())
        .map_err(|err| Problem::lasting("InvalidSchedule", err.to_string()))?;
    let after = status
        .last_schedule_time
        .as_ref()
        .or(backup.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    match schedule.due(after, now) {
        Some(due) => Ok((Some(due), Action::await_change())),
        None => Ok((
            None,
            schedule.next_after(now).map_or(Action::await_change(), |next| requeue_at(next, now)),
        )),
    }
}

/// The final backup of `cluster`, being deleted, to the destination of `backup`: a verified run
/// like a scheduled one, recorded as the EtcdBackup's newest (so an EtcdRestore of that backup
/// restores it) with an Event on the EtcdBackup. Returns where it is.
pub(super) async fn final_backup(
    backup: &EtcdBackup,
    cluster: &EtcdCluster,
    ctx: &Context,
    now: Timestamp,
) -> Result<String, Problem> {
    let namespace =
        namespace_of(backup).map_err(|err| Problem::lasting("NoNamespace", err.to_string()))?;
    let name = backup.name_any();
    let job = job_for(backup, cluster, ctx, &namespace).await?;
    let started = std::time::Instant::now();
    let outcome = job
        .run_final(now)
        .await
        .map_err(|err| {
            tracing::warn!(backup = %name, error = %crate::telemetry::chain(&err), "final backup failed");
            Problem::temporary("FinalBackupFailed", err.for_tenant())
        })?;
    let labels = BackupLabels::of(backup, &namespace);
    ctx.backups.record_success(&labels, &outcome.record, started.elapsed(), now);
    let previous = backup.status.clone().unwrap_or_default();
    let status = EtcdBackupStatus {
        backups: outcome.kept.into_iter().map(|stored| stored.record).collect(),
        last_successful_time: Some(Time(now)),
        ..previous.clone()
    };
    write_status(ctx, &namespace, &name, &previous, &status)
        .await
        .map_err(|err| Problem::temporary("StatusNotWritten", err.to_string()))?;
    let note = format!(
        "final backup of EtcdCluster {} before its deletion: {}",
        cluster.name_any(),
        describe(&outcome.record)
    );
    ctx.event(backup, EventType::Normal, "FinalBackupSucceeded", note).await;
    Ok(outcome.record.location)
}

/// A stored backup in an Event's words: where, how big, its checksum and revision.
fn describe(record: &etcd_crds::BackupRecord) -> String {
    format!(
        "{} ({} bytes, sha256 {}, revision {})",
        record.location, record.size, record.sha256, record.revision
    )
}

/// The EtcdBackups in `namespace` that back up `cluster`, by name.
pub(super) async fn of_cluster(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<EtcdBackup>, kube::Error> {
    let api: Api<EtcdBackup> = Api::namespaced(ctx.client.clone(), namespace);
    let mut backups: Vec<EtcdBackup> = api
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| b.spec.cluster_ref.name == cluster)
        .collect();
    backups.sort_by_key(|b| b.name_any());
    Ok(backups)
}

/// The newest verified backup among `backups`' records: an unverified one is never restored.
pub(super) fn newest_verified(backups: &[EtcdBackup]) -> Option<RestorePoint> {
    backups
        .iter()
        .flat_map(|b| {
            let records = b.status.iter().flat_map(|s| s.backups.iter());
            records.filter(|r| r.verified_time.is_some()).map(move |r| (b, r))
        })
        .max_by_key(|(_, r)| r.completion_time.as_ref().map(|t| t.0))
        .map(|(backup, record)| RestorePoint {
            backup: backup.name_any(),
            location: record.location.clone(),
            revision: record.revision,
            taken: record.completion_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        })
}

fn next_run(backup: &EtcdBackup, now: Timestamp) -> Option<Timestamp> {
    let expression = backup.spec.schedule.as_ref()?;
    Schedule::parse(expression, backup.spec.time_zone.as_deref()).ok()?.next_after(now)
}

fn requeue_at(at: Timestamp, now: Timestamp) -> Action {
    let seconds = at.as_second().saturating_sub(now.as_second()).max(1);
    Action::requeue(Duration::from_secs(seconds.unsigned_abs()))
}

/// 10 s, 20 s, 40 s, ... up to 10 minutes.
fn retry_delay(failures: i32) -> Duration {
    let exponent = u32::try_from(failures.saturating_sub(1)).unwrap_or(0).min(6);
    Duration::from_secs(10 * 2u64.pow(exponent)).min(Duration::from_secs(600))
}

/// A volume destination is a directory of the operator's own pod, whose root filesystem is
/// read-only: it works only where a volume is mounted at that path.
fn writable_dir(path: &str) -> Result<(), Problem> {
    let probe = std::fs::create_dir_all(path).and_then(|()| tempfile::tempfile_in(path));
    probe.map(drop).map_err(|err| Problem::lasting(
        "VolumeNotWritable",
        format!(
            "spec.destination.volume.path {path} is not a writable directory in the operator's pod ({err}): mount a volume there (a PersistentVolumeClaim in the etcd-operator Deployment) or back up to s3, gcs or azure"
        ),
    ))
}

/// Everything a run needs: the cluster's endpoints and client certificate, the destination with
/// its credentials. One prefix per EtcdBackup (`PREFIX/NAMESPACE/NAME/`), so retention never
/// touches another backup's objects.
async fn job(backup: &EtcdBackup, ctx: &Context, namespace: &str) -> Result<Job, Problem> {
    let spec = &backup.spec;
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let cluster = clusters.get_opt(&spec.cluster_ref.name).await.map_err(|err| {
        let what = format!("cannot read EtcdCluster {}", spec.cluster_ref.name);
        Problem::api("ClusterUnavailable", what, err)
    })?;
    let Some(cluster) = cluster else {
        return Err(Problem::lasting(
            "ClusterNotFound",
            format!("EtcdCluster {} does not exist in {namespace}", spec.cluster_ref.name),
        ));
    };
    job_for(backup, &cluster, ctx, namespace).await
}

/// The run of `backup` against `cluster`, already read.
async fn job_for(
    backup: &EtcdBackup,
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Job, Problem> {
    let spec = &backup.spec;
    let endpoints = cluster.status.as_ref().map(|s| s.client_endpoints.clone()).unwrap_or_default();
    if endpoints.is_empty() {
        return Err(Problem::temporary(
            "ClusterNotReady",
            format!("EtcdCluster {} has no client endpoints yet", spec.cluster_ref.name),
        ));
    }
    let tls = client_tls(ctx, namespace, cluster).await?;
    let credentials = match &spec.credentials_secret_ref {
        Some(reference) => secret_strings(ctx, namespace, &reference.name).await?,
        None => BTreeMap::new(),
    };
    if let Some(volume) = &spec.destination.volume {
        writable_dir(&volume.path)?;
    }
    let access = Access::Tenant { credentials: &credentials, endpoints: &ctx.backup_endpoints };
    let prefix = Location::for_destination(&spec.destination, &access)
        .map_err(|err| Problem::lasting("InvalidDestination", err.to_string()))?
        .child(&format!("{namespace}/{}", backup.name_any()));
    let key = match &spec.encryption {
        Some(encryption) => {
            let reference = &encryption.key_secret_ref;
            let secret = get_secret(ctx, namespace, &reference.name).await?;
            let value = secret.data.and_then(|mut data| data.remove(&reference.key));
            let Some(ByteString(bytes)) = value else {
                return Err(Problem::lasting(
                    "EncryptionKeyMissing",
                    format!("Secret {} has no key {}", reference.name, reference.key),
                ));
            };
            let origin = format!("Secret {} key {}", reference.name, reference.key);
            Some(
                Key::parse(&bytes, &origin)
                    .map_err(|err| Problem::lasting("EncryptionKeyInvalid", err.to_string()))?,
            )
        }
        None => None,
    };
    Ok(Job {
        key,
        cluster: cluster.name_any(),
        endpoints,
        tls,
        prefix,
        compression: spec.compression,
        retention: usize::try_from(spec.retention).unwrap_or(1).max(1),
        max_snapshot_bytes: snapshot_bound(cluster.spec.options.quota_backend_bytes),
        recorded: backup.status.as_ref().map(|s| s.backups.clone()).unwrap_or_default(),
    })
}

/// The operator's client identity for a cluster: the auto-TLS client Secret, or the one the spec
/// names.
async fn client_tls(
    ctx: &Context,
    namespace: &str,
    cluster: &EtcdCluster,
) -> Result<Option<ClientTls>, Problem> {
    let tls = &cluster.spec.security.tls;
    if !tls.enabled {
        return Ok(None);
    }
    let name = match (&tls.client_secret_ref, tls.auto_tls) {
        (Some(reference), false) => reference.name.clone(),
        _ => etcd_certs::PkiPart::Client.secret_name(&cluster.name_any()),
    };
    let secret = get_secret(ctx, namespace, &name).await?;
    let (pair, ca_pem) = etcd_certs::secret::decode_tls_secret(&secret)
        .map_err(|err| Problem::lasting("ClientSecretInvalid", err.to_string()))?;
    Ok(Some(ClientTls { ca_pem, cert_pem: pair.cert_pem, key_pem: pair.key_pem }))
}

async fn get_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Secret, Problem> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(Problem::lasting(
            "SecretNotFound",
            format!("Secret {name} does not exist in {namespace}"),
        )),
        Err(err) => {
            Err(Problem::api("SecretUnavailable", format!("cannot read Secret {name}"), err))
        }
    }
}

/// A credentials Secret's entries as strings (keys as the backend's environment variables).
pub(super) async fn secret_strings(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, String>, Problem> {
    let secret = get_secret(ctx, namespace, name).await?;
    let decode = |(key, ByteString(bytes)): (String, ByteString)| {
        String::from_utf8(bytes).map(|value| (key.clone(), value)).map_err(|_| {
            Problem::lasting("SecretInvalid", format!("Secret {name} key {key} is not UTF-8 text"))
        })
    };
    secret.data.unwrap_or_default().into_iter().map(decode).collect()
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    previous: &EtcdBackupStatus,
    status: &EtcdBackupStatus,
) -> Result<(), Error> {
    if status == previous {
        return Ok(());
    }
    super::write_status::<EtcdBackup, _>(ctx, namespace, name, status).await
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    pub namespace: String,
    pub name: String,
    /// The EtcdCluster it backs up: the age of a cluster's newest backup is the smallest age
    /// among its EtcdBackups.
    pub cluster: String,
}

impl BackupLabels {
    fn of(backup: &EtcdBackup, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: backup.name_any(),
            cluster: backup.spec.cluster_ref.name.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub namespace: String,
    pub name: String,
    pub cluster: String,
    pub result: String,
}

impl RunLabels {
    fn new(labels: &BackupLabels, result: &str) -> Self {
        Self {
            namespace: labels.namespace.clone(),
            name: labels.name.clone(),
            cluster: labels.cluster.clone(),
            result: result.to_owned(),
        }
    }
}

/// Backup metrics per EtcdBackup: when the last one succeeded, how long it took, how big it was,
/// and runs by result (alert on a stale `last_success` or on failed runs).
#[derive(Clone, Default)]
pub struct BackupMetrics {
    last_success: Family<BackupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    duration: Family<BackupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    size: Family<BackupLabels, Gauge>,
    runs: Family<RunLabels, Counter>,
}

impl BackupMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Time of the last successful backup",
            self.last_success.clone(),
        );
        registry.register(
            "backup_duration_seconds",
            "Duration of the last successful backup",
            self.duration.clone(),
        );
        registry.register(
            "backup_size_bytes",
            "Stored size of the last successful backup",
            self.size.clone(),
        );
        registry.register("backup_runs", "Backup runs by result", self.runs.clone());
    }

    pub fn record_success(
        &self,
        labels: &BackupLabels,
        record: &etcd_crds::BackupRecord,
        took: Duration,
        now: Timestamp,
    ) {
        self.last_success.get_or_create(labels).set(now.as_second() as f64);
        self.duration.get_or_create(labels).set(took.as_secs_f64());
        self.size.get_or_create(labels).set(record.size);
        self.runs.get_or_create(&RunLabels::new(labels, "succeeded")).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_destination_must_be_a_writable_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable_dir(dir.path().to_str().unwrap()).is_ok());
        // A directory still to be made on a mounted volume is fine; one on a read-only or
        // missing filesystem is not (a file stands in for the read-only root here).
        assert!(writable_dir(dir.path().join("etcd/daily").to_str().unwrap()).is_ok());
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "").unwrap();
        let failure = writable_dir(not_a_dir.join("backups").to_str().unwrap()).unwrap_err();
        assert_eq!(failure.reason, "VolumeNotWritable");
        assert!(failure.message.contains("mount a volume there"), "{}", failure.message);
    }

    #[test]
    fn recovery_restores_the_newest_verified_record_of_any_backup_of_the_cluster() {
        let record = |location: &str, completed: &str, verified: bool| {
            serde_json::json!({"location": location, "size": 1, "sha256": "x", "revision": 7,
                "compression": "None", "completionTime": completed,
                "verifiedTime": if verified { serde_json::json!(completed) } else { serde_json::Value::Null }})
        };
        let backup = |name: &str, records: Vec<serde_json::Value>| -> EtcdBackup {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "prod"},
                "spec": {"clusterRef": {"name": "main"}, "destination": {"volume": {"path": "/b"}}},
                "status": {"backups": records}
            }))
            .unwrap()
        };
        let backups = [
            backup(
                "hourly",
                vec![
                    record("file:///b/newest-corrupt", "2026-11-25T03:00:00Z", false),
                    record("file:///b/hourly-2", "2026-11-25T02:00:00Z", true),
                ],
            ),
            backup("nightly", vec![record("file:///b/nightly-1", "2026-11-25T01:00:00Z", true)]),
        ];
        let point = newest_verified(&backups).unwrap();
        assert_eq!(point.location, "file:///b/hourly-2", "the newer unverified one is never used");
        assert_eq!(point.backup, "hourly");
        assert!(newest_verified(&backups[1..]).is_some());
        assert!(newest_verified(&[]).is_none());
    }

    #[test]
    fn retries_back_off_to_ten_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(30), Duration::from_secs(600));
    }
}
