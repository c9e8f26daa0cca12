//! Admission throughput and latency on the real server stack (axum + rustls, TLS 1.3,
//! keep-alive): the real admission handler against handlers that return a fixed response, each
//! loaded from a second process, first at a moderate steady rate (what a busy cluster's API server
//! sends a webhook), then back to back until saturation. `cargo bench --bench admission`
//!
//! At saturation the two processes share this machine's two cores, so the ratios there are the
//! cost of a review (reading the request, defaulting the spec, writing the patch) against a
//! handler that does nothing. The last lines are those ratios of requests per second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use etcd_certs::resolver::{ReloadableCert, certified_key};
use etcd_webhook::mutate::Kind;
use etcd_webhook::review::{Mode, review};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

const CONNECTIONS: usize = 4;
const DURATION: Duration = Duration::from_secs(5);
/// Requests per second, over all connections, of the moderate load.
const MODERATE_RATE: u64 = 2000;
/// Turns each handler takes at saturation.
const ROUNDS: usize = 5;

/// A CREATE as kube-apiserver sends it for `kubectl apply` of a spec that leaves most fields out.
fn request() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b3b2", "kind": {"group": "etcd.etcd.io", "version": "v1alpha1", "kind": "EtcdCluster"},
            "resource": {"group": "etcd.etcd.io", "version": "v1alpha1", "resource": "etcdclusters"},
            "name": "demo", "namespace": "prod", "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:authenticated"]},
            "object": {"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "demo", "namespace": "prod"}, "spec": {"size": 3, "version": "v3.5.21"}},
            "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Both sides allocate as the operator does (its main tunes the allocator first).
    etcd_operator::tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let addr: SocketAddr = args[i + 1].parse().unwrap();
        let path = args[i + 2].clone();
        let ca = std::fs::read_to_string(&args[i + 3]).unwrap();
        let rate: u64 = args[i + 4].parse().unwrap();
        runtime.block_on(client(addr, path, ca, (rate > 0).then_some(rate)));
        return;
    }
    runtime.block_on(server_side());
}

async fn server_side() {
    let pki = etcd_certs::issue_webhook_pki(&["localhost".into()], time::OffsetDateTime::now_utc())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, &pki.ca.cert_pem).unwrap();
    let resolver = Arc::new(ReloadableCert::new(certified_key(&pki.serving).unwrap()));
    let real = etcd_operator::server::router(
        Default::default(),
        Default::default(),
        etcd_webhook::Policy {
            authorizer: std::sync::Arc::new(NoSecretsNamed),
            repositories: Vec::new(),
            backups: std::sync::Arc::new(etcd_webhook::destinations::NoneKnown),
        },
    );
    let minimal = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "b3b2", "allowed": true}})).unwrap();
    let (answer, _) = review(Kind::EtcdCluster, Mode::Mutate, &request()).unwrap();
    let handlers = [
        ("real admission", real),
        ("fixed, minimal answer", fixed(minimal)),
        ("fixed, same answer", fixed(answer.to_json())),
    ];
    let serve = |app: Router, rate: u64| {
        let (resolver, ca_path) = (resolver.clone(), ca_path.clone());
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(etcd_operator::server::serve(listener, resolver, app, async {
                let _ = stopped.await;
            }));
            let cpu_before = server_cpu();
            let out = tokio::process::Command::new(std::env::current_exe().unwrap())
                .args(["--client", &addr.to_string(), "/mutate/etcdclusters"])
                .args([ca_path.to_str().unwrap(), &rate.to_string()])
                .output()
                .await
                .unwrap();
            let _ = stop.send(());
            let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let rps: f64 = line.split_whitespace().next().unwrap_or("0").parse().unwrap_or(0.0);
            let cpu =
                (server_cpu() - cpu_before).as_secs_f64() * 1e6 / (rps * DURATION.as_secs_f64());
            (line, rps, cpu)
        }
    };

    println!(
        "moderate load ({MODERATE_RATE} req/s, {CONNECTIONS} keep-alive TLS 1.3 connections, {DURATION:?}):"
    );
    for (label, app) in &handlers {
        let (line, _, cpu) = serve(app.clone(), MODERATE_RATE).await;
        println!("  {label:>21}: {line}  server CPU {cpu:.1} µs/request");
    }
    // Back to back, the two processes share this machine's two cores and a run's figure moves
    // with what else the machine does: the handlers take turns, ROUNDS times, and each is judged
    // by its median.
    println!(
        "saturation (back to back, {CONNECTIONS} keep-alive TLS 1.3 connections, {ROUNDS} rounds of {DURATION:?}):"
    );
    let mut rates = vec![Vec::new(); handlers.len()];
    let mut cpus = vec![Vec::new(); handlers.len()];
    for round in 1..=ROUNDS {
        for (i, (label, app)) in handlers.iter().enumerate() {
            let (line, rps, cpu) = serve(app.clone(), 0).await;
            println!("  round {round} {label:>21}: {line}  server CPU {cpu:.1} µs/request");
            rates[i].push(rps);
            cpus[i].push(cpu);
        }
    }
    let rate: Vec<f64> = rates.into_iter().map(median).collect();
    let cpu: Vec<f64> = cpus.into_iter().map(median).collect();
    for (i, (label, _)) in handlers.iter().enumerate() {
        println!("  median {label:>21}: {:.0} req/s, server CPU {:.1} µs/request", rate[i], cpu[i]);
    }
    println!("server CPU of a review: {:.1} µs/request", cpu[0] - cpu[2]);
    println!("ratio real/fixed (same answer) req/s at saturation: {:.3}", rate[0] / rate[2]);
    println!("ratio real/fixed (minimal answer) req/s at saturation: {:.3}", rate[0] / rate[1]);
}

/// A handler that answers every request with `body`, behind the same layers as the admission
/// routes (the metrics middleware that counts and times every request, the body limit), so
/// that the ratio is the review's own cost. With the very answer the real handler gives, the
/// ratio is the cost of working the answer out; with a minimal one, it also holds the cost of
/// sending a patch.
fn fixed(body: Vec<u8>) -> Router {
    Router::new()
        .route(
            "/mutate/etcdclusters",
            post(move |_body: Bytes| {
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(etcd_webhook::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(etcd_operator::server::Metrics::default()),
            etcd_operator::server::metrics::track,
        ))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU time (user + system) this process, the server, has used so far.
fn server_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The load process: CONNECTIONS connections, each sending requests for DURATION, back to back
/// or at its share of `rate`.
async fn client(addr: SocketAddr, path: String, ca_pem: String, rate: Option<u64>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let body = Bytes::from(request());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (connector, body, path) = (connector.clone(), body.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let tls =
                connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            let mut pace = rate.map(|rate| {
                let every = Duration::from_secs_f64(CONNECTIONS as f64 / rate as f64);
                tokio::time::interval(every)
            });
            while start.elapsed() < DURATION {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let request = hyper::Request::post(path.as_str())
                    .header("host", "localhost")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let sent = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                let _ = response.into_body().collect().await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let elapsed = start.elapsed().as_secs_f64();
    let pct = |p: usize| all[(all.len() * p / 100).min(all.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "{:.0} req/s  p50 {:.0} µs  p99 {:.0} µs  ({} requests)",
        all.len() as f64 / elapsed,
        pct(50),
        pct(99),
        all.len()
    );
}

/// The reviews here are mutations, which never ask anything of their author's rights.
struct NoSecretsNamed;

impl etcd_webhook::Authorizer for NoSecretsNamed {
    fn denied<'a>(
        &'a self,
        _check: &'a etcd_webhook::access::Check,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Vec<etcd_webhook::access::Use>, String>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async { Err("a mutation asked what its author may do".to_owned()) })
    }
}
