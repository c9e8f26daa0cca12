//! The Helm chart (charts/etcd-operator), rendered and linted by real Helm: it installs exactly
//! what manifests/ installs, option by option, so the two never drift.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;

use super::manifests::{documents, rendered_from, root, validate};

const CHART: &str = "charts/etcd-operator";
const NAMESPACE: &str = "etcd-operator-system";

/// Helm as scripts/kube-clients installs it (target/tools/helm), or HELM.
fn helm() -> Command {
    let path = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/tools/helm"));
    assert!(path.exists(), "{} is missing: run ./scripts/test, which installs it", path.display());
    let mut command = Command::new(path);
    command.current_dir(root());
    command
}

fn run(mut command: Command) -> String {
    let out = command.output().expect("helm runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `helm template` of the chart with `values` (`--set` pairs), CRDs included.
fn template(values: &[&str]) -> String {
    let mut command = helm();
    command.args(["template", "etcd-operator", CHART, "--namespace", NAMESPACE, "--include-crds"]);
    for value in values {
        command.args(["--set", value]);
    }
    run(command)
}

/// manifests/ with `components`, as a user's overlay puts them together: in the operator's
/// namespace, every object labelled as the base labels its own.
fn kustomized(components: &[&str]) -> String {
    let dir = tempfile::Builder::new().prefix("overlay").tempdir_in(root().join("target")).unwrap();
    let up = |path: &str| format!("../../{path}");
    let overlay = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "labels": [{"pairs": {
            "app.kubernetes.io/name": "etcd-operator",
            "app.kubernetes.io/part-of": "etcd-operator",
        }}],
        "resources": [up("manifests")],
        "components": components.iter().map(|c| up(&format!("manifests/{c}"))).collect::<Vec<_>>(),
    });
    std::fs::write(dir.path().join("kustomization.yaml"), overlay.to_string()).unwrap();
    rendered_from(dir.path().to_str().unwrap())
}

/// The objects of `yaml` by kind, namespace and name, without what only one of the two installs
/// can carry: the labels Helm sets (release, chart, version), and labels on CRDs (Helm installs
/// its crds/ as they are written, unlabelled). The Namespace is Helm's (`--create-namespace`).
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    const HELM_LABELS: [&str; 4] = [
        "app.kubernetes.io/instance",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/version",
        "helm.sh/chart",
    ];
    let mut by_key = BTreeMap::new();
    for mut doc in documents(yaml).into_iter().filter(|d| !d.is_null()) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "Namespace" {
            continue;
        }
        integral_numbers_as_integers(&mut doc);
        let metadata = doc.get_mut("metadata").and_then(Value::as_mapping_mut).unwrap();
        let crd = kind == "CustomResourceDefinition";
        if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_mapping_mut) {
            labels.retain(|k, _| !crd && !HELM_LABELS.contains(&k.as_str().unwrap_or_default()));
            if labels.is_empty() {
                metadata.remove("labels");
            }
        }
        let key = format!(
            "{kind} {}/{}",
            metadata.get("namespace").and_then(Value::as_str).unwrap_or_default(),
            metadata.get("name").and_then(Value::as_str).unwrap_or_default()
        );
        assert!(by_key.insert(key.clone(), doc).is_none(), "{key} twice");
    }
    by_key
}

/// `1.0` and `1` are one number to the API server; kustomize writes the CRDs' `1.0` as `1`.
fn integral_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Mapping(m) => m.values_mut().for_each(integral_numbers_as_integers),
        Value::Sequence(s) => s.iter_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// What differs between the two installs, object by object.
fn differences(chart: &BTreeMap<String, Value>, kustomize: &BTreeMap<String, Value>) -> String {
    let mut out = String::new();
    for key in chart.keys().chain(kustomize.keys().filter(|k| !chart.contains_key(*k))) {
        match (chart.get(key), kustomize.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                out += &format!("{key} differs:\n");
                where_differ(a, b, "", &mut out);
            }
            (Some(_), None) => out += &format!("{key}: only the chart installs it\n"),
            (None, _) => out += &format!("{key}: only manifests/ installs it\n"),
        }
    }
    out
}

/// The paths at which `chart` and `kustomize` hold different values, with both values.
fn where_differ(chart: &Value, kustomize: &Value, path: &str, out: &mut String) {
    match (chart, kustomize) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let name = key.as_str().map(str::to_owned).unwrap_or_else(|| format!("{key:?}"));
                let (x, y) =
                    (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                where_differ(x, y, &format!("{path}.{name}"), out);
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                where_differ(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => {
            let show = |v: &Value| serde_json::to_string(v).unwrap_or_default();
            *out += &format!("  {path}: chart {} / manifests {}\n", show(a), show(b));
        }
        _ => {}
    }
}

/// Each option of the chart against the kustomize component that does the same.
#[test]
fn the_chart_installs_what_manifests_install_option_by_option() {
    for (values, components) in [
        (&[][..], &[][..]),
        (&["monitoring.enabled=true"][..], &["monitoring"][..]),
        (&["networkPolicy.enabled=true"][..], &["network-policies"][..]),
        (&["webhook.port=10250"][..], &["listen-10250"][..]),
    ] {
        let chart = objects(&template(values));
        let kustomize = objects(&kustomized(components));
        let diff = differences(&chart, &kustomize);
        assert!(diff.is_empty(), "with {values:?} against {components:?}:\n{diff}");
    }
}

/// The chart's values change what they say and nothing else.
#[test]
fn values_reach_the_operator() {
    let chart = objects(&template(&[
        "image.repository=registry.example/mirror/etcd-operator",
        "image.tag=0.2.0",
        "replicas=3",
        "operator.backupEndpointAllow={minio.storage.svc,10.0.0.0/8}",
        "operator.maxConcurrentReconciles=8",
        "nodeSelector.pool=system",
    ]));
    let pod = &chart[&format!("Deployment {NAMESPACE}/etcd-operator")]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/mirror/etcd-operator:0.2.0");
    let env = |name: &str| {
        container["env"].as_sequence().unwrap().iter().find(|e| e["name"] == name).cloned()
    };
    assert_eq!(env("BACKUP_ENDPOINT_ALLOW").unwrap()["value"], "minio.storage.svc,10.0.0.0/8");
    assert_eq!(env("MAX_CONCURRENT_RECONCILES").unwrap()["value"], "8");
    assert!(env("LISTEN").is_none(), "the default port needs no LISTEN");
    assert_eq!(pod["nodeSelector"]["pool"], "system");
    // The default spread stays unless affinity is set.
    assert!(pod["affinity"]["podAntiAffinity"].is_mapping());
    assert_eq!(chart[&format!("Deployment {NAMESPACE}/etcd-operator")]["spec"]["replicas"], 3);
}

/// Installed into another namespace, everything that names the namespace follows it: the
/// webhooks call the Service there, the operator's ServiceAccount is bound there, and the
/// ServiceMonitor checks the certificate issued for that Service's name.
#[test]
fn another_namespace_is_followed_everywhere() {
    let mut command = helm();
    command.args(["template", "ops", CHART, "--namespace", "platform", "--set"]);
    command.arg("monitoring.enabled=true");
    let text = run(command);
    assert!(!text.contains(NAMESPACE), "the chart still names {NAMESPACE}:\n{text}");
    let docs = documents(&text);
    let hooks = docs.iter().filter(|d| d["kind"].as_str().unwrap_or("").ends_with("Configuration"));
    for hook in hooks.flat_map(|d| d["webhooks"].as_sequence().unwrap().clone()) {
        assert_eq!(hook["clientConfig"]["service"]["namespace"], "platform");
    }
}

/// The rules of manifests/rbac.yaml's ClusterRole, split as namespaced mode splits them: those
/// on what cannot be namespaced, and the rest.
fn cluster_role_rules() -> (Vec<Value>, Vec<Value>) {
    let yaml = std::fs::read_to_string(root().join("manifests/rbac.yaml")).unwrap();
    let role = documents(&yaml).into_iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    role["rules"].as_sequence().unwrap().iter().cloned().partition(|rule| {
        ["authorization.k8s.io", "admissionregistration.k8s.io"]
            .contains(&rule["apiGroups"][0].as_str().unwrap_or_default())
    })
}

fn env_of(deployment: &Value, name: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

/// Namespaced mode: the operator's rights on what tenants own (Secrets, pods, claims, its custom
/// resources) exist in the listed namespaces only, each with manifests/' rules; cluster-wide it
/// keeps what cannot be namespaced; the webhooks are called for those namespaces only.
#[test]
fn namespaced_mode_grants_rights_in_the_watched_namespaces_only() {
    let chart = objects(&template(&["watchNamespaces={tenant-a,tenant-b}"]));
    let (cluster_scoped, namespaced) = cluster_role_rules();
    assert_eq!(
        chart["ClusterRole /etcd-operator"]["rules"].as_sequence().unwrap(),
        &cluster_scoped
    );
    for namespace in ["tenant-a", "tenant-b"] {
        let role = &chart[&format!("Role {namespace}/etcd-operator")];
        assert_eq!(role["rules"].as_sequence().unwrap(), &namespaced, "in {namespace}");
        let binding = &chart[&format!("RoleBinding {namespace}/etcd-operator")];
        assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
        assert_eq!(binding["roleRef"]["name"], "etcd-operator");
    }
    let roles: Vec<&String> = chart.keys().filter(|k| k.starts_with("Role ")).collect();
    assert_eq!(
        roles,
        [
            "Role etcd-operator-system/etcd-operator-leader-election",
            "Role etcd-operator-system/etcd-operator-self",
            "Role tenant-a/etcd-operator",
            "Role tenant-b/etcd-operator",
        ],
        "no rights in any other namespace"
    );
    let deployment = &chart[&format!("Deployment {NAMESPACE}/etcd-operator")];
    assert_eq!(env_of(deployment, "WATCH_NAMESPACES").as_deref(), Some("tenant-a,tenant-b"));
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        for hook in chart[&format!("{kind} /etcd-operator")]["webhooks"].as_sequence().unwrap() {
            let selector: Value = serde_yaml::from_str(
                "matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [tenant-a, tenant-b]}]",
            )
            .unwrap();
            assert_eq!(hook["namespaceSelector"], selector, "{:?}", hook["name"]);
        }
    }
}

/// webhook.certificate=helm: Helm issues the webhooks' CA and certificate, the configurations
/// trust that CA, the operator only reads it, and no rule lets it touch webhook configurations.
#[test]
fn a_helm_issued_certificate_leaves_the_operator_no_right_on_webhook_configurations() {
    for values in [
        &["webhook.certificate=helm"][..],
        &["webhook.certificate=helm", "watchNamespaces={tenant-a}"][..],
    ] {
        let chart = objects(&template(values));
        let secret = &chart[&format!("Secret {NAMESPACE}/etcd-operator-webhook-tls")];
        let field = |key: &str| {
            let encoded = secret["data"][key].as_str().unwrap();
            String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                    .unwrap(),
            )
            .unwrap()
        };
        let (ca, cert, key) = (field("ca.crt"), field("tls.crt"), field("tls.key"));
        let names = etcd_certs::webhook::service_names("etcd-operator-webhook", NAMESPACE);
        let now = time::OffsetDateTime::now_utc();
        let renewal =
            etcd_certs::needs_renewal(&cert, Some(&names), Some(&ca), now, &Default::default());
        assert_eq!(
            renewal.unwrap(),
            None,
            "the certificate names the Service and is signed by the CA"
        );
        etcd_certs::resolver::certified_key(&etcd_certs::CertKeyPair {
            cert_pem: cert,
            key_pem: key,
        })
        .expect("the operator serves the key Helm generates");
        for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
            for hook in chart[&format!("{kind} /etcd-operator")]["webhooks"].as_sequence().unwrap()
            {
                assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
            }
        }
        let rules =
            chart.iter().filter(|(k, _)| k.starts_with("Role ") || k.starts_with("ClusterRole "));
        for (name, role) in rules {
            let text = serde_yaml::to_string(&role["rules"]).unwrap();
            assert!(!text.contains("admissionregistration"), "{name} with {values:?}:\n{text}");
        }
        let deployment = &chart[&format!("Deployment {NAMESPACE}/etcd-operator")];
        assert_eq!(env_of(deployment, "WEBHOOK_CERTIFICATE").as_deref(), Some("provided"));
    }
}

/// Values the chart cannot carry out are refused by name, not rendered into a broken install.
#[test]
fn values_the_chart_cannot_carry_out_are_refused() {
    for (value, says) in [
        ("webhook.certificate=cert-manager", "webhook.certificate must be operator or helm"),
        ("watchNamespaces={Tenant_A}", "watchNamespaces: \"Tenant_A\" is not a namespace name"),
    ] {
        let mut command = helm();
        command.args(["template", "etcd-operator", CHART, "--set", value]);
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{value} was rendered");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{value}: {stderr}");
    }
}

#[test]
fn the_chart_passes_helm_lint_strict_and_kubernetes_schemas() {
    for values in [
        &[][..],
        &["networkPolicy.enabled=true", "webhook.port=10250"][..],
        &["watchNamespaces={tenant-a,tenant-b}", "webhook.certificate=helm"][..],
    ] {
        let mut command = helm();
        command.args(["lint", "--strict", CHART]);
        for value in values {
            command.args(["--set", value]);
        }
        run(command);
        // The Prometheus Operator's kinds are not Kubernetes' own: its schemas are not here.
        let report = validate(&template(values));
        assert!(report.contains("passed for resource deployment/etcd-operator"), "{report}");
    }
}

/// The chart, the Cargo package and the image manifests/ install are one release.
#[test]
fn the_chart_version_is_the_release() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
}
