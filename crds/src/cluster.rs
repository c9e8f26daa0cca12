//! `EtcdCluster`: the desired shape of one etcd cluster and what the operator observed of it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;

/// Desired state of an etcd cluster. Every default is declared in the schema and filled in by the
/// mutating webhook, from the same values, so it holds while the webhook is down.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "etcd.etcd.io",
    version = "v1alpha1",
    kind = "EtcdCluster",
    plural = "etcdclusters",
    shortname = "etcd",
    shortname = "ec",
    category = "etcd",
    namespaced,
    status = "EtcdClusterStatus",
    derive = "PartialEq",
    doc = "An etcd cluster managed by etcd-operator.",
    scale(
        spec_replicas_path = ".spec.size",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(oldSelf.storage) || !has(self.storage) || (has(self.storage.ephemeral) ? self.storage.ephemeral : false) == (has(oldSelf.storage.ephemeral) ? oldSelf.storage.ephemeral : false)",
     "message": "spec.storage.ephemeral is immutable"},
    {"rule": "!has(oldSelf.storage) || !has(self.storage) || (has(self.storage.storageClassName) ? self.storage.storageClassName : '') == (has(oldSelf.storage.storageClassName) ? oldSelf.storage.storageClassName : '')",
     "message": "spec.storage.storageClassName is immutable"},
    {"rule": "self.security.tls.enabled == oldSelf.security.tls.enabled && self.security.tls.autoTLS == oldSelf.security.tls.autoTLS",
     "message": "spec.security.tls.enabled and spec.security.tls.autoTLS are immutable"}
]))]
pub struct EtcdClusterSpec {
    /// Number of members: 0 stops the cluster and keeps its data; otherwise an odd number up to 9.
    #[serde(default = "defaults::size")]
    #[schemars(extend("enum" = [0, 1, 3, 5, 7, 9]))]
    pub size: i32,

    /// etcd version, `3.MINOR.PATCH`. Upgrades go one minor version at a time; no downgrades.
    #[serde(default = "defaults::version")]
    #[schemars(regex(pattern = r"^3\.[0-9]+\.[0-9]+$"))]
    pub version: String,

    /// Container image repository of etcd; the image is `REPOSITORY:vVERSION`.
    #[serde(default = "defaults::repository")]
    #[schemars(length(min = 1))]
    pub repository: String,

    /// Where members keep their data.
    #[serde(default)]
    pub storage: StorageSpec,

    /// TLS for peer and client traffic.
    #[serde(default)]
    pub security: SecuritySpec,

    /// Resources of the etcd container.
    #[serde(default = "defaults::resources")]
    pub resources: ResourceRequirements,

    /// Scheduling and metadata overrides for member pods.
    #[serde(default, skip_serializing_if = "PodTemplateOverrides::is_empty")]
    pub pod_template: PodTemplateOverrides,

    /// etcd tuning that the operator passes through as flags.
    #[serde(default)]
    pub options: EtcdOptions,

    /// A voting member that has not answered for this long is replaced: removed from etcd while
    /// the others keep quorum, its data wiped, and added back as a new learner. 0 never replaces.
    #[serde(default = "defaults::replace_unhealthy_after_seconds")]
    #[schemars(range(min = 0))]
    pub replace_unhealthy_after_seconds: i64,

    /// Start the members of a new cluster from this snapshot (an EtcdRestore sets it; it can be
    /// set by hand). Each member's init container verifies the checksum before restoring; a
    /// member added later joins with the cluster's data instead. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::restore::SnapshotLocation>,

    /// What happens when a quorum of members is lost.
    #[serde(default)]
    pub recovery: RecoverySpec,

    /// Routine checks of the members' data.
    #[serde(default)]
    pub maintenance: MaintenanceSpec,
}

/// Routine checks of the members' data, made only while membership, upgrades and space have
/// nothing left to do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceSpec {
    /// How often every voter's key-value store is hashed at one revision and the hashes
    /// compared (etcd's HashKV), as etcd's own corruption check does. A member whose data
    /// differs from what a quorum of voters holds is replaced from the others, learner first;
    /// when no quorum agrees, the DataConsistent condition says so and nothing is replaced.
    /// Each check reads every member's whole backend once. 0 never checks.
    #[serde(default = "defaults::consistency_check_seconds")]
    #[schemars(range(min = 0))]
    pub consistency_check_seconds: i64,
}

impl Default for MaintenanceSpec {
    fn default() -> Self {
        Self { consistency_check_seconds: defaults::consistency_check_seconds() }
    }
}

/// Recovery from quorum loss: after `quorumLossAfterSeconds` without a quorum the cluster is
/// Failed, with the members lost, those that survive with data, and what recovery would do.
/// Recovery keeps the surviving member with the newest data, restarts it alone with
/// `--force-new-cluster` (same data, same keys, same cluster ID), wipes the others and grows
/// back learner-first. It runs only once every lost member's process is gone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    #[serde(default)]
    pub policy: RecoveryPolicy,
    /// How long fewer than a quorum of voters may answer before the cluster is Failed.
    #[serde(default = "defaults::quorum_loss_after_seconds")]
    #[schemars(range(min = 1))]
    pub quorum_loss_after_seconds: i64,
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            policy: RecoveryPolicy::default(),
            quorum_loss_after_seconds: defaults::quorum_loss_after_seconds(),
        }
    }
}

/// Who decides that a Failed cluster is recovered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RecoveryPolicy {
    /// A person approves, by setting the annotation `etcd.etcd.io/approve-recovery` to the
    /// cluster ID in status (so an approval never applies to a later failure).
    #[default]
    Manual,
    /// The operator recovers as soon as it is safe.
    Automatic,
}

/// Persistent or ephemeral member storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's volume. It may grow; it never shrinks.
    #[serde(default = "defaults::storage_size")]
    pub size: Quantity,
    /// StorageClass of the member volumes; immutable. Empty means the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep data in an emptyDir instead of a PersistentVolumeClaim; immutable. A member's data
    /// lives as long as its pod: a pod recreated for any reason (a drain, a roll, a lost node)
    /// starts empty, so that member is removed and added again under a new ID and sent the data
    /// by the others, which needs a quorum of them healthy then. Pods lost by a majority at once
    /// take the data with them: only a backup brings it back.
    #[serde(default)]
    pub ephemeral: bool,
    /// What happens to the volumes when the EtcdCluster is deleted.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: defaults::storage_size(),
            storage_class_name: None,
            ephemeral: false,
            reclaim_policy: ReclaimPolicy::default(),
        }
    }
}

/// Whether member volumes outlive their EtcdCluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the PersistentVolumeClaims (the data) after the EtcdCluster is deleted.
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaims with the EtcdCluster.
    Delete,
}

/// Security settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    #[serde(default)]
    pub tls: TlsSpec,
}

/// TLS for etcd: issued by the operator (`autoTLS`) or taken from Secrets the user provides.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.enabled || self.autoTLS || (has(self.peerSecretRef) && has(self.serverSecretRef) && has(self.clientSecretRef))",
     "message": "with autoTLS off, peerSecretRef, serverSecretRef and clientSecretRef are required"}
]))]
pub struct TlsSpec {
    /// Mutual TLS on peer and client URLs; immutable.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// The operator issues and rotates a CA and every certificate; immutable.
    #[serde(default = "defaults::yes", rename = "autoTLS")]
    pub auto_tls: bool,
    /// `kubernetes.io/tls` Secret (tls.crt, tls.key, ca.crt) for peer traffic, when autoTLS is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret_ref: Option<SecretReference>,
    /// `kubernetes.io/tls` Secret for the client URLs of the members, when autoTLS is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_secret_ref: Option<SecretReference>,
    /// `kubernetes.io/tls` Secret the operator uses as an etcd client, when autoTLS is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretReference>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            auto_tls: true,
            peer_secret_ref: None,
            server_secret_ref: None,
            client_secret_ref: None,
        }
    }
}

/// A Secret in the namespace of the object that names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Overrides applied to every member pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets for pulling the etcd image and the operator's own image (member-init) from a
    /// private registry or a mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The service account member pods run as (its token is not mounted: neither etcd nor
    /// member-init talks to the Kubernetes API); for policies and pull secrets bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

impl PodTemplateOverrides {
    /// Whether nothing is overridden. Field by field (a new field does not compile until it is
    /// named here): comparing with a default built for the purpose compared `Affinity`s and the
    /// like on every admission review and every write of a spec.
    pub fn is_empty(&self) -> bool {
        let Self {
            labels,
            annotations,
            affinity,
            tolerations,
            node_selector,
            topology_spread_constraints,
            priority_class_name,
            image_pull_secrets,
            service_account_name,
        } = self;
        labels.is_empty()
            && annotations.is_empty()
            && affinity.is_none()
            && tolerations.is_empty()
            && node_selector.is_empty()
            && topology_spread_constraints.is_empty()
            && priority_class_name.is_none()
            && image_pull_secrets.is_empty()
            && service_account_name.is_none()
    }
}

/// etcd settings passed as flags. `extraArgs` takes tuning flags only: see
/// [`crate::TUNING_FLAGS`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdOptions {
    /// `--quota-backend-bytes`: the backend size at which etcd raises a NOSPACE alarm.
    #[serde(default = "defaults::quota_backend_bytes")]
    #[schemars(range(min = 0))]
    pub quota_backend_bytes: i64,
    /// `--auto-compaction-mode`.
    #[serde(default)]
    pub auto_compaction_mode: AutoCompactionMode,
    /// `--auto-compaction-retention`: a duration (`1h`) in Periodic mode, a revision count in Revision mode.
    #[serde(default = "defaults::auto_compaction_retention")]
    pub auto_compaction_retention: String,
    /// Further `--flag=value` pairs, without the leading dashes: etcd's tuning flags only
    /// (timeouts, snapshot and WAL counts, request limits, compaction, corruption checks, feature
    /// gates, log level, TLS cipher suites and versions); anything else is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            quota_backend_bytes: defaults::quota_backend_bytes(),
            auto_compaction_mode: AutoCompactionMode::default(),
            auto_compaction_retention: defaults::auto_compaction_retention(),
            extra_args: BTreeMap::new(),
        }
    }
}

/// etcd's `--auto-compaction-mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AutoCompactionMode {
    #[default]
    Periodic,
    Revision,
}

impl AutoCompactionMode {
    /// The value etcd's flag takes.
    pub fn as_flag(self) -> &'static str {
        match self {
            Self::Periodic => "periodic",
            Self::Revision => "revision",
        }
    }
}

/// What the operator observed of the cluster, written every reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Ready, Available, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Members in etcd's member list (voters and learners): the scale subresource's status.replicas.
    #[serde(default)]
    pub replicas: i32,
    /// Members that answer status and are voters.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the member pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Member ID of the leader, hexadecimal as etcdctl prints it.
    #[serde(default, rename = "leaderID", skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<String>,
    /// Cluster ID, hexadecimal; it stays the same across a stop and restart.
    #[serde(default, rename = "clusterID", skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// URLs clients connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_endpoints: Vec<String>,
    /// The version every member runs, once they agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Recorded when the cluster is scaled to zero: what bringing the same members back needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StoppedCluster>,
    /// The highest raft commit index any member of this cluster ID has reported: entries up to
    /// it were committed by a quorum, so recovery that forces a survivor behind it loses the
    /// difference, and is never automatic then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_committed_index: Option<u64>,
    /// The member recovery restarted alone with `--force-new-cluster`, and when, while it has
    /// not answered since: how long the cluster has waited for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_start: Option<ForcedStart>,
    /// While membership changes (phase Scaling): the voters etcd has, the size the spec asks
    /// for, and the step in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingProgress>,
}

/// How far a change of membership has come.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingProgress {
    /// Voting members in etcd's member list.
    pub current_size: i32,
    /// `spec.size`.
    pub target_size: i32,
    /// The step being taken, or what the change waits for.
    pub step: String,
}

/// A member restarted alone with `--force-new-cluster`, not answering yet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForcedStart {
    pub member: String,
    pub at: Time,
}

/// The lifecycle phase shown in `kubectl get etcdcluster`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    Creating,
    Running,
    Scaling,
    Upgrading,
    Degraded,
    Failed,
    Recovering,
    Stopped,
}

/// One etcd member as observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    /// Member ID, hexadecimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, rename = "peerURL", skip_serializing_if = "Option::is_none")]
    pub peer_url: Option<String>,
    #[serde(default, rename = "clientURL", skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<MemberRole>,
    #[serde(default)]
    pub leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Since when the member has not answered (the last time it was seen); absent while it
    /// does. Its sizes and raft position below stay as it last answered meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_since: Option<Time>,
    /// Why its last status call failed; absent while it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Size of its backend file in bytes, as it last answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size: Option<i64>,
    /// Bytes of that file in use; the rest is free pages only a defragmentation returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size_in_use: Option<i64>,
    /// Its raft term, the raft index committed as it knows it, and the index it has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_applied_index: Option<u64>,
    /// The alarms raised for it (`NOSPACE`, `CORRUPT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// Raft role of a member.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MemberRole {
    Learner,
    Voter,
}

/// What a restart from zero needs: the same members, on the same data, with the same cluster ID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoppedCluster {
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// Members (name, ID, peer URL) as they were when the cluster stopped.
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
