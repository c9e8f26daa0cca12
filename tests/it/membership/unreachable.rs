//! Bad input for the reconcile: every member process exists but none answers (frozen with
//! SIGSTOP, as a partitioned or hung etcd looks). The reconcile must report it in status with a
//! reason, keep retrying within bounded time, take no destructive step, and converge once etcd
//! answers again, on the same cluster ID.

use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use etcd_crds::{ClusterPhase, EtcdClusterStatus};
use etcd_operator::etcd::{self, ClientTls, ClusterState};
use etcd_operator::local::process::ProcessMembers;
use etcd_operator::membership::planner::Step;
use etcd_operator::membership::planner::Wanted;
use etcd_operator::membership::reconcile::{Plan, Target, act, plan};
use etcd_operator::membership::recovery::Policy;
use etcd_operator::membership::{Error, MemberPort, MemberUrls};

const CLUSTER: &str = "frozen";

fn target(size: usize) -> Target {
    Target {
        cluster: CLUSTER.into(),
        size,
        generation: Some(1),
        token: "frozen-token".into(),
        replace_after: None,
        version: None,
        rolls_versions: false,
        recovery: Policy { after: Duration::from_secs(300), ..Policy::default() },
        quota_backend_bytes: 0,
        check_consistency_every: None,
    }
}

fn pki(members: &ProcessMembers) -> ClientTls {
    let request = etcd_certs::ClusterPkiRequest {
        cluster: CLUSTER.into(),
        namespace: "default".into(),
        max_members: 9,
        extra_sans: vec!["127.0.0.1".into(), "localhost".into()],
    };
    let pki = etcd_certs::issue_cluster_pki(&request, time::OffsetDateTime::now_utc()).unwrap();
    let dir = members.pki_dir();
    etcd_operator::tls::files::write_pem_files(&dir, &pki.files()).unwrap();
    ClientTls::from_files(&dir.join("ca.crt"), &dir.join("client.crt"), &dir.join("client.key"))
        .unwrap()
}

/// Reconciles until the planner says Done, returning the last status.
async fn converge(
    members: &ProcessMembers,
    tls: &ClientTls,
    status: &mut EtcdClusterStatus,
) -> EtcdClusterStatus {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(Instant::now() < deadline, "no convergence: {status:#?}");
        let Plan { step, status: next, voters, .. } =
            plan(members, &target(3), Some(tls), status).await.unwrap();
        *status = next;
        if step == Step::Done && status.phase == Some(ClusterPhase::Running) {
            return status.clone();
        }
        // Errors from a settling cluster are retried, as `local` does.
        let _ = act(members, &step, &target(3), Some(tls), &voters).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn signal_all(dir: &std::path::Path, signal: i32) {
    for i in 0..3 {
        signal_one(dir, i, signal);
    }
}

fn signal_one(dir: &std::path::Path, member: usize, signal: i32) {
    let pid_file = dir.join("members").join(format!("{CLUSTER}-{member}")).join("pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the etcd process this test started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

struct StopOnDrop(ProcessMembers);

/// Three TLS members converged to Running: their directory, the guard that stops them (dropped
/// before the directory), the client certificate, and the last pass's status.
async fn three_running() -> (tempfile::TempDir, StopOnDrop, ClientTls, EtcdClusterStatus) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let members = StopOnDrop(ProcessMembers::new(dir.path(), true));
    let tls = pki(&members.0);
    let mut status = EtcdClusterStatus::default();
    converge(&members.0, &tls, &mut status).await;
    (dir, members, tls, status)
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for name in self.0.running_now() {
            let _ = self.0.stop_now(&name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswering_members_are_reported_and_nothing_destructive_happens() {
    let (dir, members, tls, mut status) = three_running().await;
    let cluster_id = status.cluster_id.clone().expect("a cluster ID");

    signal_all(dir.path(), libc::SIGSTOP);
    // Several passes: each is bounded by the client's deadlines, and each must only wait.
    for pass in 0..2 {
        let started = Instant::now();
        let Plan { step, status: next, .. } =
            plan(&members.0, &target(3), Some(&tls), &status).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "pass {pass} hung for {took:?}");
        assert!(matches!(step, Step::Wait { .. }), "pass {pass}: {step:?} while etcd is silent");
        // Degraded while it may be a blip; Failed once quorum has been lost for long (the
        // threshold itself is a unit test of the status rule).
        assert_eq!(next.phase, Some(ClusterPhase::Degraded), "{next:#?}");
        let available = next.conditions.iter().find(|c| c.type_ == "Available").unwrap();
        assert_eq!(available.status, "False");
        assert_eq!(available.reason, "NoQuorum");
        assert!(available.message.contains("etcd"), "the message says why: {}", available.message);
        let degraded = next.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.status, "True");
        assert_eq!(next.cluster_id.as_deref(), Some(cluster_id.as_str()), "cluster ID kept");
        status = next;
    }
    for i in 0..3 {
        let data = dir.path().join("members").join(format!("{CLUSTER}-{i}")).join("data");
        assert!(data.join("member").exists(), "member {i} lost its data");
    }

    signal_all(dir.path(), libc::SIGCONT);
    let back = converge(&members.0, &tls, &mut status).await;
    assert_eq!(back.cluster_id.as_deref(), Some(cluster_id.as_str()));
    assert_eq!(back.ready_replicas, 3);
}

/// One member silent (frozen) and another endpoint that drops every connection at once, as a
/// member stopping under a call looks: the member list still comes from a member that answers,
/// and the status counts the two that answer as ready, the cluster available. One stopping
/// member must never read as the whole cluster unreachable (all members not ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_silent_member_does_not_hide_the_others() {
    let (dir, members, tls, status) = three_running().await;

    let dropping = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dropping_url = format!("https://{}", dropping.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((connection, _)) = dropping.accept().await {
            drop(connection);
        }
    });
    signal_one(dir.path(), 0, libc::SIGSTOP);
    let url = |i: usize| members.0.urls(&format!("{CLUSTER}-{i}")).unwrap().client;
    let endpoints = [dropping_url.clone(), url(0), url(1), url(2)];
    let (_, listed) = etcd::member_list_from_any(&endpoints, Some(&tls)).await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let failed = etcd::member_list_from_any(&[dropping_url], Some(&tls)).await;
    assert!(failed.is_err(), "an endpoint that drops every connection answered: {failed:?}");

    let Plan { step, status: next, .. } =
        plan(&members.0, &target(3), Some(&tls), &status).await.unwrap();
    signal_one(dir.path(), 0, libc::SIGCONT);
    assert!(matches!(step, Step::Wait { .. }), "{step:?} with one member silent");
    assert_eq!(next.ready_replicas, 2, "{next:#?}");
    assert_eq!(next.phase, Some(ClusterPhase::Degraded), "{next:#?}");
    let available = next.conditions.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.status, "True", "{next:#?}");
    let silent = next.members.iter().find(|m| m.name == format!("{CLUSTER}-0")).unwrap();
    assert!(!silent.ready, "{next:#?}");
}

/// The operator cut off from two of three members that run and serve each other (a
/// NetworkPolicy or a CNI fault between it and them): their client URLs lead nowhere from here.
struct CutOff {
    inner: ProcessMembers,
    hidden: BTreeSet<String>,
    nowhere: String,
}

impl MemberPort for CutOff {
    fn urls(&self, name: &str) -> Result<MemberUrls, Error> {
        let urls = self.inner.urls(name)?;
        let client = if self.hidden.contains(name) { self.nowhere.clone() } else { urls.client };
        Ok(MemberUrls { client, ..urls })
    }
    async fn running(&self) -> Result<BTreeSet<String>, Error> {
        self.inner.running().await
    }
    async fn with_data(&self) -> Result<BTreeSet<String>, Error> {
        self.inner.with_data().await
    }
    async fn member_data(&self) -> Result<BTreeSet<String>, Error> {
        self.inner.member_data().await
    }
    async fn start(
        &self,
        name: &str,
        initial: &[Wanted],
        state: ClusterState,
        token: &str,
    ) -> Result<(), Error> {
        self.inner.start(name, initial, state, token).await
    }
    async fn stop(&self, name: &str) -> Result<(), Error> {
        self.inner.stop(name).await
    }
    async fn wipe(&self, name: &str) -> Result<(), Error> {
        self.inner.wipe(name).await
    }
}

/// A live majority the operator cannot reach is not a lost quorum: the member it reaches follows
/// a leader, so under policy Automatic, long past the threshold, nothing is fenced or forced and
/// the cluster stays Available. (Judged by reachability alone, the second pass forced the one
/// member the operator could see into a cluster of its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_the_operator_cannot_reach_is_not_a_lost_quorum() {
    let (dir, members, tls, mut status) = three_running().await;
    let cluster_id = status.cluster_id.clone();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let hidden = [1, 2].map(|i| format!("{CLUSTER}-{i}")).into();
    let cut_off = CutOff { inner: ProcessMembers::new(dir.path(), true), hidden, nowhere };
    let mut automatic = target(3);
    automatic.recovery.automatic = true;
    automatic.recovery.after = Duration::from_secs(1);
    for pass in 0..6 {
        let Plan { step, status: next, .. } =
            plan(&cut_off, &automatic, Some(&tls), &status).await.unwrap();
        assert!(
            matches!(step, Step::Wait { .. } | Step::Done),
            "pass {pass}: {step:?} while a majority serves out of the operator's reach"
        );
        let available = next.conditions.iter().find(|c| c.type_ == "Available").unwrap();
        assert_eq!(available.status, "True", "pass {pass}: {next:#?}");
        assert_ne!(next.phase, Some(ClusterPhase::Failed), "pass {pass}: {next:#?}");
        status = next;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in 0..3 {
        let data = dir.path().join("members").join(format!("{CLUSTER}-{i}")).join("data");
        assert!(data.join("member").exists(), "member {i} lost its data");
    }
    let back = converge(&members.0, &tls, &mut status).await;
    assert_eq!(back.cluster_id, cluster_id);
}
