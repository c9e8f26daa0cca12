//! The kubelet (`pkg/kubelet/`) of each simulated node: runs the pods the scheduler bound to its
//! node as real processes, and reports them through `pods/status` with the node's own identity
//! (`system:node:NAME`, so the Node authorizer and NodeRestriction judge it as they judge a
//! kubelet).
//!
//! Modelled, each after the kubelet file named in its module: the pod worker
//! (`pod_workers.go`, `kubelet.go` `SyncPod`/`SyncTerminatingPod`): the sandbox first
//! (`--sandbox-start-ms`), then volumes (`volumes`), then init containers in order, each to
//! success, then the containers, restarted on exit with the kubelet's back-off (10 s doubling to
//! 5 min: `CrashLoopBackOff`, reset after 10 min of running: `kuberuntime_manager.go`); images
//! pulled per node (`images`); probes (`probes`); the environment (`env`); per-container logs
//! the kubelet API serves (`kubelet_api`). Graceful deletion (`SyncTerminatingPod`): SIGTERM, the
//! grace period, SIGKILL, then the pod object deleted with grace 0 and its UID as precondition
//! (`status/status_manager.go`). Status (`status/generate.go`): phase, IPs, conditions
//! (Initialized, ContainersReady, Ready; PodScheduled and DisruptionTarget are left to those who
//! set them), container states.
//!
//! A frozen node stops its processes and its kubelet acts on nothing; a partitioned node's pods
//! keep running, but its kubelet neither hears of changes nor reports.
//!
//! Not modelled: runAsUser/fsGroup (containers run as root), resource limits and evictions for
//! pressure, exec probes, startup probes, ephemeral containers, static pods.

pub mod env;
pub mod images;
mod probes;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::client::{self, Api, name_of, namespace_of};
use crate::nodes::{Node, Nodes};
use crate::sandbox::{self, Bind, ContainerSpec};
use images::Puller;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Run,
    /// Graceful deletion: SIGTERM, then SIGKILL after this many seconds.
    Graceful(u64),
    /// The pod object is gone (force deletion): kill at once.
    Kill,
}

#[derive(Clone, Debug)]
struct ContainerStatus {
    name: String,
    image: String,
    /// Exactly one of `waiting`, `running`, `terminated`.
    state: Value,
    last_state: Value,
    ready: bool,
    restart_count: i64,
    pid: Option<i32>,
}

/// A container state as a strategic merge patch must write it: the other two states removed.
fn state_patch(state: &Value) -> Value {
    let mut patch = json!({"waiting": null, "running": null, "terminated": null});
    for (k, v) in state.as_object().into_iter().flatten() {
        patch[k] = v.clone();
    }
    patch
}

impl ContainerStatus {
    fn new(name: &str, image: &str, reason: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            state: json!({"waiting": {"reason": reason}}),
            last_state: json!({}),
            ready: false,
            restart_count: 0,
            pid: None,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "image": self.image, "imageID": "",
            "containerID": self.pid.map(|p| format!("kube-sim://{p}")),
            "state": state_patch(&self.state), "lastState": state_patch(&self.last_state),
            "ready": self.ready, "restartCount": self.restart_count,
            "started": self.state.get("running").is_some(),
        })
    }
}

/// Which container of a pod: an init container or an app container, by index.
#[derive(Clone, Copy)]
enum Slot {
    Init(usize),
    App(usize),
}

#[derive(Default)]
struct PodState {
    ip: Option<String>,
    init: Vec<ContainerStatus>,
    containers: Vec<ContainerStatus>,
    initialized: bool,
}

impl PodState {
    fn set(state: &Mutex<Self>, slot: Slot, f: &dyn Fn(&mut ContainerStatus)) {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        match slot {
            Slot::Init(i) => f(&mut s.init[i]),
            Slot::App(i) => f(&mut s.containers[i]),
        }
    }
}

pub struct Kubelet {
    pub nodes: Arc<Nodes>,
    pub state_dir: PathBuf,
    pub hosts: PathBuf,
    pub puller: Puller,
    /// How long a pod sandbox takes to come up (network namespace, pause container).
    pub sandbox_start: Duration,
    pub volume_sync: Duration,
    tokens: Arc<volumes::Tokens>,
    next_ip: AtomicU32,
    pods: Mutex<HashMap<String, (String, watch::Sender<Stop>)>>,
}

/// Process ids of running containers by `node/uid/container`, for stopping pods and for faults
/// (kill, freeze). One incarnation of a pod name (a StatefulSet's pod recreated while its
/// predecessor's processes still run on a lost node) never stands for another, and a node's
/// processes are found by prefix.
pub type Pids = Arc<Mutex<HashMap<String, i32>>>;

fn pod_key(pod: &Value) -> String {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    format!("{node}/{}", pod["metadata"]["uid"].as_str().unwrap_or_default())
}

pub fn process_key(pod: &Value, container: &str) -> String {
    format!("{}/{container}", pod_key(pod))
}

fn pids_of(pids: &Pids, prefix: &str) -> Vec<i32> {
    pids.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, p)| *p)
        .collect()
}

fn pod_path(pod: &Value) -> String {
    format!("/api/v1/namespaces/{}/pods/{}", namespace_of(pod), name_of(pod))
}

/// The kubelet's last word on a pod: deleted for good, only if it is still this incarnation.
async fn delete_pod(api: &Api, pod: &Value) {
    let options =
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}});
    if let Err(err) = api.delete(&pod_path(pod), &options).await
        && err.code != 409
    {
        tracing::warn!(pod = %name_of(pod), %err, "cannot delete the terminated pod");
    }
}

impl Kubelet {
    pub fn new(
        nodes: Arc<Nodes>,
        state_dir: PathBuf,
        hosts: PathBuf,
        puller: Puller,
        sandbox_start: Duration,
        volume_sync: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            nodes,
            state_dir,
            hosts,
            puller,
            sandbox_start,
            volume_sync,
            tokens: Arc::default(),
            next_ip: AtomicU32::new(10),
            pods: Mutex::new(HashMap::new()),
        })
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// Follows the pods bound to each node (a list every half second stands for the kubelet's
    /// watch with a `spec.nodeName` field selector).
    pub async fn run(self: Arc<Self>, pids: Pids) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for node in self.nodes.all.values() {
                if !self.nodes.is_connected(&node.name) {
                    continue;
                }
                let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", node.name);
                match node.api.list(&path).await {
                    Ok(pods) => self.sync_node(node, &pods, &pids).await,
                    Err(err) => tracing::debug!(node = %node.name, %err, "cannot list pods"),
                }
            }
        }
    }

    async fn sync_node(self: &Arc<Self>, node: &Arc<Node>, pods: &[Value], pids: &Pids) {
        let present: HashSet<String> =
            pods.iter().filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_owned)).collect();
        let mut never_started = Vec::new();
        {
            let mut tracked = self.pods.lock().unwrap_or_else(|p| p.into_inner());
            for pod in pods {
                let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
                let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
                match tracked.get(&uid).map(|(_, stop)| stop) {
                    Some(stop) if deleting && *stop.borrow() == Stop::Run => {
                        let grace =
                            pod["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(30);
                        let _ = stop.send(Stop::Graceful(grace));
                    }
                    Some(_) => {}
                    None if deleting => never_started.push(pod.clone()),
                    None if matches!(
                        pod["status"]["phase"].as_str(),
                        Some("Succeeded" | "Failed")
                    ) => {}
                    None => {
                        let (tx, rx) = watch::channel(Stop::Run);
                        tracked.insert(uid.clone(), (node.name.clone(), tx));
                        tokio::spawn(self.clone().run_pod(
                            node.clone(),
                            pod.clone(),
                            rx,
                            pids.clone(),
                        ));
                    }
                }
            }
            tracked.retain(|uid, (on, stop)| {
                if *on != node.name || present.contains(uid) {
                    return true;
                }
                let _ = stop.send(Stop::Kill);
                false
            });
        }
        for pod in never_started {
            delete_pod(&node.api, &pod).await;
        }
    }

    async fn run_pod(
        self: Arc<Self>,
        node: Arc<Node>,
        pod: Value,
        mut stop: watch::Receiver<Stop>,
        pids: Pids,
    ) {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let state = Arc::new(Mutex::new(PodState::default()));
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            for c in pod["spec"]["initContainers"].as_array().into_iter().flatten() {
                let (name, image) = (
                    c["name"].as_str().unwrap_or_default(),
                    c["image"].as_str().unwrap_or_default(),
                );
                s.init.push(ContainerStatus::new(name, image, "PodInitializing"));
            }
            let reason = if s.init.is_empty() { "ContainerCreating" } else { "PodInitializing" };
            for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
                let (name, image) = (
                    c["name"].as_str().unwrap_or_default(),
                    c["image"].as_str().unwrap_or_default(),
                );
                s.containers.push(ContainerStatus::new(name, image, reason));
            }
        }
        let writer =
            tokio::spawn(self.clone().write_status(node.clone(), pod.clone(), state.clone()));
        let pod_dir = self.state_dir.join("pods").join(&uid);
        let mut netns = None;
        let stopping = Arc::new(AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let work = async {
            tokio::time::sleep(self.sandbox_start).await;
            let binds = self.volumes(&node, &pod, &pod_dir, &state, &tasks).await;
            let id = self.next_ip.fetch_add(1, Ordering::SeqCst);
            let ip = format!("10.244.{}.{}", id / 250, id % 250 + 2);
            let ns = match sandbox::create_pod_network(id, &ip) {
                Ok(ns) => ns,
                Err(err) => {
                    tracing::error!(pod = %name_of(&pod), %err, "cannot create the pod sandbox");
                    return std::future::pending().await;
                }
            };
            netns = Some(ns.clone());
            state.lock().unwrap_or_else(|p| p.into_inner()).ip = Some(ip.clone());
            let ctx = PodContext {
                node: node.clone(),
                pod: pod.clone(),
                netns: ns,
                ip,
                pod_dir: pod_dir.clone(),
                binds,
                pids: pids.clone(),
                key: pod_key(&pod),
                name: format!("{}/{}", namespace_of(&pod), name_of(&pod)),
                stopping: stopping.clone(),
            };
            let inits = pod["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
            for (i, container) in inits.iter().enumerate() {
                self.clone().run_init(&ctx, container, i, &state).await;
            }
            state.lock().unwrap_or_else(|p| p.into_inner()).initialized = true;
            let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
            for (i, c) in containers.iter().enumerate() {
                let task = tokio::spawn(self.clone().run_container(
                    ctx.clone(),
                    c.clone(),
                    i,
                    state.clone(),
                ));
                tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task.abort_handle());
            }
            std::future::pending::<()>().await;
        };
        let stopped = tokio::select! {
            () = work => Stop::Kill,
            reason = async { loop { if stop.changed().await.is_err() { return Stop::Kill; } let s = *stop.borrow(); if s != Stop::Run { return s; } } } => reason,
        };
        // Containers are not restarted from here on; the processes get SIGTERM and, after the
        // grace period, SIGKILL.
        stopping.store(true, Ordering::SeqCst);
        let prefix = format!("{}/", pod_key(&pod));
        let mine = pids_of(&pids, &prefix);
        if let Stop::Graceful(grace) = stopped {
            for pid in &mine {
                // SAFETY: signalling a child process we started.
                unsafe { libc::kill(*pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(grace);
            while Instant::now() < deadline && mine.iter().any(|pid| alive(*pid)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for pid in pids_of(&pids, &prefix) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for task in tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        writer.abort();
        if let Some(ns) = netns {
            sandbox::delete_pod_network(&ns);
        }
        let _ = std::fs::remove_dir_all(pod_dir.join("rootfs"));
        if let Stop::Graceful(_) = stopped {
            while !self.nodes.is_connected(&node.name) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            delete_pod(&node.api, &pod).await;
        }
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
    }

    /// Writes the pod's status whenever it changes (not while the node cannot reach the API).
    async fn write_status(
        self: Arc<Self>,
        node: Arc<Node>,
        pod: Value,
        state: Arc<Mutex<PodState>>,
    ) {
        let mut last = Value::Null;
        let mut written = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !self.nodes.is_connected(&node.name) {
                continue;
            }
            // The status manager reconciles with the API server every 10 s (`syncBatch`): what
            // others changed meanwhile (the node lifecycle controller marking the pods of a lost
            // node not ready) is set right again once the node is back.
            if written.elapsed() > Duration::from_secs(10) {
                last = json!("resync");
            }
            let wanted = {
                let s = state.lock().unwrap_or_else(|p| p.into_inner());
                let containers: Vec<Value> =
                    s.containers.iter().map(ContainerStatus::to_json).collect();
                let init: Vec<Value> = s.init.iter().map(ContainerStatus::to_json).collect();
                let ready = s.initialized && s.containers.iter().all(|c| c.ready);
                let phase = if s.initialized
                    && s.containers.iter().any(|c| c.state.get("running").is_some())
                {
                    "Running"
                } else {
                    "Pending"
                };
                json!({"phase": phase, "ip": s.ip, "ready": ready, "initialized": s.initialized, "init": init, "containers": containers})
            };
            if wanted == last {
                continue;
            }
            let condition = |type_: &str, ok: bool| json!({"type": type_, "status": if ok { "True" } else { "False" }, "lastProbeTime": null});
            let mut status = json!({
                "phase": wanted["phase"],
                "hostIP": node.ip, "hostIPs": [{"ip": node.ip}],
                "conditions": [
                    condition("Initialized", wanted["initialized"] == true),
                    condition("ContainersReady", wanted["ready"] == true),
                    condition("Ready", wanted["ready"] == true),
                ],
                "containerStatuses": wanted["containers"],
            });
            if let Some(ip) = wanted["ip"].as_str() {
                status["podIP"] = json!(ip);
                status["podIPs"] = json!([{"ip": ip}]);
            }
            if pod["status"]["startTime"].is_null() && last.is_null() {
                status["startTime"] = json!(client::now());
            }
            if wanted["init"].as_array().is_some_and(|a| !a.is_empty()) {
                status["initContainerStatuses"] = wanted["init"].clone();
            }
            // The conditions' transition times are the API server's to keep when a condition's
            // status is unchanged (it fills them in for a new status).
            let patch = json!({"metadata": {"uid": pod["metadata"]["uid"]}, "status": status});
            match node.api.strategic(&format!("{}/status", pod_path(&pod)), &patch).await {
                Ok(_) => {
                    last = wanted;
                    written = Instant::now();
                }
                Err(err) if err.code == 404 || err.code == 409 => return,
                Err(err) => {
                    tracing::debug!(pod = %name_of(&pod), %err, "cannot write the pod's status")
                }
            }
        }
    }

    /// Sets up the pod's volumes; waits (ContainerCreating) until each can be. Volumes whose
    /// sources change are refreshed every sync period for as long as the pod runs.
    async fn volumes(
        &self,
        node: &Arc<Node>,
        pod: &Value,
        pod_dir: &std::path::Path,
        state: &Arc<Mutex<PodState>>,
        tasks: &Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    ) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        for volume in pod["spec"]["volumes"].as_array().cloned().unwrap_or_default() {
            let name = volume["name"].as_str().unwrap_or_default().to_owned();
            let dir = pod_dir.join("volumes").join(&name);
            loop {
                match volumes::setup(&node.api, &self.tokens, pod, &volume, &dir).await {
                    Ok(path) => {
                        out.insert(name.clone(), path);
                        break;
                    }
                    Err(reason) => {
                        tracing::info!(pod = %name_of(pod), volume = %name, %reason, "MountVolume.SetUp failed; retrying");
                        for c in &mut state.lock().unwrap_or_else(|p| p.into_inner()).containers {
                            c.state = json!({"waiting": {"reason": "ContainerCreating"}});
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
            if volume.get("persistentVolumeClaim").is_some() {
                // Staging the volume finishes a pending resize; only drivers that can grow a
                // mounted file system go on doing so while the pod runs.
                volumes::expand(&node.api, pod, &volume).await;
                if !volumes::expands_online(&node.api, pod, &volume).await {
                    continue;
                }
                let (api, pod, volume) = (node.api.clone(), pod.clone(), volume.clone());
                let task = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        volumes::expand(&api, &pod, &volume).await;
                    }
                });
                tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task.abort_handle());
            } else if volumes::refreshed(&volume) {
                let (api, pod, dir, sync, tokens) = (
                    node.api.clone(),
                    pod.clone(),
                    dir.clone(),
                    self.volume_sync,
                    self.tokens.clone(),
                );
                let task = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(sync).await;
                        volumes::refresh(&api, &tokens, &pod, &volume, &dir).await;
                    }
                });
                tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task.abort_handle());
            }
        }
        out
    }
}

/// How a container waits when it cannot start: the reason it shows, and for image pulls the
/// back-off state it shows until the next try.
fn waiting(reason: &str, message: &str) -> Value {
    json!({"reason": reason, "message": message})
}

impl Kubelet {
    async fn run_init(
        self: Arc<Self>,
        ctx: &PodContext,
        container: &Value,
        index: usize,
        state: &Arc<Mutex<PodState>>,
    ) {
        let slot = Slot::Init(index);
        let set = |f: &dyn Fn(&mut ContainerStatus)| PodState::set(state, slot, f);
        let mut backoff = Backoff::default();
        let mut pull_backoff = Backoff::default();
        loop {
            match self.start(ctx, container).await {
                Err(failed) => {
                    self.wait_to_retry(&failed, &mut pull_backoff, &mut backoff, state, slot).await;
                    continue;
                }
                Ok(mut child) => {
                    let started = client::now();
                    let pid = child.id().map(|p| p as i32);
                    set(&|c| {
                        c.state = json!({"running": {"startedAt": started}});
                        c.pid = pid;
                    });
                    let code = exit_code(child.wait().await);
                    ctx.forget(container);
                    let terminated = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": started, "finishedAt": client::now()}});
                    if code == 0 {
                        set(&|c| c.state = terminated.clone());
                        return;
                    }
                    let delay = backoff.next(Duration::ZERO);
                    set(&|c| {
                        c.last_state = terminated.clone();
                        c.restart_count += 1;
                        c.state = json!({"waiting": waiting("CrashLoopBackOff", &format!("back-off {}s restarting failed container={} pod={}", delay.as_secs(), c.name, ctx.name))});
                    });
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Shows why a container did not start and waits before the next try: an image that could
    /// not be pulled waits in `ImagePullBackOff` on the image back-off, anything else on the
    /// container back-off.
    async fn wait_to_retry(
        &self,
        failed: &Value,
        pull_backoff: &mut Backoff,
        backoff: &mut Backoff,
        state: &Mutex<PodState>,
        slot: Slot,
    ) {
        let set = |f: &dyn Fn(&mut ContainerStatus)| PodState::set(state, slot, f);
        set(&|c| c.state = json!({"waiting": failed.clone()}));
        if failed["reason"] == "ErrImagePull" {
            let delay = pull_backoff.next(Duration::ZERO);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let message = format!("Back-off pulling image {}", failed["image"]);
            set(&|c| c.state = json!({"waiting": waiting("ImagePullBackOff", &message)}));
            tokio::time::sleep(delay).await;
        } else {
            tokio::time::sleep(backoff.next(Duration::ZERO)).await;
        }
    }

    async fn run_container(
        self: Arc<Self>,
        ctx: PodContext,
        container: Value,
        index: usize,
        state: Arc<Mutex<PodState>>,
    ) {
        let slot = Slot::App(index);
        let set = |f: &dyn Fn(&mut ContainerStatus)| PodState::set(&state, slot, f);
        let mut backoff = Backoff::default();
        let mut pull_backoff = Backoff::default();
        loop {
            let mut child = match self.start(&ctx, &container).await {
                Ok(child) => child,
                Err(failed) => {
                    self.wait_to_retry(&failed, &mut pull_backoff, &mut backoff, &state, slot)
                        .await;
                    continue;
                }
            };
            let started_at = client::now();
            let started = Instant::now();
            let pid = child.id().map(|p| p as i32);
            let has_readiness = container.get("readinessProbe").is_some();
            set(&|c| {
                c.state = json!({"running": {"startedAt": started_at}});
                c.pid = pid;
                c.ready = !has_readiness;
            });
            // The probes live exactly as long as this container: dropped with it when the pod
            // stops (this task is aborted), as the kubelet stops a removed pod's probe workers.
            // A spawned task would outlive it and kill a pid the system reuses.
            let frozen = || self.nodes.is_frozen(&ctx.node.name);
            let probes = probes::probe_loop(
                frozen,
                ctx.name.clone(),
                ctx.ip.clone(),
                container.clone(),
                pid,
                state.clone(),
                index,
            );
            let exited = tokio::select! {
                exited = child.wait() => exited,
                () = probes => child.wait().await,
            };
            let code = exit_code(exited);
            ctx.forget(&container);
            if ctx.stopping.load(Ordering::SeqCst) {
                return;
            }
            let terminated = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": started_at, "finishedAt": client::now()}});
            let delay = backoff.next(started.elapsed());
            set(&|c| {
                c.ready = false;
                c.pid = None;
                c.last_state = terminated.clone();
                c.restart_count += 1;
                c.state = json!({"waiting": waiting("CrashLoopBackOff", &format!("back-off {}s restarting failed container={} pod={}", delay.as_secs(), c.name, ctx.name))});
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// Starts a container process, or says why it is waiting (image, configuration).
    async fn start(
        &self,
        ctx: &PodContext,
        container: &Value,
    ) -> Result<tokio::process::Child, Value> {
        let name = container["name"].as_str().unwrap_or_default();
        let reference = container["image"].as_str().unwrap_or_default();
        let image = self
            .puller
            .ensure(&ctx.node.name, reference, container["imagePullPolicy"].as_str())
            .await
            .map_err(|f| json!({"reason": f.reason, "message": f.message, "image": reference}))?;
        let env = env::env(&ctx.node.api, &ctx.pod, container, &ctx.ip, &ctx.node.ip)
            .await
            .map_err(|message| waiting("CreateContainerConfigError", &message))?;
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        };
        let argv: Vec<String> = match (strings(&container["command"]), strings(&container["args"]))
        {
            (Some(command), args) => command.into_iter().chain(args.unwrap_or_default()).collect(),
            (None, Some(args)) => image.entrypoint.iter().cloned().chain(args).collect(),
            (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
        };
        let mut binds = vec![Bind {
            source: image.dir.clone(),
            target: "/usr/local/bin".into(),
            read_only: true,
        }];
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = mount["name"].as_str().unwrap_or_default();
            let Some(source) = ctx.binds.get(volume) else {
                return Err(waiting(
                    "CreateContainerConfigError",
                    &format!("volume \"{volume}\" not found"),
                ));
            };
            let source = match mount["subPath"].as_str() {
                Some(sub) => source.join(sub),
                None => source.clone(),
            };
            binds.push(Bind {
                source,
                target: mount["mountPath"].as_str().unwrap_or("/").to_owned(),
                read_only: mount["readOnly"] == true,
            });
        }
        let root = ctx.pod_dir.join("rootfs").join(name);
        let hostname = ctx.pod["spec"]["hostname"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| name_of(&ctx.pod));
        let spec = ContainerSpec {
            netns: &ctx.netns,
            root: &root,
            hosts: &self.hosts,
            binds: &binds,
            hostname: &hostname,
            workdir: container["workingDir"].as_str().unwrap_or("/"),
            argv: &argv,
            env: &env,
            read_only_root: container["securityContext"]["readOnlyRootFilesystem"] == true,
        };
        let run_error = |message: String| waiting("RunContainerError", &message);
        let mut command = sandbox::command(&spec).map_err(run_error)?;
        let log_dir = self.logs_dir().join(namespace_of(&ctx.pod)).join(name_of(&ctx.pod));
        let _ = std::fs::create_dir_all(&log_dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{name}.log")))
            .map_err(|e| run_error(e.to_string()))?;
        let err_log = log.try_clone().map_err(|e| run_error(e.to_string()))?;
        command.stdout(log).stderr(err_log).stdin(std::process::Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| run_error(format!("failed to start container \"{name}\": {e}")))?;
        if let Some(pid) = child.id() {
            ctx.pids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(format!("{}/{name}", ctx.key), pid as i32);
        }
        Ok(child)
    }
}

fn exit_code(exited: std::io::Result<std::process::ExitStatus>) -> i64 {
    exited
        .ok()
        .and_then(|s| {
            s.code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|sig| 128 + sig))
        })
        .map_or(137, i64::from)
}

#[derive(Clone)]
struct PodContext {
    node: Arc<Node>,
    pod: Value,
    netns: String,
    ip: String,
    pod_dir: PathBuf,
    binds: BTreeMap<String, PathBuf>,
    pids: Pids,
    /// This incarnation's prefix in [`Pids`].
    key: String,
    /// `namespace/name`, for messages.
    name: String,
    stopping: Arc<AtomicBool>,
}

impl PodContext {
    /// The container's process is gone.
    fn forget(&self, container: &Value) {
        let key = format!("{}/{}", self.key, container["name"].as_str().unwrap_or_default());
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
}

/// The kubelet's back-off: 10 s doubling to 5 min, reset after 10 min of running.
#[derive(Default)]
struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for > Duration::from_secs(600) {
            self.current = None;
        }
        let next =
            self.current.map_or(Duration::from_secs(10), |d| (d * 2).min(Duration::from_secs(300)));
        self.current = Some(next);
        next
    }
}

pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}
