//! The operator at scale on kube-sim: `cargo bench -p kube-sim --bench clusters` builds the
//! operator in release mode and runs `bench/clusters.sh` (CLUSTERS=100 EtcdClusters of one member,
//! STEADY_SECONDS=120 of steady state; both can be changed through the environment), which
//! prints its figures: the operator's RSS idle and with the clusters, how long they took to come
//! up, reconcile latency p50/p99, API requests per reconcile (from kube-sim's audit log) and CPU
//! at steady state. Needs root, like every kube-sim run.

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    support::run_bench(env!("CARGO_BIN_EXE_kube-sim"), "clusters.sh");
}
