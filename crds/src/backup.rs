//! `EtcdBackup`: snapshots of a cluster to object storage, once or on a cron schedule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::SecretReference;
use crate::defaults;
use crate::storage::{BackupDestination, BackupRecord, Compression, EncryptionSpec};

/// A backup of an EtcdCluster in the same namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "etcd.etcd.io",
    version = "v1alpha1",
    kind = "EtcdBackup",
    plural = "etcdbackups",
    shortname = "etcdbak",
    category = "etcd",
    namespaced,
    status = "EtcdBackupStatus",
    derive = "PartialEq",
    doc = "Snapshots of an EtcdCluster to object storage, once or on a cron schedule.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Last Success", type_ = "date", json_path = ".status.lastSuccessfulTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupSpec {
    /// The EtcdCluster to back up.
    pub cluster_ref: ClusterReference,
    pub destination: BackupDestination,
    /// Secret with the object store's credentials, keyed as the backend's environment variables;
    /// needed for s3, gcs and azure (the operator never lends a backup its own identity). Only
    /// credential keys are taken, any other key is refused: s3 `AWS_ACCESS_KEY_ID` +
    /// `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`); gcs `GOOGLE_SERVICE_ACCOUNT_KEY` (the key's
    /// JSON); azure `AZURE_STORAGE_ACCOUNT_KEY`, or `AZURE_STORAGE_SAS_KEY`, or `AZURE_CLIENT_ID` +
    /// `AZURE_CLIENT_SECRET` + `AZURE_TENANT_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
    /// Cron expression (five fields, or six with seconds); absent means one backup, now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How many of the newest backups to keep; older objects are deleted.
    #[serde(default = "defaults::retention")]
    #[schemars(range(min = 1))]
    pub retention: i32,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    /// Pause a schedule without deleting the object.
    #[serde(default)]
    pub suspend: bool,
}

/// An EtcdCluster in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What the backups of this object came to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Backups kept under the retention, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Failed attempts since the last success.
    #[serde(default)]
    pub consecutive_failures: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Scheduled,
    Suspended,
}
