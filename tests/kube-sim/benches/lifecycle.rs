//! Create, scale and wake timings on the real control plane with kube-sim's default delays:
//! `cargo bench -p kube-sim --bench lifecycle` builds the operator in release mode and runs
//! `bench/lifecycle.sh`, which prints each figure with a timeline of where its time went (pods
//! created, scheduled, started, ready; the operator's steps). Needs root, like every kube-sim run.

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    support::run_bench(env!("CARGO_BIN_EXE_kube-sim"), "lifecycle.sh");
}
