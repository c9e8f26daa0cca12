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
}

impl BootstrapEntry {
    pub fn new(name: &str, initial: &[Peer], state: ClusterState, token: &str) -> Self {
        Self {
            name: name.to_owned(),
            initial_cluster: initial.to_vec(),
            state,
            token: token.to_owned(),
            attempt: None,
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
