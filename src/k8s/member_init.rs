//! `etcd-operator member-init`: the init container of every etcd pod. It waits until the operator
//! has written this member's bootstrap entry, then writes the etcd configuration file the etcd
//! container starts with.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_crds::EtcdOptions;

use super::bootstrap::BootstrapEntry;
use super::etcd_config::{Placement, render};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no bootstrap entry {path} after {waited:?}: the operator has not admitted this member (yet); check the EtcdCluster's status and the operator's logs"
    )]
    NoEntry { path: PathBuf, waited: Duration },
    #[error("bootstrap entry {path} is invalid: {reason}")]
    BadEntry { path: PathBuf, reason: String },
    #[error("bootstrap entry {path} is for member {found}, not {expected}")]
    WrongMember { path: PathBuf, found: String, expected: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Everything member-init needs; in a pod it comes from flags and the downward API.
#[derive(Clone, Debug)]
pub struct Request {
    pub pod_name: String,
    pub bootstrap_dir: PathBuf,
    pub config_out: PathBuf,
    pub placement: Placement,
    pub options: EtcdOptions,
    pub timeout: Duration,
    pub poll: Duration,
}

/// Waits for the entry (the mounted ConfigMap is refreshed by the kubelet), then writes the config.
pub async fn run(request: &Request) -> Result<BootstrapEntry, Error> {
    let path = request.bootstrap_dir.join(BootstrapEntry::key(&request.pod_name));
    let started = Instant::now();
    let text = loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => break text,
            Err(_) if started.elapsed() < request.timeout => {
                tracing::info!(path = %path.display(), "waiting for this member's bootstrap entry");
                tokio::time::sleep(request.poll).await;
            }
            Err(_) => return Err(Error::NoEntry { path, waited: started.elapsed() }),
        }
    };
    let entry: BootstrapEntry = serde_json::from_str(&text)
        .map_err(|err| Error::BadEntry { path: path.clone(), reason: err.to_string() })?;
    if entry.name != request.pod_name {
        return Err(Error::WrongMember {
            path,
            found: entry.name,
            expected: request.pod_name.clone(),
        });
    }
    write(&request.config_out, &render(&entry, &request.placement, &request.options))?;
    Ok(entry)
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    let io = |source| Error::Write { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::ClusterState;
    use crate::membership::planner::Wanted;

    fn request(dir: &Path, timeout: Duration) -> Request {
        Request {
            pod_name: "demo-2".into(),
            bootstrap_dir: dir.join("bootstrap"),
            config_out: dir.join("run/etcd.conf.yaml"),
            placement: Placement { cluster: "demo".into(), namespace: "prod".into(), tls: true },
            options: EtcdOptions::default(),
            timeout,
            poll: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn waits_until_the_entry_appears_then_writes_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), Duration::from_secs(10));
        let bootstrap = req.bootstrap_dir.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            std::fs::create_dir_all(&bootstrap).unwrap();
            let initial = [Wanted {
                name: "demo-2".into(),
                peer_url: "https://demo-2.demo.prod.svc:2380".into(),
            }];
            let entry = BootstrapEntry::new("demo-2", &initial, ClusterState::Existing, "t");
            std::fs::write(bootstrap.join("demo-2.json"), serde_json::to_string(&entry).unwrap())
                .unwrap();
        });
        let entry = run(&req).await.unwrap();
        writer.await.unwrap();
        assert_eq!(entry.name, "demo-2");
        let config = std::fs::read_to_string(&req.config_out).unwrap();
        assert!(config.contains("initial-cluster-state: existing"), "{config}");
    }

    #[tokio::test]
    async fn no_entry_is_a_clear_error_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            run(&request(dir.path(), Duration::from_millis(100))).await.unwrap_err().to_string();
        assert!(
            err.contains("demo-2.json") && err.contains("has not admitted this member"),
            "{err}"
        );
        assert!(!dir.path().join("run/etcd.conf.yaml").exists());
    }

    #[tokio::test]
    async fn an_entry_for_another_member_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), Duration::from_secs(1));
        std::fs::create_dir_all(&req.bootstrap_dir).unwrap();
        let entry = BootstrapEntry::new("demo-7", &[], ClusterState::New, "t");
        std::fs::write(
            req.bootstrap_dir.join("demo-2.json"),
            serde_json::to_string(&entry).unwrap(),
        )
        .unwrap();
        assert!(matches!(run(&req).await, Err(Error::WrongMember { .. })));
    }
}
