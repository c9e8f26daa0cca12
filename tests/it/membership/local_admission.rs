//! `local` as a user meets it, on real etcd: the file goes through the webhook's admission rules
//! (a denied edit changes nothing and says why, in the log and in status.json), and `local
//! status` prints what status.json says.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::local::Local;
use etcd_crds::{ClusterPhase, EtcdClusterStatus};

fn spec_denial(status: &EtcdClusterStatus) -> Option<String> {
    let condition = status.conditions.iter().find(|c| c.type_ == "SpecAccepted")?;
    (condition.status == "False").then(|| condition.message.clone())
}

async fn denied(local: &Local, field: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = local.status();
        if let Some(message) = spec_denial(&status).filter(|m| m.contains(field)) {
            return message;
        }
        assert!(Instant::now() < deadline, "no denial of {field}: {:#?}", status.conditions);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pids(local: &Local) -> Vec<String> {
    (0..3)
        .map(|i| {
            let path = local.state().join("members").join(format!("it-{i}")).join("pid");
            std::fs::read_to_string(path).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_edits_change_nothing_and_say_why_then_a_valid_edit_applies() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut local = Local::start(3);
    let before = local.wait_running(3, Duration::from_secs(60)).await;
    let running = pids(&local);

    local.set_size(4);
    let size = denied(&local, "spec.size").await;
    assert!(size.contains("must be one of 0, 1, 3, 5, 7, 9; got 4"), "{size}");
    local.set_size(3);
    local.version = "3.6.0".into();
    local.set_size(3);
    let version = denied(&local, "spec.version").await;
    assert!(
        version.contains("3.4") && version.contains("3.5"),
        "names the version to go through: {version}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = local.status();
    assert_eq!(now.phase, Some(ClusterPhase::Running));
    assert_eq!(now.members.len(), 3);
    assert_eq!(now.cluster_id, before.cluster_id);
    assert_eq!(pids(&local), running, "no member was touched");
    let log = local.operator_log();
    assert!(log.contains("edit of the cluster file denied") && log.contains("spec.size"), "{log}");
    assert_eq!(log.matches("got 4").count(), 1, "each denial is said once: {log}");
    assert!(!log.contains('\u{1b}'), "no escape codes in a log written to a file");

    local.version = "3.4.23".into();
    local.set_size(5);
    let after = local.wait_running(5, Duration::from_secs(90)).await;
    assert!(spec_denial(&after).is_none(), "{:#?}", after.conditions);

    let out = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["local", "status", "--state-dir", local.state().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8(out.stdout).unwrap();
    let leader = after.members.iter().find(|m| m.leader).unwrap();
    let header = report.lines().nth(1).unwrap();
    for field in ["it", "Running", "5", "5/5", "3.4.23", leader.name.as_str()] {
        assert!(header.split_whitespace().any(|w| w == field), "{field} in {header}\n{report}");
    }
    for member in &after.members {
        let line = report.lines().find(|l| l.starts_with(&format!("{} ", member.name))).unwrap();
        assert!(line.contains("voter") && line.contains("ready"), "{line}");
        assert!(line.contains(member.client_url.as_deref().unwrap()), "{line}");
    }
    assert!(
        report.contains(&format!("--endpoints {}", after.client_endpoints.join(","))),
        "{report}"
    );
    let accepted = report.lines().find(|l| l.starts_with("SpecAccepted ")).unwrap();
    assert_eq!(accepted.split_whitespace().nth(1), Some("True"), "{report}");
}
