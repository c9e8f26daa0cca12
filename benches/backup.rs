//! Backup throughput against `etcdctl snapshot save` of the same data, on this machine, with TLS,
//! and the operator's peak RSS during a backup at two database sizes (it should not grow with
//! the snapshot: the snapshot is streamed, never held).
//!
//! `cargo bench --bench backup` (DB_MB=… to change the size, default 120); the last line is the
//! throughput ratio operator / etcdctl, uncompressed to a local file like etcdctl.

// The integration tests' etcd harness, of which this bench uses a part.
#[allow(dead_code)]
#[path = "../tests/it/support/etcd.rs"]
mod etcd;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, Identity, TlsOptions};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-operator");
const RUNS: usize = 3;

/// Runs `command` to completion; returns its wall time and its own peak RSS in KiB.
///
/// The peak is the child's `VmHWM` from `/proc/PID/status`, read every 5 ms while it runs. Not
/// `ru_maxrss` from wait4: a forked child starts with the parent's high-water mark and keeps it
/// across exec, so that figure was this bench's own size (110 MiB for etcdctl and the operator
/// alike). `VmHWM` belongs to the address space exec makes; the last 5 ms of a run are unseen,
/// which a high-water mark that only grows makes harmless unless the peak comes in them.
fn measure(command: &mut Command) -> (Duration, i64) {
    let start = Instant::now();
    let mut child = command.stdout(std::process::Stdio::null()).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let hwm = std::fs::read_to_string(&status_file).ok().and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        });
        peak = peak.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    assert!(status.success(), "{command:?} failed");
    (took, peak)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn etcdctl_save(pki: &Path, endpoint: &str, to: &Path) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(["--cacert", pki.join("ca.crt").to_str().unwrap()])
        .args(["--cert", pki.join("client.crt").to_str().unwrap()])
        .args(["--key", pki.join("client.key").to_str().unwrap()])
        .args(["snapshot", "save", to.to_str().unwrap()]);
    command
}

fn operator_backup(pki: &Path, endpoint: &str, to: &Path, compression: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["backup", "--endpoints", endpoint])
        .args(["--cacert", pki.join("ca.crt").to_str().unwrap()])
        .args(["--cert", pki.join("client.crt").to_str().unwrap()])
        .args(["--key", pki.join("client.key").to_str().unwrap()])
        .args(["--to", to.to_str().unwrap(), "--compression", compression]);
    command
}

/// Median time of `RUNS` runs and the largest peak RSS seen; each run writes a fresh file.
fn runs(mut make: impl FnMut(usize) -> Command) -> (Duration, i64) {
    let mut times = Vec::new();
    let mut rss = 0;
    for run in 0..RUNS {
        let (took, peak) = measure(&mut make(run));
        times.push(took);
        rss = rss.max(peak);
    }
    (median(times), rss)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let megabytes: usize = std::env::var("DB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    etcd::issue_pki(&pki, "bench");
    let cluster = etcd::start_tls_cluster(1, &pki, work.path());
    let endpoint = cluster.client_urls()[0].clone();
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(read("client.crt"), read("client.key")));
    let options = ConnectOptions::new().with_tls(tls).with_timeout(Duration::from_secs(30));
    let mut client = Client::connect([endpoint.as_str()], Some(options)).await.unwrap();

    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut written = 0;
    let mut last_ratio = 0.0;
    for size in [megabytes / 4, megabytes] {
        let started = Instant::now();
        let more = size * 1024 - written;
        etcd::fill(&mut client, "/bench/", written..written + more, 1024).await;
        written += more;
        eprintln!("filled {size} MiB of values in {:.1?}", started.elapsed());
        let (etcdctl, etcdctl_rss) = runs(|run| {
            etcdctl_save(&pki, &endpoint, &out.join(format!("etcdctl-{size}-{run}.db")))
        });
        let db = std::fs::metadata(out.join(format!("etcdctl-{size}-0.db"))).unwrap().len();
        let (plain, plain_rss) = runs(|run| {
            operator_backup(&pki, &endpoint, &out.join(format!("op-{size}-{run}.db")), "none")
        });
        let (zstd, zstd_rss) = runs(|run| {
            operator_backup(&pki, &endpoint, &out.join(format!("op-{size}-{run}.db.zst")), "zstd")
        });
        let mib = db as f64 / (1024.0 * 1024.0);
        let rate = |d: Duration| mib / d.as_secs_f64();
        println!("database: {mib:.0} MiB (snapshot file size)");
        println!(
            "  etcdctl snapshot save:        {:>7.1} MiB/s  ({etcdctl:.2?}, peak RSS {} MiB)",
            rate(etcdctl),
            etcdctl_rss / 1024
        );
        println!(
            "  etcd-operator backup (none):  {:>7.1} MiB/s  ({plain:.2?}, peak RSS {} MiB)",
            rate(plain),
            plain_rss / 1024
        );
        println!(
            "  etcd-operator backup (zstd):  {:>7.1} MiB/s  ({zstd:.2?}, peak RSS {} MiB)",
            rate(zstd),
            zstd_rss / 1024
        );
        last_ratio = rate(plain) / rate(etcdctl);
        for file in std::fs::read_dir(&out).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
    }
    println!("throughput ratio operator/etcdctl (uncompressed, local file): {last_ratio:.2}");
}
