//! kube-sim: the real Kubernetes control plane (kube-apiserver, kube-controller-manager and
//! kube-scheduler, built from Kubernetes' Go modules by `scripts/go-binaries`) and a node agent in
//! place of kubelets, which runs the pods bound to its nodes as real processes in Linux
//! namespaces, to run the operator end to end, installed with kubectl as a user would.
//!
//! ```text
//! kube-sim run --state-dir DIR [--etcd VERSION=DIR]... [--operator-image REF] [--operator-bin PATH] [--nodes N] -- COMMAND [ARG]...
//! kube-sim fault VERB KEY=VALUE...      # from inside COMMAND: see `faults`
//! ```
//!
//! What is real: every API call, authentication and authorization (RBAC and the Node
//! authorizer), admission (the default plugins, NodeRestriction, the operator's webhooks called by
//! the API server), every controller and the scheduler. What the agent models is the kubelet
//! (`kubelet`, `nodes`, `kubelet_api`), and what a cluster's add-ons would provide: storage
//! (`storage`) and DNS (`dns`). There is no kube-proxy: Service names resolve to their ready
//! endpoints, and the API server reaches webhooks at their endpoints (`--enable-aggregator-routing`).

mod api_proxy;
mod client;
mod control_plane;
mod dns;
mod faults;
mod kubelet;
mod kubelet_api;
mod nodes;
mod pki;
mod sandbox;
mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::control_plane::{Binaries, ControlPlane};
use crate::kubelet::images::{Image, Images, Puller};
use crate::nodes::{Node, Nodes};

#[derive(Parser)]
#[command(
    name = "kube-sim",
    about = "The real Kubernetes control plane with simulated nodes that run pods as real processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster, run COMMAND in it (KUBECONFIG set, cluster DNS), stop it.
    Run(RunArgs),
    /// Cause a fault in the cluster this runs in (see `kube-sim fault help`).
    Fault {
        /// VERB KEY=VALUE...: kill pod=NS/NAME container=C, freeze node=N, unfreeze node=N,
        /// partition node=N, heal node=N, wipe claim=NS/NAME, corrupt claim=NS/NAME,
        /// rewrite claim=NS/NAME from=TEXT to=TEXT,
        /// restart-apiserver, fail permille=N.
        #[arg(required = true)]
        words: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where objects, volumes and logs live.
    #[arg(long)]
    state_dir: PathBuf,
    /// `VERSION=DIR`: images `<any registry>/etcd:vVERSION` run the etcd, etcdctl and etcdutl in DIR.
    #[arg(long = "etcd", value_parser = parse_etcd)]
    etcd: Vec<(String, PathBuf)>,
    /// The operator's image reference (default: what manifests/kustomization.yaml sets). More
    /// than one: the registry holds the same binary under each (a release and the next, to
    /// upgrade the operator from one to the other).
    #[arg(long)]
    operator_image: Vec<String>,
    /// The binary that image runs (default: the etcd-operator built beside kube-sim).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// kube-apiserver, kube-controller-manager and kube-scheduler (default: what
    /// scripts/go-binaries built, target/go-bin/kube).
    #[arg(long)]
    kube_bin: Option<PathBuf>,
    /// The etcd that stores the cluster's objects (default: target/go-bin/etcd-3.6/etcd).
    #[arg(long)]
    store_etcd: Option<PathBuf>,
    /// How long a node takes to pull an image it does not have.
    #[arg(long, default_value_t = 3000)]
    image_pull_ms: u64,
    /// How long a pod sandbox takes to come up before its volumes and containers.
    #[arg(long, default_value_t = 500)]
    sandbox_start_ms: u64,
    /// How often the kubelet writes Secret, ConfigMap and projected volumes again.
    #[arg(long, default_value_t = 60)]
    volume_sync_seconds: u64,
    /// Number of nodes (spread over three zones).
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// The command to run in the cluster.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_etcd(text: &str) -> Result<(String, PathBuf), String> {
    let (version, dir) = text.split_once('=').ok_or("expected VERSION=DIR")?;
    Ok((version.trim_start_matches('v').to_owned(), PathBuf::from(dir)))
}

/// The operator image as the Dockerfile builds it: its files and its ENTRYPOINT and CMD.
pub const OPERATOR_ENTRYPOINT: &[&str] = &["/usr/local/bin/etcd-operator"];
pub const OPERATOR_CMD: &[&str] = &["run"];
/// The files the Dockerfile copies into /usr/local/bin.
pub const OPERATOR_FILES: &[&str] = &["etcd-operator", "etcdutl"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The image `manifests/kustomization.yaml` rewrites the operator's container to.
fn default_operator_image() -> Result<String, String> {
    let path = workspace().join("manifests/kustomization.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let image = doc["images"]
        .as_sequence()
        .and_then(|s| s.first())
        .ok_or("no images: in the kustomization")?;
    Ok(format!(
        "{}:{}",
        image["newName"].as_str().unwrap_or_default(),
        image["newTag"].as_str().unwrap_or("latest")
    ))
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBE_SIM_LOG")
                .unwrap_or_else(|_| "kube_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Fault { words } => faults::send(&words).map(|answer| {
            println!("{answer}");
            0
        }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("kube-sim: {err}");
            std::process::exit(2);
        }
    }
}

fn copy_into(dir: &Path, source: &Path, name: &str) -> Result<(), String> {
    let target = dir.join(name);
    if !target.exists() {
        std::fs::copy(source, &target)
            .map_err(|e| format!("copy {} into the image: {e}", source.display()))?;
    }
    Ok(())
}

fn images(args: &RunArgs, state: &Path) -> Result<Images, String> {
    let mut images = Images::default();
    let mut etcd_dirs = args.etcd.clone();
    etcd_dirs.sort_by_key(|(version, _)| version_key(version));
    for (version, dir) in &etcd_dirs {
        let image = state.join("images").join(format!("etcd-{version}"));
        std::fs::create_dir_all(&image).map_err(|e| e.to_string())?;
        for binary in ["etcd", "etcdctl", "etcdutl"] {
            if dir.join(binary).exists() {
                copy_into(&image, &dir.join(binary), binary)?;
            }
        }
        if !image.join("etcd").exists() {
            return Err(format!("--etcd {version}={}: no etcd there", dir.display()));
        }
        images.etcd.insert(
            version.clone(),
            Image { dir: image, entrypoint: vec!["/usr/local/bin/etcd".into()], cmd: Vec::new() },
        );
    }
    let references = match args.operator_image.is_empty() {
        true => vec![default_operator_image()?],
        false => args.operator_image.clone(),
    };
    let bin = match &args.operator_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("etcd-operator"),
    };
    if !bin.exists() {
        return Err(format!(
            "the operator binary {} does not exist (build it, or pass --operator-bin)",
            bin.display()
        ));
    }
    let image = state.join("images").join("operator");
    std::fs::create_dir_all(&image).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(image.join("etcd-operator"));
    copy_into(&image, &bin, "etcd-operator")?;
    if let Some((_, dir)) = etcd_dirs.iter().rev().find(|(_, d)| d.join("etcdutl").exists()) {
        copy_into(&image, &dir.join("etcdutl"), "etcdutl")?;
    }
    let operator = Image {
        dir: image,
        entrypoint: OPERATOR_ENTRYPOINT.iter().map(|s| (*s).to_owned()).collect(),
        cmd: OPERATOR_CMD.iter().map(|s| (*s).to_owned()).collect(),
    };
    for reference in references {
        images.exact.insert(kubelet::images::normalize(&reference), operator.clone());
    }
    Ok(images)
}

fn version_key(version: &str) -> Vec<u64> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

fn run(args: RunArgs) -> Result<i32, String> {
    let state = std::path::absolute(&args.state_dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    let hosts = state.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").map_err(|e| e.to_string())?;
    let images = images(&args, &state)?;
    let go_bin = workspace().join("target/go-bin");
    let bin = Binaries {
        kube: args.kube_bin.clone().unwrap_or_else(|| go_bin.join("kube")),
        etcd: args.store_etcd.clone().unwrap_or_else(|| go_bin.join("etcd-3.6/etcd")),
    };
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    sandbox::enter_cluster_namespaces(&hosts)?;
    for i in 1..=names.len() {
        sandbox::add_address(&node_ip(i))?;
    }
    let plane = Arc::new(ControlPlane::start(&state, bin, &names)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let code = runtime.block_on(serve_and_run(args, state, hosts, images, plane.clone(), names));
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(plane);
    code
}

/// The address of node `i` (from 1), where its kubelet API answers.
fn node_ip(i: usize) -> String {
    format!("10.244.255.{i}")
}

async fn serve_and_run(
    args: RunArgs,
    state: PathBuf,
    hosts: PathBuf,
    images: Images,
    plane: Arc<ControlPlane>,
    names: Vec<String>,
) -> Result<i32, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent = client::Api::from_kubeconfig(&plane.kubeconfig("agent")).await?;
    storage::install_class(&agent).await?;
    let mut all = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let api = client::Api::from_kubeconfig(&plane.kubeconfig(name)).await?;
        let zone = nodes::ZONES[i % nodes::ZONES.len()];
        all.insert(
            name.clone(),
            Arc::new(Node { name: name.clone(), ip: node_ip(i + 1), zone, api }),
        );
    }
    let nodes = Arc::new(Nodes::new(all));
    for node in nodes.all.values() {
        tokio::spawn(nodes::run(nodes.clone(), node.clone()));
    }
    let kubelet = kubelet::Kubelet::new(
        nodes.clone(),
        state.clone(),
        hosts.clone(),
        Puller::new(images, Duration::from_millis(args.image_pull_ms)),
        Duration::from_millis(args.sandbox_start_ms),
        Duration::from_secs(args.volume_sync_seconds),
    );
    let pids: kubelet::Pids = Arc::default();
    tokio::spawn(kubelet.clone().run(pids.clone()));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", kubelet_api::PORT))
        .await
        .map_err(|e| format!("cannot listen on :{}: {e}", kubelet_api::PORT))?;
    tokio::spawn(kubelet_api::serve(listener, kubelet.logs_dir()));
    tokio::spawn(dns::run(agent.clone(), hosts));
    tokio::spawn(storage::run(agent.clone(), state.join("pv")));
    let socket = faults::socket(&state);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let fail = Arc::new(api_proxy::FailRate::default());
    let service = tokio::net::TcpListener::bind((sandbox::API_SERVICE_IP, 443))
        .await
        .map_err(|e| format!("cannot listen on the kubernetes Service's address: {e}"))?;
    let read = |f: &str| std::fs::read(plane.pki.path(f)).map_err(|e| format!("{f}: {e}"));
    let certs = (read("ca.crt")?, read("apiserver.crt")?, read("apiserver.key")?);
    let ready = {
        let plane = plane.clone();
        Arc::new(move || plane.is_ready()) as Arc<dyn Fn() -> bool + Send + Sync>
    };
    tokio::spawn(api_proxy::serve(
        service,
        control_plane::API_URL.to_owned(),
        certs,
        fail.clone(),
        ready,
    ));
    let control = Arc::new(faults::Control {
        api: agent.clone(),
        nodes: nodes.clone(),
        pids: pids.clone(),
        plane: plane.clone(),
        fail,
    });
    tokio::spawn(faults::serve(listener, control));
    wait_until_usable(&agent, names.len()).await?;

    let kubeconfig = state.join("kubeconfig");
    // An admin reaches the API server itself, not through the Service pods use (and its faults).
    let api_url = control_plane::API_URL;
    pki::kubeconfig(&plane.pki, api_url, "admin", &kubeconfig)?;
    let (program, rest) = args.command.split_first().ok_or("no COMMAND given")?;
    eprintln!(
        "kube-sim: cluster up (API {api_url}, {} nodes); running {}",
        names.len(),
        args.command.join(" ")
    );
    let own_dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = format!("{}:{}", own_dir.display(), std::env::var("PATH").unwrap_or_default());
    // COMMAND in a process group of its own, so that whatever it left running in the
    // cluster's network (a test's S3 server, a writer) stops with the cluster.
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBE_SIM_STATE", &state)
        .env("KUBE_SIM_AUDIT", plane.audit_log())
        .env("PATH", path)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id().map(|pid| pid as i32);
    let status = child.wait().await.map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(group) = group {
        // SAFETY: signalling the process group this process created.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    // Stop every process the kubelets started.
    nodes.release_all();
    for pid in pids.lock().unwrap_or_else(|p| p.into_inner()).values() {
        // SAFETY: children of this process.
        unsafe {
            libc::kill(*pid, libc::SIGCONT);
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    Ok(status.code().unwrap_or(1))
}

/// Until every node is Ready and the default namespace has its service account and root CA
/// (kube-controller-manager's doing): before that, a pod cannot be created or started.
async fn wait_until_usable(api: &client::Api, nodes: usize) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        let ready = api
            .list("/api/v1/nodes")
            .await
            .unwrap_or_default()
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        let account = api
            .get("/api/v1/namespaces/default/serviceaccounts/default")
            .await
            .ok()
            .flatten()
            .is_some();
        let root_ca = api
            .get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
            .await
            .ok()
            .flatten()
            .is_some();
        if ready == nodes && account && root_ca {
            return Ok(());
        }
        // Generous: on two busy cores the control plane can take minutes to settle.
        if start.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "the cluster is not usable after 300 s: {ready} of {nodes} nodes Ready, default service account {account}, root CA {root_ca}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator image the kubelet runs is the one the Dockerfile builds: the same
    /// entrypoint and command, and the same files in /usr/local/bin.
    #[test]
    fn the_operator_image_model_follows_the_dockerfile() {
        let dockerfile = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
        let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
        let json_list = |directive: &str| -> Vec<String> {
            let line = last_stage.lines().find(|l| l.starts_with(directive)).unwrap();
            serde_json::from_str(line.trim_start_matches(directive).trim()).unwrap()
        };
        assert_eq!(json_list("ENTRYPOINT"), OPERATOR_ENTRYPOINT);
        assert_eq!(json_list("CMD"), OPERATOR_CMD);
        let copied: Vec<&str> = last_stage
            .lines()
            .filter(|l| l.starts_with("COPY "))
            .filter_map(|l| l.rsplit(' ').next()?.strip_prefix("/usr/local/bin/"))
            .collect();
        assert_eq!(copied, OPERATOR_FILES);
    }
}
