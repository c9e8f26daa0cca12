//! Time to issue the full PKI of a 9-member cluster (CA + peer + server + two clients, P-256).
//! `cargo bench -p etcd-certs`

use std::time::{Duration, Instant};

use etcd_certs::{ClusterPkiRequest, issue_cluster_pki};

fn main() {
    let request = ClusterPkiRequest {
        cluster: "bench".into(),
        namespace: "default".into(),
        max_members: 9,
        extra_sans: vec!["127.0.0.1".into()],
    };
    let now = time::OffsetDateTime::now_utc();
    // Warm-up: first use initialises ring's tables.
    issue_cluster_pki(&request, now).expect("issue");
    let runs = 200;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let pki = issue_cluster_pki(&request, now).expect("issue");
        times.push(start.elapsed());
        std::hint::black_box(pki);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / runs as u32;
    println!("full PKI for a 9-member cluster, P-256, {runs} runs");
    println!("min  {:>8.3} ms", times[0].as_secs_f64() * 1e3);
    println!("p50  {:>8.3} ms", times[runs / 2].as_secs_f64() * 1e3);
    println!("p99  {:>8.3} ms", times[runs * 99 / 100].as_secs_f64() * 1e3);
    println!("mean {:>8.3} ms (goal < 20 ms)", mean.as_secs_f64() * 1e3);
}
