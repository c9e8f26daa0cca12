//! The bootstrap entry the operator writes for a member before its pod may start etcd, and that
//! `member-init` reads. A pod whose entry is absent waits: this is what makes recreating any
//! ordinal safe (a pod that comes back before its member was re-added does not start stale).

use serde::{Deserialize, Serialize};

use crate::etcd::ClusterState;
use crate::etcd::config::{Peer, initial_cluster};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapEntry {
    pub name: String,
    pub initial_cluster: Vec<Peer>,
    pub state: ClusterState,
    pub token: String,
    /// With state ForceNew: this recovery's attempt. member-init forces a new cluster once per
    /// attempt (a marker on the data volume), because the entry is read on every pod start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// This member has been a voter: it starts only on its own data. etcd's rule for a member
    /// whose data is lost is remove and add again under a new ID; started empty with
    /// `existing`, it would take its old ID from its peers with no log, term or vote, and vote
    /// at once (a candidate missing a committed entry could win with it). A learner that has
    /// never voted may start empty: it is sent the data before it is promoted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_required: bool,
}

impl BootstrapEntry {
    pub fn new(name: &str, initial: &[Peer], state: ClusterState, token: &str) -> Self {
        Self {
            name: name.to_owned(),
            initial_cluster: initial.to_vec(),
            state,
            token: token.to_owned(),
            attempt: None,
            data_required: false,
        }
    }

    /// `--initial-cluster`: `a=https://…,b=https://…`.
    pub fn initial_cluster_flag(&self) -> String {
        initial_cluster(&self.initial_cluster)
    }

    /// The ConfigMap key of a member's entry.
    pub fn key(member: &str) -> String {
        format!("{member}.json")
    }
}
