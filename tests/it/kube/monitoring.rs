//! `manifests/monitoring/`: the optional component renders on top of the base, its alert rules
//! pass `promtool check rules` and their unit tests (`promtool test rules`), the dashboard loads
//! as Grafana's dashboard model, and every metric the rules and the dashboard query is one the
//! operator exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out =
        Command::new("promtool").args(args).current_dir(dir).output().expect(
            "promtool is installed (Debian's prometheus package; ./scripts/test installs it)",
        );
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The PrometheusRule's spec: a Prometheus rule file.
fn rule_file() -> Value {
    let path = root().join("manifests/monitoring/prometheusrule.yaml");
    let rule: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    rule["spec"].clone()
}

#[test]
fn the_component_renders_on_top_of_the_base() {
    // An overlay as a user writes one (kustomize refuses absolute paths, so beside a copy).
    let work = tempfile::tempdir().unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(root().join("manifests"))
        .arg(work.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let overlay = work.path().join("overlay");
    std::fs::create_dir(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources: [../manifests]\ncomponents: [../manifests/monitoring]\n",
    )
    .unwrap();
    let out = Command::new("kubectl").arg("kustomize").arg(&overlay).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("kind: ServiceMonitor") && text.contains("kind: PrometheusRule"));
    assert!(text.contains("name: etcd-operator-dashboard"), "the dashboard ConfigMap");
    assert!(text.contains("kind: Deployment"), "the base is still there");
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = rule_file();
    std::fs::write(dir.path().join("full.yaml"), serde_yaml::to_string(&rules).unwrap()).unwrap();
    let checked = promtool(&["check", "rules", "full.yaml"], dir.path());
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");

    // promtool compares annotations word for word: the unit tests are about when alerts fire.
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            rule.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    std::fs::write(dir.path().join("rules.yaml"), serde_yaml::to_string(&rules).unwrap()).unwrap();
    std::fs::copy(
        root().join("manifests/monitoring/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    let tested = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a unit test.
    let tests = std::fs::read_to_string(dir.path().join("alerts.test.yaml")).unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(tests.contains(&format!("alertname: {name}\n")), "no unit test of {name}");
        }
    }
}

/// Every metric family the operator registers, as Prometheus names its series (a family shows
/// on /metrics once it has a series: each gets one here).
async fn exported() -> BTreeSet<String> {
    use etcd_operator::cluster_metrics::{ClusterLabels, ClusterMetrics};
    use etcd_operator::controller::backup::{BackupLabels, BackupMetrics};
    use etcd_operator::controller::{Error, ReconcileMetrics};
    // The server's own registry (HTTP, served certificates), as `run` builds it.
    let server = etcd_operator::server::Metrics::default();
    let clusters = ClusterMetrics::default();
    let reconciles = ReconcileMetrics::default();
    let backups = BackupMetrics::default();
    {
        let mut registry = server.registry.lock().unwrap();
        clusters.register(&mut registry);
        reconciles.register(&mut registry);
        backups.register(&mut registry);
    }
    let labels = ClusterLabels { namespace: "prod".into(), cluster: "main".into() };
    // A status with every condition a series is set from only once present.
    let checked = etcd_crds::conditions::condition(
        etcd_crds::conditions::types::DATA_CONSISTENT,
        true,
        "Consistent",
        String::new(),
        None,
    );
    let status = etcd_crds::EtcdClusterStatus { conditions: vec![checked], ..Default::default() };
    clusters.observe(&labels, 3, "3.5.1", &status);
    clusters.step(&labels, "promote");
    let request = etcd_certs::ClusterPkiRequest {
        cluster: "main".into(),
        namespace: "prod".into(),
        max_members: 1,
        extra_sans: Vec::new(),
    };
    let pki = etcd_certs::issue_cluster_pki(&request, time::OffsetDateTime::now_utc()).unwrap();
    clusters.certificates(&labels, &pki);
    server.served_certificate("ca", &pki.ca.cert_pem);
    let failed: Result<(), Error> =
        Err(Error::NoNamespace { kind: "EtcdCluster".into(), name: "main".into() });
    let _ = reconciles.measure("etcdcluster", async { failed }).await;
    let backup =
        BackupLabels { namespace: "prod".into(), name: "nightly".into(), cluster: "main".into() };
    let record = serde_json::from_value(serde_json::json!({
        "location": "file:///b/x", "size": 1, "sha256": "x", "revision": 1, "compression": "None"
    }))
    .unwrap();
    backups.record_success(&backup, &record, std::time::Duration::from_secs(1), Default::default());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &server.registry.lock().unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
        names.insert(match kind {
            "counter" => format!("{name}_total"),
            "histogram" => format!("{name}_bucket"),
            _ => name.to_owned(),
        });
    }
    names
}

/// The operator's metric names in a text of queries.
fn queried(text: &str) -> BTreeSet<String> {
    text.match_indices("etcd_operator_")
        .map(|(i, _)| {
            text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_query_is_exported() {
    let exported = exported().await;
    let dashboard =
        std::fs::read_to_string(root().join("manifests/monitoring/dashboard.json")).unwrap();
    let rules = serde_yaml::to_string(&rule_file()).unwrap();
    for (what, text, at_least) in [("rules", rules, 8), ("dashboard", dashboard, 12)] {
        let queried = queried(&text);
        assert!(queried.len() >= at_least, "{what}: {queried:?}");
        let unknown: Vec<&String> = queried.iter().filter(|q| !exported.contains(*q)).collect();
        assert!(unknown.is_empty(), "the {what} query {unknown:?}, not exported: {exported:?}");
    }
}

/// Grafana's dashboard model (grafana-foundation-sdk, in .venv): the JSON loads, and every field
/// it has survives a round trip through the model, so none is misspelt or misplaced.
#[test]
fn the_dashboard_loads_as_a_grafana_dashboard_model() {
    let python = root().join(".venv/bin/python");
    let check = r#"
import json, sys
from grafana_foundation_sdk.models.dashboard import Dashboard
ours = json.load(open(sys.argv[1]))
model = Dashboard.from_json(ours)
back = json.loads(json.dumps(model.to_json(), default=lambda o: o.to_json()))
def lost(a, b, path):
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return [path]
        return [p for k, v in a.items() for p in (lost(v, b[k], f"{path}.{k}") if k in b else [f"{path}.{k}"])]
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return [path]
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in lost(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]
missing = lost(ours, back, "")
print("panels:", len(model.panels), "not in the model:", missing)
sys.exit(1 if missing or not model.panels else 0)
"#;
    let out = Command::new(&python)
        .args(["-c", check])
        .arg(root().join("manifests/monitoring/dashboard.json"))
        .output()
        .expect("the venv's python (./scripts/test installs grafana-foundation-sdk there)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("panels: 14"), "{text}");
}
