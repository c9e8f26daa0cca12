//! The objects built for an EtcdCluster, checked field by field and against Kubernetes' own
//! schemas (kubernetes-validate --strict).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use etcd_crds::EtcdCluster;
use etcd_operator::etcd::ClusterState;
use etcd_operator::k8s::bootstrap::BootstrapEntry;
use etcd_operator::k8s::objects::{
    RestartFor, all, client_service, headless_service, pod_disruption_budget, statefulset,
};
use etcd_operator::membership::planner::Wanted;
use serde_json::json;

fn cluster(spec: serde_json::Value) -> EtcdCluster {
    serde_json::from_value(json!({
        "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "demo", "namespace": "prod", "uid": "6d3f6a38-0c4b-4bd5-8f1a-5b2b2f3f4c11"},
        "spec": spec
    }))
    .unwrap()
}

/// A pod template labelled as another cluster's (admitted before the webhook refused it) keeps
/// its members in their own cluster: before, the override won and the pods carried
/// `instance: other`, so the other cluster's Services selected them.
#[test]
fn selector_labels_win_over_pod_template_labels() {
    let c = cluster(json!({"size": 3, "version": "3.5.21",
        "podTemplate": {"labels": {"app.kubernetes.io/instance": "other", "team": "payments"}}}));
    let sts = statefulset(&c, 3, "op:1", &RestartFor::default());
    let labels = sts.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "demo");
    assert_eq!(labels["team"], "payments");
}

#[test]
fn statefulset_runs_members_in_parallel_with_member_init_and_volumes() {
    let c = cluster(
        json!({"size": 3, "version": "3.5.21", "storage": {"size": "20Gi", "storageClassName": "fast"}}),
    );
    let sts = statefulset(
        &c,
        2,
        "registry.example/etcd-operator:1",
        &RestartFor { trust: Some("f1".into()), ..RestartFor::default() },
    );
    let meta = &sts.metadata;
    assert_eq!(meta.name.as_deref(), Some("demo"));
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("EtcdCluster", "demo", Some(true))
    );
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(2), "replicas are the admitted members, not spec.size");
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("demo"));
    let claims = spec.volume_claim_templates.unwrap();
    let claim = claims[0].spec.as_ref().unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0, "20Gi");
    let pod = spec.template.spec.unwrap();
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in spec.selector.match_labels.unwrap() {
        assert_eq!(labels.get(&k), Some(&v), "pod labels match the selector");
    }
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.image.as_deref(), Some("registry.example/etcd-operator:1"));
    assert_eq!(init.args.as_ref().unwrap()[0], "member-init");
    let etcd = &pod.containers[0];
    assert_eq!(etcd.image.as_deref(), Some("gcr.io/etcd-development/etcd:v3.5.21"));
    assert!(
        etcd.command
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a == "--config-file=/var/run/etcd/etcd.conf.yaml")
    );
    let mounts: Vec<&str> =
        etcd.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
    assert!(
        mounts.contains(&"/var/lib/etcd") && mounts.contains(&"/etc/etcd-tls/peer"),
        "{mounts:?}"
    );
    let volumes = pod.volumes.unwrap();
    let peer = volumes.iter().find(|v| v.name == "peer-tls").unwrap();
    assert_eq!(peer.secret.as_ref().unwrap().secret_name.as_deref(), Some("demo-peer-tls"));
    // The seal key: member-init's alone (etcd never sees it), and optional (made at the first
    // recovery); member-init is told where it is, so that it refuses an unsealed force.
    let seal = volumes.iter().find(|v| v.name == "seal").unwrap().secret.clone().unwrap();
    assert_eq!(seal.secret_name.as_deref(), Some("demo-bootstrap-seal"));
    assert_eq!((seal.optional, seal.default_mode), (Some(true), Some(0o400)));
    let mounted = |c: &k8s_openapi::api::core::v1::Container| {
        c.volume_mounts.iter().flatten().any(|m| m.name == "seal" && m.read_only == Some(true))
    };
    assert!(mounted(init) && !mounted(etcd));
    assert!(init.args.as_ref().unwrap().contains(&"--seal-dir=/etc/etcd-operator/seal".to_owned()));
    // The operator issued the peer certificate: its name is the only one let in at peer ports.
    assert!(init.args.as_ref().unwrap().contains(&"--peer-common-name=demo-peer".to_owned()));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    assert_eq!(etcd.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert_eq!(
        etcd.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
        Some("/readyz")
    );
}

/// A NOSPACE alarm must not take members out of the client Service (clients must compact and
/// defragment then) nor block drains: `/readyz` where etcd has it (3.5.11+), `/health` without
/// NOSPACE before; `/livez` for liveness where it exists; timeouts of seconds.
#[test]
fn probes_follow_what_the_etcd_version_serves() {
    let probes = |version: &str| {
        let sts = statefulset(
            &cluster(json!({"size": 3, "version": version})),
            3,
            "op",
            &RestartFor::default(),
        );
        let etcd = sts.spec.unwrap().template.spec.unwrap().containers.remove(0);
        (etcd.readiness_probe.unwrap(), etcd.liveness_probe.unwrap())
    };
    let path =
        |p: &k8s_openapi::api::core::v1::Probe| p.http_get.as_ref().and_then(|h| h.path.clone());
    for version in ["3.4.23", "3.5.1", "3.5.10"] {
        let (ready, live) = probes(version);
        assert_eq!(path(&ready).as_deref(), Some("/health?exclude=NOSPACE"), "{version}");
        assert!(live.tcp_socket.is_some(), "{version}");
    }
    for version in ["3.5.11", "3.5.36", "3.6.6"] {
        let (ready, live) = probes(version);
        assert_eq!(path(&ready).as_deref(), Some("/readyz"), "{version}");
        assert_eq!(path(&live).as_deref(), Some("/livez"), "{version}");
        assert!(ready.timeout_seconds >= Some(5) && live.timeout_seconds >= Some(5));
    }
}

#[test]
fn ephemeral_storage_overrides_and_user_secrets() {
    let c = cluster(json!({
        "storage": {"ephemeral": true},
        "security": {"tls": {"autoTLS": false, "peerSecretRef": {"name": "my-peer"}, "serverSecretRef": {"name": "my-server"}, "clientSecretRef": {"name": "my-client"}}},
        "podTemplate": {"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "etcd", "operator": "Exists"}], "priorityClassName": "system-cluster-critical", "annotations": {"a": "b"}}
    }));
    let spec = statefulset(&c, 3, "op", &RestartFor::default()).spec.unwrap();
    assert!(spec.volume_claim_templates.is_none());
    let pod = spec.template.spec.unwrap();
    let volumes = pod.volumes.unwrap();
    assert!(volumes.iter().any(|v| v.name == "data" && v.empty_dir.is_some()));
    assert_eq!(
        volumes
            .iter()
            .find(|v| v.name == "peer-tls")
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .as_deref(),
        Some("my-peer")
    );
    assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("etcd"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert_eq!(spec.template.metadata.unwrap().annotations.unwrap()["a"], "b");
    // The user's peer certificate may carry any name: none is pinned.
    let init = &pod.init_containers.unwrap()[0];
    assert!(!init.args.iter().flatten().any(|a| a.starts_with("--peer-common-name")));
}

#[test]
fn services_and_disruption_budget() {
    let c = cluster(json!({}));
    let headless = headless_service(&c).spec.unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let client = client_service(&c);
    assert_eq!(client.metadata.name.as_deref(), Some("demo-client"));
    assert_eq!(client.spec.unwrap().ports.unwrap()[0].port, 2379);
    let pdb = pod_disruption_budget(&c).spec.unwrap();
    assert_eq!(
        pdb.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn built_objects_validate_against_kubernetes_schemas() {
    let c = cluster(
        json!({"size": 3, "podTemplate": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "demo"}}}}]}}}}),
    );
    let initial =
        [Wanted { name: "demo-0".into(), peer_url: "https://demo-0.demo.prod.svc:2380".into() }];
    let entries = [BootstrapEntry::new("demo-0", &initial, ClusterState::New, "t")];
    let objects = all(&c, 1, "op:1", &entries);
    assert_eq!(objects.len(), 5);
    let mut yaml = String::new();
    for object in &objects {
        assert!(object["apiVersion"].is_string() && object["kind"].is_string(), "{object}");
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(object).unwrap());
    }
    let validator =
        std::env::var_os("KUBERNETES_VALIDATE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubernetes-validate")
        });
    assert!(
        validator.exists(),
        "{} is missing: run ./scripts/test, which installs it",
        validator.display()
    );
    let mut child = Command::new(validator)
        .args(["--strict", "-k", "1.33", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}\n{yaml}");
    assert_eq!(report.matches("passed for resource").count(), 5, "{report}");
}

/// No two members share a node unless the user says otherwise (the scheduler's own spreading is
/// soft), and they spread over zones where it can; both replaceable through `podTemplate`.
#[test]
fn members_never_share_a_node_by_default() {
    let pod = |spec: serde_json::Value| {
        statefulset(&cluster(spec), 3, "op", &RestartFor::default())
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    };
    let default = pod(json!({"size": 3, "version": "3.5.21"}));
    let anti = default.affinity.unwrap().pod_anti_affinity.unwrap();
    let term = &anti.required_during_scheduling_ignored_during_execution.unwrap()[0];
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    let selected = term.label_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
    assert_eq!(selected.get("app.kubernetes.io/instance").map(String::as_str), Some("demo"));
    let zones = &default.topology_spread_constraints.unwrap()[0];
    assert_eq!(
        (zones.topology_key.as_str(), zones.when_unsatisfiable.as_str(), zones.max_skew),
        ("topology.kubernetes.io/zone", "ScheduleAnyway", 1)
    );
    let custom = pod(json!({"size": 3, "version": "3.5.21", "podTemplate": {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}]
    }}));
    let affinity = custom.affinity.unwrap();
    assert!(
        affinity.pod_anti_affinity.is_none() && affinity.node_affinity.is_some(),
        "the user's affinity replaces the default"
    );
    assert_eq!(custom.topology_spread_constraints.unwrap()[0].topology_key, "rack");
}

/// Private registries and quotas: pull secrets and a service account for member pods from
/// `podTemplate`; member-init names resources (what etcd gets), so a namespace with a
/// ResourceQuota admits the pods.
#[test]
fn member_pods_take_pull_secrets_and_fit_a_resource_quota() {
    let c = cluster(json!({"size": 3, "version": "3.5.21", "podTemplate": {
        "imagePullSecrets": [{"name": "mirror"}], "serviceAccountName": "etcd"
    }}));
    let pod = statefulset(&c, 3, "op", &RestartFor::default()).spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "mirror");
    assert_eq!(pod.service_account_name.as_deref(), Some("etcd"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let init = &pod.init_containers.unwrap()[0];
    let requests = init.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"), "{requests:?}");
    assert_eq!(init.resources, pod.containers[0].resources);
}
