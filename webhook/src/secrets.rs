//! The Secrets a spec names, and who names them.
//!
//! The operator reads every Secret a spec names with its own rights: TLS Secrets it mounts into
//! member pods, backup credentials it signs requests with, encryption keys it seals snapshots
//! with, pull secrets the kubelet uses. So a spec may name only Secrets its author could read
//! themselves; otherwise whoever may create an EtcdCluster in a namespace could put any of its
//! Secrets to use. Which Secrets a request newly names is decided here, purely; whether its
//! author may read them is asked of the API server by an [`Authorizer`] (a SubjectAccessReview).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use etcd_crds::{EtcdBackupSpec, EtcdClusterSpec, EtcdRestoreSpec, SnapshotLocation};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::mutate::Kind;
use crate::policy::Request;

/// A Secret a spec names, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    /// The field that names it, e.g. `spec.credentialsSecretRef`.
    pub field: String,
    pub name: String,
}

/// The author of a request, as kube-apiserver authenticated them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Requester {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The Secrets a request names that its object did not name before, in its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub namespace: String,
    pub requester: Requester,
    pub secrets: Vec<SecretUse>,
}

/// Asks whether a requester may read Secrets; returns those they may not, or why it could not
/// be asked.
pub trait Authorizer: Send + Sync + 'static {
    fn unreadable<'a>(
        &'a self,
        check: &'a Check,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<SecretUse>, String>> + Send + 'a>>;
}

/// What a request asks to be checked: `None` when it names no Secret it did not name before
/// (a spec that does not parse names none: validation has denied it already).
pub fn check(kind: Kind, request: &Request) -> Option<Check> {
    let before = named(kind, request.old_spec());
    let secrets: Vec<SecretUse> = named(kind, request.spec())
        .into_iter()
        .filter(|new| !before.iter().any(|old| old.name == new.name))
        .collect();
    (!secrets.is_empty()).then(|| Check {
        namespace: request.namespace.clone(),
        requester: request.user_info.clone(),
        secrets,
    })
}

/// The Secrets a spec of `kind` names.
pub fn named(kind: Kind, spec: Option<&str>) -> Vec<SecretUse> {
    let mut uses = Vec::new();
    match kind {
        Kind::EtcdCluster => {
            if let Some(spec) = read::<EtcdClusterSpec>(spec) {
                cluster(&mut uses, "spec", &spec);
            }
        }
        Kind::EtcdBackup => {
            if let Some(spec) = read::<EtcdBackupSpec>(spec) {
                add(
                    &mut uses,
                    "spec.credentialsSecretRef",
                    spec.credentials_secret_ref.map(|r| r.name),
                );
                let key = spec.encryption.map(|e| e.key_secret_ref.name);
                add(&mut uses, "spec.encryption.keySecretRef", key);
            }
        }
        Kind::EtcdRestore => {
            if let Some(spec) = read::<EtcdRestoreSpec>(spec) {
                if let Some(location) = &spec.source.location {
                    snapshot(&mut uses, "spec.source.location", location);
                }
                if let Some(cluster_spec) = &spec.cluster_spec {
                    cluster(&mut uses, "spec.clusterSpec", cluster_spec);
                }
            }
        }
    }
    uses
}

fn cluster(uses: &mut Vec<SecretUse>, at: &str, spec: &EtcdClusterSpec) {
    let tls = &spec.security.tls;
    for (field, reference) in [
        ("peerSecretRef", &tls.peer_secret_ref),
        ("serverSecretRef", &tls.server_secret_ref),
        ("clientSecretRef", &tls.client_secret_ref),
    ] {
        let name = reference.as_ref().map(|r| r.name.clone());
        add(uses, &format!("{at}.security.tls.{field}"), name);
    }
    if let Some(restore) = &spec.restore {
        snapshot(uses, &format!("{at}.restore"), restore);
    }
    for (i, pull) in spec.pod_template.image_pull_secrets.iter().enumerate() {
        add(uses, &format!("{at}.podTemplate.imagePullSecrets[{i}]"), Some(pull.name.clone()));
    }
}

fn snapshot(uses: &mut Vec<SecretUse>, at: &str, location: &SnapshotLocation) {
    let credentials = location.credentials_secret_ref.as_ref().map(|r| r.name.clone());
    add(uses, &format!("{at}.credentialsSecretRef"), credentials);
    let key = location.encryption.as_ref().map(|e| e.key_secret_ref.name.clone());
    add(uses, &format!("{at}.encryption.keySecretRef"), key);
}

fn add(uses: &mut Vec<SecretUse>, field: &str, name: Option<String>) {
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        uses.push(SecretUse { field: field.to_owned(), name });
    }
}

fn read<T: DeserializeOwned>(spec: Option<&str>) -> Option<T> {
    serde_json::from_str(spec.unwrap_or("{}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checked(kind: Kind, body: &[u8]) -> Option<Check> {
        check(kind, &Request::parse(body)?)
    }

    fn body(spec: serde_json::Value, old: Option<serde_json::Value>) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u", "namespace": "team-a", "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "userInfo": {"username": "alice", "groups": ["devs", "system:authenticated"]},
            "object": {"spec": spec}, "oldObject": old.map(|o| json!({"spec": o}))
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn every_secret_a_spec_names_is_found_with_its_field() {
        let spec = json!({"size": 3, "version": "3.5.21",
            "security": {"tls": {"autoTLS": false, "peerSecretRef": {"name": "p"}, "serverSecretRef": {"name": "s"}, "clientSecretRef": {"name": "c"}}},
            "podTemplate": {"imagePullSecrets": [{"name": "pull"}]},
            "restore": {"destination": {"s3": {"bucket": "b"}}, "key": "k", "credentialsSecretRef": {"name": "creds"},
                        "encryption": {"keySecretRef": {"name": "key", "key": "k"}}}});
        let check = checked(Kind::EtcdCluster, &body(spec, None)).unwrap();
        assert_eq!(check.namespace, "team-a");
        assert_eq!(check.requester.username, "alice");
        let found: Vec<(&str, &str)> =
            check.secrets.iter().map(|u| (u.field.as_str(), u.name.as_str())).collect();
        assert_eq!(
            found,
            [
                ("spec.security.tls.peerSecretRef", "p"),
                ("spec.security.tls.serverSecretRef", "s"),
                ("spec.security.tls.clientSecretRef", "c"),
                ("spec.restore.credentialsSecretRef", "creds"),
                ("spec.restore.encryption.keySecretRef", "key"),
                ("spec.podTemplate.imagePullSecrets[0]", "pull"),
            ]
        );
    }

    #[test]
    fn only_secrets_an_update_newly_names_are_checked() {
        let old = json!({"clusterRef": {"name": "main"}, "destination": {"volume": {"path": "/b"}},
                         "credentialsSecretRef": {"name": "creds"}});
        let mut new = old.clone();
        assert_eq!(checked(Kind::EtcdBackup, &body(new.clone(), Some(old.clone()))), None);
        new["encryption"] = json!({"keySecretRef": {"name": "key", "key": "k"}});
        let check = checked(Kind::EtcdBackup, &body(new, Some(old))).unwrap();
        assert_eq!(
            check.secrets,
            [SecretUse { field: "spec.encryption.keySecretRef".into(), name: "key".into() }]
        );
    }

    #[test]
    fn a_restore_names_its_sources_and_its_clusters_secrets() {
        let spec = json!({"clusterName": "main", "type": "New",
            "source": {"location": {"destination": {"volume": {"path": "/b"}}, "key": "k", "credentialsSecretRef": {"name": "creds"}}},
            "clusterSpec": {"size": 1, "version": "3.5.21", "podTemplate": {"imagePullSecrets": [{"name": "pull"}]}}});
        let names: Vec<String> = checked(Kind::EtcdRestore, &body(spec, None))
            .unwrap()
            .secrets
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["creds", "pull"]);
    }
}
