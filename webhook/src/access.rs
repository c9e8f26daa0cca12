//! What a request asks of its author's own rights.
//!
//! The operator acts on a spec with its own rights: it reads every Secret a spec names (TLS
//! Secrets it mounts into member pods, backup credentials it signs requests with, encryption keys
//! it seals snapshots with, pull secrets the kubelet uses), and an EtcdRestore has it create a
//! cluster, delete one (type Replace) and read an EtcdBackup's snapshots with that backup's
//! credentials. So a request may ask only for what its author could do themselves; otherwise
//! whoever may create one of these objects in a namespace could use every Secret there and
//! delete every cluster. What a request newly asks for is decided here, purely; whether its
//! author may is asked of the API server by an [`Authorizer`] (a SubjectAccessReview each).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use etcd_crds::{EtcdBackupSpec, EtcdClusterSpec, EtcdRestoreSpec, RestoreType, SnapshotLocation};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::mutate::Kind;
use crate::policy::Request;

/// What the author must be allowed to do for a request to ask it of the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    ReadSecret,
    ReadBackup,
    CreateCluster,
    DeleteCluster,
}

impl Need {
    /// The API group, resource and verb a SubjectAccessReview asks about.
    pub fn attributes(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Need::ReadSecret => ("", "secrets", "get"),
            Need::ReadBackup => (etcd_crds::GROUP, "etcdbackups", "get"),
            Need::CreateCluster => (etcd_crds::GROUP, "etcdclusters", "create"),
            Need::DeleteCluster => (etcd_crds::GROUP, "etcdclusters", "delete"),
        }
    }

    /// "read Secret", as a denial says it.
    pub fn words(self) -> &'static str {
        match self {
            Need::ReadSecret => "read Secret",
            Need::ReadBackup => "read EtcdBackup",
            Need::CreateCluster => "create EtcdCluster",
            Need::DeleteCluster => "delete EtcdCluster",
        }
    }

    /// Why the request needs it, as a denial says it.
    pub fn why(self) -> &'static str {
        match self {
            Need::ReadSecret => "a spec may name only Secrets its author can read",
            Need::ReadBackup => {
                "a restore reads the backup's snapshots with the backup's own credentials"
            }
            Need::CreateCluster => "a restore of type New creates the cluster",
            Need::DeleteCluster => {
                "a restore of type Replace deletes the cluster and its volumes first"
            }
        }
    }
}

/// One thing a request asks for, and the field that asks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    /// The field that asks, e.g. `spec.credentialsSecretRef`.
    pub field: String,
    pub need: Need,
    /// The object's name, in the request's namespace.
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

/// What a request asks for that its object did not ask before, in its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub namespace: String,
    pub requester: Requester,
    pub uses: Vec<Use>,
}

/// Asks whether a requester may do what a check lists; returns what they may not, or why it
/// could not be asked.
pub trait Authorizer: Send + Sync + 'static {
    fn denied<'a>(
        &'a self,
        check: &'a Check,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Use>, String>> + Send + 'a>>;
}

/// What a request asks to be checked: `None` when it asks nothing its object did not ask before
/// (a spec that does not parse asks nothing: validation has denied it already).
pub fn check(kind: Kind, request: &Request) -> Option<Check> {
    let before = uses(kind, request.old_spec());
    let uses: Vec<Use> = uses(kind, request.spec())
        .into_iter()
        .filter(|new| !before.iter().any(|old| old.need == new.need && old.name == new.name))
        .collect();
    (!uses.is_empty()).then(|| Check {
        namespace: request.namespace.clone(),
        requester: request.user_info.clone(),
        uses,
    })
}

/// What a spec of `kind` asks for.
pub fn uses(kind: Kind, spec: Option<&str>) -> Vec<Use> {
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
                let need = match spec.restore_type {
                    RestoreType::New => Need::CreateCluster,
                    RestoreType::Replace => Need::DeleteCluster,
                };
                uses.push(Use { field: "spec.type".into(), need, name: spec.cluster_name.clone() });
                if let Some(backup) = &spec.source.backup_ref {
                    let name = Some(backup.name.clone());
                    add_need(&mut uses, "spec.source.backupRef", Need::ReadBackup, name);
                }
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

fn cluster(uses: &mut Vec<Use>, at: &str, spec: &EtcdClusterSpec) {
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

fn snapshot(uses: &mut Vec<Use>, at: &str, location: &SnapshotLocation) {
    let credentials = location.credentials_secret_ref.as_ref().map(|r| r.name.clone());
    add(uses, &format!("{at}.credentialsSecretRef"), credentials);
    let key = location.encryption.as_ref().map(|e| e.key_secret_ref.name.clone());
    add(uses, &format!("{at}.encryption.keySecretRef"), key);
}

fn add(uses: &mut Vec<Use>, field: &str, name: Option<String>) {
    add_need(uses, field, Need::ReadSecret, name);
}

fn add_need(uses: &mut Vec<Use>, field: &str, need: Need, name: Option<String>) {
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        uses.push(Use { field: field.to_owned(), need, name });
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
            check.uses.iter().map(|u| (u.field.as_str(), u.name.as_str())).collect();
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
            check.uses,
            [Use {
                field: "spec.encryption.keySecretRef".into(),
                need: Need::ReadSecret,
                name: "key".into()
            }]
        );
    }

    #[test]
    fn a_restore_asks_for_its_cluster_its_backup_and_their_secrets() {
        let spec = json!({"clusterName": "main", "type": "New",
            "source": {"location": {"destination": {"volume": {"path": "/b"}}, "key": "k", "credentialsSecretRef": {"name": "creds"}}},
            "clusterSpec": {"size": 1, "version": "3.5.21", "podTemplate": {"imagePullSecrets": [{"name": "pull"}]}}});
        let asked = |spec| -> Vec<(Need, String)> {
            checked(Kind::EtcdRestore, &body(spec, None))
                .unwrap()
                .uses
                .into_iter()
                .map(|u| (u.need, u.name))
                .collect()
        };
        assert_eq!(
            asked(spec),
            [
                (Need::CreateCluster, "main".to_owned()),
                (Need::ReadSecret, "creds".to_owned()),
                (Need::ReadSecret, "pull".to_owned())
            ]
        );
        let replace = json!({"clusterName": "main", "type": "Replace",
            "source": {"backupRef": {"name": "nightly"}}});
        assert_eq!(
            asked(replace),
            [(Need::DeleteCluster, "main".to_owned()), (Need::ReadBackup, "nightly".to_owned())]
        );
    }
}
