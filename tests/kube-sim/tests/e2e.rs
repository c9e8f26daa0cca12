//! End-to-end scenarios: the real operator, installed from manifests/ with kubectl, on kube-sim,
//! with real etcd processes as its pods. Each scenario is a script under `e2e/`, run by
//! `kube-sim run` in a cluster of its own (its own network and mount namespaces), so they run in
//! parallel. kube-sim needs root (Linux namespaces), as in CI.

mod support;

/// Runs `e2e/NAME.sh` in a cluster of its own.
fn scenario(name: &str) {
    let state = tempfile::tempdir().expect("temp dir");
    let script = support::root().join("tests/kube-sim/e2e").join(format!("{name}.sh"));
    let out = support::kube_sim(env!("CARGO_BIN_EXE_kube-sim"), state.path(), &script, None)
        .output()
        .expect("kube-sim runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !(out.status.success() && text.contains("PASS")) {
        // The whole story stays for a person to read: every container's log, the audit log.
        let kept = state.keep();
        panic!("scenario {name} failed (its state is kept in {}):\n{text}", kept.display());
    }
    // Every API call the operator made was granted by the RBAC rules manifests/ installs.
    assert!(
        !text.contains("RBAC denied"),
        "scenario {name}: the operator made a call its RBAC does not grant:\n{text}"
    );
    println!("{text}");
}

#[test]
fn scale_up_and_down_under_a_writer_then_delete() {
    scenario("scale");
}

#[test]
fn pod_deleted_data_lost_node_lost_operator_killed_and_stop_to_zero() {
    scenario("faults");
}

#[test]
fn scale_up_and_down_through_api_failures_and_dropped_watches() {
    scenario("api-faults");
}

#[test]
fn ca_rotation_restarts_members_on_the_bundle_before_certificates_move() {
    scenario("ca-rotation");
}

#[test]
fn rolling_upgrade_from_3_4_to_3_5_under_a_writer() {
    scenario("upgrade");
}

#[test]
fn backup_to_s3_then_restore_into_a_new_cluster() {
    scenario("backup");
}

#[test]
fn quorum_loss_recovered_after_approval_with_the_lost_nodes_fenced() {
    scenario("recovery");
}
