//! Quorum loss in `local` on real etcd: two of three members lose their data and their process,
//! under a writer. The cluster is Failed with the story in a condition; with `Manual` nothing
//! changes until a person approves this very loss, with `Automatic` no person is needed; then
//! the survivor is restarted alone with `--force-new-cluster`, the cluster grows back to three
//! learner-first, keeps its cluster ID, and every acknowledged write is there; clients of the
//! survivor saw a linearizable history throughout. The lost member
//! that comes back afterwards with its old data is refused by etcd and stops.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::etcd::free_port;
use crate::support::history::{self, Recorder, Targets};
use crate::support::local::{Local, Writer, assert_all_present};
use etcd_crds::{ClusterPhase, EtcdClusterStatus};
use etcd_operator::local::process::is_live;
use etcd_operator::local::{EXIT_AFTER_CODE, EXIT_AFTER_ENV};

fn quorum_lost(status: &EtcdClusterStatus) -> Option<String> {
    let condition = status.conditions.iter().find(|c| c.type_ == "QuorumLost")?;
    (condition.status == "True").then(|| condition.message.clone())
}

fn pid(local: &Local, name: &str) -> Option<i32> {
    let path = local.state().join("members").join(name).join("pid");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes the cluster file with a recovery policy and, when given, an approval.
fn write_cluster(local: &Local, policy: &str, approval: Option<&str>) {
    let annotations = approval
        .map(|token| format!("  annotations:\n    etcd.etcd.io/approve-recovery: \"{token}\"\n"))
        .unwrap_or_default();
    let yaml = format!(
        "apiVersion: etcd.etcd.io/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: it\n  namespace: default\n{annotations}spec:\n  size: 3\n  version: {}\n  recovery:\n    policy: {policy}\n    quorumLossAfterSeconds: 3\n",
        local.version
    );
    std::fs::write(&local.file, yaml).unwrap();
}

async fn two_of_three_lost(policy: &str, interrupted: bool) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut local = Local::start(3);
    write_cluster(&local, policy, None);
    let before = local.wait_running(3, Duration::from_secs(60)).await;
    let writer = Writer::start(before.client_endpoints.clone(), local.tls());
    // Clients of the survivor, through the loss and the forced restart: what they saw stays
    // linearizable (calls that failed while it had no quorum count as unknown).
    let recorder = Recorder::start(3, Targets::one(vec![local.client_url("it-0")], local.tls()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // it-1 and it-2 lose their data, then their process. it-1's data is kept aside: it comes
    // back later, as a disk that reappears would.
    if interrupted {
        // The operator dies inside the recovery: right after it stopped the survivor, before
        // it started it alone (a crash, or a leader whose lease lapsed).
        local.kill_operator();
        local.run_operator(&[(EXIT_AFTER_ENV, "stop")]);
    }
    let old_it1 = local.dir.path().join("old-it-1");
    std::fs::create_dir_all(&old_it1).unwrap();
    let it1 = local.state().join("members").join("it-1");
    std::fs::copy(it1.join("etcd.conf.yaml"), old_it1.join("etcd.conf.yaml")).unwrap();
    for name in ["it-1", "it-2"] {
        let pid = pid(&local, name).unwrap();
        let data = local.state().join("members").join(name).join("data");
        if name == "it-1" {
            std::fs::rename(&data, old_it1.join("data")).unwrap();
        } else {
            std::fs::remove_dir_all(data).unwrap();
        }
        // SAFETY: kill(2) on the pid of an etcd process this test's operator started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let survivor = pid(&local, "it-0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let status = local.status();
        if let Some(message) = quorum_lost(&status) {
            if policy == "Manual" {
                assert_eq!(status.phase, Some(ClusterPhase::Failed), "{message}");
            }
            break message;
        }
        assert!(Instant::now() < deadline, "no quorum loss reported: {status:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(failed.contains("lost: it-1, it-2"), "{failed}");
    assert!(failed.contains("keeps it-0"), "{failed}");

    if policy == "Manual" {
        let token = failed.split("approve-recovery=").nth(1).unwrap().trim().to_owned();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let waiting = local.status();
        assert_eq!(waiting.phase, Some(ClusterPhase::Failed), "nothing happens unapproved");
        assert_eq!(pid(&local, "it-0"), Some(survivor), "the survivor was not touched");
        for name in ["it-1", "it-2"] {
            assert!(pid(&local, name).is_none_or(|p| !is_live(p, "etcd")), "{name} stays down");
        }
        // Approving another loss does nothing either.
        write_cluster(&local, policy, Some("0-1"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(local.status().phase, Some(ClusterPhase::Failed));
        write_cluster(&local, policy, Some(&token));
    }

    if interrupted {
        let code = local.wait_operator_exit(Duration::from_secs(60));
        assert_eq!(code, Some(EXIT_AFTER_CODE), "the operator did not stop the survivor");
        assert!(pid(&local, "it-0").is_none_or(|p| !is_live(p, "etcd")), "it-0 was stopped");
        local.run_operator(&[]);
    }
    let after = local.wait_running(3, Duration::from_secs(90)).await;
    let (keys, _) = writer.finish().await;
    assert_eq!(after.cluster_id, before.cluster_id, "recovered in place: same cluster ID");
    assert!(quorum_lost(&after).is_none(), "{:#?}", after.conditions);
    assert_all_present(&after.client_endpoints, &local.tls(), &keys).await;
    let history = local.state().join(format!("history-{policy}.jsonl"));
    history::assert_linearizable(recorder, &history, 50).await;
    let log = local.operator_log();
    assert!(log.contains("--force-new-cluster"), "{log}");
    lost_member_comes_back(&local, &old_it1, &after).await;
}

/// The lost it-1 comes back with its old data (on ports of its own: the new it-1 has its
/// ports). The recovered cluster forgot its member ID, so it is refused and stops; the cluster
/// keeps its three members and its data.
async fn lost_member_comes_back(local: &Local, old: &Path, recovered: &EtcdClusterStatus) {
    let config = std::fs::read_to_string(old.join("etcd.conf.yaml")).unwrap();
    let mut config: serde_yaml::Mapping = serde_yaml::from_str(&config).unwrap();
    let (client, peer) = (free_port(), free_port());
    let set = |config: &mut serde_yaml::Mapping, key: &str, value: String| {
        config.insert(key.into(), value.into());
    };
    set(&mut config, "data-dir", old.join("data").display().to_string());
    set(&mut config, "listen-client-urls", format!("https://127.0.0.1:{client}"));
    set(&mut config, "advertise-client-urls", format!("https://127.0.0.1:{client}"));
    set(&mut config, "listen-peer-urls", format!("https://127.0.0.1:{peer}"));
    std::fs::write(old.join("etcd.conf.yaml"), serde_yaml::to_string(&config).unwrap()).unwrap();
    let log = std::fs::File::create(old.join("etcd.log")).unwrap();
    let mut etcd = std::process::Command::new("etcd")
        .arg(format!("--config-file={}", old.join("etcd.conf.yaml").display()))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = etcd.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = etcd.kill();
            let log = std::fs::read_to_string(old.join("etcd.log")).unwrap_or_default();
            panic!("the old it-1 was not refused in 30 s:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(old.join("etcd.log")).unwrap_or_default();
    // etcd's own words, and it stops (with status 0: it was told, not crashed).
    assert!(log.contains("the member has been permanently removed"), "{exited}: {log}");
    let now = local.status();
    assert_eq!(now.phase, Some(ClusterPhase::Running));
    let ids = |s: &EtcdClusterStatus| s.members.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&now), ids(recovered), "the membership is what recovery made");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_manual_recovery_a_lost_quorum_waits_for_approval_of_this_loss() {
    two_of_three_lost("Manual", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_automatic_recovery_a_lost_quorum_comes_back_by_itself() {
    two_of_three_lost("Automatic", false).await;
}

/// Forcing a new cluster stops the survivor, then starts it alone: an operator that dies
/// between the two finishes the force once it runs again (it used to wait for the survivor to
/// answer, which nothing would start).
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_between_stopping_the_survivor_and_forcing_it_finishes_the_recovery() {
    two_of_three_lost("Automatic", true).await;
}

/// The only survivor lagged behind what a quorum committed (its process stopped while the other
/// two went on writing, then those two were lost with their disks). Forcing it would drop those
/// writes, so even under `Automatic` recovery waits for a person, naming how far behind it is.
/// (Before the operator recorded the highest commit index it saw, it forced it-0 at once.)
#[tokio::test(flavor = "multi_thread")]
async fn a_survivor_behind_what_was_committed_is_not_forced_automatically() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let local = Local::start(3);
    write_cluster(&local, "Automatic", None);
    local.wait_running(3, Duration::from_secs(60)).await;
    let behind = pid(&local, "it-0").unwrap();
    // SAFETY: kill(2) on the pid of an etcd process this test's operator started.
    unsafe { libc::kill(behind, libc::SIGSTOP) };
    let recorded = |local: &Local| local.status().highest_committed_index.unwrap_or(0);
    let before = recorded(&local);
    let mut client = etcd_operator::etcd::connect(&[local.client_url("it-1")], Some(&local.tls()))
        .await
        .unwrap();
    // More than the kernel buffers for the stopped it-0 (its sockets take what the leader sends
    // while it sleeps, and it would catch up from them): 200 values of 256 KiB. If it-0 led, the
    // others elect a leader first, and a put may fail until then.
    let value = vec![b'v'; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    while written < 200 {
        assert!(Instant::now() < deadline, "it-1 and it-2 took no writes");
        if client.put(format!("late-{written}"), value.clone(), None).await.is_ok() {
            written += 1;
        }
    }
    while recorded(&local) < before + 200 {
        assert!(Instant::now() < deadline, "the operator never saw the new commits");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["it-1", "it-2"] {
        let pid = pid(&local, name).unwrap();
        std::fs::remove_dir_all(local.state().join("members").join(name).join("data")).unwrap();
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // SAFETY: as above.
    unsafe { libc::kill(behind, libc::SIGCONT) };

    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let status = local.status();
        if let Some(message) = quorum_lost(&status).filter(|m| m.contains("raft entries behind")) {
            break message;
        }
        assert_eq!(pid(&local, "it-0"), Some(behind), "it-0 was restarted: {status:#?}");
        assert!(Instant::now() < deadline, "no quorum loss reported: {status:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(message.contains("it-0 is") && message.contains("approve-recovery="), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = local.status();
    assert_eq!(status.phase, Some(ClusterPhase::Failed), "{status:#?}");
    assert_eq!(pid(&local, "it-0"), Some(behind), "nothing was forced");
    assert!(!local.operator_log().contains("--force-new-cluster"), "nothing was forced");
}
