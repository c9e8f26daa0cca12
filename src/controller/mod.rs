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
