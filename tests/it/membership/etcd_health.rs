//! etcd's own health, watched: its corruption checks are on, so a member whose data silently
//! differs from its peers' (a flipped byte on disk, with no checksum to notice it) refuses to
//! start instead of serving the wrong value (without the initial check it starts and answers
//! with what the disk says); and its alarms reach the cluster's status.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::local::{
    DISTRO_VERSION, Local, PATH_VERSION, Writer, assert_all_present, distro_flag, release_flag,
};
use etcd_client::GetOptions;
use etcd_crds::EtcdClusterStatus;

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

/// Changes every copy of `from` in the file of a running member by writing over those bytes
/// in place (its backend is mapped in memory: a truncated file would crash it, not corrupt it);
/// how many there were.
fn flip_in_place(file: &Path, from: &[u8], to: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(file).unwrap();
    let open = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let mut count = 0;
    for (at, window) in bytes.windows(from.len()).enumerate() {
        if window == from {
            open.write_all_at(to, at as u64).unwrap();
            count += 1;
        }
    }
    open.sync_all().unwrap();
    count
}

/// The canary as `member` alone holds it (a serializable read).
async fn canary_of(local: &Local, member: &str) -> Vec<u8> {
    let url = local.client_url(member);
    let mut direct = etcd_operator::etcd::connect(&[url], Some(&local.tls())).await.unwrap();
    let answer = direct.get("canary", Some(GetOptions::new().with_serializable())).await.unwrap();
    answer.kvs().first().map(|kv| kv.value().to_vec()).unwrap_or_default()
}

/// Writes the canary, then rewrites it on `victim`'s disk under its running etcd, which then
/// serves the changed value. Later revisions fill the pages after the canary's first: a write
/// appends to the last page of the key bucket, rewriting it from the write's own copy, so a
/// change to that page would be undone by the next write; one in an earlier page stays.
async fn rewrite_under_a_running_member(local: &Local, victim: &str) {
    let endpoints: Vec<String> = (0..3).map(|i| local.client_url(&format!("it-{i}"))).collect();
    let mut client = etcd_operator::etcd::connect(&endpoints, Some(&local.tls())).await.unwrap();
    client.put("canary", INTACT, None).await.unwrap();
    for i in 0..300 {
        client.put(format!("filler-{i:03}"), vec![b'f'; 64], None).await.unwrap();
    }
    let deadline = Instant::now() + TIMEOUT;
    while canary_of(local, victim).await != INTACT {
        assert!(Instant::now() < deadline, "{victim} never applied the write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // In the backend file once the batch holding it is committed (every 100 ms).
    let db = local.state().join("members").join(victim).join("data/member/snap/db");
    while !std::fs::read(&db).unwrap().windows(INTACT.len()).any(|w| w == INTACT) {
        assert!(Instant::now() < deadline, "the value never reached {}", db.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(flip_in_place(&db, INTACT, BROKEN) > 0);
    assert_eq!(canary_of(local, victim).await, BROKEN, "{victim} serves what its disk says");
}

const VICTIM: &str = "it-2";

/// A three-member cluster under a writer, and the canary rewritten under `VICTIM`'s running
/// etcd: the status before, the endpoints and the writer.
async fn a_rewritten_member(local: &Local) -> (EtcdClusterStatus, Vec<String>, Writer) {
    let before = local.wait_running(3, TIMEOUT).await;
    let endpoints: Vec<String> = (0..3).map(|i| local.client_url(&format!("it-{i}"))).collect();
    let writer = Writer::start(endpoints.clone(), local.tls());
    rewrite_under_a_running_member(local, VICTIM).await;
    (before, endpoints, writer)
}

fn id_of(status: &EtcdClusterStatus, name: &str) -> Option<String> {
    status.members.iter().find(|m| m.name == name).and_then(|m| m.id.clone())
}

/// Until `VICTIM` is back under a new ID with every member ready and `mended` holds, a quorum
/// ready throughout; then the others kept their IDs, the canary is intact again and every
/// write the writer had acknowledged is there: how many.
async fn replaced_from_the_others(
    local: &Local,
    before: &EtcdClusterStatus,
    endpoints: &[String],
    writer: Writer,
    mended: impl AsyncFn(&EtcdClusterStatus) -> bool,
) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    let after = loop {
        let status = local.status();
        let replaced = id_of(&status, VICTIM).is_some_and(|now| Some(now) != id_of(before, VICTIM));
        if replaced && status.ready_replicas == 3 && mended(&status).await {
            break status;
        }
        assert!(status.ready_replicas >= 2, "fewer than a quorum ready: {status:#?}");
        assert!(Instant::now() < deadline, "not replaced: {status:#?}\n{}", local.operator_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for other in ["it-0", "it-1"] {
        assert_eq!(id_of(&after, other), id_of(before, other), "{other} was left alone");
    }
    assert_eq!(canary_of(local, VICTIM).await, INTACT);
    let (acknowledged, _) = writer.finish().await;
    assert_all_present(endpoints, &local.tls(), &acknowledged).await;
    acknowledged.len()
}

/// A running member's data changes under it (a value rewritten on disk, as failing storage or
/// a stray write would: no checksum notices, and etcd's own checks run at start or after a
/// compaction only). It serves the wrong value; the operator's check finds its hash differs
/// from the two others' at one revision, says so in DataConsistent, and replaces it from the
/// others: removed, its data wiped, added back as a learner and promoted, the others untouched.
/// Afterwards it serves what was written, every acknowledged write is there, and the check
/// finds the voters agree. Before, nothing noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_changed_under_it_is_found_and_replaced() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let spec = "  maintenance:\n    consistencyCheckSeconds: 3\n";
    let local = Local::start_spec(PATH_VERSION, 3, spec, &[]);
    let (before, endpoints, writer) = a_rewritten_member(&local).await;
    let deadline = Instant::now() + TIMEOUT;
    let consistent = |status: &EtcdClusterStatus| {
        status.conditions.iter().find(|c| c.type_ == "DataConsistent").cloned()
    };
    let found = loop {
        let status = local.status();
        if let Some(c) = consistent(&status).filter(|c| c.status == "False") {
            break c.message;
        }
        assert!(Instant::now() < deadline, "not found: {status:#?}\n{}", local.operator_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(found.starts_with("it-2 holds other data than a quorum of voters"), "{found}");
    let agree =
        async |status: &EtcdClusterStatus| consistent(status).is_some_and(|c| c.status == "True");
    let acknowledged = replaced_from_the_others(&local, &before, &endpoints, writer, agree).await;
    println!("found: {found}; writes acknowledged {acknowledged}");
}

/// etcd's own compaction check (3.5.5 and later) finds a follower's hash at the compacted
/// revision differs from the leader's and raises CORRUPT — for no member in particular (ID 0) —
/// and the cluster refuses writes. With the operator's periodic check off, the alarm alone
/// has it hash the voters, replace the one that differs and disarm: writes are accepted again,
/// the changed value is gone, every acknowledged write is there. Before, a person had to find
/// the member, replace it and disarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_corrupt_alarm_is_mended_without_a_person() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/go-bin/etcd-3.5");
    let spec = "  maintenance:\n    consistencyCheckSeconds: 0\n  options:\n    extraArgs:\n      experimental-compact-hash-check-time: \"1000000000\"\n";
    let flag = format!("--etcd=3.5.36={}", dir.display());
    let local = Local::start_spec("3.5.36", 3, spec, &[&flag]);
    let (before, endpoints, writer) = a_rewritten_member(&local).await;
    let mut client = etcd_operator::etcd::connect(&endpoints, Some(&local.tls())).await.unwrap();
    let revision = etcd_operator::etcd::revision(&mut client).await.unwrap();
    client.compact(revision, None).await.unwrap();

    let deadline = Instant::now() + TIMEOUT;
    // Writes are refused (reads are served from the backend as it is).
    let refused = loop {
        match client.put("probe", "x", None).await {
            Err(err) if err.to_string().contains("corrupt") => break err.to_string(),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no CORRUPT: {:#?}", local.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let writable = async |_: &EtcdClusterStatus| {
        let mut client = client.clone();
        client.put("probe", "x", None).await.is_ok()
    };
    let acknowledged =
        replaced_from_the_others(&local, &before, &endpoints, writer, writable).await;
    let log = local.operator_log();
    assert!(
        log.contains("CORRUPT: the voters' data agree again; disarming the alarm of 0"),
        "the alarm disarmed by the operator:\n{log}"
    );
    println!("refused: {refused}; writes acknowledged {acknowledged}");
}

/// Puts `value` under `key` until etcd refuses for lack of space; the error.
async fn fill(client: &mut etcd_client::Client, key: impl Fn(usize) -> String) -> String {
    let value = vec![b'x'; 256 * 1024];
    for i in 0..200 {
        if let Err(err) = client.put(key(i), value.clone(), None).await {
            return err.to_string();
        }
    }
    panic!("a 4 MiB quota accepted 50 MiB of writes");
}

/// Until a small put is accepted again (NOSPACE disarmed), sampling that a quorum stays ready.
async fn until_writable(local: &Local, client: &mut etcd_client::Client, least_ready: i32) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if client.put("probe", "x", None).await.is_ok() {
            return;
        }
        let status = local.status();
        assert!(status.ready_replicas >= least_ready, "fewer than a quorum ready: {status:#?}");
        assert!(
            Instant::now() < deadline,
            "still not writable: {status:#?}\n{}",
            local.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A cluster that fills its backend quota with history (one key overwritten, no compaction):
/// etcd raises NOSPACE and refuses every write. Without a person, the operator compacts,
/// defragments the followers, then the leader after handing leadership over, and disarms:
/// writes are accepted again, a quorum ready throughout, every acknowledged write kept, the
/// alarm reported while it lasted. Before, the cluster stayed read-only until a person came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_is_freed_and_disarmed_without_a_person() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = "  options:\n    quotaBackendBytes: 4194304\n";
    let local = Local::start_spec(PATH_VERSION, 3, options, &[]);
    local.wait_running(3, TIMEOUT).await;
    let endpoints: Vec<String> = (0..3).map(|i| local.client_url(&format!("it-{i}"))).collect();
    let writer = Writer::start(endpoints.clone(), local.tls());
    let mut client = etcd_operator::etcd::connect(&endpoints, Some(&local.tls())).await.unwrap();
    let refused = fill(&mut client, |_| "history".to_owned()).await;
    assert!(refused.contains("database space exceeded"), "{refused}");
    let full = Instant::now();
    until_writable(&local, &mut client, 2).await;
    let freed_in = full.elapsed();
    let (acknowledged, _) = writer.finish().await;
    assert_all_present(&endpoints, &local.tls(), &acknowledged).await;

    // Followers first, the leader last and only after it handed leadership over.
    let log = local.operator_log();
    let defragmented: Vec<String> = log
        .lines()
        .filter_map(|l| l.split("NOSPACE: defragmenting ").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .map(str::to_owned)
        .collect();
    let mut distinct = defragmented.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "each member defragmented once, one at a time: {defragmented:?}\n{log}"
    );
    let first_disarm = log.find("NOSPACE: space freed").expect("the alarm disarmed");
    let last_defrag = log.rfind("NOSPACE: defragmenting").unwrap();
    assert!(last_defrag < first_disarm, "disarmed before every member was defragmented\n{log}");
    let moved = log.find("moving leadership").expect("the leader handed over before its turn");
    assert!(moved < last_defrag, "the leader was defragmented before handing over\n{log}");
    // The status the next pass writes says so.
    let deadline = Instant::now() + TIMEOUT;
    while let Some(alarm) = local
        .status()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "EtcdAlarms" && c.status == "True")
    {
        assert!(Instant::now() < deadline, "the alarm stays in the status: {alarm:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("writable again {freed_in:?} after NOSPACE (4 MiB quota, 3 members)");
}

/// Data that truly exceeds the quota (live keys, nothing to compact) is said to, naming
/// quotaBackendBytes and the size, instead of being defragmented and disarmed in a loop; once
/// keys are deleted (deletes are accepted under NOSPACE), the cluster frees space by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_quota_is_reported_until_keys_are_deleted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = "  options:\n    quotaBackendBytes: 4194304\n";
    let local = Local::start_spec(PATH_VERSION, 1, options, &[]);
    local.wait_running(1, TIMEOUT).await;
    let endpoint = local.client_url("it-0");
    let mut client = etcd_operator::etcd::connect(&[endpoint], Some(&local.tls())).await.unwrap();
    let refused = fill(&mut client, |i| format!("fill-{i:03}")).await;
    assert!(refused.contains("database space exceeded"), "{refused}");
    let deadline = Instant::now() + TIMEOUT;
    let said = loop {
        let status = local.status();
        let progressing = status.conditions.iter().find(|c| c.type_ == "Progressing");
        if let Some(c) = progressing.filter(|c| c.message.contains("quotaBackendBytes")) {
            break c.message.clone();
        }
        assert!(Instant::now() < deadline, "not reported: {status:#?}\n{}", local.operator_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(said.contains("quotaBackendBytes (4194304)") && said.contains("delete keys"), "{said}");
    let alarms = local.status().conditions.into_iter().find(|c| c.type_ == "EtcdAlarms");
    assert_eq!(
        alarms.map(|c| c.reason),
        Some("NOSPACE".to_owned()),
        "the alarm stays: nothing was disarmed"
    );
    client.delete("fill-", Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
    until_writable(&local, &mut client, 1).await;
}
