//! Volumes (`pkg/kubelet/volumemanager/`, `pkg/volume/`): what a pod's volumes are made of before
//! its containers start, and how Secret, ConfigMap, projected and downward API volumes follow
//! their sources afterwards.
//!
//! - A claim must be bound and not being deleted; its PersistentVolume's `hostPath` is mounted.
//! - `emptyDir` is a directory of the pod's own.
//! - Secret, ConfigMap, projected and downward API volumes are written as the kubelet's atomic
//!   writer writes them (`pkg/volume/util/atomic_writer.go`): the files in a new timestamped
//!   directory, the `..data` symlink swapped to it, each key a symlink through `..data`. They
//!   are written again every sync period (`--volume-sync-seconds`, default 60 s: the kubelet's
//!   periodic pod sync plus its object cache's TTL make changes show up after about a minute).
//! - A projected service-account token comes from the TokenRequest API, bound to the pod, and is
//!   requested again after 80 % of its lifetime (`pkg/kubelet/token/token_manager.go`).
//!
//! A volume that cannot be set up yet keeps the pod in `ContainerCreating` and is retried.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::client::{Api, namespace_of};

/// A file of a volume: its bytes and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// A projected token and when it must be requested again.
#[derive(Default)]
pub struct Tokens(std::sync::Mutex<BTreeMap<String, (String, Instant)>>);

/// Where a volume is on the node, or why it cannot be set up yet.
pub async fn setup(
    api: &Api,
    tokens: &Tokens,
    pod: &Value,
    volume: &Value,
    dir: &Path,
) -> Result<PathBuf, String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let namespace = namespace_of(pod);
    if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
        let object = api
            .get(&format!("/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
        if object["status"]["phase"] != "Bound" {
            return Err(format!("persistentvolumeclaim \"{claim}\" is not bound"));
        }
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return Err(format!("persistentvolumeclaim \"{claim}\" is being deleted"));
        }
        let pv_name = object["spec"]["volumeName"].as_str().unwrap_or_default();
        let pv = api
            .get(&format!("/api/v1/persistentvolumes/{pv_name}"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
        let path = pv["spec"]["hostPath"]["path"]
            .as_str()
            .ok_or_else(|| format!("persistentvolume \"{pv_name}\" has no hostPath"))?;
        std::fs::create_dir_all(path).map_err(|e| format!("{path}: {e}"))?;
        return Ok(PathBuf::from(path));
    }
    if volume.get("emptyDir").is_some() {
        std::fs::create_dir_all(dir).map_err(io)?;
        return Ok(dir.to_owned());
    }
    let files = contents(api, tokens, pod, volume).await?;
    atomic_write(dir, &files)?;
    Ok(dir.to_owned())
}

/// Whether the volume's files follow sources that change (written again every sync period).
pub fn refreshed(volume: &Value) -> bool {
    ["secret", "configMap", "projected", "downwardAPI"].iter().any(|k| volume.get(*k).is_some())
}

/// Writes the volume's files again if its sources changed.
pub async fn refresh(api: &Api, tokens: &Tokens, pod: &Value, volume: &Value, dir: &Path) {
    match contents(api, tokens, pod, volume).await {
        Ok(files) => {
            if let Err(err) = atomic_write(dir, &files) {
                tracing::warn!(%err, "cannot update a volume");
            }
        }
        Err(err) => tracing::debug!(%err, "volume source not readable; kept as it is"),
    }
}

/// What a Secret, ConfigMap, projected or downward API volume holds now.
async fn contents(
    api: &Api,
    tokens: &Tokens,
    pod: &Value,
    volume: &Value,
) -> Result<Files, String> {
    let mode = |spec: &Value| spec["defaultMode"].as_u64().unwrap_or(0o644) as u32;
    if let Some(secret) = volume.get("secret") {
        let name = secret["secretName"].as_str().unwrap_or_default();
        return object_files(api, pod, "secrets", name, secret, mode(secret)).await;
    }
    if let Some(map) = volume.get("configMap") {
        let name = map["name"].as_str().unwrap_or_default();
        return object_files(api, pod, "configmaps", name, map, mode(map)).await;
    }
    if let Some(downward) = volume.get("downwardAPI") {
        return downward_files(pod, downward, mode(downward));
    }
    if let Some(projected) = volume.get("projected") {
        let default = mode(projected);
        let mut files = Files::new();
        for source in projected["sources"].as_array().into_iter().flatten() {
            let part = if let Some(s) = source.get("secret") {
                let name = s["name"].as_str().unwrap_or_default();
                object_files(api, pod, "secrets", name, s, default).await?
            } else if let Some(c) = source.get("configMap") {
                let name = c["name"].as_str().unwrap_or_default();
                object_files(api, pod, "configmaps", name, c, default).await?
            } else if let Some(d) = source.get("downwardAPI") {
                downward_files(pod, d, default)?
            } else if let Some(t) = source.get("serviceAccountToken") {
                let path = t["path"].as_str().unwrap_or("token").to_owned();
                let token = token(api, tokens, pod, volume, t).await?;
                Files::from([(path, (token.into_bytes(), default))])
            } else {
                return Err(format!("a projected source kube-sim does not know: {source}"));
            };
            files.extend(part);
        }
        return Ok(files);
    }
    Err(format!("volume type of {} is not supported by kube-sim", volume["name"]))
}

async fn object_files(
    api: &Api,
    pod: &Value,
    resource: &str,
    name: &str,
    spec: &Value,
    mode: u32,
) -> Result<Files, String> {
    let namespace = namespace_of(pod);
    let object = api
        .get(&format!("/api/v1/namespaces/{namespace}/{resource}/{name}"))
        .await
        .map_err(|e| e.to_string())?;
    let object = match object {
        Some(o) => o,
        None if spec["optional"] == true => json!({}),
        None => return Err(format!("{} \"{name}\" not found", &resource[..resource.len() - 1])),
    };
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in object["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        let bytes = if resource == "secrets" {
            base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
        } else {
            text.as_bytes().to_vec()
        };
        data.insert(k.clone(), bytes);
    }
    let files = match spec["items"].as_array() {
        Some(items) => items
            .iter()
            .filter_map(|i| {
                let bytes = data.get(i["key"].as_str()?)?.clone();
                let mode = i["mode"].as_u64().map_or(mode, |m| m as u32);
                Some((i["path"].as_str()?.to_owned(), (bytes, mode)))
            })
            .collect(),
        None => data.into_iter().map(|(k, v)| (k, (v, mode))).collect(),
    };
    Ok(files)
}

fn downward_files(pod: &Value, spec: &Value, mode: u32) -> Result<Files, String> {
    let mut files = Files::new();
    for item in spec["items"].as_array().into_iter().flatten() {
        let path = item["path"].as_str().unwrap_or_default().to_owned();
        let field = item["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
        let value = super::env::field(pod, field, "", "")
            .ok_or_else(|| format!("downward API field {field} is not supported by kube-sim"))?;
        files.insert(path, (value.into_bytes(), item["mode"].as_u64().map_or(mode, |m| m as u32)));
    }
    Ok(files)
}

/// A token for the pod's service account, from the TokenRequest API, bound to the pod.
async fn token(
    api: &Api,
    tokens: &Tokens,
    pod: &Value,
    volume: &Value,
    source: &Value,
) -> Result<String, String> {
    let key = format!("{}/{}", pod["metadata"]["uid"].as_str().unwrap_or_default(), volume["name"]);
    if let Some((token, renew)) = tokens.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && Instant::now() < *renew
    {
        return Ok(token.clone());
    }
    let namespace = namespace_of(pod);
    let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    let seconds = source["expirationSeconds"].as_u64().unwrap_or(3607);
    let mut spec = json!({
        "expirationSeconds": seconds,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
    });
    if let Some(audience) = source["audience"].as_str() {
        spec["audiences"] = json!([audience]);
    }
    let request =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let answer = api
        .create(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
            &request,
        )
        .await
        .map_err(|e| {
            format!("cannot request a token for service account {namespace}/{account}: {e}")
        })?;
    let token = answer["status"]["token"].as_str().ok_or("the TokenRequest returned no token")?;
    let renew = Instant::now() + Duration::from_secs(seconds * 8 / 10);
    tokens.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (token.to_owned(), renew));
    Ok(token.to_owned())
}

/// Writes `files` into `dir` as the kubelet's atomic writer does; nothing when they are
/// what is there already.
fn atomic_write(dir: &Path, files: &Files) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let current = std::fs::read_link(dir.join("..data")).ok();
    if let Some(current) = &current {
        let same = files
            .iter()
            .all(|(k, (v, _))| std::fs::read(dir.join(current).join(k)).is_ok_and(|c| c == *v))
            && count_files(&dir.join(current)) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!("..{}", time::OffsetDateTime::now_utc().unix_timestamp_nanos());
    let fresh = dir.join(&stamp);
    for (k, (v, mode)) in files {
        let path = fresh.join(k);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, v).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).map_err(io)?;
    }
    std::fs::create_dir_all(&fresh).map_err(io)?;
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(io)?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(io)?;
    for k in files.keys() {
        let top = k.split('/').next().unwrap_or(k);
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link).map_err(io)?;
        }
    }
    if let Some(old) = current {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum()
        })
        .unwrap_or(0)
}

/// Whether the driver of the volume behind this pod's claim grows a mounted file system (the
/// kubelet's volume manager then expands volumes in use, `ExpandInUseVolume`); if not, a
/// pending resize finishes only when a pod stages the volume again ([`expand`] at mount).
pub async fn expands_online(api: &Api, pod: &Value, volume: &Value) -> bool {
    let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() else { return false };
    let path = format!("/api/v1/namespaces/{}/persistentvolumeclaims/{claim}", namespace_of(pod));
    let Ok(Some(object)) = api.get(&path).await else { return true };
    let pv = object["spec"]["volumeName"].as_str().unwrap_or_default();
    let Ok(Some(pv)) = api.get(&format!("/api/v1/persistentvolumes/{pv}")).await else {
        return true;
    };
    pv["metadata"]["annotations"][crate::storage::NODE_EXPANSION_ANNOTATION] != "offline"
}

/// Finishes an expansion the resizer started on a claim this pod mounts, as the kubelet does at
/// mount and, for drivers that can, while in use (`pkg/volume/util/operationexecutor`,
/// `NodeExpand`, then `MarkFSResizeFinished`): the claim's capacity becomes the volume's and
/// `FileSystemResizePending` goes.
pub async fn expand(api: &Api, pod: &Value, volume: &Value) {
    let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() else { return };
    let path = format!("/api/v1/namespaces/{}/persistentvolumeclaims/{claim}", namespace_of(pod));
    let Ok(Some(object)) = api.get(&path).await else { return };
    let pending = object["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "FileSystemResizePending"));
    if !pending {
        return;
    }
    let pv = object["spec"]["volumeName"].as_str().unwrap_or_default();
    let Ok(Some(pv)) = api.get(&format!("/api/v1/persistentvolumes/{pv}")).await else { return };
    let status = json!({"status": {"capacity": {"storage": pv["spec"]["capacity"]["storage"]}, "conditions": []}});
    if let Err(err) = api.merge(&format!("{path}/status"), &status).await {
        tracing::info!(%claim, %err, "cannot finish the volume's expansion");
    }
}
