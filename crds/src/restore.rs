//! `EtcdRestore`: a cluster brought back from a snapshot.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster::{EtcdClusterSpec, SecretReference};
use crate::storage::{BackupDestination, BackupRecord, Compression, EncryptionSpec};

/// A restore of a snapshot into a new cluster, or in place of an existing one.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "etcd.etcd.io",
    version = "v1alpha1",
    kind = "EtcdRestore",
    plural = "etcdrestores",
    shortname = "etcdrestore",
    category = "etcd",
    namespaced,
    status = "EtcdRestoreStatus",
    derive = "PartialEq",
    doc = "A restore of an etcd snapshot into a new cluster or in place of an existing one.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "an EtcdRestore spec is immutable; create a new one"}
]))]
pub struct EtcdRestoreSpec {
    /// The cluster to create (type New) or replace (type Replace), in the same namespace.
    #[schemars(length(min = 1))]
    pub cluster_name: String,
    #[serde(rename = "type")]
    pub restore_type: RestoreType,
    pub source: RestoreSource,
    /// The new cluster's spec (type New); defaults apply to what it leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_spec: Option<EtcdClusterSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestoreType {
    /// Create a cluster that does not exist yet from the snapshot.
    New,
    /// Stop an existing cluster, restore every member from the snapshot, bring it back.
    Replace,
}

/// Exactly one of a backup (its newest record, or a chosen one) or a direct location.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.backupRef) != has(self.location)",
     "message": "exactly one of backupRef and location must be set"}
]))]
pub struct RestoreSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ref: Option<BackupReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<SnapshotLocation>,
}

/// An EtcdBackup in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupReference {
    #[schemars(length(min = 1))]
    pub name: String,
    /// Location of one of its records; the newest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

/// A snapshot object named directly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotLocation {
    pub destination: BackupDestination,
    /// Object key within the destination.
    #[schemars(length(min = 1))]
    pub key: String,
    /// Expected SHA-256 of the object; the restore refuses anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The snapshot that was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<BackupRecord>,
    /// The spec the cluster is (re)created with: for type Replace, the replaced cluster's spec,
    /// kept here so that a restore interrupted after the old cluster is gone still completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_spec: Option<EtcdClusterSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    Pending,
    Restoring,
    Succeeded,
    Failed,
}
