//! Crash safety: the operator dies right after each kind of membership action (after the learner
//! is added, after it is started, after the promote, after a removal), is started again, and the
//! cluster converges with no stray learner and no lost write, and what concurrent clients saw
//! meanwhile is linearizable.

use std::time::Duration;

use crate::support::history::{self, Recorder, Targets};
use crate::support::local::{Local, Writer, assert_all_present};
use etcd_crds::MemberRole;
use etcd_operator::local::{EXIT_AFTER_CODE, EXIT_AFTER_ENV};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Runs the operator until it exits right after a step of `kind`.
fn crash_after(local: &mut Local, kind: &str) {
    local.kill_operator();
    local.run_operator(&[(EXIT_AFTER_ENV, kind)]);
    let code = local.wait_operator_exit(TIMEOUT);
    assert_eq!(code, Some(EXIT_AFTER_CODE), "the operator did not perform {kind} (exit {code:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_every_kind_of_action_the_cluster_converges() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut local = Local::start(1);
    local.wait_running(1, TIMEOUT).await;
    let tls = local.tls();
    let endpoint = local.client_url("it-0");
    let writer = Writer::start(vec![endpoint.clone()], tls.clone());
    let recorder = Recorder::start(3, Targets::one(vec![endpoint.clone()], tls.clone()));

    local.set_size(3);
    for kind in ["add-learner", "start-member", "promote"] {
        crash_after(&mut local, kind);
    }
    local.run_operator(&[]);
    local.wait_running(3, TIMEOUT).await;

    local.set_size(1);
    crash_after(&mut local, "remove");
    local.run_operator(&[]);
    let status = local.wait_running(1, TIMEOUT).await;
    assert!(
        status.members.iter().all(|m| m.role == Some(MemberRole::Voter)),
        "a stray learner: {status:#?}"
    );

    let (keys, failures) = writer.finish().await;
    println!("writes acknowledged {}, failed {failures}", keys.len());
    history::assert_linearizable(recorder, &local.state().join("history.jsonl"), 100).await;
    assert!(keys.len() > 50);
    assert_all_present(&[endpoint], &tls, &keys).await;
}
