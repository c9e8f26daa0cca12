//! The controllers: kube-runtime reconcile loops for EtcdCluster (and, wired by `run`, backups).
//!
//! A reconcile observes, asks the planner for one next step, performs it, writes status and
//! requeues; everything it does is safe to repeat after a crash between any two API calls.

pub mod backup;
pub mod cluster;
pub mod leader;
pub mod restore;
pub mod run;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

/// Name the operator reports Events and field ownership under.
pub const CONTROLLER_NAME: &str = "etcd-operator";

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Image of the operator itself: it runs as each etcd pod's `member-init` init container.
    pub operator_image: String,
    /// How often a healthy cluster is looked at again, even with nothing changing.
    pub health_interval: Duration,
    /// How long a changed CA bundle takes to reach every pod that mounts it (the kubelet's
    /// Secret sync); a CA rollover waits this long before leaves move to the new CA.
    pub ca_bundle_propagation: Duration,
    /// Registered into /metrics by `run`.
    pub backups: backup::BackupMetrics,
}

impl Context {
    pub fn new(client: Client, operator_image: String, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: CONTROLLER_NAME.to_owned(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            operator_image,
            health_interval: Duration::from_secs(30),
            ca_bundle_propagation: Duration::from_secs(180),
            backups: backup::BackupMetrics::default(),
        }
    }

    /// Publishes an Event about `object`. An Event that cannot be written is logged, never fatal:
    /// the action it reports has already happened.
    pub async fn event<K>(&self, object: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%err, reason, "cannot publish event");
        }
    }
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
