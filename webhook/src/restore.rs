//! Rules for EtcdRestore: one source, a target, and a cluster spec only where one is created.

use etcd_crds::{EtcdRestoreSpec, RestoreType};

use crate::verdict::Verdict;

pub fn validate(spec: &EtcdRestoreSpec, old: Option<&EtcdRestoreSpec>) -> Verdict {
    let mut verdict = Verdict::default();
    if spec.cluster_name.trim().is_empty() {
        verdict.deny("spec.clusterName", "must name the cluster to create or replace");
    }
    match (&spec.source.backup_ref, &spec.source.location) {
        (Some(_), Some(_)) => verdict
            .deny("spec.source", "must set exactly one of backupRef and location; both are set"),
        (None, None) => verdict
            .deny("spec.source", "must set exactly one of backupRef and location; none is set"),
        (Some(backup), None) if backup.name.trim().is_empty() => {
            verdict.deny("spec.source.backupRef.name", "must name an EtcdBackup in this namespace")
        }
        (None, Some(location)) => {
            crate::backup::destination(
                &mut verdict,
                "spec.source.location.destination",
                &location.destination,
                location.credentials_secret_ref.as_ref(),
                "spec.source.location.credentialsSecretRef",
            );
            if location.key.trim().is_empty() {
                verdict.deny("spec.source.location.key", "must name the snapshot object");
            }
            if let Some(sha) = &location.sha256
                && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                verdict.deny("spec.source.location.sha256", "must be 64 hexadecimal digits");
            }
        }
        (Some(_), None) => {}
    }
    match (spec.restore_type, &spec.cluster_spec) {
        (RestoreType::New, Some(cluster)) => {
            let nested = crate::cluster::validate_at("spec.clusterSpec", cluster, None);
            verdict.violations.extend(nested.violations);
            if cluster.size == 0 {
                verdict.deny("spec.clusterSpec.size", "a restored cluster needs at least 1 member");
            }
        }
        (RestoreType::Replace, Some(_)) => verdict.deny(
            "spec.clusterSpec",
            "only type New creates a cluster; Replace keeps the target's spec",
        ),
        (_, None) => {}
    }
    if let Some(old) = old
        && old != spec
    {
        verdict.deny("spec", "is immutable; create a new EtcdRestore");
    }
    verdict
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> EtcdRestoreSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn from_a_backup_into_a_new_cluster() {
        let ok = spec(
            json!({"clusterName": "r", "type": "New", "source": {"backupRef": {"name": "b"}}, "clusterSpec": {"size": 3}}),
        );
        assert!(validate(&ok, None).is_allowed());
        let changed = spec(
            json!({"clusterName": "r2", "type": "New", "source": {"backupRef": {"name": "b"}}}),
        );
        assert!(validate(&changed, Some(&ok)).message().contains("immutable"));
    }

    #[test]
    fn faults_named() {
        let bad = spec(json!({
            "clusterName": "",
            "type": "Replace",
            "source": {"backupRef": {"name": "b"}, "location": {"destination": {"volume": {"path": "/x"}}, "key": "k"}},
            "clusterSpec": {"size": 4}
        }));
        let verdict = validate(&bad, None);
        for path in ["spec.clusterName", "spec.source:", "spec.clusterSpec:"] {
            assert!(verdict.violations.iter().any(|v| v.starts_with(path)), "{path}: {verdict:?}");
        }
        let bad_sha = spec(
            json!({"clusterName": "r", "type": "New", "source": {"location": {"destination": {"volume": {"path": "/x"}}, "key": "k", "sha256": "abc"}}}),
        );
        assert!(validate(&bad_sha, None).message().contains("spec.source.location.sha256"));
    }
}
