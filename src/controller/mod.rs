//! The controllers: kube-runtime reconcile loops for EtcdCluster, EtcdBackup and EtcdRestore,
//! wired by `run`.
//!
//! A reconcile observes, asks the planner for one next step, performs it, writes status and
//! requeues; everything it does is safe to repeat after a crash between any two API calls.

pub mod api_client;
pub mod backup;
pub mod cluster;
pub mod deletion;
pub mod known_backups;
pub mod leader;
pub mod owned;
pub mod restore;
pub mod run;

use etcd_crds::conditions::types;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// `K` in one namespace, or in all.
pub fn scoped<K>(client: kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => kube::Api::namespaced(client, namespace),
        None => kube::Api::all(client),
    }
}

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
    /// What the EtcdCluster controller last applied and read, checked against its watches so
    /// that a reconcile that would find nothing changed asks the API server nothing. Without
    /// watches (`Context::new`) nothing is trusted and every request is made.
    pub owned: owned::Owned,
    /// Where a tenant's backup destination may point beyond the public internet.
    pub backup_endpoints: crate::backup::endpoints::EndpointPolicy,
    /// The image repositories members may run (the webhook's rule, held again for objects
    /// admitted before it).
    pub image_repositories: Vec<String>,
    /// Registered into /metrics by `run`.
    pub backups: backup::BackupMetrics,
    pub clusters: crate::cluster_metrics::ClusterMetrics,
    pub reconciles: ReconcileMetrics,
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
            owned: owned::Owned::unwatched(),
            backup_endpoints: Default::default(),
            image_repositories: etcd_crds::OFFICIAL_REPOSITORIES
                .iter()
                .map(|r| r.to_string())
                .collect(),
            backups: backup::BackupMetrics::default(),
            clusters: crate::cluster_metrics::ClusterMetrics::default(),
            reconciles: ReconcileMetrics::default(),
        }
    }

    /// The same settings, metrics and Event recorder, with `owned` as the record of what was
    /// written: each watched namespace's controllers keep their own (a reflector store holds
    /// one watch's objects), and report into one /metrics.
    pub fn sharing(&self, owned: owned::Owned) -> Self {
        Self {
            client: self.client.clone(),
            recorder: self.recorder.clone(),
            operator_image: self.operator_image.clone(),
            health_interval: self.health_interval,
            ca_bundle_propagation: self.ca_bundle_propagation,
            owned,
            backup_endpoints: self.backup_endpoints.clone(),
            image_repositories: self.image_repositories.clone(),
            backups: self.backups.clone(),
            clusters: self.clusters.clone(),
            reconciles: self.reconciles.clone(),
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

/// Why a reconcile of any of the three kinds failed; the controller retries it (error_policy).
/// Failures that waiting cannot mend are not errors: each controller reports them in status
/// (phase Failed, a condition) and stops.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    #[error(transparent)]
    Membership(#[from] crate::membership::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{kind} {name} has no namespace")]
    NoNamespace { kind: String, name: String },
    #[error("EtcdCluster {cluster} is not deleted yet: {message}")]
    DeletionWaits { cluster: String, message: String },
    #[error("{kind} {name} has no UID yet, so nothing can be owned by it")]
    NoOwnerReference { kind: String, name: String },
    /// An object the cluster needs exists under another owner ([`crate::ownership`]).
    #[error("{0}")]
    NotOwned(String),
}

impl Error {
    /// The kind of failure, as the `reason` of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "ApiError",
            Error::Tls(_) => "TlsError",
            Error::Membership(_) => "MembershipError",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(err)
                | kube::runtime::finalizer::Error::CleanupFailed(err) => err.reason(),
                _ => "FinalizerError",
            },
            Error::DeletionWaits { .. } => "DeletionWaits",
            Error::NoNamespace { .. } => "NoNamespace",
            Error::NoOwnerReference { .. } => "NoOwnerReference",
            Error::NotOwned(_) => "NotOwned",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    controller: String,
    reason: String,
}

/// Reconciles by controller, failures by controller and reason, and how long reconciles take.
#[derive(Clone)]
pub struct ReconcileMetrics {
    runs: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        // 1 ms to ~60 s: a reconcile is a few API calls, or a backup.
        let duration: Family<ControllerLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 3.0, 11)));
        Self { runs: Default::default(), failures: Default::default(), duration }
    }
}

impl ReconcileMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("reconciles", "Reconciles by controller", self.runs.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles by controller and reason",
            self.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by controller",
            self.duration.clone(),
        );
    }

    /// Runs one reconcile of `controller`, counting and timing it.
    pub async fn measure<T>(
        &self,
        controller: &str,
        reconcile: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = std::time::Instant::now();
        let result = reconcile.await;
        let labels = ControllerLabels { controller: controller.to_owned() };
        self.runs.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            let failure = FailureLabels {
                controller: controller.to_owned(),
                reason: err.reason().to_owned(),
            };
            self.failures.get_or_create(&failure).inc();
        }
        result
    }
}

/// Why a backup or restore cannot go on now, as its Ready condition's reason and message. A
/// final problem (a missing backup, an invalid schedule) is reported in status and waits for a
/// change; a temporary one (the API server unavailable) leaves the phase as it is and the step
/// is tried again after [`RETRY_AFTER_PROBLEM`].
#[derive(Debug)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
    pub temporary: bool,
}

/// How long a temporary problem waits before the step is tried again.
pub const RETRY_AFTER_PROBLEM: Duration = Duration::from_secs(10);

impl Problem {
    /// A problem that waiting will not mend.
    pub fn lasting(reason: &'static str, message: String) -> Self {
        Self { reason, message, temporary: false }
    }

    /// A problem that waiting may mend, such as a cluster not ready yet.
    pub fn temporary(reason: &'static str, message: String) -> Self {
        Self { reason, message, temporary: true }
    }

    /// A failed API call: temporary when waiting may mend it (see [`crate::retry::transient`]),
    /// or when another writer got in first: the step is tried again from a new read.
    pub fn api(reason: &'static str, what: String, err: kube::Error) -> Self {
        let temporary = crate::retry::transient(&err) || crate::retry::stale(&err);
        Self { reason, message: format!("{what}: {err}"), temporary }
    }

    /// The Ready=False condition that reports it.
    pub fn condition(&self, generation: Option<i64>) -> Condition {
        let message = if self.temporary {
            format!("{} (trying again)", self.message)
        } else {
            self.message.clone()
        };
        etcd_crds::conditions::condition(types::READY, false, self.reason, message, generation)
    }
}

/// An API error, saying which call failed.
pub fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// The namespace of a namespaced object (an object without one cannot be reconciled).
pub fn namespace_of<K: Resource<DynamicType = ()>>(object: &K) -> Result<String, Error> {
    object.meta().namespace.clone().ok_or_else(|| Error::NoNamespace {
        kind: K::kind(&()).into_owned(),
        name: object.meta().name.clone().unwrap_or_default(),
    })
}

/// How long a failed reconcile waits before it is tried again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);

/// The error policy of every controller: log what failed, and try again after a pause.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    err: &Error,
    _ctx: Arc<Context>,
) -> Action {
    let name = object.meta().name.clone().unwrap_or_default();
    tracing::warn!(kind = %K::kind(&()), %name, %err, "reconcile failed; trying again");
    Action::requeue(RETRY_AFTER_ERROR)
}

/// Writes the whole status of `name` by server-side apply: a field this manager applied before
/// and leaves out now is removed (a merge patch cannot say that).
pub async fn write_status<K, S>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &S,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(crate::names::FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&patch))
        .await
        .map_err(kube_err(format!("write the status of {} {name}", K::kind(&()))))?;
    Ok(())
}
