//! Whose an object is. The operator writes a cluster's Secrets, Services, disruption budget,
//! bootstrap ConfigMap and StatefulSet by name (`NAME-server-tls`, `NAME-client`, ...), and a
//! name in a tenant's namespace may already be taken by something else. Writing it would take it
//! over: its content replaced, the cluster's ownerReference added, and the garbage collector
//! deleting it with the cluster. So the operator writes only what does not exist yet or what this
//! very EtcdCluster (by UID) controls; anything else is reported, naming it, and left alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Why the existing object `meta` (a `kind`) is not the cluster `cluster_uid`'s to write, if it
/// is not.
pub fn foreign(kind: &str, meta: &ObjectMeta, cluster_uid: &str) -> Option<String> {
    let controller =
        meta.owner_references.iter().flatten().find(|owner| owner.controller == Some(true));
    if controller.is_some_and(|owner| owner.uid == cluster_uid) {
        return None;
    }
    let name = meta.name.as_deref().unwrap_or_default();
    let holder = match controller {
        Some(owner) => format!("its controller is {} {} ({})", owner.kind, owner.name, owner.uid),
        None => "it has no controller".to_owned(),
    };
    Some(format!(
        "{kind} {name} exists and is not this EtcdCluster's ({holder}); the operator does not \
         write it: remove it, or give the EtcdCluster another name"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            name: Some("api-server-tls".into()),
            owner_references: Some(owners),
            ..Default::default()
        }
    }

    fn owner(uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "etcd.etcd.io/v1alpha1".into(),
            kind: "EtcdCluster".into(),
            name: "api".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn only_the_clusters_own_objects_are_its_to_write() {
        assert_eq!(foreign("Secret", &meta(vec![owner("u1", Some(true))]), "u1"), None);
        let none = foreign("Secret", &meta(vec![]), "u1").unwrap();
        assert!(none.contains("Secret api-server-tls") && none.contains("no controller"), "{none}");
        // Owned but not controlled (another controller's object we are merely listed on).
        assert!(foreign("Secret", &meta(vec![owner("u1", None)]), "u1").is_some());
        // A previous cluster of the same name (deleted, its objects not yet collected).
        let other = foreign("Service", &meta(vec![owner("u0", Some(true))]), "u1").unwrap();
        assert!(other.contains("EtcdCluster api (u0)"), "{other}");
    }
}
