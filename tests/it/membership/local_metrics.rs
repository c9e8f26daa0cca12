//! `local --metrics-listen`: the per-cluster figures on /metrics follow a real cluster. Size
//! 3 → 5 shows a learner joining and the voters growing; a killed member shows fewer ready
//! members than the size, then all of them again; a cluster scaled to zero has no quorum and
//! a size of 0 (so the "cluster down" alert, which needs a size above 0, stays quiet). A real
//! Prometheus scraping `local` and evaluating the operator's rules fires EtcdClusterDown while
//! two of three members hang, and clears it when they answer again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::etcd::free_port;
use crate::support::local::Local;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The cluster's series on /metrics, by name (and phase), value as text.
async fn scrape(url: &str) -> BTreeMap<String, i64> {
    let Ok(response) = reqwest::get(url).await else { return BTreeMap::new() };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| {
            line.starts_with("etcd_operator_cluster_") && line.contains(r#"cluster="it""#)
        })
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            let key = match series.split(r#"phase=""#).nth(1) {
                Some(phase) => format!("{name}:{}", phase.trim_end_matches("\"}")),
                None => name.to_owned(),
            };
            Some((key, value.parse().ok()?))
        })
        .collect()
}

/// Scrapes every 50 ms until `done` holds for a scrape; returns every scrape seen.
async fn until(
    url: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, i64>) -> bool,
) -> Vec<BTreeMap<String, i64>> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let figures = scrape(url).await;
        let finished = done(&figures);
        seen.push(figures);
        if finished {
            return seen;
        }
        assert!(Instant::now() < deadline, "no scrape showed {what}; last: {:?}", seen.last());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_figures_follow_scaling_a_killed_member_and_a_stop() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}/metrics");
    let mut local = Local::start_with(3, &["--metrics-listen", &listen]);
    let at = |n: &str, f: &BTreeMap<String, i64>| f.get(n).copied();
    until(&url, "3 ready voters, Running", |f| {
        at("etcd_operator_cluster_voters", f) == Some(3)
            && at("etcd_operator_cluster_ready_members", f) == Some(3)
            && at("etcd_operator_cluster_quorum", f) == Some(1)
            && at("etcd_operator_cluster_leader", f) == Some(1)
            && at("etcd_operator_cluster_phase:Running", f) == Some(1)
    })
    .await;

    local.set_size(5);
    let grew = until(&url, "5 ready voters", |f| {
        at("etcd_operator_cluster_voters", f) == Some(5)
            && at("etcd_operator_cluster_ready_members", f) == Some(5)
            && at("etcd_operator_cluster_phase:Running", f) == Some(1)
    })
    .await;
    assert!(
        grew.iter().any(|f| at("etcd_operator_cluster_learners", f) == Some(1)
            && at("etcd_operator_cluster_size", f) == Some(5)),
        "a learner was never seen while growing"
    );
    assert!(grew.iter().any(|f| at("etcd_operator_cluster_phase:Scaling", f) == Some(1)));
    let steps = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        steps.contains(r#"etcd_operator_cluster_membership_steps_total{namespace="default",cluster="it",step="promote"} 2"#),
        "{steps}"
    );

    let member = local.state().join("members/it-3");
    let pid: i32 = std::fs::read_to_string(member.join("pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the pid of the etcd process this test's operator started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    until(&url, "the killed member not ready, the quorum kept", |f| {
        at("etcd_operator_cluster_ready_members", f) == Some(4)
            && at("etcd_operator_cluster_quorum", f) == Some(1)
            && at("etcd_operator_cluster_size", f) == Some(5)
    })
    .await;
    until(&url, "all 5 ready again after the kill", |f| {
        at("etcd_operator_cluster_ready_members", f) == Some(5)
    })
    .await;

    local.set_size(0);
    until(&url, "a stopped cluster: size 0, no quorum", |f| {
        at("etcd_operator_cluster_size", f) == Some(0)
            && at("etcd_operator_cluster_quorum", f) == Some(0)
            && at("etcd_operator_cluster_phase:Stopped", f) == Some(1)
    })
    .await;
}

/// A real Prometheus (Debian's 2.42), scraping `local` every second and evaluating the
/// operator's alert rules (their `for` shortened; promtool's unit tests cover the durations).
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rule = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("manifests/monitoring/prometheusrule.yaml"),
        )
        .unwrap();
        let rule: serde_yaml::Value = serde_yaml::from_str(&rule).unwrap();
        let mut rules = rule["spec"].clone();
        for group in rules["groups"].as_sequence_mut().unwrap() {
            for rule in group["rules"].as_sequence_mut().unwrap() {
                rule["for"] = serde_yaml::Value::from("2s");
            }
        }
        std::fs::write(dir.path().join("rules.yaml"), serde_yaml::to_string(&rules).unwrap())
            .unwrap();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yaml]\nscrape_configs:\n  - job_name: local\n    static_configs: [{{targets: ['{target}']}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect(
                "prometheus is installed (Debian's prometheus package; ./scripts/test installs it)",
            );
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// The alerts firing now, by name.
    async fn firing(&self) -> Vec<String> {
        let url = format!("{}/api/v1/alerts", self.url);
        let Ok(response) = reqwest::get(&url).await else { return Vec::new() };
        let text = response.text().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect()
    }

    async fn wait(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let firing = self.firing().await;
            if done(&firing) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never showed {what}; firing: {firing:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_cluster_down_alert_while_a_majority_is_stopped() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listen = format!("127.0.0.1:{}", free_port());
    let local = Local::start_with(3, &["--metrics-listen", &listen]);
    local.wait_running(3, TIMEOUT).await;
    let prometheus = Prometheus::start(&listen);
    let down = |firing: &[String]| firing.iter().any(|a| a == "EtcdClusterDown");
    // Scraped and evaluated a while with the cluster healthy: nothing fires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!down(&prometheus.firing().await), "EtcdClusterDown on a healthy cluster");

    // Two of three members hang (SIGSTOP): running, but not answering.
    let pids: Vec<i32> = ["it-1", "it-2"]
        .iter()
        .map(|m| {
            let pid = local.state().join(format!("members/{m}/pid"));
            std::fs::read_to_string(pid).unwrap().trim().parse().unwrap()
        })
        .collect();
    for pid in &pids {
        // SAFETY: kill(2) on the pid of an etcd process this test's operator started.
        unsafe { libc::kill(*pid, libc::SIGSTOP) };
    }
    prometheus.wait("EtcdClusterDown firing", down).await;
    for pid in &pids {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    prometheus.wait("EtcdClusterDown cleared", |firing| !down(firing)).await;
}
