//! In `local` the file plays the part of the EtcdCluster object, so every edit goes through the
//! admission webhook's own defaulting and validation: as a create the first time, then as an
//! update against the last spec accepted. A denied edit changes nothing (the cluster keeps the
//! accepted spec, as a `kubectl apply` that is denied leaves the object as it was) and is said
//! once in the log and in the `SpecAccepted` condition. The accepted object is kept in
//! `accepted.json`, so that a restarted operator compares with what it ran.

use etcd_crds::conditions::types;
use std::path::{Path, PathBuf};

use etcd_crds::EtcdCluster;
use etcd_crds::conditions::condition;
use etcd_webhook::mutate::normalise_cluster;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub struct Admission {
    path: PathBuf,
    accepted: Option<EtcdCluster>,
    /// The denial last logged, so that each is said once, not on every pass.
    denied: Option<String>,
}

impl Admission {
    /// The admission state of the local cluster in `dir`.
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("accepted.json");
        let accepted = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        Self { path, accepted, denied: None }
    }

    /// The spec last accepted, if any.
    pub fn accepted(&self) -> Option<&EtcdCluster> {
        self.accepted.as_ref()
    }

    /// Admits `edited`: its defaulted form becomes the accepted object, or the denial (every
    /// violated rule with its field path) is returned and the accepted object stays.
    pub fn admit(&mut self, edited: EtcdCluster) -> Result<&EtcdCluster, String> {
        // The file was read into the API type, so serde has filled the defaults already; what
        // the webhook adds is the normal form.
        let mut defaulted = edited;
        normalise_cluster(&mut defaulted.spec);
        let verdict = etcd_webhook::cluster::validate(
            &defaulted.spec,
            self.accepted.as_ref().map(|accepted| &accepted.spec),
        );
        if !verdict.is_allowed() {
            let denial = verdict.message();
            if self.denied.as_ref() != Some(&denial) {
                tracing::error!(
                    "edit of the cluster file denied, the cluster keeps running as it was: {denial}"
                );
                self.denied = Some(denial.clone());
            }
            return Err(denial);
        }
        self.denied = None;
        if self.accepted.as_ref() != Some(&defaulted) {
            for warning in &verdict.warnings {
                tracing::warn!("{warning}");
            }
            let bytes = serde_json::to_vec_pretty(&defaulted).unwrap_or_default();
            super::write_atomically(&self.path, bytes)
                .map_err(|err| format!("cannot write {err}"))?;
        }
        Ok(self.accepted.insert(defaulted))
    }

    /// The `SpecAccepted` condition for the last edit.
    pub fn condition(&self, generation: Option<i64>) -> Condition {
        match &self.denied {
            Some(denial) => {
                condition(types::SPEC_ACCEPTED, false, "Denied", denial.clone(), generation)
            }
            None => {
                let message = "the file's spec passed admission".to_owned();
                condition(types::SPEC_ACCEPTED, true, "Accepted", message, generation)
            }
        }
    }
}
