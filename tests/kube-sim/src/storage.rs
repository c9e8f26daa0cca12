//! Storage outside the kubelet, as a CSI driver's sidecars provide it on a real cluster:
//!
//! - the StorageClass `standard` (default, `allowVolumeExpansion`, reclaim `Delete`, binding
//!   `Immediate`: a network disk any node can attach, so a pod is not pinned to a node), and
//!   `offline-expansion`, the same but for a driver whose node plugin cannot grow a mounted file
//!   system (no online `NodeExpandVolume`): its volumes finish growing only when a pod stages
//!   them again, so `FileSystemResizePending` stays until the pod restarts. The provisioner
//!   records that on the volume (`NODE_EXPANSION_ANNOTATION`), where the kubelet looks, as a real
//!   kubelet asks the volume's driver (`NodeGetCapabilities`);
//! - the external provisioner (kubernetes-csi/external-provisioner): a claim the PV controller
//!   annotated with `volume.kubernetes.io/storage-provisioner: kube-sim.io/hostpath` gets a
//!   PersistentVolume `pvc-<claim uid>` of the requested size with a `claimRef` to it, which the
//!   PV controller then binds; a Released volume of reclaim policy Delete is deleted with its data;
//! - the external resizer (kubernetes-csi/external-resizer): a bound claim asking for more than its
//!   volume has grows the volume and is marked `FileSystemResizePending`; the kubelet of the node
//!   that mounts it finishes the expansion (`kubelet::volumes::expand`).
//!
//! The binding, protection and reclaim decisions themselves are kube-controller-manager's.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Api, name_of, namespace_of};

pub const PROVISIONER: &str = "kube-sim.io/hostpath";
pub const STORAGE_CLASS: &str = "standard";
pub const OFFLINE_EXPANSION_CLASS: &str = "offline-expansion";
/// On a PersistentVolume: `offline` when its driver grows the file system only when staging.
pub const NODE_EXPANSION_ANNOTATION: &str = "kube-sim.io/node-expansion";

/// A quantity in bytes (`10Gi`, `500M`, `1024`), enough for storage sizes.
pub fn bytes(quantity: &str) -> Option<u128> {
    let q = quantity.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: u128 = number.parse().ok()?;
    let factor: u128 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u128.pow(2),
        "G" => 1000u128.pow(3),
        "T" => 1000u128.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    Some(number * factor)
}

pub async fn install_class(api: &Api) -> Result<(), String> {
    let class = |name: &str, default: bool, node_expansion: &str| {
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": default.to_string()}},
            "provisioner": PROVISIONER, "allowVolumeExpansion": true, "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate", "parameters": {"nodeExpansion": node_expansion},
        })
    };
    for class in
        [class(STORAGE_CLASS, true, "online"), class(OFFLINE_EXPANSION_CLASS, false, "offline")]
    {
        match api.create("/apis/storage.k8s.io/v1/storageclasses", &class).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(format!("cannot create the StorageClass: {e}")),
        }
    }
    Ok(())
}

pub async fn run(api: Api, volumes: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Err(err) = pass(&api, &volumes).await {
            tracing::debug!(%err, "storage pass failed");
        }
    }
}

async fn pass(api: &Api, volumes: &std::path::Path) -> Result<(), crate::client::Failed> {
    let claims = api.list("/api/v1/persistentvolumeclaims").await?;
    let pvs = api.list("/api/v1/persistentvolumes").await?;
    let ours = |pv: &Value| {
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == PROVISIONER
    };
    for claim in &claims {
        let annotations = &claim["metadata"]["annotations"];
        let asked = annotations["volume.kubernetes.io/storage-provisioner"] == PROVISIONER;
        let uid = claim["metadata"]["uid"].as_str().unwrap_or_default();
        let name = format!("pvc-{uid}");
        if asked && claim["status"]["phase"] == "Pending" && !pvs.iter().any(|p| name_of(p) == name)
        {
            provision(api, claim, &name, volumes).await?;
        }
        if claim["status"]["phase"] == "Bound" {
            resize(api, claim, &pvs).await?;
        }
    }
    for pv in pvs.iter().filter(|p| ours(p)) {
        if pv["status"]["phase"] == "Released"
            && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
        {
            if let Some(path) = pv["spec"]["hostPath"]["path"].as_str() {
                let _ = std::fs::remove_dir_all(path);
            }
            api.delete(&format!("/api/v1/persistentvolumes/{}", name_of(pv)), &json!({})).await?;
        }
    }
    Ok(())
}

async fn provision(
    api: &Api,
    claim: &Value,
    name: &str,
    volumes: &std::path::Path,
) -> Result<(), crate::client::Failed> {
    let class = claim["spec"]["storageClassName"].as_str().unwrap_or(STORAGE_CLASS);
    let class_object = api.get(&format!("/apis/storage.k8s.io/v1/storageclasses/{class}")).await?;
    let reclaim = class_object
        .as_ref()
        .and_then(|c| c["reclaimPolicy"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "Delete".to_owned());
    let node_expansion = class_object
        .as_ref()
        .and_then(|c| c["parameters"]["nodeExpansion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "online".to_owned());
    let path = volumes.join(name);
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER,
                                                   NODE_EXPANSION_ANNOTATION: node_expansion}},
        "spec": {
            "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            "accessModes": claim["spec"]["accessModes"],
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": class,
            "volumeMode": "Filesystem",
            "hostPath": {"path": path, "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace_of(claim),
                         "name": name_of(claim), "uid": claim["metadata"]["uid"]},
        },
    });
    let _ = std::fs::create_dir_all(&path);
    match api.create("/api/v1/persistentvolumes", &pv).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn resize(api: &Api, claim: &Value, pvs: &[Value]) -> Result<(), crate::client::Failed> {
    let wanted = claim["spec"]["resources"]["requests"]["storage"].as_str().unwrap_or_default();
    let Some(pv) =
        pvs.iter().find(|p| Some(name_of(p).as_str()) == claim["spec"]["volumeName"].as_str())
    else {
        return Ok(());
    };
    if pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] != PROVISIONER {
        return Ok(());
    }
    let has = pv["spec"]["capacity"]["storage"].as_str().unwrap_or_default();
    if bytes(wanted) <= bytes(has) {
        return Ok(());
    }
    let class = claim["spec"]["storageClassName"].as_str().unwrap_or_default();
    let expandable = api
        .get(&format!("/apis/storage.k8s.io/v1/storageclasses/{class}"))
        .await?
        .is_some_and(|c| c["allowVolumeExpansion"] == true);
    if !expandable {
        return Ok(());
    }
    api.merge(
        &format!("/api/v1/persistentvolumes/{}", name_of(pv)),
        &json!({"spec": {"capacity": {"storage": wanted}}}),
    )
    .await?;
    let status = json!({"status": {
        "allocatedResources": {"storage": wanted},
        "conditions": [{"type": "FileSystemResizePending", "status": "True",
                        "lastTransitionTime": crate::client::now(),
                        "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}],
    }});
    let path = format!(
        "/api/v1/namespaces/{}/persistentvolumeclaims/{}/status",
        namespace_of(claim),
        name_of(claim)
    );
    api.merge(&path, &status).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_compare_by_size_not_by_text() {
        assert_eq!(super::bytes("10Gi"), Some(10 << 30));
        assert!(super::bytes("10Gi") > super::bytes("9000Mi"));
        assert!(super::bytes("1G") < super::bytes("1Gi"));
        assert_eq!(super::bytes("x"), None);
    }
}
