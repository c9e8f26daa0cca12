//! The admission chain of a write, in kube-apiserver's order: built-in admission plugins
//! (NamespaceLifecycle, defaults the API types declare, StorageObjectInUseProtection's finalizer,
//! Service IP allocation), mutating webhooks, the CRD's structural schema, built-in validation
//! (names, immutable fields), then validating webhooks.
//!
//! Webhooks are called as kube-apiserver calls them
//! (`staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/`): an AdmissionReview v1 POSTed
//! over HTTPS to a ready endpoint of the configuration's Service, trusting only its `caBundle`,
//! with the server name `SERVICE.NAMESPACE.svc`, within `timeoutSeconds`; `failurePolicy: Fail`
//! turns a call that fails into a denial. Not modelled: namespaceSelector, objectSelector,
//! matchConditions, reinvocation.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::api::{ApiError, ApiServer};
use crate::rbac::User;
use crate::resources::Kind;
use crate::store;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// Admits a create or update: returns the object to store, or the denial.
pub async fn admit(
    server: &ApiServer,
    kind: &Kind,
    op: Operation,
    old: Option<&Value>,
    mut object: Value,
    user: &User,
) -> Result<Value, ApiError> {
    if op == Operation::Create && kind.namespaced {
        let namespace = store::namespace_of(&object);
        match server.store.get("/namespaces", "", &namespace) {
            None => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("namespaces \"{namespace}\" not found"),
                ));
            }
            Some(ns) if !ns["metadata"]["deletionTimestamp"].is_null() => {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        kind.plural,
                        store::name_of(&object)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if op == Operation::Create {
        defaults(&server.store, kind, &mut object);
    }
    if kind.resource() == "/secrets" {
        string_data(&mut object);
    }
    object = call_webhooks(server, kind, op, old, object, user, true).await?;
    if let Some(schema) = &kind.schema {
        crate::schema::admit(&mut object, schema)
            .map_err(|causes| ApiError::invalid(kind, &store::name_of(&object), &causes))?;
    }
    builtin_checks(kind, old, &object)?;
    if let Some(old) = old {
        claim_resize(server, kind, old, &object)?;
    }
    call_webhooks(server, kind, op, old, object, user, false).await
}

/// Validating admission of a delete (webhooks whose rules include DELETE).
pub async fn on_delete(
    server: &ApiServer,
    kind: &Kind,
    current: &Value,
    user: &User,
) -> Result<(), ApiError> {
    call_webhooks(server, kind, Operation::Delete, Some(current), Value::Null, user, false)
        .await
        .map(drop)
}

/// A Secret's `stringData` is write-only: the API server merges it into `data`, base64-encoded
/// (`pkg/registry/core/secret/strategy.go`).
fn string_data(secret: &mut Value) {
    let Some(strings) = secret.as_object_mut().and_then(|m| m.remove("stringData")) else { return };
    for (key, value) in strings.as_object().into_iter().flatten() {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
        secret["data"][key] = json!(encoded);
    }
}

/// What the API types' defaulting and the built-in admission plugins fill in on create.
pub fn defaults(store: &store::Store, kind: &Kind, object: &mut Value) {
    let set_default = |object: &mut Value, path: &str, value: Value| {
        if crate::resources::json_path(object, path).is_none_or(Value::is_null) {
            crate::resources::set_json_path(object, path, value);
        }
    };
    match kind.resource().as_str() {
        "/persistentvolumeclaims" => {
            let finalizers =
                object["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
            if !finalizers.iter().any(|f| f == PVC_PROTECTION) {
                let mut with = finalizers;
                with.push(json!(PVC_PROTECTION));
                object["metadata"]["finalizers"] = Value::Array(with);
            }
            set_default(
                object,
                ".spec.storageClassName",
                json!(crate::controllers::DEFAULT_STORAGE_CLASS),
            );
            set_default(object, ".spec.volumeMode", json!("Filesystem"));
        }
        "/pods" => {
            set_default(object, ".spec.restartPolicy", json!("Always"));
            set_default(object, ".spec.serviceAccountName", json!("default"));
            set_default(object, ".spec.terminationGracePeriodSeconds", json!(30));
            set_default(object, ".spec.dnsPolicy", json!("ClusterFirst"));
            set_default(object, ".spec.schedulerName", json!("default-scheduler"));
            set_default(object, ".status.phase", json!("Pending"));
            set_default(object, ".status.qosClass", json!("Burstable"));
        }
        "/services" => {
            if object["spec"]["clusterIP"].is_null() {
                let n = store.list("/services", None).len() as u32 + 10;
                object["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", n / 250, n % 250 + 1));
            }
            set_default(object, ".spec.type", json!("ClusterIP"));
            if let Some(ports) = object["spec"]["ports"].as_array_mut() {
                for port in ports {
                    if port["protocol"].is_null() {
                        port["protocol"] = json!("TCP");
                    }
                    if port["targetPort"].is_null() {
                        port["targetPort"] = port["port"].clone();
                    }
                }
            }
        }
        "apps/statefulsets" => {
            set_default(object, ".spec.replicas", json!(1));
            set_default(object, ".spec.podManagementPolicy", json!("OrderedReady"));
            set_default(object, ".spec.updateStrategy.type", json!("RollingUpdate"));
            if object["spec"]["updateStrategy"]["type"] == "RollingUpdate" {
                set_default(object, ".spec.updateStrategy.rollingUpdate.partition", json!(0));
            }
            set_default(object, ".spec.revisionHistoryLimit", json!(10));
            set_default(
                object,
                ".spec.persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
        }
        "apps/deployments" => {
            set_default(object, ".spec.replicas", json!(1));
            set_default(
                object,
                ".spec.strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
        _ => {}
    }
}

/// Validation the built-in types carry: names, and fields Kubernetes refuses to change.
pub fn builtin_checks(kind: &Kind, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
    let name = store::name_of(new);
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !dns_label(&name) && !name.contains(':') {
        return Err(ApiError::invalid(
            kind,
            &name,
            &[format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
            )],
        ));
    }
    let Some(old) = old else { return Ok(()) };
    // What each kind's update validation lets change (JSON pointers into spec; `*` is every
    // list item), and the message it refuses anything else with.
    let (mutable, message): (&[&str], &str) = match kind.resource().as_str() {
        "apps/statefulsets" => (
            &[
                "/replicas",
                "/template",
                "/updateStrategy",
                "/persistentVolumeClaimRetentionPolicy",
                "/minReadySeconds",
                "/ordinals",
                "/revisionHistoryLimit",
            ],
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ),
        "/persistentvolumeclaims" => (
            &["/resources/requests/storage"],
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ),
        "/pods" => (
            &[
                "/activeDeadlineSeconds",
                "/tolerations",
                "/terminationGracePeriodSeconds",
                "/nodeName",
                "/containers/*/image",
                "/initContainers/*/image",
            ],
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`",
        ),
        _ => return Ok(()),
    };
    if fixed_part(&old["spec"], mutable) != fixed_part(&new["spec"], mutable) {
        return Err(ApiError::invalid(kind, &name, &[message.to_owned()]));
    }
    Ok(())
}

/// `spec` without the fields at `pointers` (`*` matches every item of a list).
fn fixed_part(spec: &Value, pointers: &[&str]) -> Value {
    fn remove(value: &mut Value, path: &[&str]) {
        match path {
            [] => {}
            [last] => {
                if let Some(map) = value.as_object_mut() {
                    map.remove(*last);
                }
            }
            ["*", rest @ ..] => {
                value.as_array_mut().into_iter().flatten().for_each(|item| remove(item, rest))
            }
            [field, rest @ ..] => {
                if let Some(child) = value.get_mut(*field) {
                    remove(child, rest);
                }
            }
        }
    }
    let mut fixed = spec.clone();
    for pointer in pointers {
        let path: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        remove(&mut fixed, &path);
    }
    fixed
}

/// The PersistentVolumeClaimResize admission plugin: a claim grows only when its StorageClass
/// allows volume expansion, and never shrinks.
fn claim_resize(server: &ApiServer, kind: &Kind, old: &Value, new: &Value) -> Result<(), ApiError> {
    if kind.resource() != "/persistentvolumeclaims" {
        return Ok(());
    }
    let size = |v: &Value| v["spec"]["resources"]["requests"]["storage"].as_str().map(bytes_of);
    let (before, after) = (size(old), size(new));
    if before == after {
        return Ok(());
    }
    let name = store::name_of(new);
    if after < before {
        return Err(ApiError::invalid(kind, &name, &["spec.resources.requests.storage: Forbidden: field can not be less than previous value".into()]));
    }
    let class = new["spec"]["storageClassName"].as_str().unwrap_or_default();
    let expandable = server
        .store
        .get("storage.k8s.io/storageclasses", "", class)
        .is_some_and(|c| c["allowVolumeExpansion"] == true);
    if !expandable {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "persistentvolumeclaims \"{name}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
            ),
        ));
    }
    Ok(())
}

/// A quantity (`8Gi`, `500M`, `1024`) in bytes.
pub fn bytes_of(quantity: &str) -> u128 {
    let split = quantity.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let n: u128 = number.parse().unwrap_or(0);
    let factor: u128 = match suffix {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => 1,
    };
    n * factor
}

fn rule_matches(rule: &Value, kind: &Kind, op: Operation) -> bool {
    let has = |field: &str, value: &str| {
        rule[field].as_array().is_some_and(|a| a.iter().any(|v| v == "*" || v == value))
    };
    let scope_ok = match rule["scope"].as_str() {
        Some("Namespaced") => kind.namespaced,
        Some("Cluster") => !kind.namespaced,
        _ => true,
    };
    has("operations", op.as_str())
        && has("apiGroups", &kind.group)
        && has("apiVersions", &kind.version)
        && has("resources", &kind.plural)
        && scope_ok
}

async fn call_webhooks(
    server: &ApiServer,
    kind: &Kind,
    op: Operation,
    old: Option<&Value>,
    mut object: Value,
    user: &User,
    mutating: bool,
) -> Result<Value, ApiError> {
    let resource = if mutating {
        "admissionregistration.k8s.io/mutatingwebhookconfigurations"
    } else {
        "admissionregistration.k8s.io/validatingwebhookconfigurations"
    };
    let mut configurations = server.store.list(resource, None);
    configurations.sort_by_key(store::name_of);
    for configuration in configurations {
        for hook in configuration["webhooks"].as_array().cloned().unwrap_or_default() {
            let matches = hook["rules"]
                .as_array()
                .is_some_and(|rules| rules.iter().any(|r| rule_matches(r, kind, op)));
            if !matches {
                continue;
            }
            let name = hook["name"].as_str().unwrap_or_default().to_owned();
            let review = review(kind, op, old, &object, user);
            match server.webhooks.call(&server.store, &hook, &review).await {
                Ok(response) => {
                    let response = &response["response"];
                    if response["allowed"] != true {
                        let message =
                            response["status"]["message"].as_str().unwrap_or("denied").to_owned();
                        let code = response["status"]["code"].as_u64().unwrap_or(403) as u16;
                        return Err(ApiError::new(
                            code,
                            "Forbidden",
                            format!("admission webhook \"{name}\" denied the request: {message}"),
                        ));
                    }
                    if mutating && let Some(patch) = response["patch"].as_str() {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(patch)
                            .map_err(|e| ApiError::new(500, "InternalError", format!("Internal error occurred: webhook \"{name}\" returned a patch that is not base64: {e}")))?;
                        let patch: Value = serde_json::from_slice(&bytes).map_err(|e| {
                            ApiError::new(
                                500,
                                "InternalError",
                                format!("Internal error occurred: webhook \"{name}\": {e}"),
                            )
                        })?;
                        crate::patch::json_patch(&mut object, &patch).map_err(|e| ApiError::new(500, "InternalError", format!("Internal error occurred: webhook \"{name}\" returned a patch that does not apply: {e}")))?;
                    }
                }
                Err(reason) => {
                    if hook["failurePolicy"].as_str() == Some("Ignore") {
                        tracing::warn!(webhook = %name, %reason, "webhook failed; failurePolicy Ignore");
                        continue;
                    }
                    return Err(ApiError::new(
                        500,
                        "InternalError",
                        format!(
                            "Internal error occurred: failed calling webhook \"{name}\": {reason}"
                        ),
                    ));
                }
            }
        }
    }
    Ok(object)
}

fn review(kind: &Kind, op: Operation, old: Option<&Value>, object: &Value, user: &User) -> Value {
    let source = if object.is_null() { old.unwrap_or(&Value::Null) } else { object };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": store::uid(),
            "kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
            "resource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
            "requestKind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
            "requestResource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
            "name": store::name_of(source),
            "namespace": source["metadata"]["namespace"],
            "operation": op.as_str(),
            "userInfo": {"username": user.name(), "groups": []},
            "object": object,
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": match op { Operation::Create => "CreateOptions", Operation::Update => "UpdateOptions", Operation::Delete => "DeleteOptions" }},
        }
    })
}

/// Calls webhooks over HTTPS.
#[derive(Default)]
pub struct WebhookClient;

impl WebhookClient {
    pub async fn call(
        &self,
        store: &store::Store,
        hook: &Value,
        review: &Value,
    ) -> Result<Value, String> {
        let config = &hook["clientConfig"];
        let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10));
        let (host, server_name, port, path) = if let Some(service) =
            config.get("service").filter(|s| s.is_object())
        {
            let name = service["name"].as_str().unwrap_or_default();
            let namespace = service["namespace"].as_str().unwrap_or_default();
            let port = service["port"].as_u64().unwrap_or(443) as u16;
            let path = service["path"].as_str().unwrap_or("/").to_owned();
            let server_name = format!("{name}.{namespace}.svc");
            let url = format!("https://{server_name}:{port}{path}?timeout={}s", timeout.as_secs());
            let endpoint = crate::controllers::service_endpoint(store, namespace, name, port)
                .ok_or_else(|| format!("failed to call webhook: Post \"{url}\": no endpoints available for service \"{name}\""))?;
            (endpoint.0, server_name, endpoint.1, path)
        } else {
            let url = config["url"].as_str().ok_or("webhook has neither service nor url")?;
            let rest = url.trim_start_matches("https://");
            let (hostport, path) = rest
                .split_once('/')
                .map(|(h, p)| (h, format!("/{p}")))
                .unwrap_or((rest, "/".into()));
            let (host, port) = hostport
                .rsplit_once(':')
                .map(|(h, p)| (h.to_owned(), p.parse().unwrap_or(443)))
                .unwrap_or((hostport.to_owned(), 443));
            (host.clone(), host, port, path)
        };
        let url = format!("https://{server_name}:{port}{path}");
        let ca = config["caBundle"].as_str().unwrap_or_default();
        let pem = base64::engine::general_purpose::STANDARD.decode(ca).unwrap_or_default();
        let call = post(&host, port, &server_name, &path, &pem, review);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(reason)) => Err(format!(
                "failed to call webhook: Post \"{url}?timeout={}s\": {reason}",
                timeout.as_secs()
            )),
            Err(_) => Err(format!(
                "failed to call webhook: Post \"{url}?timeout={}s\": context deadline exceeded",
                timeout.as_secs()
            )),
        }
    }
}

async fn post(
    host: &str,
    port: u16,
    server_name: &str,
    path: &str,
    ca_pem: &[u8],
    body: &Value,
) -> Result<Value, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("tls: failed to verify certificate: x509: certificate signed by unknown authority (the configuration has no caBundle)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| e.to_string())?;
    let stream = connector.connect(name, tcp).await.map_err(|e| format!("tls: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("content-type", "application/json")
        .header("host", server_name)
        .body(Full::new(bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("cannot decode the AdmissionReview response: {e}"))
}
