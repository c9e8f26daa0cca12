//! The kubelet's node: registration and heartbeats (`pkg/kubelet/kubelet_node_status.go`,
//! `pkg/kubelet/nodelease`): each node registers its Node object once, renews its Lease in
//! `kube-node-lease` every 10 s (`nodeLeaseDurationSeconds` 40) and posts its status every 10 s
//! (`nodeStatusUpdateFrequency`). What the control plane makes of silence — NotReady after the
//! node monitor grace period, the `unreachable` taints, pods evicted after their 300 s
//! toleration — is kube-controller-manager's own node lifecycle controller.
//!
//! A node can be frozen (its processes stopped and its kubelet silent: a machine that hangs) or
//! partitioned (its kubelet cut off from the API server while its pods keep running and serving).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::client::{self, Api};

/// Zones nodes are spread over, round robin, as a cloud's node pools would place them.
pub const ZONES: &[&str] = &["zone-a", "zone-b", "zone-c"];

/// `--node-status-update-frequency` and the Lease renew interval (a quarter of its duration).
const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: u64 = 40;

pub struct Node {
    pub name: String,
    /// The address the API server reaches its kubelet at (`InternalIP`).
    pub ip: String,
    pub zone: &'static str,
    /// The node's own identity (`system:node:NAME`), as the kubelet's client certificate is.
    pub api: Api,
}

/// The nodes this agent runs, and which of them cannot act.
#[derive(Default)]
pub struct Nodes {
    pub all: BTreeMap<String, Arc<Node>>,
    frozen: Mutex<HashSet<String>>,
    partitioned: Mutex<HashSet<String>>,
}

impl Nodes {
    pub fn new(all: BTreeMap<String, Arc<Node>>) -> Self {
        Self { all, ..Self::default() }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Node>> {
        self.all.get(name)
    }

    /// Processes stopped, kubelet silent.
    pub fn is_frozen(&self, node: &str) -> bool {
        self.frozen.lock().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    /// Whether the node's kubelet can talk to the API server (neither frozen nor partitioned).
    pub fn is_connected(&self, node: &str) -> bool {
        !self.is_frozen(node)
            && !self.partitioned.lock().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    pub fn set_frozen(&self, node: &str, frozen: bool) {
        let mut set = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        if frozen {
            set.insert(node.to_owned())
        } else {
            set.remove(node)
        };
    }

    pub fn set_partitioned(&self, node: &str, partitioned: bool) {
        let mut set = self.partitioned.lock().unwrap_or_else(|p| p.into_inner());
        if partitioned {
            set.insert(node.to_owned())
        } else {
            set.remove(node)
        };
    }

    /// Every node thawed and connected (the cluster is shutting down).
    pub fn release_all(&self) {
        self.frozen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.partitioned.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Registers the node and keeps its heartbeats going while it is connected.
pub async fn run(nodes: Arc<Nodes>, node: Arc<Node>) {
    loop {
        match register(&node).await {
            Ok(()) => break,
            Err(err) => {
                tracing::warn!(node = %node.name, %err, "cannot register the node; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    loop {
        if nodes.is_connected(&node.name)
            && let Err(err) = heartbeat(&node).await
        {
            tracing::warn!(node = %node.name, %err, "node heartbeat failed");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn register(node: &Node) -> Result<(), client::Failed> {
    let object = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "labels": {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": node.zone,
        }},
        "spec": {},
    });
    match node.api.create("/api/v1/nodes", &object).await {
        Ok(_) | Err(client::Failed { code: 409, .. }) => {}
        Err(e) => return Err(e),
    }
    heartbeat(node).await
}

async fn heartbeat(node: &Node) -> Result<(), client::Failed> {
    let lease =
        format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}", node.name);
    let renewed = json!({"spec": {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": client::now_micro()}});
    if node.api.merge(&lease, &renewed).await.is_err() {
        let mut object = renewed.clone();
        object["apiVersion"] = json!("coordination.k8s.io/v1");
        object["kind"] = json!("Lease");
        object["metadata"] = json!({"name": node.name, "namespace": "kube-node-lease"});
        match node
            .api
            .create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", &object)
            .await
        {
            Ok(_) | Err(client::Failed { code: 409, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let now = client::now();
    let condition = |type_: &str, ok: bool, reason: &str| {
        json!({"type": type_, "status": if ok { "True" } else { "False" }, "reason": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let capacity =
        json!({"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "conditions": [
            condition("MemoryPressure", false, "KubeletHasSufficientMemory"),
            condition("DiskPressure", false, "KubeletHasNoDiskPressure"),
            condition("PIDPressure", false, "KubeletHasSufficientPID"),
            condition("Ready", true, "KubeletReady"),
        ],
        "addresses": [{"type": "InternalIP", "address": node.ip}, {"type": "Hostname", "address": node.name}],
        "capacity": capacity, "allocatable": capacity,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": crate::kubelet_api::PORT}},
        "nodeInfo": {"machineID": node.name, "systemUUID": node.name, "bootID": node.name,
            "kernelVersion": "", "osImage": "kube-sim", "containerRuntimeVersion": "kube-sim://0.1",
            "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
    }});
    // The conditions' lastTransitionTime is the API server's to keep when the status is the
    // same; a strategic merge by type keeps what changes least.
    node.api.strategic(&format!("/api/v1/nodes/{}/status", node.name), &status).await?;
    Ok(())
}
