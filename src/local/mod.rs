//! `etcd-operator local`: an EtcdCluster on this machine. The same planner and etcd calls as in
//! Kubernetes drive real etcd processes; edits to the file are reconciled; `status.json` carries
//! the status object the CRD would. Members outlive this process, and a restart adopts them.

use etcd_crds::conditions::types;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_crds::conditions::{condition, set_condition};
use etcd_crds::{EtcdCluster, EtcdClusterStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub mod admission;
pub mod ports;
pub mod process;
pub mod report;

use crate::cluster_metrics::{ClusterLabels, ClusterMetrics};
use crate::etcd::ClientTls;
use crate::etcd::install::Installations;
use crate::membership::Error;
use crate::membership::planner::Step;
use crate::membership::reconcile::{Plan, Target, act, plan};
use crate::membership::recovery;
use admission::Admission;
use process::ProcessMembers;

/// Test hook: exit right after performing a step of this kind (`add-learner`, `promote`, ...),
/// or with `stop` right after stopping a running member (inside a step), as a crash between
/// two calls would.
pub const EXIT_AFTER_ENV: &str = "ETCD_OPERATOR_EXIT_AFTER";
/// Exit code of that hook.
pub const EXIT_AFTER_CODE: i32 = 86;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

/// The cluster's PKI in `DIR/pki`, issued on first use for loopback names.
fn ensure_pki(
    members: &ProcessMembers,
    cluster: &EtcdCluster,
    name: &str,
) -> crate::error::Result<ClientTls> {
    let dir = members.pki_dir();
    if !dir.join("ca.crt").exists() {
        let request = etcd_certs::ClusterPkiRequest {
            cluster: name.to_owned(),
            namespace: cluster.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            max_members: etcd_crds::MAX_MEMBERS,
            extra_sans: vec!["127.0.0.1".into(), "localhost".into()],
        };
        let pki = etcd_certs::issue_cluster_pki(&request, time::OffsetDateTime::now_utc())
            .map_err(crate::tls::Error::from)?;
        crate::tls::files::write_pem_files(&dir, &pki.files())?;
    }
    Ok(ClientTls::from_files(&dir.join("ca.crt"), &dir.join("client.crt"), &dir.join("client.key"))
        .map_err(Error::from)?)
}

/// A token unique to this cluster, kept in the state dir.
fn token(dir: &Path, cluster: &str) -> Result<String, Error> {
    let path = dir.join("token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let token = format!("{cluster}-{nanos:x}");
    write_atomically(&path, &token)?;
    Ok(token)
}

fn read_status(dir: &Path) -> EtcdClusterStatus {
    std::fs::read(dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_status(dir: &Path, status: &EtcdClusterStatus) -> Result<(), Error> {
    write_atomically(
        &dir.join("status.json"),
        serde_json::to_vec_pretty(status).unwrap_or_default(),
    )
}

/// Writes `bytes` to `path` so that a crash at any moment leaves the old content or the new,
/// never an empty or partial file. `std::fs::write` truncates first: a `local` killed between the
/// truncation and the write left `ports.json` empty, and every later start failed on it. The new
/// content is synced before it takes the name, so that a power loss cannot undo it either.
fn write_atomically(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
    use std::io::Write;
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes.as_ref()).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Restores every member of a new local cluster from the backup at `from` (verified against its
/// manifest) so that the planner restarts them from that data. A cluster that already has data
/// is left alone: a restore never overwrites members.
async fn restore_members(
    members: &ProcessMembers,
    target: &Target,
    installs: &Installations,
    from: &str,
) -> crate::error::Result<()> {
    if !crate::membership::MemberPort::with_data(members).await?.is_empty() {
        tracing::warn!(%from, "members already have data; the restore source applies to new clusters only");
        return Ok(());
    }
    let location = crate::backup::Location::parse(from, &Default::default())?;
    let key = crate::backup::encrypt::Key::from_env()?;
    let wanted = crate::membership::reconcile::wanted(members, target)?;
    let initial_cluster = crate::etcd::config::initial_cluster(&wanted);
    for member in &wanted {
        let spec = crate::backup::restore::MemberSpec {
            name: member.name.clone(),
            initial_cluster: initial_cluster.clone(),
            peer_url: member.peer_url.clone(),
            cluster_token: target.token.clone(),
            data_dir: members.data_dir(&member.name),
            tools: target.version.as_deref().and_then(|v| installs.dir(v)).map(Path::to_owned),
        };
        // The user's own backup on their own machine: no bound beyond their disk.
        crate::backup::restore::restore(&location, None, &spec, key.as_ref(), u64::MAX).await?;
        tracing::info!(member = %member.name, from = %location.url, "restored from backup");
    }
    Ok(())
}

/// What the planner aims at for the cluster in the file. Members roll onto the spec's version
/// when it is installed; when it is not, nothing rolls (see [`version_condition`]).
fn target(cluster: &EtcdCluster, name: &str, token: &str, installs: &Installations) -> Target {
    let version = Some(cluster.spec.version.clone()).filter(|v| installs.has(v));
    Target {
        cluster: name.to_owned(),
        size: usize::try_from(cluster.spec.size).unwrap_or(0),
        generation: cluster.metadata.generation,
        token: token.to_owned(),
        replace_after: Target::seconds(cluster.spec.replace_unhealthy_after_seconds),
        version,
        rolls_versions: true,
        recovery: recovery::Policy::of(cluster),
        quota_backend_bytes: cluster.spec.options.quota_backend_bytes,
        check_consistency_every: Target::seconds(
            cluster.spec.maintenance.consistency_check_seconds,
        ),
    }
}

/// Whether the spec's version is installed, as a condition: a version no installation provides
/// stops nothing, it is reported (members keep the version they run; new ones cannot start).
fn version_condition(cluster: &EtcdCluster, installs: &Installations) -> Condition {
    let version = &cluster.spec.version;
    let (ok, reason, message) = if installs.has(version) {
        (true, "Installed", format!("etcd {version} is installed"))
    } else {
        let message = format!(
            "spec.version {version}: no etcd of that version is installed here (installed: {}); give one with --etcd {version}=DIR",
            installs.describe()
        );
        (false, "VersionNotInstalled", message)
    };
    condition(types::VERSION_INSTALLED, ok, reason, message, cluster.metadata.generation)
}

/// How `local` runs besides its file and state directory.
#[derive(Debug, Default)]
pub struct Options {
    /// A new cluster starts from this backup.
    pub restore_from: Option<String>,
    /// Where each member's etcd comes from, by version.
    pub installs: Installations,
    /// Serve `/metrics` here.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Reconciles `file` into processes under `dir` until Ctrl-C (see [`Options`]).
pub async fn up(file: &Path, dir: &Path, options: Options) -> crate::error::Result<()> {
    let Options { restore_from, installs, metrics_listen } = options;
    let metrics = ClusterMetrics::default();
    if let Some(address) = metrics_listen {
        serve_metrics(address, &metrics).await?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut admission = Admission::open(dir);
    let admitted = admission.admit(load_cluster(file)?).cloned();
    // A denied edit keeps the spec accepted before; with none, it is a denied create.
    let mut cluster = match (admitted, admission.accepted()) {
        (Ok(admitted), _) => admitted,
        (Err(_), Some(accepted)) => accepted.clone(),
        (Err(denial), None) => {
            return Err(Error::State { path: file.to_owned(), reason: denial }.into());
        }
    };
    let name = cluster.metadata.name.clone().unwrap_or_else(|| "etcd".into());
    let tls_spec = &cluster.spec.security.tls;
    if tls_spec.enabled && !tls_spec.auto_tls {
        return Err(Error::State {
            path: file.to_owned(),
            reason: "local runs support autoTLS only".into(),
        }
        .into());
    }
    let exit_after = std::env::var(EXIT_AFTER_ENV).ok();
    let members = ProcessMembers::new(dir, tls_spec.enabled)
        .with_options(cluster.spec.options.clone())
        .with_installations(installs.clone())
        .with_peer_common_name(etcd_certs::cluster::peer_common_name(&name))
        .with_exit_after_stop(exit_after.as_deref() == Some("stop"));
    let tls = if tls_spec.enabled { Some(ensure_pki(&members, &cluster, &name)?) } else { None };
    let token = token(dir, &name)?;
    let pid_path = dir.join("operator.pid");
    write_atomically(&pid_path, std::process::id().to_string())?;
    let mut status = read_status(dir);
    tracing::info!(cluster = %name, dir = %dir.display(), "reconciling local cluster");
    if let Some(from) = restore_from.as_deref() {
        let target = target(&cluster, &name, &token, &installs);
        members.set_version(target.version.clone());
        restore_members(&members, &target, &installs, from).await?;
    }
    let mut reported_missing = None;
    loop {
        match load_cluster(file) {
            Ok(edited) => {
                if let Ok(admitted) = admission.admit(edited) {
                    cluster = admitted.clone();
                }
            }
            Err(err) => tracing::warn!(%err, "keeping the last valid spec"),
        }
        let target = target(&cluster, &name, &token, &installs);
        let installed = version_condition(&cluster, &installs);
        if installed.status == "False" && reported_missing.as_ref() != Some(&installed.message) {
            tracing::error!("{}", installed.message);
            reported_missing = Some(installed.message.clone());
        }
        members.set_version(target.version.clone());
        let conditions = [installed, admission.condition(cluster.metadata.generation)];
        let labels = ClusterLabels {
            namespace: cluster.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            cluster: name.clone(),
        };
        let observed = Observed { metrics: &metrics, labels: &labels, cluster: &cluster };
        let step =
            reconcile_step(&members, &target, tls.as_ref(), &mut status, dir, conditions, observed);
        let pause = match step.await {
            Ok(step) => {
                if exit_after.as_deref() == Some(step.kind()) {
                    tracing::warn!(
                        step = step.kind(),
                        "exiting after this step ({EXIT_AFTER_ENV})"
                    );
                    std::process::exit(EXIT_AFTER_CODE);
                }
                if matches!(step, Step::Done) {
                    Duration::from_secs(2)
                } else {
                    Duration::from_millis(300)
                }
            }
            Err(err) => {
                tracing::warn!(%err, "reconcile failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = crate::shutdown::signal() => {
                tracing::info!("stopping the operator; members keep running (`etcd-operator local down` stops them)");
                return Ok(());
            }
            () = edited_or_after(file, pause) => {}
        }
    }
}

/// Returns after `pause`, or as soon as `file` changes: an edit is acted on within 100 ms
/// even while the cluster idles between passes.
async fn edited_or_after(file: &Path, pause: Duration) {
    let modified = || std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let before = modified();
    let deadline = tokio::time::Instant::now() + pause;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if modified() != before {
            return;
        }
    }
}

/// Where a pass reports its figures.
struct Observed<'a> {
    metrics: &'a ClusterMetrics,
    labels: &'a ClusterLabels,
    cluster: &'a etcd_crds::EtcdCluster,
}

/// `/metrics` of this cluster at `address`, served until the process ends.
async fn serve_metrics(
    address: std::net::SocketAddr,
    metrics: &ClusterMetrics,
) -> crate::error::Result<()> {
    let served = std::sync::Arc::new(crate::server::Metrics::default());
    metrics.register(&mut served.registry.lock().unwrap_or_else(|p| p.into_inner()));
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|err| {
        crate::error::Error::BadArgument { flag: "--metrics-listen", reason: err.to_string() }
    })?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(crate::server::metrics::render).with_state(served));
    tracing::info!(%address, "serving /metrics");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "the /metrics server stopped");
        }
    });
    Ok(())
}

/// Observe, plan, write status, act: one pass.
async fn reconcile_step(
    members: &ProcessMembers,
    target: &Target,
    tls: Option<&ClientTls>,
    status: &mut EtcdClusterStatus,
    dir: &Path,
    conditions: [Condition; 2],
    observed: Observed<'_>,
) -> Result<Step, Error> {
    let Plan { step, status: mut next, voters, .. } = plan(members, target, tls, status).await?;
    for condition in conditions {
        set_condition(&mut next.conditions, condition);
    }
    let spec = &observed.cluster.spec;
    observed.metrics.observe(observed.labels, spec.size, &spec.version, &next);
    observed.metrics.step(observed.labels, step.kind());
    if next != *status {
        write_status(dir, &next)?;
        *status = next;
    }
    if !matches!(step, Step::Done | Step::Wait { .. }) {
        tracing::info!(step = step.kind(), "{step}");
    }
    act(members, &step, target, tls, &voters).await?;
    Ok(step)
}

/// `local down`: stops the operator reconciling `dir` (so it does not restart what is stopped),
/// then every member, keeping their data.
pub fn down(dir: &Path) -> Result<(), Error> {
    if !dir.join("members").exists() {
        return Err(Error::State {
            path: PathBuf::from(dir),
            reason: "no local cluster here".into(),
        });
    }
    let operator = std::fs::read_to_string(dir.join("operator.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    if let Some(pid) = operator.filter(|pid| process::is_live(*pid, "etcd-operator")) {
        // SAFETY: kill(2) on a pid recorded by `local` and checked to be an etcd-operator process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if !process::is_live(pid, "etcd-operator") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let members = ProcessMembers::new(dir, true);
    for name in members.running_now() {
        members.stop_now(&name)?;
    }
    Ok(())
}

/// Reads an EtcdCluster manifest (YAML or JSON), with errors that name the file and the problem.
pub fn load_cluster(path: &std::path::Path) -> crate::error::Result<etcd_crds::EtcdCluster> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| crate::error::Error::ReadFile { path: path.to_owned(), source })?;
    serde_yaml::from_str(&text).map_err(|source| crate::error::Error::ParseYaml {
        path: path.to_owned(),
        kind: "EtcdCluster",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_is_read_whole_while_it_is_rewritten() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let path = dir.path().join("ports.json");
        let contents = [vec![b'a'; 256 * 1024], vec![b'b'; 256 * 1024]];
        write_atomically(&path, &contents[0]).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..500 {
                    write_atomically(&path, &contents[i % 2]).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let read = std::fs::read(&path).unwrap();
                assert!(contents.contains(&read), "read {} bytes of a rewrite", read.len());
                reads += 1;
            }
            assert!(reads > 0);
        });
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the file itself: {left:?}");
    }
}
