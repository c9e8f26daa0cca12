//! The operator at scale on kube-sim: `cargo bench -p kube-sim --bench clusters` builds the
//! operator in release mode and runs `bench/clusters.sh` (CLUSTERS=100 EtcdClusters of one member,
//! STEADY_SECONDS=120 of steady state; both can be changed through the environment), which
//! prints its figures: the operator's RSS idle and with the clusters, how long they took to come
//! up, reconcile latency p50/p99, API requests per reconcile (from kube-sim's audit log) and CPU
//! at steady state. Needs root, like every kube-sim run. It first says how much of
//! `link/symbol-order.txt` the binary still has (build.rs): idle memory grows as the list goes
//! stale.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};

fn main() {
    let root = support::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "etcd-operator", "--bin", "etcd-operator"])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "building the operator failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let operator = target.join("release/etcd-operator");
    symbol_order(&root.join("link/symbol-order.txt"), &operator);
    let state = tempfile::tempdir().expect("temp dir");
    let script = root.join("tests/kube-sim/bench/clusters.sh");
    // The script's log goes to stderr as it runs; its figures to stdout.
    let out =
        support::kube_sim(env!("CARGO_BIN_EXE_kube-sim"), state.path(), &script, Some(&operator))
            .stderr(Stdio::inherit())
            .output()
            .expect("kube-sim runs");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    assert!(out.status.success(), "the benchmark did not finish");
}

/// Prints how many of the functions the symbol order lists the binary defines.
fn symbol_order(list: &std::path::Path, binary: &std::path::Path) {
    let list = std::fs::read_to_string(list).expect("link/symbol-order.txt");
    let listed: Vec<&str> = list.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let nm = Command::new("nm").arg("--defined-only").arg(binary).output().expect("nm runs");
    assert!(nm.status.success(), "nm {}", String::from_utf8_lossy(&nm.stderr));
    let symbols = String::from_utf8_lossy(&nm.stdout);
    let defined: std::collections::HashSet<&str> =
        symbols.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let found = listed.iter().filter(|name| defined.contains(*name)).count();
    println!(
        "figure: symbol order: {found} of the {} functions listed are in the binary ({:.0} %; \
         scripts/order-symbols records them again)",
        listed.len(),
        100.0 * found as f64 / listed.len().max(1) as f64
    );
}
