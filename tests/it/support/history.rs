//! A recorded history of concurrent client operations, checked for linearizability by porcupine
//! (tests/linearizability, built by scripts/go-binaries), as etcd's own robustness tests check
//! theirs. Several clients issue puts, linearizable gets, compare-and-swap transactions and
//! deletes over a few keys; each operation is recorded with its invocation and return times and
//! its result. One that fails or times out may or may not have taken effect: it is recorded
//! without a return time (porcupine then lets it take effect at any point after its call, or
//! never); a failed read constrains nothing and is left out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use etcd_operator::etcd::ClientTls;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const KEYS: u64 = 4;
/// How long one operation may take before its outcome is unknown.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// Where clients send their operations, and with which credentials.
#[derive(Clone)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub tls: ClientTls,
}

/// Writes go to one target, reads to another: the same one, but for a test of the checker,
/// which points reads at a cluster that missed the writes.
#[derive(Clone)]
pub struct Targets {
    pub writes: Target,
    pub reads: Target,
}

impl Targets {
    pub fn one(endpoints: Vec<String>, tls: ClientTls) -> Self {
        let target = Target { endpoints, tls };
        Self { writes: target.clone(), reads: target }
    }
}

pub struct Recorder {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    records: Arc<Mutex<Vec<Value>>>,
}

/// xorshift64: the operations differ between clients and runs need not repeat.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

impl Recorder {
    pub fn start(clients: usize, targets: Targets) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let records = Arc::new(Mutex::new(Vec::new()));
        let origin = Instant::now();
        let tasks = (0..clients)
            .map(|client| {
                let (targets, records, stopped) =
                    (targets.clone(), records.clone(), stopped.clone());
                tokio::spawn(async move {
                    run(client, targets, records, stopped, origin).await;
                })
            })
            .collect();
        Self { stop, tasks, records }
    }

    /// Stops the clients and writes the history as JSON lines; how many operations it holds and
    /// how many of them completed.
    pub async fn finish(self, path: &Path) -> (usize, usize) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.unwrap();
        }
        let records = self.records.lock().await;
        let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(path, lines).unwrap();
        let completed = records.iter().filter(|r| !r["return"].is_null()).count();
        (records.len(), completed)
    }
}

async fn connect(target: &Target) -> Option<etcd_client::Client> {
    etcd_operator::etcd::connect(&target.endpoints, Some(&target.tls)).await.ok()
}

async fn run(
    client: usize,
    targets: Targets,
    records: Arc<Mutex<Vec<Value>>>,
    stopped: tokio::sync::watch::Receiver<bool>,
    origin: Instant,
) {
    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let (mut writer, mut reader) = (None, None);
    let mut last_seen: Vec<Option<String>> = vec![None; KEYS as usize];
    let mut n = 0u64;
    let now = || i64::try_from(origin.elapsed().as_nanos()).unwrap_or(i64::MAX);
    while !*stopped.borrow() {
        n += 1;
        let k = next(&mut seed) % KEYS;
        let key = format!("k{k}");
        let value = format!("c{client}-{n}");
        let op = next(&mut seed) % 10;
        let read = op < 4;
        let slot = if read { &mut reader } else { &mut writer };
        if slot.is_none() {
            *slot = connect(if read { &targets.reads } else { &targets.writes }).await;
        }
        let Some(c) = slot.as_mut() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let call = now();
        let (input, output) = match op {
            0..=3 => {
                let got = tokio::time::timeout(OPERATION_TIMEOUT, c.get(key.as_str(), None)).await;
                let Ok(Ok(response)) = got else {
                    *slot = None;
                    continue; // a failed read constrains nothing
                };
                let found = response
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                last_seen[k as usize] = found.clone();
                let output = match found {
                    Some(v) => json!({"found": true, "value": v}),
                    None => json!({}),
                };
                (json!({"op": "get", "key": key}), Some(output))
            }
            4..=6 => {
                let put = tokio::time::timeout(
                    OPERATION_TIMEOUT,
                    c.put(key.as_str(), value.as_str(), None),
                )
                .await;
                let output = matches!(put, Ok(Ok(_))).then(|| json!({}));
                (json!({"op": "put", "key": key, "value": value}), output)
            }
            7..=8 => {
                // Against what this client last read of the key. etcd fails a value comparison
                // on a missing key, as the checker's model does.
                let expect = last_seen[k as usize].clone().unwrap_or_default();
                let txn = Txn::new()
                    .when([Compare::value(key.as_str(), CompareOp::Equal, expect.as_str())])
                    .and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
                let done = tokio::time::timeout(OPERATION_TIMEOUT, c.txn(txn)).await;
                let output = match done {
                    Ok(Ok(response)) => Some(json!({"succeeded": response.succeeded()})),
                    _ => None,
                };
                (json!({"op": "cas", "key": key, "value": value, "expect": expect}), output)
            }
            _ => {
                let deleted =
                    tokio::time::timeout(OPERATION_TIMEOUT, c.delete(key.as_str(), None)).await;
                let output = matches!(deleted, Ok(Ok(_))).then(|| json!({}));
                (json!({"op": "delete", "key": key}), output)
            }
        };
        if output.is_none() {
            // The connection may be to a member that stopped: a new one for the next operation.
            *slot = None;
        }
        let returned = output.as_ref().map(|_| now());
        records.lock().await.push(json!({
            "client": client,
            "input": input,
            "output": output.unwrap_or_else(|| json!({"unknown": true})),
            "call": call,
            "return": returned,
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The checker scripts/go-binaries built.
fn checker() -> PathBuf {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/go-bin/linearizability/linearizability");
    assert!(path.exists(), "{} is missing: run ./scripts/go-binaries", path.display());
    path
}

/// Porcupine's verdict on the history in `path`: Ok(its report) when linearizable, Err(its
/// report) when not (the failing part drawn beside it, `*.html`).
pub fn check(path: &Path) -> Result<String, String> {
    let html = path.with_extension("html");
    let out =
        std::process::Command::new(checker()).arg("-html").arg(&html).arg(path).output().unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => Ok(report),
        Some(1) => Err(report),
        _ => panic!("the checker could not decide: {report}"),
    }
}

/// Stops `recorder`, writes its history to `path` and asserts that at least `least` operations
/// completed (a stalled recorder cannot pass) and that the history is linearizable.
pub async fn assert_linearizable(recorder: Recorder, path: &Path, least: usize) {
    let (operations, completed) = recorder.finish(path).await;
    let verdict = check(path);
    println!("history: {operations} operations, {completed} completed: {verdict:?}");
    assert!(completed >= least, "the clients made progress: {completed} operations completed");
    if let Err(report) = verdict {
        panic!("the clients' history is not linearizable ({}): {report}", path.display());
    }
}
