//! `local --metrics-listen`: the per-cluster figures on /metrics follow a real cluster. Size
//! 3 → 5 shows a learner joining and the voters growing; a killed member shows fewer ready
//! members than the size, then all of them again; a cluster scaled to zero has no quorum and
//! a size of 0 (so the "cluster down" alert, which needs a size above 0, stays quiet).

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
