//! Backups and restores against real parts: a 3-member etcd with mutual TLS holding thousands of
//! keys, a real S3-compatible server (moto_server) and a local directory. Every key comes back;
//! a corrupted object, or a store that goes away mid-upload, never passes for a backup.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::etcd::{
    Cluster, Member, fill, free_port, initial_cluster, issue_pki, loopback_members, start_restored,
    start_tls_cluster,
};
use crate::support::s3::{CuttingProxy, Moto, options_for};
use etcd_client::{Client, ConnectOptions, GetOptions};
use etcd_crds::{BackupRecord, Compression};
use etcd_operator::backup::restore::{MemberSpec, restore};
use etcd_operator::backup::{Location, retention, save::save};
use etcd_operator::etcd::ClientTls;

const BIN: &str = env!("CARGO_BIN_EXE_etcd-operator");

fn tls(pki: &Path) -> ClientTls {
    ClientTls::from_files(&pki.join("ca.crt"), &pki.join("client.crt"), &pki.join("client.key"))
        .unwrap()
}

async fn tls_client(cluster: &Cluster, pki: &Path) -> Client {
    etcd_operator::etcd::connect(&cluster.client_urls(), Some(&tls(pki))).await.unwrap()
}

/// A real 1- or 3-member etcd with mutual TLS, filled with `count` keys of `value_len`
/// incompressible bytes: what each test backs up.
struct Source {
    work: tempfile::TempDir,
    pki: std::path::PathBuf,
    cluster: Cluster,
    written: BTreeMap<String, Vec<u8>>,
}

impl Source {
    async fn start(size: usize, count: usize, value_len: usize) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let work = tempfile::tempdir().unwrap();
        let pki = work.path().join("pki");
        issue_pki(&pki, "source");
        let cluster = start_tls_cluster(size, &pki, work.path());
        let mut client = tls_client(&cluster, &pki).await;
        let written = fill(&mut client, "/data/", 0..count, value_len).await;
        Self { work, pki, cluster, written }
    }
}

async fn read_all(endpoint: &str) -> BTreeMap<String, Vec<u8>> {
    let options = ConnectOptions::new().with_timeout(std::time::Duration::from_secs(10));
    let mut client = Client::connect([endpoint], Some(options)).await.unwrap();
    let response = client.get("/data/", Some(GetOptions::new().with_prefix())).await.unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_owned(), kv.value().to_vec()))
        .collect()
}

/// Starts one member on a data directory a restore wrote and checks it holds `written`.
async fn assert_restored(
    name: &str,
    peer_url: String,
    data_dir: std::path::PathBuf,
    dir: &Path,
    written: &BTreeMap<String, Vec<u8>>,
) {
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let member = Member { name: name.to_owned(), client_url, peer_url, data_dir };
    let restored = start_restored(vec![member], dir);
    assert_eq!(&read_all(&restored.client_urls()[0]).await, written);
}

/// A cluster of `size` members restored from `from` into `dir`, started without TLS.
async fn restore_cluster(from: &Location, size: usize, dir: &Path) -> Cluster {
    let members = loopback_members("r", "http", size, dir);
    let initial = initial_cluster(&members);
    for member in &members {
        let spec = MemberSpec {
            name: member.name.clone(),
            initial_cluster: initial.clone(),
            peer_url: member.peer_url.clone(),
            cluster_token: "restored".to_owned(),
            data_dir: member.data_dir.clone(),
            tools: None,
        };
        restore(from, None, &spec, None, u64::MAX).await.unwrap();
    }
    start_restored(members, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_backup_to_s3_and_restore_brings_back_every_key() {
    let source = Source::start(3, 5000, 64).await;
    let (work, pki, cluster) = (&source.work, &source.pki, &source.cluster);
    let written = source.written.clone();
    let moto = Moto::start("backups");

    let location = "s3://backups/prod/source.db.zst";
    let file = |name: &str| pki.join(name).display().to_string();
    let out = Command::new(BIN)
        .args(["backup", "--endpoints", &cluster.client_urls().join(",")])
        .args(["--cacert", &file("ca.crt"), "--cert", &file("client.crt")])
        .args(["--key", &file("client.key"), "--to", location])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    let record: BackupRecord = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record.location, location);
    assert_eq!(record.compression, Compression::Zstd);
    assert_eq!(record.sha256.len(), 64, "{record:?}");
    assert!(record.revision >= 40, "5000 keys in 40 transactions: {record:?}");
    assert!(record.size > 5000 * 64, "incompressible values: {record:?}");

    // The CLI restore of one member, verified against the manifest the backup wrote.
    let peer = format!("http://127.0.0.1:{}", free_port());
    let data_dir = work.path().join("restored");
    let out = Command::new(BIN)
        .args(["restore", "--from", location, "--data-dir", data_dir.to_str().unwrap()])
        .args(["--name", "r0", "--initial-cluster", &format!("r0={peer}")])
        .args(["--initial-advertise-peer-urls", &peer])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_restored("r0", peer, data_dir, work.path(), &written).await;

    // The same object restored by the library into a new 3-member cluster.
    let from = Location::parse(location, &moto.options()).unwrap();
    let three = restore_cluster(&from, 3, &work.path().join("three")).await;
    for endpoint in three.client_urls() {
        assert_eq!(read_all(&endpoint).await, written, "member {endpoint}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_backup_restores_and_one_changed_byte_is_refused() {
    let source = Source::start(1, 2000, 100).await;
    let (work, pki, cluster) = (&source.work, &source.pki, &source.cluster);
    let written = source.written.clone();

    let dir = work.path().join("backups");
    let to =
        Location::parse(&dir.join("snap.db.gz").display().to_string(), &BTreeMap::new()).unwrap();
    let record =
        save(&cluster.client_urls(), Some(&tls(pki)), &to, Compression::Gzip, None).await.unwrap();
    let object = dir.join("snap.db.gz");
    assert_eq!(std::fs::metadata(&object).unwrap().len(), record.size as u64);
    let listed =
        retention::list(&Location::parse(dir.to_str().unwrap(), &BTreeMap::new()).unwrap())
            .await
            .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record, record);

    let good = restore_cluster(&to, 1, &work.path().join("good")).await;
    assert_eq!(read_all(&good.client_urls()[0]).await, written);

    // One byte changed in the middle of the stored object.
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let data_dir = work.path().join("bad").join("r0");
    let member = MemberSpec {
        name: "r0".into(),
        initial_cluster: "r0=http://127.0.0.1:1".into(),
        peer_url: "http://127.0.0.1:1".into(),
        cluster_token: "t".into(),
        data_dir: data_dir.clone(),
        tools: None,
    };
    let err = restore(&to, None, &member, None, u64::MAX).await.unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&record.sha256), "names the expected checksum: {err}");
    assert!(!data_dir.exists(), "nothing may be restored from a corrupt object");
    let leftovers: Vec<_> = std::fs::read_dir(work.path().join("bad")).unwrap().collect();
    assert!(leftovers.is_empty(), "no work files are left behind: {leftovers:?}");

    // The same refusal from the CLI, with a checksum given by hand and no manifest needed.
    let out = Command::new(BIN)
        .args(["restore", "--from", object.to_str().unwrap(), "--sha256", &record.sha256])
        .args(["--data-dir", data_dir.to_str().unwrap(), "--name", "r0"])
        .args(["--initial-cluster", "r0=http://127.0.0.1:1"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!data_dir.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_gone_mid_upload_fails_the_run_and_records_nothing() {
    // About 20 MiB of incompressible data: a multipart upload of 8 MiB parts. The proxy lets the
    // first part through, then the store is gone in the middle of the second.
    let source = Source::start(1, 20_000, 1024).await;
    let (pki, cluster) = (&source.pki, &source.cluster);
    let moto = Moto::start("backups");
    let proxy = CuttingProxy::start(&moto.endpoint, 10 * 1024 * 1024);

    let through_proxy = options_for(&proxy.endpoint);
    let to = Location::parse("s3://backups/cut/snap.db", &through_proxy).unwrap();
    let result = save(&cluster.client_urls(), Some(&tls(pki)), &to, Compression::None, None).await;
    let err = result.expect_err("the upload cannot complete").to_string();
    assert!(err.contains("cannot upload the snapshot to s3://backups/cut/snap.db"), "{err}");
    assert!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst), "the proxy cut the upload");

    // Straight to moto: no object, no manifest, nothing listed as a backup.
    let direct = Location::parse("s3://backups/cut", &moto.options()).unwrap();
    assert!(retention::list(&direct).await.unwrap().is_empty());
    let object = direct.child("snap.db");
    use object_store::ObjectStoreExt;
    assert!(matches!(
        object.store.head(&object.path).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_driven_by_a_test_clock_keeps_exactly_the_newest_n() {
    use etcd_operator::backup::job::{Job, object_name};
    use etcd_operator::backup::schedule::Schedule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::{Timestamp, ToSpan};

    let source = Source::start(1, 200, 32).await;
    let (pki, cluster) = (&source.pki, &source.cluster);
    let moto = Moto::start("backups");
    const RETENTION: usize = 3;
    let mut job = Job {
        cluster: "main".into(),
        endpoints: cluster.client_urls(),
        tls: Some(tls(pki)),
        prefix: Location::parse("s3://backups/ns/main-hourly", &moto.options()).unwrap(),
        compression: Compression::Zstd,
        retention: RETENTION,
        key: None,
        max_snapshot_bytes: etcd_operator::backup::fetch::snapshot_bound(0),
        recorded: Vec::new(),
    };
    let schedule = Schedule::parse("0 * * * *", None).unwrap();

    // The clock ticks every 20 minutes for a little over N+3 hours: N+3 runs fall due.
    let start: Timestamp = "2026-11-24T00:00:00Z".parse().unwrap();
    let mut last = start;
    let mut runs = Vec::new();
    for tick in 1..=((RETENTION + 3) * 3) {
        let now = start + (20 * tick as i64).minutes();
        if let Some(due) = schedule.due(last, now) {
            let outcome = job.run(due).await.unwrap();
            assert!(outcome.kept.len() <= RETENTION);
            // What the controller writes to the EtcdBackup's status, and reads back next run.
            job.recorded = outcome.kept.into_iter().map(|s| s.record).collect();
            runs.push(due);
            last = due;
        }
    }
    assert_eq!(runs.len(), RETENTION + 3, "one run per hour: {runs:?}");

    let kept = retention::list(&job.prefix).await.unwrap();
    let names: Vec<String> =
        kept.iter().map(|s| s.snapshot.url.rsplit('/').next().unwrap().to_owned()).collect();
    let newest: Vec<String> = runs
        .iter()
        .rev()
        .take(RETENTION)
        .map(|at| object_name("main", *at, Compression::Zstd))
        .collect();
    assert_eq!(names, newest, "exactly the newest {RETENTION}, newest first");
    // The pruned snapshots are gone from the store, not only their manifests.
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let objects: Vec<_> =
        job.prefix.store.list(Some(&job.prefix.path)).try_collect().await.unwrap();
    assert_eq!(objects.len(), 2 * RETENTION, "a snapshot and a manifest each: {objects:?}");
    // Each kept backup was read back from the store and restored before it counted.
    assert!(
        kept.iter().all(|s| s.record.verified_time.is_some() && s.record.key_count >= Some(200))
    );

    // Someone else with the bucket's credentials writes manifests that claim newer verified
    // backups. Before, the next run counted them: the real backups were pruned, and the newest
    // "verified" backup recovery would offer was theirs.
    use object_store::ObjectStoreExt;
    let forged_at: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    for i in 0..RETENTION {
        let name = format!("main-forged-{i}.db.zst");
        let mut record = kept[0].record.clone();
        record.location = job.prefix.child(&name).url;
        record.completion_time = Some(Time(forged_at));
        record.verified_time = Some(Time(forged_at));
        let path = job.prefix.child(&format!("{name}.manifest.json")).path;
        job.prefix.store.put(&path, serde_json::to_vec(&record).unwrap().into()).await.unwrap();
    }
    let next = *runs.last().unwrap() + 1.hours();
    let outcome = job.run(next).await.unwrap();
    let kept_names: Vec<&str> =
        outcome.kept.iter().map(|s| s.snapshot.url.rsplit('/').next().unwrap()).collect();
    let mut expected = vec![object_name("main", next, Compression::Zstd)];
    expected.extend(newest.iter().take(RETENTION - 1).cloned());
    assert_eq!(kept_names, expected, "only what the operator recorded counts");
    let objects: Vec<_> =
        job.prefix.store.list(Some(&job.prefix.path)).try_collect().await.unwrap();
    assert_eq!(objects.len(), 2 * RETENTION + RETENTION, "forged manifests are left alone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_backup_is_proven_by_a_scratch_restore_and_a_corrupt_one_is_not() {
    use etcd_operator::backup::verify::verify;
    let source = Source::start(1, 300, 64).await;
    let (work, pki, cluster) = (&source.work, &source.pki, &source.cluster);
    let object = work.path().join("backups").join("snap.db.zst");
    let to = Location::parse(object.to_str().unwrap(), &BTreeMap::new()).unwrap();
    let record =
        save(&cluster.client_urls(), Some(&tls(pki)), &to, Compression::Zstd, None).await.unwrap();
    let verified = verify(&record, &to, None, u64::MAX).await.unwrap();
    assert!(verified.revision >= record.revision, "{verified:?} vs {record:?}");
    assert!(verified.keys >= 300, "every key written is in the snapshot: {verified:?}");

    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let err = verify(&record, &to, None, u64::MAX).await.unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn member_init_restores_a_new_member_and_never_an_unverified_one() {
    let source = Source::start(1, 1000, 64).await;
    let (work, pki, cluster) = (&source.work, &source.pki, &source.cluster);
    let written = source.written.clone();
    let backups = work.path().join("backups");
    let to =
        Location::parse(backups.join("snap.db.zst").to_str().unwrap(), &BTreeMap::new()).unwrap();
    let record =
        save(&cluster.client_urls(), Some(&tls(pki)), &to, Compression::Zstd, None).await.unwrap();

    // What the operator writes: the member's bootstrap entry, and spec.restore on the cluster.
    let peer = format!("http://127.0.0.1:{}", free_port());
    let bootstrap = work.path().join("bootstrap");
    std::fs::create_dir_all(&bootstrap).unwrap();
    // The entry names the member's peer URL in its cluster (member-init refuses any other); the
    // restored member is started on loopback below, on the data alone.
    let own_url = "http://demo-0.demo.prod.svc:2380";
    let entry = serde_json::json!({"name": "demo-0", "initialCluster": [{"name": "demo-0", "peerURL": own_url}],
                                   "state": "New", "token": "demo-uid"});
    std::fs::write(bootstrap.join("demo-0.json"), entry.to_string()).unwrap();
    let member_init = |restore: serde_json::Value, data_dir: &Path| {
        Command::new(BIN)
            .args([
                "member-init",
                "--pod-name",
                "demo-0",
                "--cluster",
                "demo",
                "--namespace",
                "prod",
            ])
            .args(["--tls=false", "--bootstrap-dir", bootstrap.to_str().unwrap()])
            .args(["--config-out", work.path().join("etcd.conf.yaml").to_str().unwrap()])
            .args(["--restore", &restore.to_string(), "--data-dir", data_dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let source = |sha256: &str| {
        serde_json::json!({"destination": {"volume": {"path": backups.to_str().unwrap()}},
                           "key": "snap.db.zst", "sha256": sha256})
    };

    let refused_dir = work.path().join("refused");
    let out = member_init(source(&"0".repeat(64)), &refused_dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum mismatch") && stderr.contains("demo-0"), "{stderr}");
    assert!(!refused_dir.exists(), "no data from an unverified snapshot");

    // The volume a Replace kept: the replaced cluster's data is on it.
    let volume = work.path().join("volume");
    let data_dir = volume.join("data");
    std::fs::create_dir_all(data_dir.join("member/wal")).unwrap();
    std::fs::write(data_dir.join("member/wal/0.wal"), "the replaced cluster's log").unwrap();
    let set_aside = || -> Vec<std::path::PathBuf> {
        let entries = std::fs::read_dir(&volume).unwrap().flatten();
        entries.map(|e| e.path()).filter(|p| p.to_string_lossy().contains("replaced-")).collect()
    };
    let out = member_init(source(&record.sha256), &data_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept = set_aside();
    assert_eq!(kept.len(), 1, "the replaced cluster's data is set aside: {kept:?}");
    assert_eq!(
        std::fs::read_to_string(kept[0].join("member/wal/0.wal")).unwrap(),
        "the replaced cluster's log"
    );
    // A restarted pod keeps its data: a second run restores nothing and succeeds.
    let out = member_init(source(&record.sha256), &data_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(set_aside(), kept, "a restart sets nothing more aside");
    // Once the cluster has bootstrapped (the entry says existing), the kept data goes.
    let entry = serde_json::json!({"name": "demo-0", "initialCluster": [{"name": "demo-0", "peerURL": own_url}],
                                   "state": "Existing", "token": "demo-uid"});
    std::fs::write(bootstrap.join("demo-0.json"), entry.to_string()).unwrap();
    let out = member_init(source(&record.sha256), &data_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(set_aside().is_empty(), "the replaced cluster's data outlived the new cluster's start");

    assert_restored("demo-0", peer, data_dir, work.path(), &written).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_backup_hides_the_data_and_restores_only_with_its_key() {
    let source = Source::start(1, 500, 64).await;
    let (work, pki, cluster) = (&source.work, &source.pki, &source.cluster);
    let mut written = source.written.clone();
    let mut client = tls_client(cluster, pki).await;
    let marker = "a-value-nobody-may-read-in-the-bucket".repeat(4);
    client.put("/data/marker", marker.as_str(), None).await.unwrap();
    written.insert("/data/marker".into(), marker.clone().into_bytes());
    let moto = Moto::start("backups");
    let key_file = work.path().join("key");
    std::fs::write(
        &key_file,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [3u8; 32]),
    )
    .unwrap();
    let other_key = work.path().join("other-key");
    std::fs::write(&other_key, [4u8; 32]).unwrap();

    // Uncompressed, so that only the encryption stands between the value and the bucket.
    let location = "s3://backups/sealed/source.db";
    let file = |name: &str| pki.join(name).display().to_string();
    let out = Command::new(BIN)
        .args(["backup", "--endpoints", &cluster.client_urls().join(",")])
        .args([
            "--cacert",
            &file("ca.crt"),
            "--cert",
            &file("client.crt"),
            "--key",
            &file("client.key"),
        ])
        .args(["--to", location, "--compression", "none"])
        .args(["--encryption-key-file", key_file.to_str().unwrap()])
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record: BackupRecord = serde_json::from_slice(&out.stdout).unwrap();
    assert!(record.encrypted);
    let from = Location::parse(location, &moto.options()).unwrap();
    use object_store::ObjectStoreExt;
    let stored = from.store.get(&from.path).await.unwrap().bytes().await.unwrap();
    let needle = marker.as_bytes();
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "the value is readable in the bucket"
    );

    let restore_with = |key: Option<&Path>, dir: &str| {
        let peer = format!("http://127.0.0.1:{}", free_port());
        let data_dir = work.path().join(dir);
        let mut command = Command::new(BIN);
        command
            .args(["restore", "--from", location, "--data-dir", data_dir.to_str().unwrap()])
            .args(["--name", "r0", "--initial-cluster", &format!("r0={peer}")])
            .args(["--initial-advertise-peer-urls", &peer])
            .envs(moto.env());
        if let Some(key) = key {
            command.args(["--encryption-key-file", key.to_str().unwrap()]);
        }
        (command.output().unwrap(), data_dir, peer)
    };
    let (out, data_dir, _) = restore_with(None, "no-key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs its key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data_dir.exists());
    let (out, data_dir, _) = restore_with(Some(&other_key), "wrong-key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot decrypt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data_dir.exists());
    // A manifest that describes another snapshot (here: a newer revision) beside this object,
    // its checksum kept: before, the object restored as what the manifest claimed.
    let manifest = from.manifest();
    let honest = from.store.get(&manifest.path).await.unwrap().bytes().await.unwrap();
    let mut claimed: BackupRecord = serde_json::from_slice(&honest).unwrap();
    claimed.revision += 1_000;
    let forged = serde_json::to_vec(&claimed).unwrap();
    from.store.put(&manifest.path, forged.into()).await.unwrap();
    let (out, data_dir, _) = restore_with(Some(&key_file), "other-manifest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the manifest does not describe this object"), "{stderr}");
    assert!(!data_dir.exists());
    from.store.put(&manifest.path, honest.into()).await.unwrap();

    let (out, data_dir, peer) = restore_with(Some(&key_file), "right-key");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_restored("r0", peer, data_dir, work.path(), &written).await;
}

/// A backup to a local directory is on disk when the command reports it: the object is synced
/// before it takes its name, its directory after, and only then is the manifest, which says the
/// backup exists, written the same way. (Seen through strace: a crash cannot be staged here.)
#[tokio::test(flavor = "multi_thread")]
async fn a_local_backup_is_on_disk_before_it_is_reported() {
    let source = Source::start(1, 200, 64).await;
    let (work, pki, cluster) = (&source.work, &source.pki, &source.cluster);
    let dir = work.path().join("backups");
    let object = dir.join("snap.db.zst");
    let trace = work.path().join("trace");
    let file = |name: &str| pki.join(name).display().to_string();
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2"])
        .arg("-o")
        .arg(&trace)
        .args([BIN, "backup", "--endpoints", &cluster.client_urls().join(",")])
        .args(["--cacert", &file("ca.crt"), "--cert", &file("client.crt")])
        .args(["--key", &file("client.key"), "--to", object.to_str().unwrap()])
        .output()
        .expect("strace is installed (scripts/test installs it)");
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    let trace = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = trace.lines().collect();

    let manifest = dir.join("snap.db.zst.manifest.json");
    let object_durable = durable_at(&calls, &object, &dir);
    let manifest_named = named_at(&calls, &manifest);
    durable_at(&calls, &manifest, &dir);
    assert!(
        object_durable < manifest_named,
        "the manifest was written before the object was on disk:\n{trace}"
    );
}

/// The index of the call that gave `file` its name (a rename from a staging name).
fn named_at(calls: &[&str], file: &Path) -> usize {
    let to = format!(", \"{}\")", file.display());
    calls
        .iter()
        .position(|c| c.contains("rename") && c.contains(&to))
        .unwrap_or_else(|| panic!("{} was never renamed into place:\n{calls:#?}", file.display()))
}

/// The index of the sync of `dir` that made `file`'s name durable, after checking that its
/// content was synced (under its staging name, `file#…`) before the rename. strace names a
/// descriptor by its resolved path, hence `dir` resolved.
fn durable_at(calls: &[&str], file: &Path, dir: &Path) -> usize {
    let named = named_at(calls, file);
    let dir = std::fs::canonicalize(dir).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let synced = |call: &&str, path: &str| call.contains("sync(") && call.contains(path);
    let staged = format!("<{}/{name}#", dir.display());
    assert!(
        calls[..named].iter().any(|c| synced(c, &staged)),
        "{name} was renamed into place unsynced:\n{calls:#?}"
    );
    let dir_synced = format!("<{}>)", dir.display());
    let after = calls[named..].iter().position(|c| synced(c, &dir_synced));
    named + after.unwrap_or_else(|| panic!("{name}'s directory not synced after:\n{calls:#?}"))
}
