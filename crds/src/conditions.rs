//! Status conditions (`metav1.Condition`) as every kind here reports them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types the operator sets: what `kubectl wait --for=condition=TYPE` waits on.
/// One list, so that a type is named in one place.
pub mod types {
    // Every kind.
    /// EtcdCluster: every member ready; EtcdBackup: the last run stored a verified backup;
    /// EtcdRestore: the cluster runs from the snapshot.
    pub const READY: &str = "Ready";

    // EtcdCluster, each pass.
    /// A quorum of voters answers.
    pub const AVAILABLE: &str = "Available";
    /// A membership step is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Members are unhealthy (phase Degraded or Failed).
    pub const DEGRADED: &str = "Degraded";
    /// etcd's own alarms (NOSPACE, CORRUPT), while any is raised.
    pub const ETCD_ALARMS: &str = "EtcdAlarms";
    /// The voters hold the same data at one revision (`spec.maintenance`'s check).
    pub const DATA_CONSISTENT: &str = "DataConsistent";
    /// No quorum answers; the message is the recovery plan and its approval token.
    pub const QUORUM_LOST: &str = "QuorumLost";
    /// The cluster's Secrets, Services, budget, ConfigMap and StatefulSet are its own to write.
    pub const OBJECTS_OWNED: &str = "ObjectsOwned";
    /// The members' image repository is one the administrator allows.
    pub const IMAGE_ALLOWED: &str = "ImageAllowed";
    /// Every member's pod is placed on a node.
    pub const MEMBERS_SCHEDULED: &str = "MembersScheduled";
    /// Every member's images are pulled.
    pub const IMAGES_PULLED: &str = "ImagesPulled";
    /// The claims have the spec's storage size.
    pub const VOLUME_EXPANSION: &str = "VolumeExpansion";
    /// The cluster's TLS Secrets are valid for it.
    pub const TLS_SECRETS_VALID: &str = "TLSSecretsValid";
    /// A cluster being deleted: its final backup is stored (or not wanted), and where.
    pub const FINAL_BACKUP: &str = "FinalBackup";

    // `local` clusters.
    /// The spec passed the webhook's rules.
    pub const SPEC_ACCEPTED: &str = "SpecAccepted";
    /// The etcd release of the spec's version is installed.
    pub const VERSION_INSTALLED: &str = "VersionInstalled";
}

/// Sets `condition` in `conditions`, keeping `lastTransitionTime` when the status did not change
/// (metav1.Condition semantics: the time says when the status last flipped, not when it was seen).
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

/// A condition observed now for the given generation.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut conditions = Vec::new();
        let first = condition("Ready", true, "AllMembersReady", "3/3".into(), Some(1));
        let first_time = first.last_transition_time.clone();
        set_condition(&mut conditions, first);
        std::thread::sleep(Duration::from_millis(2));
        set_condition(
            &mut conditions,
            condition("Ready", true, "AllMembersReady", "3/3".into(), Some(2)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first_time);
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            condition("Ready", false, "MemberDown", "2/3".into(), Some(2)),
        );
        assert_ne!(conditions[0].last_transition_time, first_time);
        assert_eq!(conditions[0].reason, "MemberDown");
    }
}
