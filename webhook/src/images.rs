//! Which images members may run. A member pod runs `REPOSITORY:vVERSION` from its spec with the
//! cluster's data, certificates and Secrets mounted, so the repository is the administrator's to
//! allow ([`etcd_crds::OFFICIAL_REPOSITORIES`] unless the operator is told otherwise), not the
//! author's to choose. Checked when a request sets a repository it did not have before.

use etcd_crds::{EtcdClusterSpec, EtcdRestoreSpec};

use crate::mutate::Kind;
use crate::policy::Request;

/// Why a request's repository is refused, if it is: one that `allowed` does not list, newly set
/// by the request.
pub fn denial(kind: Kind, request: &Request, allowed: &[String]) -> Option<String> {
    let (field, new) = repository(kind, request.spec())?;
    let old = repository(kind, request.old_spec());
    if old.is_some_and(|(_, old)| old == new) || allowed.iter().any(|a| a == &new) {
        return None;
    }
    Some(format!(
        "{field}: {new} is not an image repository this operator runs members from; it allows {} \
         (an administrator adds mirrors with --allowed-image-repositories)",
        allowed.join(", ")
    ))
}

fn repository(kind: Kind, spec: Option<&str>) -> Option<(&'static str, String)> {
    let text = spec?;
    match kind {
        Kind::EtcdCluster => {
            let spec: EtcdClusterSpec = serde_json::from_str(text).ok()?;
            Some(("spec.repository", spec.repository))
        }
        Kind::EtcdRestore => {
            let spec: EtcdRestoreSpec = serde_json::from_str(text).ok()?;
            Some(("spec.clusterSpec.repository", spec.cluster_spec?.repository))
        }
        Kind::EtcdBackup => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(spec: serde_json::Value, old: Option<serde_json::Value>) -> Vec<u8> {
        json!({"request": {"object": {"spec": spec}, "oldObject": old.map(|o| json!({"spec": o}))}})
            .to_string()
            .into_bytes()
    }

    fn denied(kind: Kind, body: &[u8], allowed: &[String]) -> Option<String> {
        denial(kind, &Request::parse(body)?, allowed)
    }

    fn official() -> Vec<String> {
        etcd_crds::OFFICIAL_REPOSITORIES.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn only_allowed_repositories_are_admitted() {
        let ours = json!({"size": 3, "version": "3.5.21"});
        assert_eq!(denied(Kind::EtcdCluster, &body(ours, None), &official()), None);
        let theirs = json!({"size": 3, "version": "3.5.21", "repository": "evil.example/etcd"});
        let why = denied(Kind::EtcdCluster, &body(theirs.clone(), None), &official()).unwrap();
        assert!(why.starts_with("spec.repository: evil.example/etcd is not"), "{why}");
        assert!(why.contains("gcr.io/etcd-development/etcd"), "{why}");
        // A restore's cluster spec too.
        let restore = json!({"clusterName": "c", "type": "New", "source": {"backupRef": {"name": "b"}}, "clusterSpec": theirs.clone()});
        assert!(denied(Kind::EtcdRestore, &body(restore, None), &official()).is_some());
        // An update that keeps a repository admitted earlier is not judged again.
        let mut scaled = theirs.clone();
        scaled["size"] = json!(5);
        assert_eq!(denied(Kind::EtcdCluster, &body(scaled, Some(theirs)), &official()), None);
    }
}
