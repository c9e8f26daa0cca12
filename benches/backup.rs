//! Backup throughput against `etcdctl snapshot save` of the same data, on this machine, with TLS,
//! and each process's own peak RSS at two database sizes, a quarter of DB_MB and DB_MB (it should
//! not grow with the snapshot: the snapshot is streamed, never held). The operator's backup runs
//! uncompressed, with zstd, and with zstd sealed by AES-256-GCM, to a local file like etcdctl; both
//! sync the file before they exit.
//!
//! `cargo bench --bench backup` (DB_MB=… to change the size, default 160); the last lines are
//! the throughput ratios operator / etcdctl at the larger size and each variant's RSS growth.

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

/// Each variant's median time of `RUNS` runs and the largest peak RSS it reached. The variants
/// take turns, each round starting with the next one, so that none always runs first after the
/// fill. Each run writes a fresh file, and whatever an earlier one left for the kernel to write
/// out is written before it starts: etcdctl and the operator both sync their file before they
/// exit, and each should pay for its own writes only.
fn take_turns(variants: &[Variant], out: &Path) -> Vec<(Duration, i64)> {
    let mut times = vec![Vec::new(); variants.len()];
    let mut peaks = vec![0; variants.len()];
    for run in 0..RUNS {
        for turn in 0..variants.len() {
            let i = (run + turn) % variants.len();
            let variant = &variants[i];
            let to = out.join(format!("snapshot-{i}"));
            let _ = std::fs::remove_file(&to);
            assert!(Command::new("sync").status().unwrap().success());
            let (took, peak) = measure(&mut (variant.command)(&to));
            times[i].push(took);
            peaks[i] = peaks[i].max(peak);
        }
    }
    times.into_iter().map(median).zip(peaks).collect()
}

/// One way of taking the snapshot, measured at every size.
struct Variant {
    name: &'static str,
    command: Box<dyn Fn(&Path) -> Command>,
    /// Median time and peak RSS (KiB) at each size, in the order of the sizes.
    figures: Vec<(Duration, i64)>,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let megabytes: usize = std::env::var("DB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(160);
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
    let key = work.path().join("backup.key");
    std::fs::write(&key, [7u8; 32]).unwrap();

    let operator = |compression: &'static str, sealed: bool| {
        let (pki, endpoint, key) = (pki.clone(), endpoint.clone(), key.clone());
        Box::new(move |to: &Path| {
            let mut command = operator_backup(&pki, &endpoint, to, compression);
            if sealed {
                command.arg("--encryption-key-file").arg(&key);
            }
            command
        }) as Box<dyn Fn(&Path) -> Command>
    };
    let (etcdctl_pki, etcdctl_endpoint) = (pki.clone(), endpoint.clone());
    let mut variants = vec![
        Variant {
            name: "etcdctl snapshot save",
            command: Box::new(move |to| etcdctl_save(&etcdctl_pki, &etcdctl_endpoint, to)),
            figures: Vec::new(),
        },
        Variant {
            name: "etcd-operator backup, none",
            command: operator("none", false),
            figures: Vec::new(),
        },
        Variant {
            name: "etcd-operator backup, zstd",
            command: operator("zstd", false),
            figures: Vec::new(),
        },
        Variant {
            name: "etcd-operator backup, zstd + AES-GCM",
            command: operator("zstd", true),
            figures: Vec::new(),
        },
    ];

    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let sizes = [megabytes / 4, megabytes];
    let mut written = 0;
    let mut snapshot_mib = Vec::new();
    for size in sizes {
        let started = Instant::now();
        let more = size * 1024 - written;
        etcd::fill(&mut client, "/bench/", written..written + more, 1024).await;
        written += more;
        eprintln!("filled {size} MiB of values in {:.1?}", started.elapsed());
        let figures = take_turns(&variants, &out);
        for (variant, figures) in variants.iter_mut().zip(figures) {
            variant.figures.push(figures);
        }
        // etcdctl's file: the snapshot as etcd sends it.
        let db = std::fs::metadata(out.join("snapshot-0")).unwrap().len();
        snapshot_mib.push(db as f64 / (1024.0 * 1024.0));
        for file in std::fs::read_dir(&out).unwrap() {
            std::fs::remove_file(file.unwrap().path()).unwrap();
        }
    }

    for (i, mib) in snapshot_mib.iter().enumerate() {
        println!("database: {mib:.0} MiB (snapshot file size), median of {RUNS} runs");
        for variant in &variants {
            let (took, rss) = variant.figures[i];
            println!(
                "  {:<38} {:>7.1} MiB/s  ({took:.2?}, peak RSS {} MiB)",
                variant.name,
                mib / took.as_secs_f64(),
                rss / 1024
            );
        }
    }
    let baseline = variants[0].figures[1].0.as_secs_f64();
    for variant in &variants[1..] {
        println!(
            "throughput ratio {} / etcdctl at {:.0} MiB: {:.2}",
            variant.name,
            snapshot_mib[1],
            baseline / variant.figures[1].0.as_secs_f64()
        );
    }
    for variant in &variants {
        let [(_, small), (_, large)] = variant.figures[..] else { unreachable!() };
        println!(
            "peak RSS growth of {} from {:.0} to {:.0} MiB of data: {:+} MiB ({} → {} MiB)",
            variant.name,
            snapshot_mib[0],
            snapshot_mib[1],
            (large - small) / 1024,
            small / 1024,
            large / 1024
        );
    }
}
