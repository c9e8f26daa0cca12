//! Default values, in one place: serde fills them when a field is absent, schemars writes them into
//! the CRD schema, and the mutating webhook makes them visible in the stored object.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The etcd version a new cluster gets when it names none.
pub const VERSION: &str = "3.5.21";
/// Official etcd images; tags are `vVERSION`.
pub const REPOSITORY: &str = "gcr.io/etcd-development/etcd";

pub fn size() -> i32 {
    3
}

pub fn version() -> String {
    VERSION.to_owned()
}

pub fn repository() -> String {
    REPOSITORY.to_owned()
}

pub fn storage_size() -> Quantity {
    Quantity("8Gi".to_owned())
}

pub fn yes() -> bool {
    true
}

/// etcd's own default backend quota (2 GiB), written out so users see what is in force.
pub fn quota_backend_bytes() -> i64 {
    2 * 1024 * 1024 * 1024
}

pub fn auto_compaction_retention() -> String {
    "1h".to_owned()
}

/// Requests sized for a small production member; no limits, so etcd is never CPU-throttled.
pub fn resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("256Mi".to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Newest backups an `EtcdBackup` keeps when it names no retention.
pub fn retention() -> i32 {
    5
}

/// Five minutes: longer than a node drain or an image pull, short enough that a broken member
/// does not leave the cluster one failure away from losing quorum for long.
/// Five minutes: a restart, a DNS or network blip is not a lost cluster.
pub fn quorum_loss_after_seconds() -> i64 {
    300
}

pub fn replace_unhealthy_after_seconds() -> i64 {
    300
}

/// Five minutes: a corrupt member is found long before anyone would notice its wrong reads,
/// and hashing each member's backend that often costs little next to its own compactions.
pub fn consistency_check_seconds() -> i64 {
    300
}
