//! An EtcdBackup's destination may not lie inside another's, nor another's inside it. Each
//! backup keeps its objects under `PREFIX/NAMESPACE/NAME/`; with a prefix that reaches into
//! another backup's directory (`prefix: etcd/team-a/nightly`), one backup's objects would sit
//! among the other's. Retention already lists only a backup's own level, so neither counts nor
//! prunes the other's objects; this refuses the arrangement itself, naming the backup it
//! collides with when it is in the request's own namespace. Checked when a request sets a destination it did not have before.

use etcd_crds::{BackupDestination, EtcdBackupSpec};

use crate::mutate::Kind;
use crate::policy::Request;

/// The destinations of the EtcdBackups that exist (as the operator watches them).
pub trait KnownBackups: Send + Sync + 'static {
    /// Each EtcdBackup as `(namespace, name, destination)`.
    fn destinations(&self) -> Vec<(String, String, BackupDestination)>;
}

/// No backups known: the `webhook` command, which has no API server to watch.
pub struct NoneKnown;

impl KnownBackups for NoneKnown {
    fn destinations(&self) -> Vec<(String, String, BackupDestination)> {
        Vec::new()
    }
}

/// Why a request's destination is refused, if it is: it overlaps another EtcdBackup's.
pub fn denial(kind: Kind, request: &Request, known: &dyn KnownBackups) -> Option<String> {
    if kind != Kind::EtcdBackup {
        return None;
    }
    let destination = |spec: Option<&str>| {
        serde_json::from_str::<EtcdBackupSpec>(spec?).ok().map(|s| s.destination)
    };
    let new = destination(request.spec())?;
    if destination(request.old_spec()).is_some_and(|old| old == new) {
        return None;
    }
    let root = new.objects_root(&request.namespace, &request.name)?;
    known.destinations().into_iter().find_map(|(namespace, name, other)| {
        if namespace == request.namespace && name == request.name {
            return None;
        }
        let theirs = other.objects_root(&namespace, &name)?;
        let overlap = root.starts_with(&theirs) || theirs.starts_with(&root);
        // Another tenant's backup is not named: a denial must not tell who else keeps backups
        // where.
        let whose = if namespace == request.namespace {
            format!("EtcdBackup {namespace}/{name} ({theirs})")
        } else {
            "an EtcdBackup of another namespace".to_owned()
        };
        overlap.then(|| {
            format!(
                "spec.destination: this backup's objects would lie {} those of {whose}; choose \
                 a prefix outside it",
                if root.starts_with(&theirs) { "among" } else { "around" }
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Known(Vec<(String, String, BackupDestination)>);

    impl KnownBackups for Known {
        fn destinations(&self) -> Vec<(String, String, BackupDestination)> {
            self.0.clone()
        }
    }

    fn destination(bucket: &str, prefix: &str) -> BackupDestination {
        serde_json::from_value(json!({"s3": {"bucket": bucket, "prefix": prefix}})).unwrap()
    }

    fn review(namespace: &str, name: &str, prefix: &str, old: Option<&str>) -> Vec<u8> {
        let spec = |prefix: &str| {
            json!({"clusterRef": {"name": "main"}, "credentialsSecretRef": {"name": "s3"},
                   "destination": {"s3": {"bucket": "b", "prefix": prefix}}})
        };
        let old = old.map(|p| json!({"spec": spec(p)}));
        serde_json::to_vec(&json!({"request": {"namespace": namespace, "name": name,
            "object": {"spec": spec(prefix)}, "oldObject": old}}))
        .unwrap()
    }

    fn known() -> Known {
        Known(vec![("team-a".into(), "nightly".into(), destination("b", "etcd"))])
    }

    #[test]
    fn a_prefix_inside_another_backups_directory_is_refused_naming_it() {
        let body = review("team-b", "x", "etcd/team-a/nightly", None);
        let request = Request::parse(&body).unwrap();
        let why = denial(Kind::EtcdBackup, &request, &known()).unwrap();
        assert!(why.contains("among those of an EtcdBackup of another namespace"), "{why}");
        assert!(!why.contains("nightly"), "another tenant's backup is not named: {why}");
        let body = review("team-a", "x", "etcd/team-a/nightly", None);
        let why = denial(Kind::EtcdBackup, &Request::parse(&body).unwrap(), &known()).unwrap();
        assert!(why.contains("among those of EtcdBackup team-a/nightly"), "{why}");
        // The other way round: a backup whose directory would hold an existing one's.
        let around = Known(vec![("team-c".into(), "y".into(), destination("b", "etcd/team-c/z"))]);
        let body = review("team-c", "z", "etcd", None);
        let why = denial(Kind::EtcdBackup, &Request::parse(&body).unwrap(), &around).unwrap();
        assert!(why.contains("around those of EtcdBackup team-c/y"), "{why}");
    }

    #[test]
    fn a_prefix_beside_others_itself_and_an_unchanged_destination_pass() {
        for (namespace, name, prefix, old) in [
            ("team-a", "weekly", "etcd", None),
            ("team-a", "nightly", "etcd", None),
            ("team-b", "x", "etcd/team-a/nightly", Some("etcd/team-a/nightly")),
        ] {
            let body = review(namespace, name, prefix, old);
            let request = Request::parse(&body).unwrap();
            assert_eq!(denial(Kind::EtcdBackup, &request, &known()), None, "{namespace}/{name}");
        }
    }
}
