//! End-to-end scenarios: the real operator, installed from manifests/ with kubectl, on the real
//! Kubernetes control plane (kube-sim), with real etcd processes as its pods. Each scenario is a script under `e2e/`, run by
//! `kube-sim run` in a cluster of its own (its own network and mount namespaces), so they run in
//! parallel. kube-sim needs root (Linux namespaces), as in CI.

mod support;

/// The operator's calls the API server's authorizer refused, from its audit log, one line each.
/// A 403 from admission is not one: creating in a namespace being deleted is refused to every
/// client (`NamespaceTerminating`; the StatefulSet controller meets it too), and the authorizer
/// had allowed the call. Nor is a call made while the operator was being uninstalled (a
/// scenario names those windows, see `uninstalling` in e2e/lib.sh): `helm uninstall` deletes
/// the RBAC bindings while the operator's pods still shut down, as on any cluster.
fn operator_denials(state: &std::path::Path) -> Vec<String> {
    let log = std::fs::read_to_string(state.join("control-plane/audit.log")).unwrap_or_default();
    let windows = std::fs::read_to_string(state.join("uninstalling")).unwrap_or_default();
    let windows: Vec<(&str, &str)> = windows.lines().filter_map(|l| l.split_once(' ')).collect();
    // RFC 3339 UTC times of one precision compare as text.
    let uninstalling = |at: &str| windows.iter().any(|&(from, to)| from <= at && at <= to);
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            e["user"]["username"] == "system:serviceaccount:etcd-operator-system:etcd-operator"
                && e["responseStatus"]["code"] == 403
                && e["annotations"]["authorization.k8s.io/decision"] != "allow"
                && !uninstalling(e["requestReceivedTimestamp"].as_str().unwrap_or_default())
        })
        .map(|e| format!("{} {} {}", e["verb"], e["requestURI"], e["responseStatus"]["message"]))
        .collect()
}

/// Runs `e2e/NAME.sh` in a cluster of its own, with kube-sim's defaults.
fn scenario(name: &str) {
    scenario_with(name, &[]);
}

/// Runs `e2e/NAME.sh` in a cluster of its own, with `options` for `kube-sim run`.
fn scenario_with(name: &str, options: &[&str]) {
    let state = tempfile::tempdir().expect("temp dir");
    let script = support::root().join("tests/kube-sim/e2e").join(format!("{name}.sh"));
    let out =
        support::kube_sim(env!("CARGO_BIN_EXE_kube-sim"), state.path(), &script, None, options)
            .output()
            .expect("kube-sim runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !(out.status.success() && text.contains("PASS")) {
        // The whole story stays for a person to read: every container's log, the audit log.
        let kept = state.keep();
        panic!("scenario {name} failed (its state is kept in {}):\n{text}", kept.display());
    }
    // Every API call the operator made was granted by the RBAC rules manifests/ installs, as the
    // API server's own audit log records it.
    let denied = operator_denials(state.path());
    assert!(
        denied.is_empty(),
        "scenario {name}: the API server refused {} of the operator's calls:\n{}",
        denied.len(),
        denied.join("\n")
    );
    println!("{text}");
}

#[test]
fn scale_up_and_down_under_a_writer_then_delete() {
    scenario("scale");
}

#[test]
fn members_never_share_a_node_and_an_unplaceable_member_is_reported() {
    scenario("spread");
}

#[test]
fn a_member_whose_volume_comes_back_empty_joins_again_under_a_new_id() {
    scenario("lost-volume");
}

#[test]
fn draining_the_nodes_of_two_members_keeps_a_quorum() {
    scenario("drain");
}

#[test]
fn a_kubelet_cut_off_for_six_minutes_while_its_member_serves() {
    scenario("partition");
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
    // Secret volumes refreshed every 10 s (the kubelet's default is about a minute), so the
    // scenario can tell the operator 20 s of propagation instead of its default 180 s.
    scenario_with("ca-rotation", &["--volume-sync-seconds", "10"]);
}

#[test]
fn a_ca_rotation_and_operator_upgrades_restart_nothing_while_a_member_is_down() {
    // Two operator releases in the registry (the same binary under both tags), and Secret volumes
    // refreshed every 10 s so that the scenario can tell the operator 20 s of propagation.
    let releases =
        ["0.1.0", "0.2.0", "0.3.0"].map(|t| format!("ghcr.io/etcd-operator/etcd-operator:{t}"));
    let mut options = vec!["--volume-sync-seconds", "10"];
    for release in &releases {
        options.extend(["--operator-image", release.as_str()]);
    }
    scenario_with("frozen-roll", &options);
}

#[test]
fn helm_install_upgrade_and_uninstall_keep_the_cluster_serving() {
    // The chart's release and the next in the registry (the same binary under both tags).
    let releases = ["0.1.0", "0.2.0"].map(|t| format!("ghcr.io/etcd-operator/etcd-operator:{t}"));
    let mut options = vec![];
    for release in &releases {
        options.extend(["--operator-image", release.as_str()]);
    }
    scenario_with("helm", &options);
}

#[test]
fn namespaced_mode_serves_its_namespaces_with_roles_and_a_helm_issued_certificate() {
    scenario("helm-namespaced");
}

#[test]
fn a_full_backend_is_freed_without_a_person() {
    scenario("nospace");
}

#[test]
fn a_member_whose_data_changed_under_it_is_found_and_replaced() {
    scenario("consistency");
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
