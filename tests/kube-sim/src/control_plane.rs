//! The real Kubernetes control plane, started as kubeadm would start its static pods: etcd (the
//! API server's store), kube-apiserver, kube-controller-manager and kube-scheduler, each a
//! process of the binaries `scripts/go-binaries` built from Kubernetes' and etcd's Go modules.
//! They run in the cluster's network namespace; the API server listens on the cluster network's
//! gateway address, and pods reach it at the `kubernetes` Service's address through `api_proxy`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::pki::{self, Pki};
use crate::sandbox;

/// Where the binaries are: `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, and the
/// etcd that stores the cluster's objects.
pub struct Binaries {
    pub kube: PathBuf,
    pub etcd: PathBuf,
}

/// The client certificates issued beside the serving one: (file, user, group).
pub const CLIENTS: &[(&str, &str, &str)] = &[
    ("admin", "kubernetes-admin", "system:masters"),
    ("controller-manager", "system:kube-controller-manager", ""),
    ("scheduler", "system:kube-scheduler", ""),
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
    // The node agent's external components (the volume provisioner and resizer, cluster DNS); the
    // kubelets each use their node's own identity (`system:node:NAME`, see `nodes`).
    ("agent", "system:kube-sim", "system:masters"),
];

pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Where the control plane and an admin reach the API server; pods reach it through the
/// `kubernetes` Service's address instead (`api_proxy`).
pub const API_URL: &str = "https://10.244.0.1:443";

/// The running control plane.
pub struct ControlPlane {
    pub pki: Pki,
    dir: PathBuf,
    bin: Binaries,
    apiserver: Mutex<Option<std::process::Child>>,
    /// Whether the API server is ready (`/readyz`): what puts it behind the `kubernetes`
    /// Service (the endpoint reconciler adds a ready API server and removes a stopping one).
    ready: std::sync::atomic::AtomicBool,
    others: Mutex<Vec<std::process::Child>>,
}

impl ControlPlane {
    /// Issues the PKI and starts every component; returns once the API server is ready.
    pub fn start(state: &Path, bin: Binaries, nodes: &[String]) -> Result<Self, String> {
        for b in ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
            if !bin.kube.join(b).exists() {
                return Err(format!(
                    "{} is missing: run ./scripts/go-binaries (it builds the control plane from Kubernetes' Go modules)",
                    bin.kube.join(b).display()
                ));
            }
        }
        if !bin.etcd.exists() {
            return Err(format!("{} is missing: run ./scripts/go-binaries", bin.etcd.display()));
        }
        let dir = state.join("control-plane");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let names = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            sandbox::API_SERVICE_IP,
            sandbox::GATEWAY,
        ];
        let node_clients: Vec<(String, String, String)> = nodes
            .iter()
            .map(|n| (n.clone(), format!("system:node:{n}"), "system:nodes".to_owned()))
            .collect();
        let mut clients: Vec<(&str, &str, &str)> = CLIENTS.to_vec();
        clients.extend(node_clients.iter().map(|(f, u, g)| (f.as_str(), u.as_str(), g.as_str())));
        let pki = pki::issue(&dir.join("pki"), &names, &clients)?;
        for (file, ..) in &clients {
            pki::kubeconfig(&pki, API_URL, file, &dir.join(format!("{file}.kubeconfig")))?;
        }
        std::fs::write(
            dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )
        .map_err(|e| e.to_string())?;
        let plane = Self {
            pki,
            dir,
            bin,
            apiserver: Mutex::new(None),
            ready: std::sync::atomic::AtomicBool::new(false),
            others: Mutex::new(Vec::new()),
        };
        plane.spawn_other("etcd", &plane.bin.etcd.clone(), &plane.etcd_args())?;
        plane.start_apiserver()?;
        let kcm = plane.bin.kube.join("kube-controller-manager");
        plane.spawn_other("kube-controller-manager", &kcm, &plane.controller_manager_args())?;
        let scheduler = plane.bin.kube.join("kube-scheduler");
        plane.spawn_other("kube-scheduler", &scheduler, &plane.scheduler_args())?;
        Ok(plane)
    }

    pub fn kubeconfig(&self, client: &str) -> PathBuf {
        self.dir.join(format!("{client}.kubeconfig"))
    }

    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    fn log(&self, name: &str) -> Result<(Stdio, Stdio), String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .map_err(|e| format!("{name}.log: {e}"))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        Ok((file.into(), err.into()))
    }

    fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
    ) -> Result<std::process::Child, String> {
        let (out, err) = self.log(name)?;
        std::process::Command::new(program)
            .args(args)
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))
    }

    fn spawn_other(&self, name: &str, program: &Path, args: &[String]) -> Result<(), String> {
        let child = self.spawn(name, program, args)?;
        self.others.lock().unwrap_or_else(|p| p.into_inner()).push(child);
        Ok(())
    }

    fn etcd_args(&self) -> Vec<String> {
        let data = self.dir.join("etcd");
        vec![
            format!("--data-dir={}", data.display()),
            "--listen-client-urls=http://127.0.0.1:2379".into(),
            "--advertise-client-urls=http://127.0.0.1:2379".into(),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--log-level=warn".into(),
            // A test cluster's store: losing the last writes on a power cut is of no concern.
            "--unsafe-no-fsync".into(),
        ]
    }

    fn apiserver_args(&self) -> Vec<String> {
        let p = |f: &str| self.pki.path(f).display().to_string();
        vec![
            "--etcd-servers=http://127.0.0.1:2379".into(),
            format!("--bind-address={}", sandbox::GATEWAY),
            "--secure-port=443".into(),
            format!("--advertise-address={}", sandbox::GATEWAY),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--allow-privileged=true".into(),
            // No kube-proxy here: the API server calls webhooks at their Service's endpoints (as
            // it does on clusters whose control plane runs outside the pod network).
            "--enable-aggregator-routing=true".into(),
            format!("--audit-log-path={}", self.audit_log().display()),
            format!("--audit-policy-file={}", self.dir.join("audit-policy.yaml").display()),
            "--audit-log-format=json".into(),
            "--profiling=false".into(),
        ]
    }

    fn controller_manager_args(&self) -> Vec<String> {
        let p = |f: &str| self.pki.path(f).display().to_string();
        let kubeconfig = self.kubeconfig("controller-manager").display().to_string();
        vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--root-ca-file={}", p("ca.crt")),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--cluster-signing-cert-file={}", p("ca.crt")),
            format!("--cluster-signing-key-file={}", p("ca.key")),
            "--use-service-account-credentials=true".into(),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--profiling=false".into(),
        ]
    }

    fn scheduler_args(&self) -> Vec<String> {
        let kubeconfig = self.kubeconfig("scheduler").display().to_string();
        vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--profiling=false".into(),
        ]
    }

    fn start_apiserver(&self) -> Result<(), String> {
        let program = self.bin.kube.join("kube-apiserver");
        let child = self.spawn("kube-apiserver", &program, &self.apiserver_args())?;
        *self.apiserver.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        self.wait_ready(Duration::from_secs(300))?;
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Until `/readyz` answers 200 (the API server's post-start hooks have run).
    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(self.kubeconfig("admin"))
                .args(["get", "--raw", "/readyz", "--request-timeout=2s"])
                .output();
            if out.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if let Some(child) = self.apiserver.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "kube-apiserver exited ({status}); see {}",
                    self.dir.join("kube-apiserver.log").display()
                ));
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "kube-apiserver not ready after {}s; see {}",
                    limit.as_secs(),
                    self.dir.join("kube-apiserver.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the API server and starts it again: every watch drops and its caches are rebuilt
    /// from etcd. SIGTERM first, as the kubelet stops a static pod, then SIGKILL after a grace of
    /// 5 s (kubeadm gives kube-apiserver 30 s; left alone it drains in-flight requests for up to
    /// its 60 s request timeout, which would make every restart a minute's outage).
    /// Returns how long the API server was away. A start whose process exits is tried again, as
    /// the kubelet restarts a static pod that crashed.
    pub fn restart_apiserver(&self) -> Result<Duration, String> {
        let down = Instant::now();
        self.ready.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(mut child) = self.apiserver.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // SAFETY: signalling a child this process started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut tries = 1;
        while let Err(why) = self.start_apiserver() {
            if tries == 3 {
                return Err(why);
            }
            tracing::warn!(%why, "kube-apiserver did not come back; starting it again");
            tries += 1;
        }
        Ok(down.elapsed())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let mut all: Vec<std::process::Child> =
            self.others.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        all.extend(self.apiserver.lock().unwrap_or_else(|p| p.into_inner()).take());
        for child in &mut all {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
