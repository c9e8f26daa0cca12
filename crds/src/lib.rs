//! API types of etcd-operator (`etcd.etcd.io/v1alpha1`) and the CRD YAML generated from them.
//!
//! Pure data: no I/O. The webhook crate validates and defaults these types; the binary reconciles them.

// Pure code: nothing here needs `unsafe`, so nothing may use it.
#![forbid(unsafe_code)]
// kube-derive takes repeated `printcolumn(...)`/`shortname` attributes by design; clippy reads
// them as accidental duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod backup;
pub mod cluster;
pub mod conditions;
pub mod defaults;
pub mod restore;
pub mod storage;
pub mod version;

pub use backup::{BackupPhase, ClusterReference, EtcdBackup, EtcdBackupSpec, EtcdBackupStatus};
pub use cluster::{
    AutoCompactionMode, ClusterPhase, EtcdCluster, EtcdClusterSpec, EtcdClusterStatus, EtcdOptions,
    ForcedStart, MemberRole, MemberStatus, PodTemplateOverrides, ReclaimPolicy, RecoveryPolicy,
    RecoverySpec, ScalingProgress, SecretReference, SecuritySpec, StoppedCluster, StorageSpec,
    TlsSpec,
};
pub use restore::{
    BackupReference, EtcdRestore, EtcdRestoreSpec, EtcdRestoreStatus, RestorePhase, RestoreSource,
    RestoreType, SnapshotLocation,
};
pub use storage::{
    AzureDestination, BackupDestination, BackupRecord, Compression, EncryptionSpec, GcsDestination,
    S3Destination, SecretKeyReference, VolumeDestination,
};
pub use version::{EtcdVersion, SUPPORTED_MINORS};

use kube::CustomResourceExt;

/// API group of every kind here.
pub const GROUP: &str = "etcd.etcd.io";
/// The one served and stored version.
pub const API_VERSION: &str = "v1alpha1";

/// The sizes an EtcdCluster may have (odd, so that each member adds fault tolerance); the CRD
/// schema's enum says the same.
pub const SIZES: [i32; 6] = [0, 1, 3, 5, 7, 9];
/// The largest cluster: certificates name this many members, so growing needs no new ones.
pub const MAX_MEMBERS: u32 = 9;

/// Annotation of an EtcdCluster asking for a new CA: setting it to a new value (any token, e.g.
/// the date) starts a CA rollover, carried out without downtime like an expiring CA's.
pub const ROTATE_CA_ANNOTATION: &str = "etcd.etcd.io/rotate-ca";

/// Annotation of an EtcdCluster approving recovery from quorum loss (`spec.recovery.policy:
/// Manual`): its value must be the cluster ID that status reports for the failure.
pub const APPROVE_RECOVERY_ANNOTATION: &str = "etcd.etcd.io/approve-recovery";

/// The approval token a `QuorumLost` condition's message asks for (`...approve-recovery=TOKEN`),
/// if it asks for one: what `kubectl etcd approve-recovery` reads, and the operator writes.
pub fn approval_token(message: &str) -> Option<&str> {
    let (_, after) = message.split_once(&format!("{APPROVE_RECOVERY_ANNOTATION}="))?;
    let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(after.len());
    Some(&after[..end]).filter(|t| !t.is_empty())
}

/// Annotation of an EtcdCluster letting its deletion go on without the final backup (any
/// value; say why): for a cluster whose data is not wanted, or that cannot be backed up.
pub const SKIP_FINAL_BACKUP_ANNOTATION: &str = "etcd.etcd.io/skip-final-backup";

/// Annotation of an EtcdCluster that an EtcdRestore of type Replace deletes (its name): the
/// deletion keeps the cluster's claims whatever `reclaimPolicy` says, for the cluster restored
/// under the same name, whose members set the old data aside until it runs.
pub const REPLACED_BY_ANNOTATION: &str = "etcd.etcd.io/replaced-by";

/// The image repositories of etcd's own releases (tags `vX.Y.Z`), which members may run unless
/// the operator's administrator allows others.
pub const OFFICIAL_REPOSITORIES: &[&str] = &["gcr.io/etcd-development/etcd", "quay.io/coreos/etcd"];

/// Label keys the operator sets on member pods and selects them by; `podTemplate.labels` may not
/// set them (a pod labelled as another cluster's would be selected by that cluster's Services and
/// disruption budget).
pub const OPERATOR_LABEL_KEYS: &[&str] =
    &["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"];

/// The etcd flags `spec.options.extraArgs` may set: tuning only. Everything else is the
/// operator's (names, URLs, data directory, certificates, the initial cluster, fields of their
/// own in spec) or would weaken the cluster behind the operator's back (a plaintext listener,
/// `client-transport-security`, `enable-pprof`, `unsafe-no-fsync`, log files on any path). A list
/// of what is allowed, not of what is refused: a flag a later etcd adds is refused until it is
/// looked at.
pub const TUNING_FLAGS: &[&str] = &[
    "heartbeat-interval",
    "election-timeout",
    "initial-election-tick-advance",
    "pre-vote",
    "snapshot-count",
    "snapshot-catchup-entries",
    "experimental-snapshot-catchup-entries",
    "max-snapshots",
    "max-wals",
    "max-request-bytes",
    "max-txn-ops",
    "max-concurrent-streams",
    "max-learners",
    "experimental-max-learners",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "backend-batch-interval",
    "backend-batch-limit",
    "backend-bbolt-freelist-type",
    "compaction-batch-limit",
    "experimental-compaction-batch-limit",
    "compaction-sleep-interval",
    "experimental-compaction-sleep-interval",
    "experimental-initial-corrupt-check",
    "corrupt-check-time",
    "experimental-corrupt-check-time",
    "experimental-compact-hash-check-enabled",
    "compact-hash-check-time",
    "experimental-compact-hash-check-time",
    "warning-apply-duration",
    "experimental-warning-apply-duration",
    "warning-unary-request-duration",
    "experimental-warning-unary-request-duration",
    "watch-progress-notify-interval",
    "experimental-watch-progress-notify-interval",
    "bootstrap-defrag-threshold-megabytes",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-txn-mode-write-with-shared-buffer",
    "memory-mlock",
    "experimental-memory-mlock",
    "feature-gates",
    "log-level",
    "log-format",
    "metrics",
    "enable-grpc-gateway",
    "cipher-suites",
    "tls-min-version",
    "tls-max-version",
];

/// Errors of the API layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid etcd version {0:?}: expected MAJOR.MINOR.PATCH, e.g. 3.5.21")]
    InvalidVersion(String),
    #[error("cannot render the CRD YAML: {0}")]
    Render(#[from] serde_yaml::Error),
}

/// Where the generated YAML is committed, relative to the workspace root.
pub const COMMITTED_YAML: &str = "crds/all.yaml";

/// All three CRDs as one multi-document YAML stream: what `etcd-operator crd` prints and what
/// [`COMMITTED_YAML`] holds.
pub fn crds_yaml() -> Result<String, Error> {
    let mut out = String::new();
    for crd in [EtcdCluster::crd(), EtcdBackup::crd(), EtcdRestore::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_and_the_constants_agree_on_sizes() {
        let crd = serde_json::to_value(EtcdCluster::crd()).unwrap();
        let size = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["size"];
        assert_eq!(size["enum"], serde_json::json!(SIZES), "{size}");
        assert_eq!(SIZES.iter().max().map(|m| *m as u32), Some(MAX_MEMBERS));
    }
}
