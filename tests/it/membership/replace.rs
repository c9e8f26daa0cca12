//! Member replacement against real etcd through `etcd-operator local`: a member whose data is
//! corrupt cannot start again; once it has been silent past the cluster's threshold it is removed
//! while the other two keep quorum, its data wiped, and it joins again as a new learner that is
//! promoted. A writer runs throughout and every acknowledged write is read back.

use std::time::{Duration, Instant};

use crate::support::history::{self, Recorder, Targets};
use crate::support::local::{Local, Writer, assert_all_present};
use etcd_crds::MemberRole;

const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_start_is_replaced_and_no_write_is_lost() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut local = Local::start(3);
    local.set_spec(3, "  replaceUnhealthyAfterSeconds: 3\n");
    let before = local.wait_running(3, TIMEOUT).await;
    let old_id = before.members.iter().find(|m| m.name == "it-2").and_then(|m| m.id.clone());
    let tls = local.tls();
    let endpoint = local.client_url("it-0");
    let writer = Writer::start(vec![endpoint.clone()], tls.clone());
    let recorder = Recorder::start(3, Targets::one(vec![endpoint.clone()], tls.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Corrupt it-2's database under the running process (a new file renamed over it, so the
    // process keeps its old one), then kill it: every restart now fails.
    let member = local.state().join("members/it-2");
    let db = member.join("data/member/snap/db");
    let garbage = member.join("garbage");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    std::fs::rename(&garbage, &db).unwrap();
    let pid: i32 = std::fs::read_to_string(member.join("pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the pid of the etcd process this test's operator started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();

    // The status first shows it silent, then a new member under the same name, all voters ready.
    let deadline = Instant::now() + TIMEOUT;
    let mut saw_silent = false;
    let replaced = loop {
        let status = local.status();
        let it2 = status.members.iter().find(|m| m.name == "it-2");
        saw_silent |= it2.is_some_and(|m| m.unhealthy_since.is_some());
        let done = status.ready_replicas == 3
            && status.members.len() == 3
            && status.members.iter().all(|m| m.ready && m.role == Some(MemberRole::Voter))
            && it2.is_some_and(|m| m.id != old_id);
        if done {
            break status;
        }
        assert!(Instant::now() < deadline, "it-2 was not replaced: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(saw_silent, "the status recorded since when it-2 was silent");
    assert!(replaced.members.iter().all(|m| m.unhealthy_since.is_none()));
    println!("it-2 replaced {:.1?} after it was killed", killed.elapsed());

    // The replaced member serves writes too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (keys, failures) = writer.finish().await;
    println!("writes acknowledged {}, failed {failures}", keys.len());
    assert!(keys.len() > 50);
    assert_all_present(&[local.client_url("it-2")], &tls, &keys).await;
    history::assert_linearizable(recorder, &local.state().join("history.jsonl"), 100).await;
}
