//! Real etcd 3.4 processes for tests: a static cluster on loopback, mutual TLS with PEM files
//! from a directory laid out as `etcd-operator certs issue` writes it. Processes die with the
//! guard.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port outside the ephemeral range, where no outgoing connection can take it
/// before the process it is meant for binds it (`local`'s members get theirs the same way).
///
/// Free now is not free later: nextest runs each test in a process of its own, and a port this
/// test chose for a member it starts only after a backup and a restore (its peer URL is in the
/// restored data) could be chosen meanwhile by another test. So each port is also claimed with a
/// lock on a file named after it, held until this process exits; other test processes skip it.
pub fn free_port() -> u16 {
    static CLAIMED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("etcd-operator-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let mut skipped = std::collections::BTreeSet::new();
    loop {
        let port = etcd_operator::local::ports::free_port(&skipped).unwrap();
        let claim = std::fs::File::create(dir.join(port.to_string())).unwrap();
        // A lock belongs to the open file: a second claim by this process is refused too.
        if claim.try_lock().is_ok() {
            CLAIMED.lock().unwrap().push(claim);
            return port;
        }
        skipped.insert(port);
    }
}

pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
}

/// A running static cluster; dropping it kills the members.
pub struct Cluster {
    pub members: Vec<Member>,
    children: Vec<Child>,
}

impl Cluster {
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes keys `PREFIX{i:08}` for `i` in `keys`, each with `value_len` incompressible
/// (xorshift) bytes, 128 puts per transaction (etcd's limit); returns what was written.
pub async fn fill(
    client: &mut etcd_client::Client,
    prefix: &str,
    keys: std::ops::Range<usize>,
    value_len: usize,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    use etcd_client::{Txn, TxnOp};
    let mut written = std::collections::BTreeMap::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ keys.start as u64;
    let keys: Vec<usize> = keys.collect();
    for batch in keys.chunks(128) {
        let mut ops = Vec::new();
        for i in batch {
            let value: Vec<u8> = (0..value_len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let key = format!("{prefix}{i:08}");
            ops.push(TxnOp::put(key.clone(), value.clone(), None));
            written.insert(key, value);
        }
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    written
}

/// Writes a cluster's PKI the way users get it: `etcd-operator certs issue`, with 127.0.0.1 as an
/// extra name so that loopback members can be verified.
pub fn issue_pki(dir: &Path, cluster: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .args(["certs", "issue", "--cluster", cluster, "--namespace", "test"])
        .args(["--out", dir.to_str().unwrap(), "--extra-san", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Starts members (without TLS) on data directories that a restore wrote; each member's peer URL
/// must be the one it was restored with. Waits until they all answer.
pub fn start_restored(members: Vec<Member>, dir: &Path) -> Cluster {
    let children = members.iter().map(|member| spawn(member, dir, &[])).collect();
    let mut cluster = Cluster { members, children };
    // The peer URLs are the restored ones: a port taken meanwhile cannot be chosen again.
    if wait_until(&mut cluster, dir, &[]).is_err() {
        panic!("{}", cluster.logs(dir, "a restored member found its port taken"));
    }
    cluster
}

/// `size` members `PREFIX0..` on free loopback ports, data under `dir/NAME`.
pub fn loopback_members(prefix: &str, scheme: &str, size: usize, dir: &Path) -> Vec<Member> {
    (0..size)
        .map(|i| Member {
            name: format!("{prefix}{i}"),
            client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer_url: format!("{scheme}://127.0.0.1:{}", free_port()),
            data_dir: dir.join(format!("{prefix}{i}")),
        })
        .collect()
}

/// `name=peerURL,...` of `members`.
pub fn initial_cluster(members: &[Member]) -> String {
    members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",")
}

/// Starts `size` members with `--client-cert-auth` and `--peer-client-cert-auth`, TLS files from
/// `pki` (ca.crt, peer.crt/key, server.crt/key), data under `dir`; waits until every member
/// answers `etcdctl endpoint health` with the client certificate. A member that finds one of
/// its ports taken is started again, with the others, on new ports.
pub fn start_tls_cluster(size: usize, pki: &Path, dir: &Path) -> Cluster {
    for _ in 0..3 {
        if let Some(cluster) = try_start_tls_cluster(size, pki, dir) {
            return cluster;
        }
    }
    panic!("etcd members found their ports taken three times running");
}

/// `None` when a member found a port taken: the members are stopped and their data removed.
fn try_start_tls_cluster(size: usize, pki: &Path, dir: &Path) -> Option<Cluster> {
    let members = loopback_members("m", "https", size, dir);
    let initial = initial_cluster(&members);
    let file = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let flags: Vec<String> = [
        ["--initial-cluster", &initial],
        ["--initial-cluster-state", "new"],
        ["--initial-cluster-token", "test"],
        ["--trusted-ca-file", &file("ca.crt")],
        ["--cert-file", &file("server.crt")],
        ["--key-file", &file("server.key")],
        ["--peer-trusted-ca-file", &file("ca.crt")],
        ["--peer-cert-file", &file("peer.crt")],
        ["--peer-key-file", &file("peer.key")],
    ]
    .iter()
    .flat_map(|pair| pair.map(str::to_owned))
    .chain(["--client-cert-auth".to_owned(), "--peer-client-cert-auth".to_owned()])
    .collect();
    let children = members.iter().map(|member| spawn(member, dir, &flags)).collect();
    let mut cluster = Cluster { members, children };
    let tls = [
        "--cacert".to_owned(),
        file("ca.crt"),
        "--cert".to_owned(),
        file("client.crt"),
        "--key".to_owned(),
        file("client.key"),
    ];
    if wait_until(&mut cluster, dir, &tls).is_ok() {
        return Some(cluster);
    }
    let data: Vec<PathBuf> = cluster.members.iter().map(|m| m.data_dir.clone()).collect();
    drop(cluster);
    for dir in data {
        let _ = std::fs::remove_dir_all(dir);
    }
    None
}

/// Starts one member on its URLs and data directory, with `flags` besides; logs to DIR/NAME.log.
fn spawn(member: &Member, dir: &Path, flags: &[String]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{}.log", member.name))).unwrap();
    Command::new("etcd")
        .args(["--name", &member.name, "--data-dir", member.data_dir.to_str().unwrap()])
        .args(["--listen-client-urls", &member.client_url])
        .args(["--advertise-client-urls", &member.client_url])
        .args(["--listen-peer-urls", &member.peer_url])
        .args(["--initial-advertise-peer-urls", &member.peer_url])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd is installed (apt-get install etcd-server)")
}

/// A member exited because another process bound one of its ports between [`free_port`] and
/// etcd's own bind: rare now that no outgoing connection can take them, but the tests running
/// beside it pick from the same ports.
struct PortTaken;

/// What `member` has logged (DIR/NAME.log, see [`spawn`]).
fn member_log(dir: &Path, member: &Member) -> String {
    std::fs::read_to_string(dir.join(format!("{}.log", member.name))).unwrap_or_default()
}

impl Cluster {
    /// `what`, then the last lines of every member's log.
    fn logs(&self, dir: &Path, what: &str) -> String {
        let mut text = what.to_owned();
        for member in &self.members {
            let log = member_log(dir, member);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            text.push_str(&format!("\n--- {} ---\n{tail}", member.name));
        }
        text
    }
}

/// Waits until every member answers `etcdctl endpoint health` (with `tls` flags, if any).
/// Panics, with the members' logs, when one exits for any reason but a taken port, or when they
/// are not healthy in 30 s.
fn wait_until(cluster: &mut Cluster, dir: &Path, tls: &[String]) -> Result<(), PortTaken> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (member, child) in cluster.members.iter().zip(&mut cluster.children) {
            if let Ok(Some(status)) = child.try_wait() {
                if member_log(dir, member).contains("address already in use") {
                    return Err(PortTaken);
                }
                panic!(
                    "{}",
                    cluster.logs(dir, &format!("etcd member {} exited: {status}", member.name))
                );
            }
        }
        let ok = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &cluster.client_urls().join(",")])
            .args(tls)
            .args(["endpoint", "health", "--command-timeout=2s"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            panic!("{}", cluster.logs(dir, "etcd cluster did not become healthy in 30 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ports_handed_out_are_never_handed_out_again() {
    // Nothing binds these ports, so only the claim keeps the second, third… pick off them.
    let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
    let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
    assert_eq!(distinct.len(), ports.len(), "a port was handed out twice: {ports:?}");
}
