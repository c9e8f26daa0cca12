//! etcd's own health, watched: its corruption checks are on, so a member whose data silently
//! differs from its peers' (a flipped byte on disk, with no checksum to notice it) refuses to
//! start instead of serving the wrong value (without the initial check it starts and answers
//! with what the disk says); and its alarms reach the cluster's status.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::local::{DISTRO_VERSION, Local, PATH_VERSION, distro_flag, release_flag};
use etcd_client::GetOptions;

const TIMEOUT: Duration = Duration::from_secs(90);
const INTACT: &[u8] = b"intact-3f9c2a71d04b8e65";
const BROKEN: &[u8] = b"broken-3f9c2a71d04b8e65";

/// Replaces every copy of `from` in `file` by `to` (same length); how many there were.
fn flip(file: &Path, from: &[u8], to: &[u8]) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let mut count = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(from.len()).position(|w| w == from) {
        let start = at + found;
        bytes[start..start + to.len()].copy_from_slice(to);
        count += 1;
        at = start + from.len();
    }
    std::fs::write(file, bytes).unwrap();
    count
}

fn pid_of(local: &Local, member: &str) -> Option<i32> {
    let pid =
        std::fs::read_to_string(local.state().join("members").join(member).join("pid")).ok()?;
    pid.trim().parse().ok()
}

/// A member is stopped, one value in its bbolt file changed, and `local` starts it again: it
/// must never serve the changed value, and its log must say the data differs from its peers.
///
/// Before 3.6 a restarting member learns its peers from its last snapshot (every
/// `snapshot-count` entries), and with none yet its check compares with nobody and passes; the
/// cluster here snapshots every 10 entries so that the check has peers on every version.
async fn a_member_with_silently_changed_data_never_serves_it(version: &str, args: &[&str]) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = "  options:\n    extraArgs:\n      snapshot-count: \"10\"\n";
    let mut local = Local::start_spec(version, 3, options, args);
    local.wait_running(3, TIMEOUT).await;
    let tls = local.tls();
    let endpoints: Vec<String> = (0..3).map(|i| local.client_url(&format!("it-{i}"))).collect();
    let mut client = etcd_operator::etcd::connect(&endpoints, Some(&tls)).await.unwrap();
    client.put("canary", INTACT, None).await.unwrap();
    for i in 0..30 {
        client.put(format!("filler-{i}"), "x", None).await.unwrap();
    }
    let victim = "it-2";
    let victim_url = local.client_url(victim);
    let mut direct = etcd_operator::etcd::connect(&[victim_url], Some(&tls)).await.unwrap();
    let serializable = || Some(GetOptions::new().with_serializable());
    let deadline = Instant::now() + TIMEOUT;
    while direct.get("canary", serializable()).await.unwrap().kvs().is_empty() {
        assert!(Instant::now() < deadline, "{victim} never applied the write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The operator away, so that nothing restarts the member while its file is changed.
    local.kill_operator();
    let pid = pid_of(&local, victim).expect("the member's pid");
    // SAFETY: kill(2) on the etcd process `local` started for this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    while etcd_operator::local::process::is_live(pid, "etcd") {
        assert!(Instant::now() < deadline, "{victim} did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let member_dir = local.state().join("members").join(victim);
    let db = member_dir.join("data/member/snap/db");
    assert!(flip(&db, INTACT, BROKEN) > 0, "the value is not in {}", db.display());

    local.run_operator(&[]);
    let watch_until = Instant::now() + Duration::from_secs(30);
    let mut refused = false;
    while Instant::now() < watch_until {
        if let Ok(mut direct) =
            etcd_operator::etcd::connect(&[local.client_url(victim)], Some(&tls)).await
            && let Ok(answer) = direct.get("canary", serializable()).await
        {
            let served = answer.kvs().first().map(|kv| kv.value().to_vec()).unwrap_or_default();
            let log = std::fs::read_to_string(member_dir.join("etcd.log")).unwrap_or_default();
            assert_ne!(
                served, BROKEN,
                "{victim} started on data that differs from its peers and served it; its log:\n{log}"
            );
        }
        let log = std::fs::read_to_string(member_dir.join("etcd.log")).unwrap_or_default();
        if log.contains("data inconsistency with peers") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused, "{victim}'s etcd did not report the inconsistency");
    // The others still hold the value that was written.
    let mut survivor = etcd_operator::etcd::connect(&endpoints[..1], Some(&tls)).await.unwrap();
    let intact = survivor.get("canary", None).await.unwrap();
    assert_eq!(intact.kvs()[0].value(), INTACT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_data_is_refused_on_3_4() {
    a_member_with_silently_changed_data_never_serves_it(PATH_VERSION, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_data_is_refused_on_3_5_1() {
    let flag = distro_flag();
    a_member_with_silently_changed_data_never_serves_it(DISTRO_VERSION, &["--etcd", &flag]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_data_is_refused_on_3_5_36() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/go-bin/etcd-3.5");
    a_member_with_silently_changed_data_never_serves_it(
        "3.5.36",
        &[&format!("--etcd=3.5.36={}", dir.display())],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_data_is_refused_on_3_6_17() {
    a_member_with_silently_changed_data_never_serves_it("3.6.17", &[&release_flag("3.6.17")]).await;
}

/// A cluster that fills its backend quota: etcd raises NOSPACE and refuses writes, and the
/// status says so and what to do (before, nothing in the status changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_is_reported_as_etcds_nospace_alarm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = "  options:\n    quotaBackendBytes: 4194304\n";
    let local = Local::start_spec(PATH_VERSION, 1, options, &[]);
    local.wait_running(1, TIMEOUT).await;
    let endpoint = local.client_url("it-0");
    let mut client = etcd_operator::etcd::connect(&[endpoint], Some(&local.tls())).await.unwrap();
    let value = vec![b'x'; 256 * 1024];
    let mut refused = None;
    for i in 0..64 {
        if let Err(err) = client.put(format!("fill-{i}"), value.clone(), None).await {
            refused = Some(err.to_string());
            break;
        }
    }
    let refused = refused.expect("a 4 MiB quota refuses 16 MiB of writes");
    assert!(refused.contains("database space exceeded"), "{refused}");
    let deadline = Instant::now() + TIMEOUT;
    let alarm = loop {
        let status = local.status();
        if let Some(c) = status.conditions.iter().find(|c| c.type_ == "EtcdAlarms") {
            break c.clone();
        }
        assert!(Instant::now() < deadline, "no alarm in the status: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((alarm.status.as_str(), alarm.reason.as_str()), ("True", "NOSPACE"));
    assert!(alarm.message.starts_with("NOSPACE on it-0: "), "{}", alarm.message);
    assert!(alarm.message.contains("etcdctl alarm disarm"), "{}", alarm.message);
}
