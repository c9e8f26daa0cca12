//! `etcd-operator member-init`: the init container of every etcd pod. It waits until the operator
//! has written this member's bootstrap entry, then writes the etcd configuration file the etcd
//! container starts with.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_crds::{EtcdOptions, SnapshotLocation};

use super::bootstrap::BootstrapEntry;
use super::etcd_config::{Placement, render};
use crate::etcd::ClusterState;

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
    #[error("bootstrap entry for {member} does not list its own peer URL")]
    NoOwnPeer { member: String },
    #[error("restoring {member} from the snapshot failed: {source}")]
    Restore { member: String, source: Box<crate::backup::Error> },
    #[error(
        "member {member} has been a voter but {data_dir} holds no etcd data (its volume was lost or replaced): it must not rejoin under its old member ID with an empty log; the operator removes it and adds it again as a new member"
    )]
    NoData { member: String, data_dir: PathBuf },
}

/// The exit code of [`Error::NoData`]: the operator reads it from the init container's status
/// to tell a member that lost its data from one that merely failed to start.
pub const NO_DATA_EXIT_CODE: i32 = 3;

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoData { .. } => NO_DATA_EXIT_CODE as u8,
            _ => 1,
        }
    }
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
    /// etcd's data directory, on the member's volume.
    pub data_dir: PathBuf,
    /// Where the seal key is mounted (`names::SEAL_DIR`); `None` from a pod template older
    /// than the seal.
    pub seal_dir: Option<PathBuf>,
    /// The snapshot a new cluster's members start from.
    pub restore: Option<SnapshotLocation>,
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
    let mut entry: BootstrapEntry = serde_json::from_str(&text)
        .map_err(|err| Error::BadEntry { path: path.clone(), reason: err.to_string() })?;
    if entry.name != request.pod_name {
        return Err(Error::WrongMember {
            path,
            found: entry.name,
            expected: request.pod_name.clone(),
        });
    }
    check_entry(&entry, &request.placement)
        .map_err(|reason| Error::BadEntry { path: path.clone(), reason })?;
    if entry.data_required && !holds_member_data(&request.data_dir) {
        return Err(Error::NoData { member: entry.name, data_dir: request.data_dir.clone() });
    }
    if let Some(source) = &request.restore {
        restore_data(&entry, source, request).await?;
    }
    drop_replaced(&entry, &request.data_dir);
    if entry.state == ClusterState::ForceNew {
        check_seal(&entry, request)
            .map_err(|reason| Error::BadEntry { path: path.clone(), reason })?;
        entry.state = force_once(&entry, &request.data_dir)?;
    }
    write(&request.config_out, &render(&entry, &request.placement, &request.options))?;
    Ok(entry)
}

/// The entry is a ConfigMap in the tenant's namespace, which more people may write than may
/// change the EtcdCluster: every field is held to what the operator writes. The attempt names a
/// file beside the data directory (digits only, so `../` cannot leave it); every peer is a member
/// of this cluster at its own DNS name, so no peer URL can point etcd's replication elsewhere.
fn check_entry(entry: &BootstrapEntry, placement: &Placement) -> Result<(), String> {
    if let Some(attempt) = &entry.attempt
        && (attempt.is_empty()
            || attempt.len() > 20
            || !attempt.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("attempt {attempt:?} is not a number"));
    }
    if entry.token.is_empty()
        || !entry.token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!("cluster token {:?} is not a token the operator writes", entry.token));
    }
    for peer in &entry.initial_cluster {
        let ordinal = peer.name.strip_prefix(&format!("{}-", placement.cluster));
        if !ordinal.is_some_and(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit())) {
            return Err(format!("peer {} is not a member of {}", peer.name, placement.cluster));
        }
        let (expected, _) = crate::names::member_urls(
            &placement.cluster,
            &placement.namespace,
            &peer.name,
            placement.tls,
        );
        if peer.peer_url != expected {
            return Err(format!("peer {} has URL {}, not {expected}", peer.name, peer.peer_url));
        }
    }
    Ok(())
}

/// A force throws away every member but this one: it is honoured only from the operator, whose
/// seal the entry must carry ([`BootstrapEntry::seal`]). Someone who may write the bootstrap
/// ConfigMap but not read the cluster's Secrets cannot make one. A pod from a template older
/// than the seal (no `--seal-dir`) forces as it did.
fn check_seal(entry: &BootstrapEntry, request: &Request) -> Result<(), String> {
    let Some(dir) = &request.seal_dir else {
        tracing::warn!(member = %entry.name, "this pod's template predates sealed entries; the force is not checked");
        return Ok(());
    };
    let path = dir.join(crate::names::SEAL_KEY);
    let key = std::fs::read(&path).map_err(|err| {
        format!(
            "it forces a new cluster, but this pod has no seal key to check it with ({}: {err}); \
             the operator makes the key before it asks for a force: this entry is not the operator's",
            path.display()
        )
    })?;
    let (namespace, cluster) = (&request.placement.namespace, &request.placement.cluster);
    if !entry.sealed_with(&key, namespace, cluster) {
        return Err("it forces a new cluster without the operator's seal (the bootstrap \
                    ConfigMap was written by someone else); refusing to force"
            .to_owned());
    }
    Ok(())
}

/// Recovery restarts this member alone with `--force-new-cluster`, once per attempt: the marker
/// beside the data directory (on the same volume) records that this attempt's start happened,
/// so a later start of the pod (the entry still says ForceNew) starts normally instead of
/// forgetting the members that joined since.
fn force_once(entry: &BootstrapEntry, data_dir: &Path) -> Result<ClusterState, Error> {
    let attempt = entry.attempt.as_deref().unwrap_or("0");
    let marker = data_dir.with_file_name(format!(".force-new-cluster-{attempt}"));
    if marker.exists() {
        tracing::info!(member = %entry.name, attempt, "this recovery attempt already forced a new cluster; starting normally");
        return Ok(ClusterState::Existing);
    }
    write(&marker, attempt)?;
    tracing::warn!(member = %entry.name, attempt, "starting alone with --force-new-cluster to recover from quorum loss");
    Ok(ClusterState::ForceNew)
}

/// etcd has written its log here: a WAL file under `member/wal` (what etcd itself looks for to
/// decide between restarting and joining, `wal.Exist`).
fn holds_member_data(data_dir: &Path) -> bool {
    let wal = data_dir.join("member").join("wal");
    std::fs::read_dir(wal).is_ok_and(|mut files| {
        files.any(|f| f.is_ok_and(|f| f.path().extension().is_some_and(|e| e == "wal")))
    })
}

/// A member bootstrapping a new cluster restores its data from the snapshot (verified first);
/// one that already holds this restore's data (a restarted pod) or joins an existing cluster
/// does not. Data of another cluster on the volume (the one a Replace restore replaces, whose
/// claims it keeps) is set aside first.
async fn restore_data(
    entry: &BootstrapEntry,
    source: &SnapshotLocation,
    request: &Request,
) -> Result<(), Error> {
    let data_dir = request.data_dir.as_path();
    if entry.state != ClusterState::New {
        return Ok(());
    }
    if data_dir.join("member").exists() {
        if restored_for(data_dir).as_deref() == Some(entry.token.as_str()) {
            // This cluster's own restore, and the pod started again before it bootstrapped.
            return Ok(());
        }
        set_aside(entry, data_dir)?;
    }
    let restore_error =
        |source| Error::Restore { member: entry.name.clone(), source: Box::new(source) };
    let location =
        // The pod's environment holds its own cluster's credentials (from restore's Secret).
        crate::backup::Location::for_destination(
            &source.destination,
            &crate::backup::location::Access::Environment,
        )
            .map_err(restore_error)?
            .child(&source.key);
    let peer_url = entry
        .initial_cluster
        .iter()
        .find(|peer| peer.name == entry.name)
        .map(|peer| peer.peer_url.clone())
        .ok_or_else(|| Error::NoOwnPeer { member: entry.name.clone() })?;
    let member = crate::backup::restore::MemberSpec {
        name: entry.name.clone(),
        initial_cluster: entry.initial_cluster_flag(),
        peer_url,
        cluster_token: entry.token.clone(),
        data_dir: data_dir.to_owned(),
        tools: None,
    };
    if data_dir.exists() {
        // An empty directory left by an interrupted attempt or created by the volume: the
        // restore writes the directory itself.
        std::fs::remove_dir(data_dir)
            .map_err(|source| Error::Write { path: data_dir.to_owned(), source })?;
    }
    let key = crate::backup::encrypt::Key::from_env().map_err(restore_error)?;
    let bound = crate::backup::fetch::snapshot_bound(request.options.quota_backend_bytes);
    crate::backup::restore::restore(
        &location,
        source.sha256.as_deref(),
        &member,
        key.as_ref(),
        bound,
    )
    .await
    .map_err(restore_error)?;
    // Before etcd starts on it: a later start knows this data for the cluster's own.
    write(&restored_marker(data_dir), &entry.token)?;
    tracing::info!(member = %entry.name, from = %location.url, "restored the member's data from the snapshot");
    Ok(())
}

/// Beside the data directory, the token (the EtcdCluster's UID) of the cluster whose snapshot
/// was restored into it.
fn restored_marker(data_dir: &Path) -> PathBuf {
    data_dir.with_file_name(".restored-for")
}

fn restored_for(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(restored_marker(data_dir)).ok()
}

/// Names of what [`set_aside`] keeps, beside the data directory.
const REPLACED_PREFIX: &str = "replaced-";

/// A restore that replaces a cluster keeps its claims: the data on this volume is the replaced
/// cluster's (or an earlier attempt of this restore that did not get to record itself). It is
/// moved aside on the same volume, not deleted, so a restore that fails leaves it for a person;
/// it goes once the new cluster runs ([`drop_replaced`]).
fn set_aside(entry: &BootstrapEntry, data_dir: &Path) -> Result<(), Error> {
    let stamp = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    let aside = data_dir.with_file_name(format!("{REPLACED_PREFIX}{stamp}"));
    std::fs::rename(data_dir, &aside)
        .map_err(|source| Error::Write { path: aside.clone(), source })?;
    tracing::warn!(member = %entry.name, kept = %aside.display(), "this volume holds the data of the cluster this restore replaces; kept aside until the new cluster runs");
    Ok(())
}

/// Once the restored cluster has bootstrapped (its entries no longer say new), the replaced
/// cluster's data kept aside on this volume is no longer needed. Failing to remove it costs
/// space, not a start.
fn drop_replaced(entry: &BootstrapEntry, data_dir: &Path) {
    if entry.state == ClusterState::New {
        return;
    }
    let Some(volume) = data_dir.parent() else { return };
    let Ok(children) = std::fs::read_dir(volume) else { return };
    for child in children.flatten() {
        if child.file_name().to_string_lossy().starts_with(REPLACED_PREFIX) {
            match std::fs::remove_dir_all(child.path()) {
                Ok(()) => {
                    tracing::info!(member = %entry.name, removed = %child.path().display(), "the restored cluster runs: removed the replaced cluster's data")
                }
                Err(err) => {
                    tracing::warn!(member = %entry.name, path = %child.path().display(), %err, "cannot remove the replaced cluster's data")
                }
            }
        }
    }
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
    use crate::membership::planner::Wanted;

    fn request(dir: &Path, timeout: Duration) -> Request {
        Request {
            pod_name: "demo-2".into(),
            bootstrap_dir: dir.join("bootstrap"),
            config_out: dir.join("run/etcd.conf.yaml"),
            placement: Placement {
                cluster: "demo".into(),
                namespace: "prod".into(),
                tls: true,
                peer_common_name: None,
            },
            options: EtcdOptions::default(),
            timeout,
            poll: Duration::from_millis(20),
            data_dir: dir.join("volume/data"),
            seal_dir: Some(dir.join("seal")),
            restore: None,
        }
    }

    /// The cluster's seal key, mounted as member-init sees it.
    const SEAL: [u8; 32] = [42; 32];

    fn mount_seal(req: &Request) {
        let dir = req.seal_dir.as_ref().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(crate::names::SEAL_KEY), SEAL).unwrap();
    }

    fn own_peer() -> [Wanted; 1] {
        [Wanted { name: "demo-2".into(), peer_url: "https://demo-2.demo.prod.svc:2380".into() }]
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
    async fn a_forcing_entry_forces_once_per_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), Duration::from_secs(1));
        std::fs::create_dir_all(&req.bootstrap_dir).unwrap();
        mount_seal(&req);
        let write_entry = |attempt: &str| {
            let mut entry = BootstrapEntry::new("demo-2", &own_peer(), ClusterState::ForceNew, "t");
            entry.attempt = Some(attempt.into());
            entry.seal(&SEAL, "prod", "demo");
            std::fs::write(
                req.bootstrap_dir.join("demo-2.json"),
                serde_json::to_string(&entry).unwrap(),
            )
            .unwrap();
        };
        let forced = || {
            std::fs::read_to_string(&req.config_out).unwrap().contains("force-new-cluster: true")
        };
        write_entry("1700000000001");
        run(&req).await.unwrap();
        assert!(forced(), "the first start of an attempt forces");
        run(&req).await.unwrap();
        assert!(!forced(), "a later start of the pod does not force again");
        write_entry("1700000000002");
        run(&req).await.unwrap();
        assert!(forced(), "a new attempt forces again");
    }

    /// Someone who may write the bootstrap ConfigMap, but not read the cluster's Secrets, cannot
    /// have a member force a new cluster: an unsealed entry, one sealed with another key, and
    /// any entry while the pod has no key are refused, and nothing is written.
    #[tokio::test]
    async fn a_force_the_operator_did_not_seal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), Duration::from_secs(1));
        std::fs::create_dir_all(&req.bootstrap_dir).unwrap();
        let write_entry = |key: Option<&[u8]>| {
            let mut entry = BootstrapEntry::new("demo-2", &own_peer(), ClusterState::ForceNew, "t");
            entry.attempt = Some("1700000000001".into());
            if let Some(key) = key {
                entry.seal(key, "prod", "demo");
            }
            std::fs::write(
                req.bootstrap_dir.join("demo-2.json"),
                serde_json::to_string(&entry).unwrap(),
            )
            .unwrap();
        };
        write_entry(Some(&SEAL));
        let err = run(&req).await.unwrap_err().to_string();
        assert!(err.contains("no seal key to check it with"), "{err}");
        mount_seal(&req);
        for key in [None, Some(&[1u8; 32][..])] {
            write_entry(key);
            let err = run(&req).await.unwrap_err().to_string();
            assert!(err.contains("without the operator's seal"), "{err}");
        }
        assert!(!req.config_out.exists(), "nothing is started on a refused entry");
        assert!(!dir.path().join("volume/.force-new-cluster-1700000000001").exists());
        write_entry(Some(&SEAL));
        run(&req).await.unwrap();
        assert!(
            std::fs::read_to_string(&req.config_out).unwrap().contains("force-new-cluster: true")
        );
    }

    /// A voter's pod on an empty volume (a lost claim, a drained ephemeral member) does not
    /// start etcd; on its data it does, and a first join starts empty.
    #[tokio::test]
    async fn a_former_voter_never_starts_without_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), Duration::from_secs(1));
        std::fs::create_dir_all(&req.bootstrap_dir).unwrap();
        let write_entry = |required: bool| {
            let mut entry = BootstrapEntry::new("demo-2", &own_peer(), ClusterState::Existing, "t");
            entry.data_required = required;
            let text = serde_json::to_string(&entry).unwrap();
            std::fs::write(req.bootstrap_dir.join("demo-2.json"), text).unwrap();
        };
        write_entry(false);
        run(&req).await.unwrap();
        assert!(req.config_out.exists(), "a first join starts on an empty volume");
        std::fs::remove_file(&req.config_out).unwrap();

        write_entry(true);
        let err = run(&req).await.unwrap_err();
        assert!(matches!(err, Error::NoData { .. }), "{err}");
        assert_eq!(err.exit_code(), 3);
        assert!(!req.config_out.exists(), "no configuration, so etcd cannot start");
        // An empty `member` directory (an interrupted first start) is no data either.
        std::fs::create_dir_all(req.data_dir.join("member/wal")).unwrap();
        assert!(matches!(run(&req).await, Err(Error::NoData { .. })));

        std::fs::write(req.data_dir.join("member/wal/0000000000000000-0000000000000000.wal"), "")
            .unwrap();
        run(&req).await.unwrap();
        assert!(req.config_out.exists(), "on its data it starts");
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

    /// Written by someone who may edit ConfigMaps in the namespace: nothing leaves the volume,
    /// and no peer points elsewhere.
    #[tokio::test]
    async fn an_entry_holds_only_what_the_operator_writes() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), Duration::from_secs(1));
        std::fs::create_dir_all(&req.bootstrap_dir).unwrap();
        mount_seal(&req);
        let try_entry = |edit: &dyn Fn(&mut BootstrapEntry)| {
            let mut entry =
                BootstrapEntry::new("demo-2", &own_peer(), ClusterState::ForceNew, "t-1.x_");
            edit(&mut entry);
            // Sealed, so that each is refused for what it holds.
            entry.seal(&SEAL, "prod", "demo");
            let text = serde_json::to_string(&entry).unwrap();
            std::fs::write(req.bootstrap_dir.join("demo-2.json"), text).unwrap();
        };
        try_entry(&|e| e.attempt = Some("../../../escaped".into()));
        let err = run(&req).await.unwrap_err().to_string();
        assert!(err.contains("is not a number"), "{err}");
        assert!(!dir.path().join("escaped").exists() && !req.config_out.exists());

        try_entry(&|e| e.initial_cluster[0].peer_url = "https://attacker.example:2380".into());
        let err = run(&req).await.unwrap_err().to_string();
        assert!(err.contains("not https://demo-2.demo.prod.svc:2380"), "{err}");
        try_entry(&|e| {
            e.initial_cluster.push(Wanted {
                name: "other-0".into(),
                peer_url: "https://other-0.other.prod.svc:2380".into(),
            })
        });
        let err = run(&req).await.unwrap_err().to_string();
        assert!(err.contains("other-0 is not a member of demo"), "{err}");
        try_entry(&|e| e.token = "t\nforce-new-cluster: true".into());
        assert!(run(&req).await.is_err());

        try_entry(&|e| e.attempt = Some("1700000000001".into()));
        run(&req).await.unwrap();
        assert!(req.config_out.exists());
    }
}
