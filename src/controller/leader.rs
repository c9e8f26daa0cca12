//! Leader election over a `coordination.k8s.io` Lease (kube-lease-manager): every replica serves
//! the webhooks, only the leader reconciles and rotates certificates.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease in the operator's namespace.
pub const LEASE_NAME: &str = "etcd-operator-leader";
/// Seconds a leader's claim is valid after its last renewal, and how early it renews.
const LEASE_DURATION_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election on Lease {namespace}/{LEASE_NAME} failed: {source}")]
    Lease { namespace: String, source: LeaseManagerError },
    #[error("the leader-election task stopped")]
    Stopped,
}

/// How long a stopping leader waits for its Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// This replica's view of the election.
pub struct Leadership {
    state: watch::Receiver<bool>,
    /// kube-lease-manager's task: it renews the Lease, and releases it once `state` is dropped.
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Joins the election and waits until this replica leads.
    pub async fn acquire(client: Client, namespace: &str, identity: &str) -> Result<Self, Error> {
        let transient = |err: &LeaseManagerError| matches!(err, LeaseManagerError::KubeError(source) if crate::retry::transient(source));
        let manager = crate::retry::with_backoff("join the leader election", transient, || {
            LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
                .with_namespace(namespace)
                .with_identity(identity)
                .with_duration(LEASE_DURATION_SECONDS)
                .with_grace(LEASE_GRACE_SECONDS)
                .build()
        })
        .await
        .map_err(|source| Error::Lease { namespace: namespace.to_owned(), source })?;
        let (mut state, task) = manager.watch().await;
        while !*state.borrow_and_update() {
            state.changed().await.map_err(|_| Error::Stopped)?;
        }
        Ok(Self { state, task })
    }

    /// Resolves when leadership is lost (or the election task stops). The caller then exits so that
    /// no two replicas ever act on the same cluster: a restarted pod rejoins the election.
    pub async fn lost(&mut self) {
        while *self.state.borrow_and_update() {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up, so that another replica leads at once instead of after the Lease
    /// expires (a rolling update of the operator would otherwise leave nobody reconciling for
    /// up to its duration).
    pub async fn release(self) {
        drop(self.state);
        match tokio::time::timeout(RELEASE_TIMEOUT, self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
            Ok(Ok(Err(err))) => tracing::warn!(%err, "cannot release the leader Lease; it expires"),
            Ok(Err(err)) => tracing::warn!(%err, "the leader-election task failed"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out; it expires"),
        }
    }
}
