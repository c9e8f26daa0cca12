//! Membership: the planner (pure), the member port it acts through, the observe → plan → act
//! reconcile, and the pure rules beside the planner (upgrades, quorum-loss recovery, NOSPACE,
//! data consistency). The port's adapters live with their platforms: `local/process.rs`
//! (etcd processes) and `k8s/members.rs` (StatefulSet pods).

pub mod consistency;
pub mod planner;
pub mod reconcile;
pub mod recovery;
pub mod space;
pub mod status;
pub mod upgrade;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;

use planner::Wanted;

use crate::etcd::ClusterState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("cannot start etcd member {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error(transparent)]
    Etcd(#[from] crate::etcd::Error),
    #[error("cannot run {name} on etcd {version}: {reason}")]
    Version { name: String, version: String, reason: String },
    #[error("{what} of {name} is not carried out on this platform")]
    NotHere { name: String, what: &'static str },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberUrls {
    pub client: String,
    pub peer: String,
}

/// Where members run. The planner's steps act through this; an adapter runs members as local
/// processes (tests, `etcd-operator local`) or as StatefulSet pods.
pub trait MemberPort: Sync {
    /// The member's fixed URLs.
    fn urls(&self, name: &str) -> Result<MemberUrls, Error>;
    /// Names whose process (pod) runs.
    fn running(&self) -> impl Future<Output = Result<BTreeSet<String>, Error>> + Send;
    /// Names whose volume holds (or may hold) member data: a member without one has lost its data.
    fn with_data(&self) -> impl Future<Output = Result<BTreeSet<String>, Error>> + Send;
    /// Names whose etcd member data this adapter has seen for itself (etcd's `member` directory
    /// in the data directory). Evidence that a cluster was bootstrapped; an adapter that cannot
    /// look inside volumes returns none, because a volume that exists is not data (a StatefulSet
    /// creates claims before their pods ever run).
    fn member_data(&self) -> impl Future<Output = Result<BTreeSet<String>, Error>> + Send;
    /// Starts a member. With data present, etcd ignores `initial` and `state`.
    fn start(
        &self,
        name: &str,
        initial: &[Wanted],
        state: ClusterState,
        token: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Stops a member, keeping its data.
    fn stop(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Deletes a member's data.
    fn wipe(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Of `down` (members not running), those the platform is already bringing back by itself,
    /// so that no step is taken for them (on Kubernetes: a pod the StatefulSet rolled or the
    /// kubelet restarts). Local processes are started by the operator alone: none.
    fn restarting(
        &self,
        _down: &BTreeSet<String>,
    ) -> impl Future<Output = Result<BTreeSet<String>, Error>> + Send {
        async { Ok(BTreeSet::new()) }
    }
    /// Restarts a member on etcd `version`, keeping its data. Only adapters whose caller sets
    /// [`reconcile::Target::rolls_versions`] are asked (on Kubernetes the StatefulSet rolls).
    fn upgrade(
        &self,
        name: &str,
        _version: &str,
        _initial: &[Wanted],
        _token: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let err = Error::NotHere { name: name.to_owned(), what: "a restart onto a new version" };
        async { Err(err) }
    }
    /// Names whose process might still run, though it may answer nothing: what recovery from
    /// quorum loss must see gone before it forces a new cluster. Locally the running processes;
    /// on Kubernetes every pod that started etcd and still exists, Terminating ones included (a
    /// pod on a node that does not answer may still run there).
    fn may_run(&self) -> impl Future<Output = Result<BTreeSet<String>, Error>> + Send {
        self.running()
    }
    /// Makes sure a member recovery discards can never run again on its old data: its process
    /// stopped and its data wiped. Never forces anything the platform cannot confirm (a pod on a
    /// lost node stays until a person confirms the node is gone).
    fn fence(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            self.stop(name).await?;
            self.wipe(name).await
        }
    }
    /// `name`, a learner about to be promoted, will vote: from now on it must never start
    /// without its data (on Kubernetes its bootstrap entry says so; a local member's start
    /// looks inside its data directory itself).
    fn require_data(&self, _name: &str) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }
    /// Of the members recovery forced, those whose process would force again if it restarted.
    /// A local member's configuration is rendered on every start: none.
    fn forced(&self) -> impl Future<Output = Result<BTreeSet<String>, Error>> + Send {
        async { Ok(BTreeSet::new()) }
    }
    /// Restarts `name`, which recovery forced, on a configuration that does not force.
    fn end_force(&self, name: &str) -> impl Future<Output = Result<(), Error>> + Send {
        let err = Error::NotHere { name: name.to_owned(), what: "ending a forced start" };
        async { Err(err) }
    }
    /// Clears what keeps the ordinal of a member that etcd no longer has from running again (on
    /// Kubernetes: its old pod stuck Terminating on a node that does not answer). Only for a
    /// removed member's name, whose old process can no longer rejoin.
    fn release_removed(&self, _name: &str) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }
}
