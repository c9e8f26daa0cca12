//! The operator at scale on kube-sim: `cargo bench -p kube-sim --bench clusters` builds the
//! operator in release mode and runs `bench/clusters.sh` (CLUSTERS=100 EtcdClusters of one member,
//! STEADY_SECONDS=120 of steady state; both can be changed through the environment), which
//! prints its figures: the operator's RSS idle and with the clusters, how long they took to come
//! up, reconcile latency p50/p99, API requests per reconcile (from kube-sim's audit log) and CPU
//! at steady state. Needs root, like every kube-sim run. It first says how much code
//! `link/hot-text.ld` gathers ahead of the rest (build.rs): idle memory grows as that goes stale.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

fn main() {
    let root = support::root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    support::run_bench(env!("CARGO_BIN_EXE_kube-sim"), "clusters.sh");
    hot_text(&target.join("release/etcd-operator"));
}

/// Prints how much code `link/hot-text.ld` gathered ahead of the rest (build.rs), from the
/// binary's section sizes.
fn hot_text(binary: &std::path::Path) {
    let out = Command::new("size").arg("-A").arg(binary).output().expect("size runs");
    assert!(out.status.success(), "size -A {}", String::from_utf8_lossy(&out.stderr));
    let sections = String::from_utf8_lossy(&out.stdout);
    let mib = |name: &str| {
        let size = sections.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(name)).then(|| fields.next()?.parse::<u64>().ok()).flatten()
        });
        size.unwrap_or(0) as f64 / 1024.0 / 1024.0
    };
    println!(
        "figure: code that ran when link/hot-text.ld was recorded, laid out ahead: {:.1} MiB, \
         the rest {:.1} MiB (scripts/order-symbols records it again)",
        mib(".text.hot"),
        mib(".text")
    );
}
