//! A container's environment (`pkg/kubelet/kubelet_pods.go`, `makeEnvironmentVariables`): the
//! `kubernetes` Service's variables (service links), `envFrom` Secrets and ConfigMaps, then each
//! `env` entry from a value, the downward API, or a Secret's or ConfigMap's key. A missing
//! source that is not optional keeps the container in `CreateContainerConfigError`.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::client::{Api, name_of, namespace_of};
use crate::sandbox;

/// The value of a downward API `fieldPath` of `pod`.
pub fn field(pod: &Value, path: &str, ip: &str, host_ip: &str) -> Option<String> {
    let quoted =
        |p: &str, prefix: &str| p.strip_prefix(prefix)?.strip_suffix("']").map(str::to_owned);
    match path {
        "status.podIP" => Some(ip.to_owned()),
        "status.hostIP" => Some(host_ip.to_owned()),
        "metadata.name" => Some(name_of(pod)),
        "metadata.namespace" => Some(namespace_of(pod)),
        "metadata.uid" => pod["metadata"]["uid"].as_str().map(str::to_owned),
        "spec.nodeName" => pod["spec"]["nodeName"].as_str().map(str::to_owned),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].as_str().map(str::to_owned),
        p if p.starts_with("metadata.labels['") => {
            let key = quoted(p, "metadata.labels['")?;
            pod["metadata"]["labels"][key].as_str().map(str::to_owned)
        }
        p if p.starts_with("metadata.annotations['") => {
            let key = quoted(p, "metadata.annotations['")?;
            pod["metadata"]["annotations"][key].as_str().map(str::to_owned)
        }
        _ => None,
    }
}

async fn data(
    api: &Api,
    namespace: &str,
    resource: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let object = api
        .get(&format!("/api/v1/namespaces/{namespace}/{resource}/{name}"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(object.map(|object| {
        let mut out = BTreeMap::new();
        for (k, v) in object["data"].as_object().into_iter().flatten() {
            let text = v.as_str().unwrap_or_default();
            let value = if resource == "secrets" {
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                text.to_owned()
            };
            out.insert(k.clone(), value);
        }
        out
    }))
}

pub async fn env(
    api: &Api,
    pod: &Value,
    container: &Value,
    ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let namespace = namespace_of(pod);
    let hostname =
        pod["spec"]["hostname"].as_str().map(str::to_owned).unwrap_or_else(|| name_of(pod));
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOSTNAME".into(), hostname),
        ("HOME".into(), "/root".into()),
        ("KUBERNETES_SERVICE_HOST".into(), sandbox::API_SERVICE_IP.into()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{}:443", sandbox::API_SERVICE_IP)),
    ];
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        for (field, resource) in [("secretRef", "secrets"), ("configMapRef", "configmaps")] {
            let Some(name) = from[field]["name"].as_str() else { continue };
            match data(api, &namespace, resource, name).await? {
                Some(values) => {
                    env.extend(values.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
                }
                None if from[field]["optional"] == true => {}
                None => {
                    return Err(format!(
                        "{} \"{name}\" not found",
                        &resource[..resource.len() - 1]
                    ));
                }
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        if let Some(value) = var["value"].as_str() {
            env.push((name, value.to_owned()));
            continue;
        }
        let from = &var["valueFrom"];
        if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            let value = field(pod, path, ip, host_ip)
                .ok_or_else(|| format!("unsupported fieldPath {path} for env {name}"))?;
            env.push((name, value));
            continue;
        }
        for (kind, resource) in [("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")] {
            let Some(object) = from[kind]["name"].as_str() else { continue };
            let key = from[kind]["key"].as_str().unwrap_or_default();
            match data(api, &namespace, resource, object).await?.and_then(|d| d.get(key).cloned()) {
                Some(v) => env.push((name.clone(), v)),
                None if from[kind]["optional"] == true => {}
                None => {
                    return Err(format!(
                        "couldn't find key {key} in {} {namespace}/{object}",
                        &resource[..resource.len() - 1]
                    ));
                }
            }
        }
    }
    Ok(env)
}
