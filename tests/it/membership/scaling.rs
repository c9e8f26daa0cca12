//! The planner, the etcd layer and the process adapter against real etcd (TLS on), through the
//! real `etcd-operator local`: scaling 1 → 3 → 5 → 3 → 1 and 3 → 0 → 3 with a writer running,
//! every acknowledged write read back, quorum never lost, and the history of three concurrent
//! clients (puts, linearizable gets, compare-and-swaps, deletes) linearizable.

use std::time::Duration;

use crate::support::history::{self, Recorder, Targets};
use crate::support::local::{Local, Writer, assert_all_present};
use etcd_operator::etcd;

const STEP_TIMEOUT: Duration = Duration::from_secs(90);

/// Samples the cluster while it changes: every time the member list answers and stays the same
/// while the voters are asked, the healthy voters must be a quorum of the voters. Returns
/// (samples judged, samples not judged).
fn quorum_probe(
    endpoint: String,
    tls: etcd::ClientTls,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<(usize, usize)>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let (mut judged, mut unjudged) = (0, 0);
        let list = || async {
            let mut client = etcd::connect(std::slice::from_ref(&endpoint), Some(&tls)).await?;
            let (_, members) = etcd::member_list(&mut client).await?;
            Ok::<_, etcd::Error>(members)
        };
        let voters = |members: &[etcd::Member]| -> Vec<u64> {
            members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect()
        };
        while !*stopped.borrow() {
            let sample = async {
                let members = list().await?;
                let mut healthy = 0;
                for voter in members.iter().filter(|m| !m.is_learner) {
                    if let Some(url) = &voter.client_url {
                        let status = tokio::time::timeout(
                            Duration::from_secs(2),
                            etcd::endpoint_status(url, Some(&tls)),
                        )
                        .await;
                        healthy += usize::from(matches!(status, Ok(Ok(_))));
                    }
                }
                // Judged only if the voters are the same once every status is in: a member
                // removed (and stopped, as it should be) meanwhile was not lost, and one promoted
                // meanwhile was not asked. The next sample judges the new membership.
                let asked = voters(&members);
                let stable = voters(&list().await?) == asked;
                Ok::<_, etcd::Error>(stable.then_some((healthy, asked.len())))
            };
            match tokio::time::timeout(Duration::from_secs(10), sample).await {
                Ok(Ok(Some((healthy, voters)))) => {
                    assert!(
                        healthy >= etcd_operator::membership::planner::quorum(voters),
                        "quorum lost: {healthy} healthy of {voters} voters"
                    );
                    judged += 1;
                }
                _ => unjudged += 1,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (judged, unjudged)
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_1_3_5_3_1_keeps_every_acknowledged_write() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut local = Local::start(1);
    let first = local.wait_running(1, STEP_TIMEOUT).await;
    let tls = local.tls();
    // demo-0 is never removed: the writer and the probe talk to it throughout.
    let endpoint = local.client_url("it-0");
    let writer = Writer::start(vec![endpoint.clone()], tls.clone());
    let recorder = Recorder::start(3, Targets::one(vec![endpoint.clone()], tls.clone()));
    let (stop_probe, probe) = quorum_probe(endpoint.clone(), tls.clone());
    for size in [3, 5, 3, 1] {
        local.set_size(size);
        let status = local.wait_running(size as usize, STEP_TIMEOUT).await;
        assert_eq!(status.cluster_id, first.cluster_id, "the cluster ID never changes");
        assert_eq!(status.client_endpoints.len(), size as usize);
        // Each member's health as etcd reported it: its backend and raft log.
        for m in &status.members {
            let sizes = (m.db_size.unwrap_or(0), m.db_size_in_use.unwrap_or(0));
            assert!(sizes.0 > 0 && sizes.1 > 0 && sizes.1 <= sizes.0, "{}: {sizes:?}", m.name);
            assert!(m.raft_index.unwrap_or(0) > 0 && m.raft_applied_index.unwrap_or(0) > 0);
            assert!(m.raft_term.unwrap_or(0) > 0 && m.last_error.is_none(), "{m:?}");
        }
    }
    let (keys, failures) = writer.finish().await;
    history::assert_linearizable(recorder, &local.state().join("history.jsonl"), 100).await;
    let _ = stop_probe.send(true);
    let (judged, unjudged) = probe.await.unwrap();
    println!(
        "writes acknowledged {}, failed {failures}; quorum samples judged {judged}, not judged {unjudged}",
        keys.len()
    );
    assert!(keys.len() > 100, "the writer made progress");
    assert!(judged > 10, "the probe saw the cluster");
    assert_all_present(&[endpoint], &tls, &keys).await;
    // Logs written to a file are for people and tools, not a terminal: no colour codes.
    let log = local.operator_log();
    assert!(log.contains("INFO"), "the operator logged: {log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a log file:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_zero_and_back_keeps_the_cluster_and_its_data() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut local = Local::start(3);
    let running = local.wait_running(3, STEP_TIMEOUT).await;
    let tls = local.tls();
    let endpoints: Vec<String> = (0..3).map(|i| local.client_url(&format!("it-{i}"))).collect();
    let writer = Writer::start(endpoints.clone(), tls.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (keys, _) = writer.finish().await;

    local.set_size(0);
    let stopped = local.wait_running(0, STEP_TIMEOUT).await;
    let record = stopped.stopped.expect("a record of the stopped cluster");
    assert_eq!(Some(record.cluster_id.clone()), running.cluster_id);
    assert_eq!(record.members.len(), 3);
    assert!(
        etcd::connect(&endpoints, Some(&tls)).await.map(|_| ()).is_err() || {
            // connect is lazy on some paths; a call must fail with every member stopped
            let mut c = etcd::connect(&endpoints, Some(&tls)).await.unwrap();
            tokio::time::timeout(Duration::from_secs(3), etcd::member_list(&mut c))
                .await
                .map(|r| r.is_err())
                .unwrap_or(true)
        }
    );

    local.set_size(3);
    let back = local.wait_running(3, STEP_TIMEOUT).await;
    assert_eq!(
        back.cluster_id, running.cluster_id,
        "same members on the same data: same cluster ID"
    );
    assert!(back.stopped.is_none());
    assert_all_present(&endpoints, &tls, &keys).await;
}
