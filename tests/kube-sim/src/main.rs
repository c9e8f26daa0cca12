//! kube-sim: a simulated Kubernetes that runs here — an HTTPS API server, the controllers a
//! cluster needs (StatefulSet, Deployment, garbage collector, PVC protection, scheduler) and a
//! kubelet that runs pods as real processes in Linux namespaces — to run the operator end to
//! end, installed with kubectl as a user would.
//!
//! ```text
//! kube-sim run --state-dir DIR [--etcd VERSION=DIR]... [--operator-image REF] [--operator-bin PATH] -- COMMAND [ARG]...
//! ```

mod admission;
mod api;
mod controllers;
mod faults;
mod kubelet;
mod patch;
mod pki;
mod rbac;
mod resources;
mod sandbox;
mod schema;
mod selector;
mod store;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::kubelet::{Image, Images};
use crate::rbac::User;

#[derive(Parser)]
#[command(name = "kube-sim", about = "A simulated Kubernetes that runs pods as real processes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a simulated cluster, run COMMAND in it (KUBECONFIG set, cluster DNS), stop it.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Where objects, volumes and logs live.
    #[arg(long)]
    state_dir: PathBuf,
    /// `VERSION=DIR`: images `<any registry>/etcd:vVERSION` run the etcd, etcdctl and etcdutl in DIR.
    #[arg(long = "etcd", value_parser = parse_etcd)]
    etcd: Vec<(String, PathBuf)>,
    /// The operator's image reference (default: what manifests/kustomization.yaml sets).
    #[arg(long)]
    operator_image: Option<String>,
    /// The binary that image runs (default: the etcd-operator built beside kube-sim).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// How long a scheduled pod waits before its containers start (volume attach, image pull).
    #[arg(long, default_value_t = 2000)]
    pod_start_delay_ms: u64,
    /// How often the kubelet refreshes Secret and ConfigMap volumes.
    #[arg(long, default_value_t = 10)]
    volume_sync_seconds: u64,
    /// Number of nodes pods are spread over.
    #[arg(long, default_value_t = 16)]
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
    let Command::Run(args) = cli.command;
    match run(args) {
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
    let reference = match &args.operator_image {
        Some(r) => r.clone(),
        None => default_operator_image()?,
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
    images.exact.insert(
        kubelet::normalize(&reference),
        Image {
            dir: image,
            entrypoint: OPERATOR_ENTRYPOINT.iter().map(|s| (*s).to_owned()).collect(),
            cmd: OPERATOR_CMD.iter().map(|s| (*s).to_owned()).collect(),
        },
    );
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
    sandbox::enter_cluster_namespaces(&hosts)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(serve_and_run(args, state, hosts, images))
}

async fn serve_and_run(
    args: RunArgs,
    state: PathBuf,
    hosts: PathBuf,
    images: Images,
) -> Result<i32, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = pki::issue(&[
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        "127.0.0.1",
        sandbox::API_SERVICE_IP,
    ])
    .map_err(|e| format!("cannot issue the cluster CA: {e}"))?;
    let admin_token = pki::token();
    let tokens: Arc<Mutex<HashMap<String, User>>> =
        Arc::new(Mutex::new(HashMap::from([(admin_token.clone(), User::Admin)])));
    let store = store::Store::new(resources::builtins());
    seed(&store, args.nodes);
    let server = Arc::new(api::ApiServer {
        store: store.clone(),
        tokens: tokens.clone(),
        faults: api::Faults::default(),
        logs: state.join("logs"),
        webhooks: admission::WebhookClient,
        audit: api::Audit::open(&state.join("audit.log"))
            .map_err(|e| format!("cannot open the audit log: {e}"))?,
    });
    let nodes: Vec<String> = (1..=args.nodes).map(|i| format!("node-{i}")).collect();
    let frozen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let kubelet = kubelet::Kubelet::new(
        store.clone(),
        state.clone(),
        hosts.clone(),
        images,
        tokens.clone(),
        pki.ca_pem.clone(),
        Duration::from_millis(args.pod_start_delay_ms),
        Duration::from_secs(args.volume_sync_seconds),
        nodes.clone(),
        frozen.clone(),
    );
    let pids: kubelet::Pids = Arc::default();
    let control = Arc::new(faults::Control {
        server: server.clone(),
        kubelet: kubelet.clone(),
        pids: pids.clone(),
        state: state.clone(),
    });
    let listener = tokio::net::TcpListener::bind("0.0.0.0:443")
        .await
        .map_err(|e| format!("cannot listen on :443: {e}"))?;
    tokio::spawn(faults::serve(
        listener,
        control,
        tokens.clone(),
        pki.serving_cert_pem.clone(),
        pki.serving_key_pem.clone(),
    ));
    let frozen_check = {
        let frozen = frozen.clone();
        Arc::new(move |node: &str| frozen.lock().unwrap_or_else(|p| p.into_inner()).contains(node))
            as Arc<dyn Fn(&str) -> bool + Send + Sync>
    };
    tokio::spawn(controllers::run(store.clone(), nodes, frozen_check));
    tokio::spawn(kubelet.clone().run(pids.clone()));
    tokio::spawn(dns(store.clone(), hosts));

    let kubeconfig = state.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &pki.ca_pem, &admin_token)?;
    let (program, rest) = args.command.split_first().ok_or("no COMMAND given")?;
    eprintln!(
        "kube-sim: cluster up (API https://{}:443); running {}",
        sandbox::API_SERVICE_IP,
        args.command.join(" ")
    );
    // COMMAND in a process group of its own, so that whatever it left running in the
    // cluster's network (a test's S3 server, a writer) stops with the cluster.
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBE_SIM_STATE", &state)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id().map(|pid| pid as i32);
    let status = child.wait().await.map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(group) = group {
        // SAFETY: signalling the process group this process created.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    // Stop every process the kubelet started.
    frozen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    for pid in pids.lock().unwrap_or_else(|p| p.into_inner()).values() {
        // SAFETY: children of this process.
        unsafe {
            libc::kill(*pid, libc::SIGCONT);
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    Ok(status.code().unwrap_or(1))
}

/// What a new cluster has: namespaces, the kubernetes Service, nodes, a default StorageClass
/// that allows expansion.
fn seed(store: &store::Store, nodes: usize) {
    let kinds = resources::builtins();
    let kind = |plural: &str| kinds.iter().find(|k| k.resource() == plural).cloned();
    let create = |resource: &str, object: serde_json::Value| {
        if let Some(k) = kind(resource) {
            let _ = store.create(&k, object);
        }
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create(
            "/namespaces",
            json!({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
        create("/serviceaccounts", json!({"metadata": {"name": "default", "namespace": ns}}));
    }
    create(
        "/services",
        json!({"metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}}, "spec": {"clusterIP": sandbox::API_SERVICE_IP, "type": "ClusterIP", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]}}),
    );
    for i in 1..=nodes {
        create(
            "/nodes",
            json!({"metadata": {"name": format!("node-{i}"), "labels": {"kubernetes.io/hostname": format!("node-{i}")}}, "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}),
        );
    }
    create(
        "storage.k8s.io/storageclasses",
        json!({"metadata": {"name": controllers::DEFAULT_STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "kube-sim.io/hostpath", "allowVolumeExpansion": true, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
    );
}

fn write_kubeconfig(path: &Path, ca_pem: &str, token: &str) -> Result<(), String> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: https://{}:443\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: admin\n    namespace: default\ncurrent-context: kube-sim\n",
        sandbox::API_SERVICE_IP
    );
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Keeps the cluster's /etc/hosts (every pod's and COMMAND's) equal to the DNS records, written
/// in place so bind mounts of it see each change. Cluster DNS never goes blank, so neither may
/// this file: the new records are written over the old ones in one write, padded with newlines
/// to the old length, and only then is the file cut to size (truncating first would leave an
/// empty file for every lookup that comes in between: "Temporary failure in name resolution").
async fn dns(store: Arc<store::Store>, hosts: PathBuf) {
    let mut last = String::new();
    loop {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (ip, name) in controllers::dns_records(&store) {
            text.push_str(&format!("{ip} {name}\n"));
        }
        if text != last {
            use std::os::unix::fs::FileExt;
            if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&hosts) {
                let mut padded = text.clone().into_bytes();
                padded.resize(text.len().max(last.len()), b'\n');
                if file.write_all_at(&padded, 0).is_ok() {
                    let _ = file.set_len(text.len() as u64);
                }
            }
            last = text;
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
