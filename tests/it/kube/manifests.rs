//! What `kubectl apply -k manifests/` installs: valid against Kubernetes' own schemas, and shaped
//! the way the operator needs (webhook paths, least-privilege RBAC, a locked-down Deployment).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_yaml::Value;

/// The oldest Kubernetes version supported (k8s-openapi feature `v1_33`).
const KUBERNETES_VERSION: &str = "1.33";

pub(super) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rendered() -> String {
    rendered_from("manifests")
}

/// `kubectl kustomize DIR`, DIR relative to the repository.
pub(super) fn rendered_from(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(root())
        .output()
        .expect("kubectl is installed (kubectl kustomize renders manifests/)");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

pub(super) fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} is not in the rendered manifests"))
}

/// The venv's kubernetes-validate, as scripts/test installs it.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/kubernetes-validate"));
    assert!(path.exists(), "{} is missing: run ./scripts/test, which installs it", path.display());
    path
}

/// The file a release ships, and the end-to-end scenarios install from, is what kustomize
/// renders from manifests/: one source, never drifting.
#[test]
fn install_yaml_is_what_manifests_render() {
    let path = root().join("manifests/install.yaml");
    let committed = std::fs::read_to_string(&path).expect("manifests/install.yaml is committed");
    let body: String =
        committed.lines().skip(INSTALL_HEADER_LINES).map(|l| format!("{l}\n")).collect();
    assert!(
        body == rendered(),
        "manifests/install.yaml differs from manifests/; regenerate it: head -{INSTALL_HEADER_LINES} manifests/install.yaml > /tmp/h && (cat /tmp/h; kubectl kustomize manifests) > manifests/install.yaml.new && mv manifests/install.yaml.new manifests/install.yaml"
    );
}

/// The comment lines above the rendered manifests in install.yaml.
const INSTALL_HEADER_LINES: usize = 3;

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let report = validate(&rendered());
    assert!(report.contains("passed for resource deployment/etcd-operator"), "{report}");
}

/// The components that move the listener and add NetworkPolicies, as the example overlay puts
/// them together: valid, and consistent with each other.
#[test]
fn the_private_control_plane_overlay_listens_where_its_port_says() {
    let yaml = rendered_from("examples/private-control-plane");
    let report = validate(&yaml);
    assert!(report.contains("passed for resource networkpolicy/etcd-operator"), "{report}");
    let docs = documents(&yaml);
    let deployment = find(&docs, "Deployment", "etcd-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let listen = container["env"]
        .as_sequence()
        .and_then(|env| env.iter().find(|e| e["name"] == "LISTEN"))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_owned();
    let port = &container["ports"][0];
    assert_eq!(port["name"], "https");
    assert_eq!(listen, format!("[::]:{}", port["containerPort"].as_u64().unwrap_or_default()));
    assert_eq!(port["containerPort"], 10250, "GKE's control plane reaches nodes on 443 and 10250");
    let service = find(&docs, "Service", "etcd-operator-webhook");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https");

    // Only the operator's pods; in, only their `https` port; out, DNS, etcd members and HTTPS.
    let policy = find(&docs, "NetworkPolicy", "etcd-operator");
    assert_eq!(policy["metadata"]["namespace"], deployment["metadata"]["namespace"]);
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], pod_labels(deployment));
    let types = serde_yaml::from_str::<Value>("[Ingress, Egress]").unwrap();
    assert_eq!(policy["spec"]["policyTypes"], types);
    let to_etcd = &policy["spec"]["egress"][1];
    assert_eq!(to_etcd["ports"][0]["port"], 2379);
    let member_labels = etcd_operator::names::selector("demo");
    let etcd_name = member_labels.get("app.kubernetes.io/name").cloned().unwrap_or_default();
    assert_eq!(
        to_etcd["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        etcd_name.as_str()
    );
    let rules = policy["spec"]["ingress"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(rules.len(), 2, "the API server and Prometheus");
    // The API server (by address, so possibly anyone) reaches the webhooks only, Prometheus
    // /metrics only: each rule admits one port, and the container has it.
    let ports: Vec<&str> =
        rules.iter().filter_map(|rule| rule["ports"][0]["port"].as_str()).collect();
    assert_eq!(ports, ["https", "metrics"]);
    for rule in &rules {
        assert_eq!(rule["ports"].as_sequence().map(Vec::len), Some(1));
    }
    assert!(rules[0]["from"][0]["ipBlock"].is_mapping(), "the API server, by address");
    assert!(rules[1]["from"][0]["namespaceSelector"].is_mapping(), "Prometheus, by its labels");
    let metrics = container["ports"]
        .as_sequence()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "metrics"))
        .expect("a metrics port on the container");
    assert_eq!(metrics["containerPort"], 9443, "the operator's --metrics-listen default");
}

/// kubernetes-validate's report on `yaml`; fails the test if it refuses any object.
pub(super) fn validate(yaml: &str) -> String {
    let mut child = Command::new(kubernetes_validate())
        .args(["--strict", "-k", KUBERNETES_VERSION, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate refused the manifests:\n{report}");
    report
}

#[test]
fn committed_crds_in_manifests_match_the_types() {
    let committed = std::fs::read_to_string(root().join("manifests/crds.yaml")).unwrap();
    assert!(
        committed == etcd_crds::crds_yaml().unwrap(),
        "manifests/crds.yaml is stale: run `cargo run -- crd > manifests/crds.yaml`"
    );
}

#[test]
fn webhooks_point_at_every_admission_path() {
    let docs = documents(&rendered());
    for (kind, mode) in
        [("MutatingWebhookConfiguration", "mutate"), ("ValidatingWebhookConfiguration", "validate")]
    {
        let hooks = find(&docs, kind, "etcd-operator")["webhooks"].as_sequence().unwrap();
        let mut paths: Vec<&str> =
            hooks.iter().map(|h| h["clientConfig"]["service"]["path"].as_str().unwrap()).collect();
        paths.sort();
        let want: Vec<String> = ["etcdbackups", "etcdclusters", "etcdrestores"]
            .iter()
            .map(|r| format!("/{mode}/{r}"))
            .collect();
        assert_eq!(paths, want);
        for hook in hooks {
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(hook["admissionReviewVersions"][0], "v1");
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["clientConfig"]["service"]["name"], "etcd-operator-webhook");
            assert_eq!(hook["clientConfig"]["service"]["namespace"], "etcd-operator-system");
            assert!(
                hook["clientConfig"].get("caBundle").is_none(),
                "the operator injects the caBundle"
            );
        }
    }
}

#[test]
fn rbac_is_least_privilege() {
    let docs = documents(&rendered());
    for (kind, name) in
        [("ClusterRole", "etcd-operator"), ("Role", "etcd-operator-leader-election")]
    {
        for rule in find(&docs, kind, name)["rules"].as_sequence().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                let values = rule[field].as_sequence().unwrap();
                assert!(!values.iter().any(|v| v == "*"), "{kind}/{name} grants * in {field}");
            }
        }
    }
    let cluster_role = find(&docs, "ClusterRole", "etcd-operator");
    let webhook_patch = cluster_role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| {
            r["apiGroups"][0] == "admissionregistration.k8s.io"
                && r["verbs"].as_sequence().unwrap().iter().any(|v| v == "patch")
        })
        .expect("a rule lets the operator patch its webhook configurations");
    assert_eq!(
        webhook_patch["resourceNames"][0], "etcd-operator",
        "patch is limited to our own configurations"
    );
    // Every rule on webhook configurations is limited to ours, watches included.
    let rules = cluster_role["rules"].as_sequence().unwrap();
    for rule in rules.iter().filter(|r| r["apiGroups"][0] == "admissionregistration.k8s.io") {
        assert_eq!(rule["resourceNames"][0], "etcd-operator", "{rule:?}");
    }
    // Secrets are never deleted or patched by the operator (owner references remove them).
    for rule in rules
        .iter()
        .filter(|r| r["resources"].as_sequence().unwrap().iter().any(|v| v == "secrets"))
    {
        let verbs = rule["verbs"].as_sequence().unwrap();
        assert!(!verbs.iter().any(|v| v == "delete" || v == "patch"), "{rule:?}");
    }
    // Whether every call the controllers make is granted is not a hand-kept list: the
    // end-to-end scenarios run the operator on the real kube-apiserver, whose RBAC authorizer
    // refuses what these rules do not grant, and fail on any refusal in its audit log
    // (tests/kube-sim/tests/e2e.rs).
}

#[test]
fn deployment_runs_locked_down_with_probes() {
    let docs = documents(&rendered());
    let deployment = find(&docs, "Deployment", "etcd-operator");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["args"][0], "run");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert!(container["resources"]["requests"]["memory"].is_string());
    // Two replicas that a drain or a lost node cannot both take: the webhooks fail closed.
    assert_eq!(deployment["spec"]["replicas"], 2);
    let spread =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(spread["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    // Backup verification restores into /tmp: bounded, and reserved on the node.
    let scratch =
        pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == "scratch").unwrap();
    assert!(scratch["emptyDir"]["sizeLimit"].as_str().is_some(), "/tmp has no sizeLimit");
    assert!(container["resources"]["requests"]["ephemeral-storage"].as_str().is_some());
    let budget = find(&docs, "PodDisruptionBudget", "etcd-operator");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(budget["spec"]["selector"]["matchLabels"], pod_labels(deployment));
}

fn pod_labels(deployment: &Value) -> Value {
    deployment["spec"]["template"]["metadata"]["labels"].clone()
}

/// Each etcd pod's member-init runs the operator's own image: the operator reads it from its
/// pod's `operator` container, which kustomize's `images:` rewrites. An image named anywhere
/// else (an environment variable) would not be rewritten and would be pulled as it is written.
#[test]
fn member_init_runs_the_image_kustomize_sets() {
    let docs = documents(&rendered());
    let deployment = find(&docs, "Deployment", "etcd-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "operator", "the operator reads its image from this container");
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("manifests/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let image = &kustomization["images"][0];
    let expected =
        format!("{}:{}", image["newName"].as_str().unwrap(), image["newTag"].as_str().unwrap());
    assert_eq!(container["image"].as_str(), Some(expected.as_str()));
    let env = container["env"].as_sequence().cloned().unwrap_or_default();
    assert!(
        !env.iter().any(|e| e["name"] == "OPERATOR_IMAGE"),
        "OPERATOR_IMAGE would override the image kustomize sets"
    );
}

#[test]
fn examples_are_valid_objects_of_our_kinds() {
    let dir = root().join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue; // a kustomize overlay of the operator's manifests, rendered above
        }
        for doc in documents(&std::fs::read_to_string(&path).unwrap()) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let value = serde_json::to_value(&doc).unwrap();
            match kind.as_str() {
                "EtcdCluster" => {
                    drop(serde_json::from_value::<etcd_crds::EtcdCluster>(value).unwrap())
                }
                "EtcdBackup" => {
                    drop(serde_json::from_value::<etcd_crds::EtcdBackup>(value).unwrap())
                }
                "EtcdRestore" => {
                    drop(serde_json::from_value::<etcd_crds::EtcdRestore>(value).unwrap())
                }
                "Secret" => continue,
                other => panic!("{}: unexpected kind {other}", path.display()),
            }
            seen.push(kind);
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["EtcdBackup", "EtcdCluster", "EtcdRestore"]);
}
