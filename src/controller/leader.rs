//! Leader election over a `coordination.k8s.io` Lease (kube-lease-manager): every replica serves
//! the webhooks, only the leader reconciles and rotates certificates.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

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

/// This replica's view of the election.
pub struct Leadership {
    state: watch::Receiver<bool>,
}

impl Leadership {
    /// Joins the election and waits until this replica leads.
    pub async fn acquire(client: Client, namespace: &str, identity: &str) -> Result<Self, Error> {
        let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await
            .map_err(|source| Error::Lease { namespace: namespace.to_owned(), source })?;
        let (mut state, _task) = manager.watch().await;
        while !*state.borrow_and_update() {
            state.changed().await.map_err(|_| Error::Stopped)?;
        }
        Ok(Self { state })
    }

    /// Resolves when leadership is lost (or the election task stops). The caller then exits so that
    /// no two replicas ever act on the same cluster: a restarted pod rejoins the election.
    pub async fn lost(mut self) {
        while *self.state.borrow_and_update() {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }
}
