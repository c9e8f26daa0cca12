//! The bootstrap entry the operator writes for a member before its pod may start etcd, and that
//! `member-init` reads. A pod whose entry is absent waits: this is what makes recreating any
//! ordinal safe (a pod that comes back before its member was re-added does not start stale).

use base64::Engine;
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
    /// With state ForceNew: the operator's seal (base64 HMAC-SHA256, [`BootstrapEntry::seal`]).
    /// The entry is a ConfigMap in the tenant's namespace, which more people may write than may
    /// read the cluster's Secrets; forcing a new cluster throws away every member but this one,
    /// so member-init forces only on an entry sealed with the key only the operator and the
    /// member's own pod hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
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
            seal: None,
        }
    }

    /// What the seal covers: the whole entry but the seal, and the cluster it is for, so that
    /// a sealed entry of one cluster (or member, or attempt) is not one of another.
    fn sealed_content(&self, namespace: &str, cluster: &str) -> Vec<u8> {
        let unsealed = Self { seal: None, ..self.clone() };
        let entry = serde_json::to_string(&unsealed).unwrap_or_default();
        format!("{namespace}/{cluster}\n{entry}").into_bytes()
    }

    /// Seals the entry with `key` (the cluster's seal Secret).
    pub fn seal(&mut self, key: &[u8], namespace: &str, cluster: &str) {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let tag = ring::hmac::sign(&key, &self.sealed_content(namespace, cluster));
        self.seal = Some(base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
    }

    /// Whether the entry carries the seal `key` makes of it.
    pub fn sealed_with(&self, key: &[u8], namespace: &str, cluster: &str) -> bool {
        let Some(tag) = self
            .seal
            .as_deref()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        ring::hmac::verify(&key, &self.sealed_content(namespace, cluster), &tag).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn forcing() -> BootstrapEntry {
        let mut entry = BootstrapEntry::new("c-0", &[], ClusterState::ForceNew, "t");
        entry.attempt = Some("17".into());
        entry.data_required = true;
        entry
    }

    #[test]
    fn a_seal_holds_for_its_entry_cluster_and_key_only() {
        let key = [7u8; 32];
        let mut entry = forcing();
        assert!(!entry.sealed_with(&key, "prod", "c"), "unsealed");
        entry.seal(&key, "prod", "c");
        assert!(entry.sealed_with(&key, "prod", "c"));
        assert!(!entry.sealed_with(&[8u8; 32], "prod", "c"), "another key");
        assert!(!entry.sealed_with(&key, "dev", "c"), "another namespace's cluster");
        let mut replayed = entry.clone();
        replayed.attempt = Some("18".into());
        assert!(!replayed.sealed_with(&key, "prod", "c"), "another attempt");
        let mut other = entry.clone();
        other.name = "c-1".into();
        assert!(!other.sealed_with(&key, "prod", "c"), "another member");
        let text = serde_json::to_string(&entry).unwrap();
        let read: BootstrapEntry = serde_json::from_str(&text).unwrap();
        assert!(read.sealed_with(&key, "prod", "c"), "as member-init reads it back");
    }
}
