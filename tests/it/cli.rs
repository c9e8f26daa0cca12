//! The command line as users meet it: help on every subcommand, the CRD output, and one-line
//! errors (never a panic) for bad input.

use std::process::{Command, Output};

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_etcd-operator")).args(args).output().expect("the binary runs")
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["crd", "--help"],
        vec!["webhook", "--help"],
        vec!["certs", "issue", "--help"],
        vec!["local", "--help"],
        vec!["local", "down", "--help"],
        vec!["backup", "--help"],
        vec!["restore", "--help"],
        vec!["member-init", "--help"],
    ] {
        let out = operator(&sub);
        assert!(out.status.success(), "{sub:?} --help failed");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"), "{sub:?}");
    }
}

#[test]
fn crd_prints_exactly_the_committed_yaml() {
    let out = operator(&["crd"]);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/all.yaml")).unwrap();
    assert!(out.stdout == committed.as_bytes(), "`etcd-operator crd` differs from crds/all.yaml");
}

#[test]
fn missing_cluster_file_is_a_one_line_error() {
    let out = operator(&["local", "-f", "/nonexistent/cluster.yaml", "--state-dir", "/tmp/unused"]);
    assert_one_line_error(&out, "/nonexistent/cluster.yaml");
}

#[test]
fn invalid_cluster_yaml_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: etcd.etcd.io/v1alpha1\nkind: EtcdCluster\nspec: [not, a, map]\n",
    )
    .unwrap();
    let out = operator(&[
        "local",
        "-f",
        path.to_str().unwrap(),
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "is not a valid EtcdCluster");
}

#[test]
fn unknown_flags_are_refused_by_clap() {
    let out = operator(&["crd", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

#[test]
fn run_outside_a_cluster_says_it_cannot_reach_the_api() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .arg("run")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_one_line_error(&out, "cannot connect to the Kubernetes API");
}

/// During an API outage at start-up the replica answers its liveness probe (so the kubelet does
/// not restart it into CrashLoopBackOff) and says on /readyz why it is not ready.
#[test]
fn run_answers_probes_before_the_api_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let api_port = crate::support::etcd::free_port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let port = crate::support::etcd::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| {
        Command::new("curl")
            .args(["-sk", "-o", "/dev/stderr", "-w", "%{http_code}", "--max-time", "2"])
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .map(|o| {
                (
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut healthz = get("/healthz");
    while healthz.0 != "200" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        healthz = get("/healthz");
    }
    let readyz = get("/readyz");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(healthz.0, "200", "no /healthz while the API server is down: {healthz:?}");
    assert_eq!(readyz.0, "503", "{readyz:?}");
    assert!(readyz.1.contains("webhook certificate"), "{readyz:?}");
}

#[test]
fn webhook_serves_with_a_certificate_it_issues_into_the_cert_dir() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::etcd::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args([
            "webhook",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cert-dir",
            dir.path().to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "webhook did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.path().join(file).exists(), "{file} not issued");
    }
}
