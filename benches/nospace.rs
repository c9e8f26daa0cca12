//! NOSPACE to writable again, on this machine with TLS, for backends of a few sizes: a 3-member
//! cluster through `etcd-operator local` with `quotaBackendBytes` at that size, filled by
//! overwriting one key until etcd refuses writes; the time until a write is accepted again
//! without a person, against the same compaction, three defragmentations and disarm done by
//! hand with etcd's calls, as fast as they go (the operator's part is its passes in between and
//! the leader's hand-over).
//!
//! `cargo bench --bench nospace`

use std::time::{Duration, Instant};

// The integration tests' `local` harness.
#[allow(dead_code)]
#[path = "../tests/it/support/local.rs"]
mod harness;

use etcd_operator::etcd;

const MIB: i64 = 1024 * 1024;

/// Overwrites one key with 1 MiB values until etcd refuses for lack of space.
async fn fill(client: &mut etcd_client::Client) {
    let value = vec![b'x'; MIB as usize];
    for _ in 0..10_000 {
        if let Err(err) = client.put("history", value.clone(), None).await {
            assert!(err.to_string().contains("database space exceeded"), "{err}");
            return;
        }
    }
    panic!("never full");
}

async fn until_writable(client: &mut etcd_client::Client) -> Duration {
    let start = Instant::now();
    while client.put("probe", "x", None).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(600), "still not writable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn run(quota_mib: i64) {
    let options = format!("  options:\n    quotaBackendBytes: {}\n", quota_mib * MIB);
    let mut local = harness::Local::start_spec(harness::PATH_VERSION, 3, &options, &[]);
    local.wait_running(3, Duration::from_secs(120)).await;
    let endpoints: Vec<String> = (0..3).map(|i| local.client_url(&format!("it-{i}"))).collect();
    let tls = local.tls();
    let mut client = etcd::connect(&endpoints, Some(&tls)).await.unwrap();

    fill(&mut client).await;
    let by_operator = until_writable(&mut client).await;

    // The same by hand, the operator stopped: compact, defragment each member, disarm.
    local.kill_operator();
    fill(&mut client).await;
    let start = Instant::now();
    etcd::compact_history(&mut client).await.unwrap();
    for endpoint in &endpoints {
        etcd::defragment(endpoint, Some(&tls)).await.unwrap();
    }
    let (_, members) = etcd::member_list(&mut client).await.unwrap();
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    etcd::disarm(&mut client, etcd::AlarmKind::Nospace, &ids).await.unwrap();
    let by_hand = start.elapsed() + until_writable(&mut client).await;
    println!(
        "quota {quota_mib:>4} MiB: writable again after {:>6.2} s through the operator, {:>6.2} s by hand (ratio {:.2})",
        by_operator.as_secs_f64(),
        by_hand.as_secs_f64(),
        by_operator.as_secs_f64() / by_hand.as_secs_f64()
    );
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for quota_mib in [16, 64, 256] {
        runtime.block_on(run(quota_mib));
    }
}
