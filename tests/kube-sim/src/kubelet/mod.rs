//! The kubelet (`pkg/kubelet/`): runs the pods the scheduler put on its nodes as real processes.
//!
//! Modelled: a pod starts only after a delay (scheduling, volume attach, image pull); images
//! that are not known fail to pull (`ErrImagePull`, then `ImagePullBackOff`); volumes are set up
//! first (a claim must be bound, a Secret or ConfigMap must exist, else the pod waits in
//! `ContainerCreating`); init containers run in order, each to success; then the containers,
//! restarted on exit with the kubelet's back-off (10 s doubling to 5 min: `CrashLoopBackOff`);
//! readiness and liveness probes (HTTP, HTTPS, TCP); env from values, the downward API,
//! Secrets and ConfigMaps; Secret and ConfigMap volumes refreshed after a lag, written
//! atomically through a `..data` symlink as kubelet's atomic writer does; the service account
//! token; graceful deletion (SIGTERM, the grace period, SIGKILL, then the pod object removed);
//! per-container logs. A frozen node stops its processes and acts on nothing: its pods stay
//! Terminating when deleted, as on a lost node.
//!
//! `readOnlyRootFilesystem` is: everything but the volumes is read-only.
//!
//! Not modelled: runAsUser/fsGroup (containers run as root), resource limits, exec probes,
//! startup probes, image pull secrets, ephemeral containers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::controllers::modify;
use crate::rbac::User;
use crate::sandbox::{self, Bind, ContainerSpec};
use crate::store::{self, Store};

/// What an image holds: its files (mounted at /usr/local/bin) and its entrypoint and command.
#[derive(Clone, Debug)]
pub struct Image {
    pub dir: PathBuf,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The images this node can pull.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// Full references (`registry/repo:tag`) → image.
    pub exact: HashMap<String, Image>,
    /// etcd versions (`3.4.23`) → image, for `<any registry>/etcd:v3.4.23` or `:3.4.23`.
    pub etcd: HashMap<String, Image>,
}

/// `etcd-operator` → `docker.io/library/etcd-operator:latest`, as the container runtime reads
/// a reference.
pub fn normalize(reference: &str) -> String {
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_owned(), t.to_owned()),
        _ => (reference.to_owned(), "latest".to_owned()),
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_registry {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{name}:{tag}")
}

impl Images {
    pub fn find(&self, reference: &str) -> Option<&Image> {
        let full = normalize(reference);
        if let Some(image) = self.exact.get(&full) {
            return Some(image);
        }
        let (name, tag) = full.rsplit_once(':')?;
        if name.rsplit('/').next() == Some("etcd") {
            return self.etcd.get(tag.trim_start_matches('v'));
        }
        None
    }
}

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
    state: Value,
    last_state: Value,
    ready: bool,
    restart_count: i64,
    pid: Option<i32>,
}

impl ContainerStatus {
    fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            state: json!({"waiting": {"reason": "PodInitializing"}}),
            last_state: json!({}),
            ready: false,
            restart_count: 0,
            pid: None,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name, "image": self.image, "imageID": "", "containerID": self.pid.map(|p| format!("kube-sim://{p}")),
            "state": self.state, "lastState": self.last_state, "ready": self.ready, "restartCount": self.restart_count,
            "started": self.state.get("running").is_some(),
        })
    }
}

#[derive(Default)]
struct PodState {
    ip: Option<String>,
    init: Vec<ContainerStatus>,
    containers: Vec<ContainerStatus>,
    initialized: bool,
    phase: String,
}

pub struct Kubelet {
    pub store: Arc<Store>,
    pub state_dir: PathBuf,
    pub hosts: PathBuf,
    pub images: Images,
    pub tokens: Arc<Mutex<HashMap<String, User>>>,
    pub ca_pem: String,
    pub start_delay: Duration,
    pub volume_sync: Duration,
    pub nodes: Vec<String>,
    pub frozen: Arc<Mutex<HashSet<String>>>,
    next_ip: AtomicU32,
    pods: Mutex<HashMap<String, (String, watch::Sender<Stop>)>>,
}

/// Process ids of running containers by [`process_key`], for stopping pods and for faults
/// (kill, freeze).
pub type Pids = Arc<Mutex<HashMap<String, i32>>>;

/// `node/uid/container`: one incarnation of a pod name (a StatefulSet's pod recreated while its
/// predecessor's processes still run on a lost node) never stands for another, and a node's
/// processes are found by prefix.
pub fn process_key(pod: &Value, container: &str) -> String {
    format!("{}/{container}", pod_key(pod))
}

fn pod_key(pod: &Value) -> String {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    format!("{node}/{}", pod["metadata"]["uid"].as_str().unwrap_or_default())
}

fn pids_of(pids: &Pids, prefix: &str) -> Vec<i32> {
    pids.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, p)| *p)
        .collect()
}

impl Kubelet {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        state_dir: PathBuf,
        hosts: PathBuf,
        images: Images,
        tokens: Arc<Mutex<HashMap<String, User>>>,
        ca_pem: String,
        start_delay: Duration,
        volume_sync: Duration,
        nodes: Vec<String>,
        frozen: Arc<Mutex<HashSet<String>>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            state_dir,
            hosts,
            images,
            tokens,
            ca_pem,
            start_delay,
            volume_sync,
            nodes,
            frozen,
            next_ip: AtomicU32::new(10),
            pods: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_frozen(&self, node: &str) -> bool {
        self.frozen.lock().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    fn logs(&self, pod: &Value) -> PathBuf {
        self.state_dir.join("logs").join(store::namespace_of(pod)).join(store::name_of(pod))
    }

    /// Follows pods bound to this kubelet's nodes.
    pub async fn run(self: Arc<Self>, pids: Pids) {
        let mut events = self.store.subscribe();
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
            let pods = self.store.list("/pods", None);
            let present: HashSet<String> = pods
                .iter()
                .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
                .collect();
            let mut tracked = self.pods.lock().unwrap_or_else(|p| p.into_inner());
            for pod in &pods {
                let Some(node) = pod["spec"]["nodeName"].as_str() else { continue };
                if !self.nodes.iter().any(|n| n == node) || self.is_frozen(node) {
                    continue;
                }
                let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
                let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
                match tracked.get(&uid).map(|(_, stop)| stop) {
                    Some(stop) if deleting && *stop.borrow() == Stop::Run => {
                        let grace =
                            pod["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(30);
                        let _ = stop.send(Stop::Graceful(grace));
                    }
                    Some(_) => {}
                    None if deleting => {
                        // Never started here: nothing to stop.
                        let kind = self.store.lock().kind("/pods").cloned();
                        if let Some(kind) = kind {
                            let _ = self.store.delete(
                                &kind,
                                &store::namespace_of(pod),
                                &store::name_of(pod),
                            );
                        }
                    }
                    None if matches!(
                        pod["status"]["phase"].as_str(),
                        Some("Succeeded" | "Failed")
                    ) => {}
                    None => {
                        let (tx, rx) = watch::channel(Stop::Run);
                        tracked.insert(uid.clone(), (node.to_owned(), tx));
                        tokio::spawn(self.clone().run_pod(pod.clone(), rx, pids.clone()));
                    }
                }
            }
            tracked.retain(|uid, (node, stop)| {
                // A frozen node's kubelet does not hear that its pods are gone.
                if present.contains(uid) || self.is_frozen(node) {
                    return true;
                }
                let _ = stop.send(Stop::Kill);
                false
            });
        }
    }

    async fn run_pod(self: Arc<Self>, pod: Value, mut stop: watch::Receiver<Stop>, pids: Pids) {
        let namespace = store::namespace_of(&pod);
        let name = store::name_of(&pod);
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_owned();
        let state =
            Arc::new(Mutex::new(PodState { phase: "Pending".into(), ..PodState::default() }));
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            for c in pod["spec"]["initContainers"].as_array().into_iter().flatten() {
                s.init.push(ContainerStatus::new(
                    c["name"].as_str().unwrap_or_default(),
                    c["image"].as_str().unwrap_or_default(),
                ));
            }
            for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
                let mut status = ContainerStatus::new(
                    c["name"].as_str().unwrap_or_default(),
                    c["image"].as_str().unwrap_or_default(),
                );
                status.state = json!({"waiting": {"reason": if s.init.is_empty() { "ContainerCreating" } else { "PodInitializing" }}});
                s.containers.push(status);
            }
        }
        let writer = tokio::spawn(self.clone().write_status(pod.clone(), state.clone()));
        let pod_dir = self.state_dir.join("pods").join(&uid);
        let mut netns = None;
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let work = async {
            tokio::time::sleep(self.start_delay).await;
            let binds = self.volumes(&pod, &pod_dir, &state).await;
            let id = self.next_ip.fetch_add(1, Ordering::SeqCst);
            let ip = format!("10.244.{}.{}", id / 250, id % 250 + 2);
            let ns = match sandbox::create_pod_network(id, &ip) {
                Ok(ns) => ns,
                Err(err) => {
                    tracing::error!(pod = %name, %err, "cannot create the pod sandbox");
                    return std::future::pending().await;
                }
            };
            netns = Some(ns.clone());
            state.lock().unwrap_or_else(|p| p.into_inner()).ip = Some(ip.clone());
            let pod = self.store.get("/pods", &namespace, &name).unwrap_or(pod.clone());
            let ctx = PodContext {
                pod: pod.clone(),
                netns: ns,
                ip,
                pod_dir: pod_dir.clone(),
                binds,
                pids: pids.clone(),
                key: pod_key(&pod),
                name: format!("{namespace}/{name}"),
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
        let my_pids = pids_of(&pids, &format!("{}/", pod_key(&pod)));
        if let Stop::Graceful(grace) = stopped {
            for pid in &my_pids {
                // SAFETY: signalling a child process we started.
                unsafe { libc::kill(*pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(grace);
            while Instant::now() < deadline && my_pids.iter().any(|pid| alive(*pid)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for pid in pids_of(&pids, &format!("{}/", pod_key(&pod))) {
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
            while self.is_frozen(&node) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let kind = self.store.lock().kind("/pods").cloned();
            if let Some(kind) = kind
                && self
                    .store
                    .get("/pods", &namespace, &name)
                    .is_some_and(|p| p["metadata"]["uid"] == uid.as_str())
            {
                let _ = self.store.delete(&kind, &namespace, &name);
            }
        }
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
    }

    /// Writes the pod's status whenever it changes (not while its node is frozen).
    async fn write_status(self: Arc<Self>, pod: Value, state: Arc<Mutex<PodState>>) {
        let namespace = store::namespace_of(&pod);
        let name = store::name_of(&pod);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_owned();
        let mut last = Value::Null;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.is_frozen(&node) {
                continue;
            }
            let (ip, init, containers, initialized, mut phase) = {
                let s = state.lock().unwrap_or_else(|p| p.into_inner());
                (
                    s.ip.clone(),
                    s.init.iter().map(ContainerStatus::to_json).collect::<Vec<_>>(),
                    s.containers.iter().map(ContainerStatus::to_json).collect::<Vec<_>>(),
                    s.initialized,
                    s.phase.clone(),
                )
            };
            let ready = initialized && containers.iter().all(|c| c["ready"] == true);
            if initialized && containers.iter().any(|c| c["state"].get("running").is_some()) {
                phase = "Running".into();
            }
            let wanted = json!({"phase": phase, "podIP": ip, "ready": ready, "initialized": initialized, "init": init, "containers": containers});
            if wanted == last {
                continue;
            }
            let updated = modify(&self.store, "/pods", &namespace, &name, |p| {
                if p["metadata"]["uid"] != pod["metadata"]["uid"] {
                    return;
                }
                let status = &mut p["status"];
                status["phase"] = json!(phase);
                status["hostIP"] = json!(crate::sandbox::GATEWAY);
                if let Some(ip) = &ip {
                    status["podIP"] = json!(ip);
                    status["podIPs"] = json!([{"ip": ip}]);
                }
                if status["startTime"].is_null() {
                    status["startTime"] = json!(store::now());
                }
                if !init.is_empty() {
                    status["initContainerStatuses"] = json!(init);
                }
                status["containerStatuses"] = json!(containers);
                let mut conditions: Vec<Value> =
                    status["conditions"].as_array().cloned().unwrap_or_default();
                for (type_, ok) in [
                    ("PodScheduled", true),
                    ("Initialized", initialized),
                    ("ContainersReady", ready),
                    ("Ready", ready),
                ] {
                    set_condition(&mut conditions, type_, ok);
                }
                status["conditions"] = Value::Array(conditions);
            });
            if updated.is_some() {
                last = wanted;
            }
        }
    }

    /// Prepares the pod's volumes; waits (ContainerCreating) until each can be.
    async fn volumes(
        &self,
        pod: &Value,
        pod_dir: &Path,
        state: &Arc<Mutex<PodState>>,
    ) -> BTreeMap<String, PathBuf> {
        let namespace = store::namespace_of(pod);
        let mut volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        if self.automount(pod) {
            volumes.push(json!({"name": "kube-api-access", "serviceAccountToken": true}));
        }
        let mut out = BTreeMap::new();
        for volume in volumes {
            let name = volume["name"].as_str().unwrap_or_default().to_owned();
            let dir = pod_dir.join("volumes").join(&name);
            loop {
                match self.volume(pod, &namespace, &volume, &dir) {
                    Ok(path) => {
                        out.insert(name.clone(), path);
                        break;
                    }
                    Err(reason) => {
                        tracing::info!(pod = %store::name_of(pod), volume = %name, %reason, "MountVolume.SetUp failed; retrying");
                        for c in &mut state.lock().unwrap_or_else(|p| p.into_inner()).containers {
                            c.state = json!({"waiting": {"reason": "ContainerCreating"}});
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
            if volume.get("secret").is_some() || volume.get("configMap").is_some() {
                let (store, pod, volume, dir, sync) = (
                    self.store.clone(),
                    pod.clone(),
                    volume.clone(),
                    dir.clone(),
                    self.volume_sync,
                );
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(sync).await;
                        let _ = project(&store, &pod, &volume, &dir);
                    }
                });
            }
        }
        out
    }

    fn automount(&self, pod: &Value) -> bool {
        if let Some(b) = pod["spec"]["automountServiceAccountToken"].as_bool() {
            return b;
        }
        let sa = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
        self.store
            .get("/serviceaccounts", &store::namespace_of(pod), sa)
            .and_then(|s| s["automountServiceAccountToken"].as_bool())
            .unwrap_or(true)
    }

    fn volume(
        &self,
        pod: &Value,
        namespace: &str,
        volume: &Value,
        dir: &Path,
    ) -> Result<PathBuf, String> {
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            let object = self
                .store
                .get("/persistentvolumeclaims", namespace, claim)
                .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
            if object["status"]["phase"] != "Bound" {
                return Err(format!("persistentvolumeclaim \"{claim}\" is not bound"));
            }
            if !object["metadata"]["deletionTimestamp"].is_null() {
                return Err(format!("persistentvolumeclaim \"{claim}\" is being deleted"));
            }
            let pv = self
                .state_dir
                .join("pv")
                .join(object["spec"]["volumeName"].as_str().unwrap_or(claim));
            std::fs::create_dir_all(&pv).map_err(io)?;
            return Ok(pv);
        }
        if volume.get("emptyDir").is_some() {
            std::fs::create_dir_all(dir).map_err(io)?;
            return Ok(dir.to_owned());
        }
        if volume.get("serviceAccountToken").is_some() {
            std::fs::create_dir_all(dir).map_err(io)?;
            let token = crate::pki::token();
            let sa = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default").to_owned();
            self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(
                token.clone(),
                User::ServiceAccount { namespace: namespace.to_owned(), name: sa },
            );
            std::fs::write(dir.join("token"), token).map_err(io)?;
            std::fs::write(dir.join("ca.crt"), &self.ca_pem).map_err(io)?;
            std::fs::write(dir.join("namespace"), namespace).map_err(io)?;
            return Ok(dir.to_owned());
        }
        if volume.get("secret").is_some() || volume.get("configMap").is_some() {
            project(&self.store, pod, volume, dir)?;
            return Ok(dir.to_owned());
        }
        Err(format!("volume type of {} is not supported by kube-sim", volume["name"]))
    }

    async fn run_init(
        self: Arc<Self>,
        ctx: &PodContext,
        container: &Value,
        index: usize,
        state: &Arc<Mutex<PodState>>,
    ) {
        let mut backoff = Backoff::default();
        loop {
            let outcome = self.start(ctx, container).await;
            let set = |f: &dyn Fn(&mut ContainerStatus)| {
                f(&mut state.lock().unwrap_or_else(|p| p.into_inner()).init[index])
            };
            match outcome {
                Err(waiting) => {
                    set(&|c| c.state = json!({"waiting": waiting.clone()}));
                }
                Ok(mut child) => {
                    let started = store::now();
                    let pid = child.id().map(|p| p as i32);
                    set(&|c| {
                        c.state = json!({"running": {"startedAt": started}});
                        c.pid = pid;
                    });
                    let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(137);
                    ctx.forget(container);
                    let terminated = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": started, "finishedAt": store::now()}});
                    if code == 0 {
                        set(&|c| c.state = terminated.clone());
                        return;
                    }
                    set(&|c| {
                        c.last_state = terminated.clone();
                        c.restart_count += 1;
                        c.state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {}", c.name)}});
                    });
                }
            }
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
        let mut backoff = Backoff::default();
        loop {
            let set = |f: &dyn Fn(&mut ContainerStatus)| {
                f(&mut state.lock().unwrap_or_else(|p| p.into_inner()).containers[index])
            };
            match self.start(&ctx, &container).await {
                Err(waiting) => {
                    set(&|c| c.state = json!({"waiting": waiting.clone()}));
                    tokio::time::sleep(backoff.next(Duration::ZERO)).await;
                }
                Ok(mut child) => {
                    let started_at = store::now();
                    let started = Instant::now();
                    let pid = child.id().map(|p| p as i32);
                    set(&|c| {
                        c.state = json!({"running": {"startedAt": started_at}});
                        c.pid = pid;
                    });
                    let has_readiness = container.get("readinessProbe").is_some();
                    set(&|c| c.ready = !has_readiness);
                    // The probes live exactly as long as this container: dropped with it when the
                    // pod stops (this task is aborted), as the kubelet stops a removed pod's probe
                    // workers. A spawned task would outlive it and kill a pid the system reuses.
                    let probes = probe_loop(
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
                    let code = exited
                        .ok()
                        .and_then(|s| {
                            s.code().or_else(|| {
                                std::os::unix::process::ExitStatusExt::signal(&s)
                                    .map(|sig| 128 + sig)
                            })
                        })
                        .unwrap_or(137);
                    ctx.forget(&container);
                    if ctx.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let terminated = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": started_at, "finishedAt": store::now()}});
                    let delay = backoff.next(started.elapsed());
                    set(&|c| {
                        c.ready = false;
                        c.pid = None;
                        c.last_state = terminated.clone();
                        c.restart_count += 1;
                        c.state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off {}s restarting failed container={} pod={}", delay.as_secs(), c.name, ctx.name)}});
                    });
                    tokio::time::sleep(delay).await;
                }
            }
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
        let Some(image) = self.images.find(reference) else {
            return Err(
                json!({"reason": "ErrImagePull", "message": format!("failed to pull and unpack image \"{}\": not found", normalize(reference))}),
            );
        };
        let env = self.env(&ctx.pod, container, &ctx.ip).map_err(
            |message| json!({"reason": "CreateContainerConfigError", "message": message}),
        )?;
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
        let mut mounts = container["volumeMounts"].as_array().cloned().unwrap_or_default();
        if ctx.binds.contains_key("kube-api-access") {
            mounts.push(json!({"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}));
        }
        for mount in mounts {
            let volume = mount["name"].as_str().unwrap_or_default();
            let Some(source) = ctx.binds.get(volume) else {
                return Err(
                    json!({"reason": "CreateContainerConfigError", "message": format!("volume \"{volume}\" not found")}),
                );
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
            .unwrap_or_else(|| store::name_of(&ctx.pod));
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
        let mut command = sandbox::command(&spec)
            .map_err(|message| json!({"reason": "RunContainerError", "message": message}))?;
        let log_dir = self.logs(&ctx.pod);
        let _ = std::fs::create_dir_all(&log_dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{name}.log")));
        let log =
            log.map_err(|e| json!({"reason": "RunContainerError", "message": e.to_string()}))?;
        let err_log = log
            .try_clone()
            .map_err(|e| json!({"reason": "RunContainerError", "message": e.to_string()}))?;
        command.stdout(log).stderr(err_log).stdin(std::process::Stdio::null());
        let child = command.spawn().map_err(|e| json!({"reason": "RunContainerError", "message": format!("failed to start container \"{name}\": {e}")}))?;
        if let Some(pid) = child.id() {
            ctx.pids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(format!("{}/{name}", ctx.key), pid as i32);
        }
        Ok(child)
    }

    fn env(
        &self,
        pod: &Value,
        container: &Value,
        ip: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let namespace = store::namespace_of(pod);
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            (
                "HOSTNAME".into(),
                pod["spec"]["hostname"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| store::name_of(pod)),
            ),
            ("HOME".into(), "/root".into()),
            ("KUBERNETES_SERVICE_HOST".into(), sandbox::API_SERVICE_IP.into()),
            ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
            ("KUBERNETES_PORT".into(), format!("tcp://{}:443", sandbox::API_SERVICE_IP)),
        ];
        let data = |resource: &str, name: &str| -> Option<BTreeMap<String, String>> {
            let object = self.store.get(resource, &namespace, name)?;
            let mut out = BTreeMap::new();
            for (k, v) in object["data"].as_object().into_iter().flatten() {
                let text = v.as_str().unwrap_or_default();
                let value = if resource == "/secrets" {
                    String::from_utf8_lossy(
                        &base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default(),
                    )
                    .into_owned()
                } else {
                    text.to_owned()
                };
                out.insert(k.clone(), value);
            }
            Some(out)
        };
        for from in container["envFrom"].as_array().into_iter().flatten() {
            let prefix = from["prefix"].as_str().unwrap_or_default();
            for (field, resource) in [("secretRef", "/secrets"), ("configMapRef", "/configmaps")] {
                if let Some(name) = from[field]["name"].as_str() {
                    match data(resource, name) {
                        Some(values) => {
                            env.extend(values.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
                        }
                        None if from[field]["optional"] == true => {}
                        None => {
                            return Err(format!(
                                "{} \"{name}\" not found",
                                &resource[1..resource.len() - 1]
                            ));
                        }
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
            let value = if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "status.podIP" => Some(ip.to_owned()),
                    "status.hostIP" => Some(sandbox::GATEWAY.to_owned()),
                    p if p.starts_with("metadata.labels[") => {
                        let key = p.trim_start_matches("metadata.labels['").trim_end_matches("']");
                        pod["metadata"]["labels"][key].as_str().map(str::to_owned)
                    }
                    p => crate::resources::json_path(pod, p)
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                }
            } else {
                let mut found = None;
                for (field, resource) in
                    [("secretKeyRef", "/secrets"), ("configMapKeyRef", "/configmaps")]
                {
                    if let Some(object) = from[field]["name"].as_str() {
                        let key = from[field]["key"].as_str().unwrap_or_default();
                        match data(resource, object).and_then(|d| d.get(key).cloned()) {
                            Some(v) => found = Some(v),
                            None if from[field]["optional"] == true => {}
                            None => {
                                return Err(format!(
                                    "couldn't find key {key} in {} {namespace}/{object}",
                                    &resource[1..resource.len() - 1]
                                ));
                            }
                        }
                    }
                }
                found
            };
            if let Some(value) = value {
                env.push((name, value));
            }
        }
        Ok(env)
    }
}

#[derive(Clone)]
struct PodContext {
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
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl PodContext {
    /// The container's process is gone.
    fn forget(&self, container: &Value) {
        let key = format!("{}/{}", self.key, container["name"].as_str().unwrap_or_default());
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
}

/// The kubelet's container restart back-off: 10 s doubling to 5 min, reset after 10 min of
/// running.
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

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn set_condition(conditions: &mut Vec<Value>, type_: &str, ok: bool) {
    let status = if ok { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        Some(c) if c["status"] == status => {}
        Some(c) => {
            *c = json!({"type": type_, "status": status, "lastTransitionTime": store::now()})
        }
        None => conditions
            .push(json!({"type": type_, "status": status, "lastTransitionTime": store::now()})),
    }
}

/// Writes a Secret or ConfigMap volume the way kubelet's atomic writer does: the files in a new
/// timestamped directory, then the `..data` symlink swapped to it, each key a symlink through
/// `..data`.
fn project(store: &Store, pod: &Value, volume: &Value, dir: &Path) -> Result<(), String> {
    let namespace = store::namespace_of(pod);
    let (resource, source) = if let Some(secret) = volume.get("secret") {
        ("/secrets", (secret["secretName"].as_str().unwrap_or_default(), secret))
    } else {
        (
            "/configmaps",
            (volume["configMap"]["name"].as_str().unwrap_or_default(), &volume["configMap"]),
        )
    };
    let (name, spec) = source;
    let object = match store.get(resource, &namespace, name) {
        Some(o) => o,
        None if spec["optional"] == true => json!({}),
        None => return Err(format!("{} \"{name}\" not found", &resource[1..resource.len() - 1])),
    };
    let mode = spec["defaultMode"].as_u64().unwrap_or(0o644) as u32;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in object["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        let bytes = if resource == "/secrets" {
            base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
        } else {
            text.as_bytes().to_vec()
        };
        files.insert(k.clone(), bytes);
    }
    if let Some(items) = spec["items"].as_array() {
        files = items
            .iter()
            .filter_map(|i| {
                Some((i["path"].as_str()?.to_owned(), files.get(i["key"].as_str()?)?.clone()))
            })
            .collect();
    }
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let current = std::fs::read_link(dir.join("..data")).ok();
    if let Some(current) = &current {
        let same = files
            .iter()
            .all(|(k, v)| std::fs::read(dir.join(current).join(k)).is_ok_and(|c| c == *v))
            && std::fs::read_dir(dir.join(current)).map(|d| d.count()).unwrap_or(0) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!("..{}", time::OffsetDateTime::now_utc().unix_timestamp_nanos());
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh).map_err(io)?;
    for (k, v) in &files {
        let path = fresh.join(k);
        std::fs::write(&path, v).map_err(io)?;
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&path).map_err(io)?.permissions(),
            mode,
        );
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(io)?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(io)?;
    for k in files.keys() {
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{k}"), &link).map_err(io)?;
        }
    }
    if let Some(old) = current {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// Readiness and liveness probes of one running container.
async fn probe_loop(
    pod: String,
    ip: String,
    container: Value,
    pid: Option<i32>,
    state: Arc<Mutex<PodState>>,
    index: usize,
) {
    let readiness = container.get("readinessProbe").cloned();
    let liveness = container.get("livenessProbe").cloned();
    let started = Instant::now();
    let mut failures: HashMap<&str, u64> = HashMap::new();
    let mut next: HashMap<&str, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (kind, probe) in [("readiness", &readiness), ("liveness", &liveness)] {
            let Some(probe) = probe else { continue };
            let delay = Duration::from_secs(probe["initialDelaySeconds"].as_u64().unwrap_or(0));
            let period = Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10));
            if started.elapsed() < delay || next.get(kind).is_some_and(|n| Instant::now() < *n) {
                continue;
            }
            next.insert(kind, Instant::now() + period);
            let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1));
            let ok = tokio::time::timeout(timeout, run_probe(&ip, &container, probe))
                .await
                .unwrap_or(false);
            let threshold = probe["failureThreshold"].as_u64().unwrap_or(3);
            let count = failures.entry(kind).or_default();
            *count = if ok { 0 } else { *count + 1 };
            if kind == "readiness" {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                if ok {
                    s.containers[index].ready = true;
                } else if *count >= threshold {
                    s.containers[index].ready = false;
                }
            } else if *count >= threshold
                && let Some(pid) = pid
            {
                tracing::info!(%pod, %ip, ?pid, container = %container["name"], failures = *count, "liveness probe failed; killing the container");
                // SAFETY: a child process we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return;
            }
        }
    }
}

fn port_of(container: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().map(|p| p as u16),
        Value::String(named) => container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == named.as_str())?["containerPort"]
            .as_u64()
            .map(|p| p as u16),
        _ => None,
    }
}

async fn run_probe(ip: &str, container: &Value, probe: &Value) -> bool {
    if let Some(tcp) = probe.get("tcpSocket") {
        let Some(port) = port_of(container, &tcp["port"]) else { return false };
        return tokio::net::TcpStream::connect((ip, port)).await.is_ok();
    }
    if let Some(http) = probe.get("httpGet") {
        let Some(port) = port_of(container, &http["port"]) else { return false };
        let path = http["path"].as_str().unwrap_or("/");
        let https = http["scheme"] == "HTTPS";
        return http_get(ip, port, path, https)
            .await
            .is_some_and(|code| (200..400).contains(&code));
    }
    true
}

/// An HTTP(S) GET as the kubelet probes: HTTPS without verifying the certificate.
async fn http_get(ip: &str, port: u16, path: &str, https: bool) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n"
    );
    let mut buffer = vec![0u8; 64];
    if https {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls_pki_types::ServerName::try_from(ip.to_owned()).ok()?;
        let mut stream = connector.connect(name, tcp).await.ok()?;
        stream.write_all(request.as_bytes()).await.ok()?;
        let n = stream.read(&mut buffer).await.ok()?;
        buffer.truncate(n);
    } else {
        let mut tcp = tcp;
        tcp.write_all(request.as_bytes()).await.ok()?;
        let n = tcp.read(&mut buffer).await.ok()?;
        buffer.truncate(n);
    }
    let text = String::from_utf8_lossy(&buffer);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The kubelet does not verify a probe's serving certificate.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_normalize_as_the_runtime_reads_them() {
        assert_eq!(super::normalize("etcd-operator"), "docker.io/library/etcd-operator:latest");
        assert_eq!(
            super::normalize("ghcr.io/etcd-operator/etcd-operator:0.1.0"),
            "ghcr.io/etcd-operator/etcd-operator:0.1.0"
        );
        assert_eq!(super::normalize("quay.io/coreos/etcd:v3.5.1"), "quay.io/coreos/etcd:v3.5.1");
        assert_eq!(super::normalize("localhost:5000/x"), "localhost:5000/x:latest");
    }
}
