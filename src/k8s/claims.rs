//! A cluster's data claims: those its StatefulSet names `data-<cluster>-<ordinal>`, never merely
//! those its selector's labels match. Bitnami's etcd chart labels its claims
//! `app.kubernetes.io/name=etcd, app.kubernetes.io/instance=<release>` as well, so by labels
//! alone a release named like a cluster would have its claims grown, counted as members' data
//! and deleted with the cluster.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

use crate::names;

/// The data claims of `cluster`'s members.
pub async fn list(
    api: &Api<PersistentVolumeClaim>,
    cluster: &str,
) -> Result<Vec<PersistentVolumeClaim>, kube::Error> {
    let listed = api.list(&ListParams::default().labels(&names::selector_string(cluster))).await?;
    Ok(listed
        .items
        .into_iter()
        .filter(|claim| {
            claim.metadata.name.as_deref().is_some_and(|name| names::is_member_claim(cluster, name))
        })
        .collect())
}

/// Deletes `claim` as it was listed: a claim made again under its name since (its uid differs)
/// is another member's volume, and stays. Gone already is done.
pub async fn delete(
    api: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
) -> Result<(), kube::Error> {
    let name = claim.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: claim.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        // The uid precondition failed: this name is another claim's now.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        deleted => crate::retry::ignore_not_found(deleted),
    }
}

/// Deletes every data claim of `cluster` ([`delete`] each); how many there were.
pub async fn delete_all(
    api: &Api<PersistentVolumeClaim>,
    cluster: &str,
) -> Result<usize, kube::Error> {
    let claims = list(api, cluster).await?;
    for claim in &claims {
        delete(api, claim).await?;
    }
    Ok(claims.len())
}
