//! The linearizability checker bites: reads served by a cluster that did not see the writes (as
//! a member restored from an older snapshot would serve them) are reported, where the same
//! clients against one cluster are not.

use std::time::Duration;

use crate::support::history::{self, Recorder, Target, Targets};
use crate::support::local::Local;

const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_caught_as_not_linearizable() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (current, stale) = (Local::start(1), Local::start(1));
    current.wait_running(1, TIMEOUT).await;
    stale.wait_running(1, TIMEOUT).await;
    let (writes, reads) = (current.client_url("it-0"), stale.client_url("it-0"));

    let recorder = Recorder::start(3, Targets::one(vec![writes.clone()], current.tls()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let path = current.state().join("healthy.jsonl");
    let (operations, _) = recorder.finish(&path).await;
    let verdict = history::check(&path);
    assert!(verdict.is_ok(), "{operations} operations against one cluster: {verdict:?}");

    // Each cluster has its own PKI: a client of both holds both identities.
    let broken = Targets {
        writes: Target { endpoints: vec![writes], tls: current.tls() },
        reads: Target { endpoints: vec![reads], tls: stale.tls() },
    };
    let recorder = Recorder::start(3, broken);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let path = current.state().join("stale.jsonl");
    let (operations, completed) = recorder.finish(&path).await;
    assert!(completed > 50, "{completed} of {operations} operations completed");
    let report = history::check(&path).expect_err("stale reads must not pass as linearizable");
    assert!(report.contains("NOT linearizable"), "{report}");
    assert!(path.with_extension("html").exists(), "the failing history is drawn: {report}");
}
