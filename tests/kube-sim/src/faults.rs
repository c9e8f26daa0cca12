//! Serving the API over TLS, and the faults a test can cause through it (admin only, under
//! `/kube-sim/`, e.g. `kubectl create --raw '/kube-sim/kill?pod=default/demo-1&container=etcd' -f /dev/null`):
//!
//! - `kill?pod=NS/NAME&container=C`: SIGKILL the container's process (the kubelet restarts it);
//! - `freeze?pod=NS/NAME`: the pod's node is lost: its processes stop (SIGSTOP), its kubelet
//!   acts on nothing, and after the node monitor grace period (40 s) the node and its pods are
//!   marked not ready; `unfreeze?pod=NS/NAME` brings it back;
//! - `wipe?claim=NS/NAME`: the claim's volume loses its data;
//! - `corrupt?claim=NS/NAME`: every file on the claim's volume is overwritten with garbage;
//! - `restart-apiserver`: open watches drop and requests fail for 1.5 s;
//! - `fail?permille=N`: that share of service-account requests fail with 500.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::api::{ApiServer, Body, now_ms};
use crate::controllers::modify;
use crate::kubelet::{Kubelet, Pids};
use crate::rbac::User;
use crate::store;

pub struct Control {
    pub server: Arc<ApiServer>,
    pub kubelet: Arc<Kubelet>,
    pub pids: Pids,
    pub state: PathBuf,
}

/// kube-controller-manager's node-monitor-grace-period.
const NODE_MONITOR_GRACE: Duration = Duration::from_secs(40);

/// Signals every container process on `node`, of pods deleted meanwhile too (a frozen node's
/// kubelet has not heard of their deletion, and their processes still exist there).
fn signal_node(pids: &Pids, node: &str, signal: i32) {
    let prefix = format!("{node}/");
    for (key, pid) in pids.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if key.starts_with(&prefix) {
            // SAFETY: a container process this kubelet started.
            unsafe { libc::kill(*pid, signal) };
        }
    }
}

/// Overwrites every file under `dir` with garbage of the same length, as a failing disk would
/// leave it; returns how many files.
fn corrupt_files(dir: &std::path::Path) -> Result<usize, String> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            count += corrupt_files(&path)?;
        } else if let Ok(meta) = std::fs::metadata(&path) {
            let garbage = vec![0xA5u8; usize::try_from(meta.len()).unwrap_or(0)];
            std::fs::write(&path, garbage).map_err(|e| format!("{}: {e}", path.display()))?;
            count += 1;
        }
    }
    Ok(count)
}

impl Control {
    /// The object `NAMESPACE/NAME` of a fault's argument, e.g. `pod=default/demo-1`.
    fn object(&self, resource: &str, what: &str, key: &str) -> Result<Value, String> {
        let (ns, name) = key.split_once('/').ok_or_else(|| format!("{what}=NAMESPACE/NAME"))?;
        self.server.store.get(resource, ns, name).ok_or_else(|| format!("{what} {key} not found"))
    }

    /// The directory backing the volume bound to `claim` (NAMESPACE/NAME).
    fn volume_dir(&self, claim: &str) -> Result<PathBuf, String> {
        let object = self.object("/persistentvolumeclaims", "claim", claim)?;
        let volume = object["spec"]["volumeName"].as_str().ok_or("the claim is not bound")?;
        Ok(self.state.join("pv").join(volume))
    }

    fn pods_on(&self, node: &str) -> Vec<String> {
        self.server
            .store
            .list("/pods", None)
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .map(|p| format!("{}/{}", store::namespace_of(p), store::name_of(p)))
            .collect()
    }

    fn node_of(&self, pod: &str) -> Result<String, String> {
        let object = self.object("/pods", "pod", pod)?;
        object["spec"]["nodeName"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("pod {pod} is not scheduled"))
    }

    fn act(
        self: &Arc<Self>,
        action: &str,
        query: &HashMap<String, String>,
    ) -> Result<Value, String> {
        let arg = |k: &str| query.get(k).cloned().ok_or_else(|| format!("{action} needs {k}="));
        match action {
            "kill" => {
                let pod = self.object("/pods", "pod", &arg("pod")?)?;
                let key = crate::kubelet::process_key(&pod, &arg("container")?);
                let pid = self
                    .pids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .copied()
                    .ok_or_else(|| format!("no running container {key}"))?;
                // SAFETY: a container process this kubelet started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                Ok(json!({"killed": key, "pid": pid}))
            }
            "freeze" => {
                let node = self.node_of(&arg("pod")?)?;
                self.kubelet.frozen.lock().unwrap_or_else(|p| p.into_inner()).insert(node.clone());
                signal_node(&self.pids, &node, libc::SIGSTOP);
                let control = self.clone();
                let lost = node.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(NODE_MONITOR_GRACE).await;
                    if control.kubelet.is_frozen(&lost) {
                        control.node_lost(&lost);
                    }
                });
                Ok(json!({"frozen": node}))
            }
            "unfreeze" => {
                let node = match query.get("node") {
                    Some(n) => n.clone(),
                    None => self.node_of(&arg("pod")?)?,
                };
                self.kubelet.frozen.lock().unwrap_or_else(|p| p.into_inner()).remove(&node);
                signal_node(&self.pids, &node, libc::SIGCONT);
                modify(&self.server.store, "/nodes", "", &node, |n| {
                    n["status"]["conditions"] =
                        json!([{"type": "Ready", "status": "True", "reason": "KubeletReady"}])
                });
                Ok(json!({"unfrozen": node}))
            }
            "wipe" => {
                let claim = arg("claim")?;
                let dir = self.volume_dir(&claim)?;
                for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
                Ok(json!({"wiped": claim}))
            }
            "corrupt" => {
                let claim = arg("claim")?;
                let corrupted = corrupt_files(&self.volume_dir(&claim)?)?;
                Ok(json!({"corrupted": claim, "files": corrupted}))
            }
            "restart-apiserver" => {
                self.server.faults.epoch.fetch_add(1, Ordering::SeqCst);
                self.server.faults.down_until_ms.store(now_ms() + 1500, Ordering::SeqCst);
                Ok(json!({"restarted": true}))
            }
            "fail" => {
                let permille: u32 =
                    arg("permille")?.parse().map_err(|_| "permille is a number from 0 to 1000")?;
                self.server.faults.fail_permille.store(permille.min(1000), Ordering::SeqCst);
                Ok(json!({"failPermille": permille}))
            }
            other => Err(format!("unknown fault {other}")),
        }
    }

    /// The node lifecycle controller's view of a node that stopped reporting: the node's Ready
    /// is Unknown and its pods are not ready (so Services and StatefulSets see them so).
    fn node_lost(&self, node: &str) {
        let store = &self.server.store;
        modify(
            store,
            "/nodes",
            "",
            node,
            |n| n["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}]),
        );
        for pod in self.pods_on(node) {
            let (ns, name) = pod.split_once('/').unwrap_or_default();
            modify(store, "/pods", ns, name, |p| {
                if let Some(conditions) = p["status"]["conditions"].as_array_mut() {
                    for c in conditions
                        .iter_mut()
                        .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
                    {
                        c["status"] = json!("False");
                    }
                }
            });
        }
    }
}

fn query_of(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/")))
        .collect()
}

async fn handle(
    control: Arc<Control>,
    tokens: Arc<Mutex<HashMap<String, User>>>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Some(action) = req.uri().path().strip_prefix("/kube-sim/") {
        let admin = req
            .headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| {
                tokens.lock().unwrap_or_else(|p| p.into_inner()).get(t) == Some(&User::Admin)
            });
        let (code, body) = if !admin {
            (
                403,
                json!({"kind": "Status", "status": "Failure", "message": "faults are for the cluster admin", "code": 403}),
            )
        } else {
            match control.act(action, &query_of(&req)) {
                Ok(v) => (201, v),
                Err(message) => (
                    400,
                    json!({"kind": "Status", "status": "Failure", "message": message, "code": 400}),
                ),
            }
        };
        let mut response =
            Response::new(http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
                http_body_util::Full::new(bytes::Bytes::from(body.to_string())),
                |never| match never {},
            )));
        *response.status_mut() =
            hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_REQUEST);
        return response;
    }
    control.server.clone().handle(req).await
}

/// Serves the API (and the fault endpoints) over TLS, HTTP/1.1 and HTTP/2.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    tokens: Arc<Mutex<HashMap<String, User>>>,
    cert_pem: String,
    key_pem: String,
) {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> =
        rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()).flatten().collect();
    let Ok(key) = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) else {
        tracing::error!("the serving key cannot be parsed");
        return;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key));
    let mut config = match config {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(%err, "cannot build the TLS configuration");
            return;
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, control, tokens) = (acceptor.clone(), control.clone(), tokens.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let (control, tokens) = (control.clone(), tokens.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(control, tokens, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
