//! The etcd client layer: connections over mutual TLS, membership calls, and per-endpoint status.
//!
//! Each call is one gRPC request with a deadline. The errors etcd gives while a change settles
//! ("learner not in sync", "unhealthy cluster" right after a join) are reported as
//! [`Error::NotYet`] so the caller waits and asks again instead of failing.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Certificate, Client, CompactionOptions, ConnectOptions,
    GetOptions, Identity, MemberAddOptions, TlsOptions,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

pub mod config;
pub mod install;
pub use config::ClusterState;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a compaction or a defragmentation may take: each rewrites or walks the whole
/// backend (etcd's largest recommended, 8 GiB, takes minutes on a slow disk).
const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(600);
/// etcd's backend quota where a member is given none (`--quota-backend-bytes` 0): 2 GiB.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// How long a call asked of any one member waits for an answer before asking the next as well.
const ASK_NEXT_AFTER: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to etcd at {endpoints}: {source}")]
    Connect { endpoints: String, source: etcd_client::Error },
    #[error("etcd {call} failed: {source}")]
    Call { call: &'static str, source: etcd_client::Error },
    #[error("etcd is not ready for {call} yet: {reason}")]
    NotYet { call: &'static str, reason: String },
    #[error("etcd {call} got no answer within {}s", within.as_secs())]
    Timeout { call: &'static str, within: Duration },
    #[error("etcd {call}: no endpoint to ask")]
    NoEndpoint { call: &'static str },
    #[error("cannot read {path}: {source}")]
    ReadPem { path: String, source: std::io::Error },
}

impl Error {
    fn from_call(call: &'static str, source: etcd_client::Error) -> Self {
        let text = source.to_string();
        const SETTLING: [&str; 4] = [
            "can only promote a learner member which is in sync with leader",
            "unhealthy cluster",
            "too many learner members in cluster",
            "etcdserver: leader changed",
        ];
        match SETTLING.iter().find(|s| text.contains(*s)) {
            Some(reason) => Error::NotYet { call, reason: (*reason).to_owned() },
            None => Error::Call { call, source },
        }
    }
}

/// The operator's client identity and the CA it trusts. `Debug` hides the key.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

impl ClientTls {
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| Error::ReadPem { path: path.display().to_string(), source })
        };
        Ok(Self { ca_pem: read(ca)?, cert_pem: read(cert)?, key_pem: read(key)? })
    }

    fn options(&self) -> TlsOptions {
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// Runs one call under [`CALL_TIMEOUT`]. The client's own request timeout does not cover the wait
/// for a connection: with every endpoint silent (a hung or partitioned etcd) a call would wait
/// forever, and so would the reconcile loop.
async fn bounded<T>(
    call: &'static str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    bounded_within(CALL_TIMEOUT, call, request).await
}

async fn bounded_within<T>(
    within: Duration,
    call: &'static str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(within, request).await {
        Ok(result) => result.map_err(|e| Error::from_call(call, e)),
        Err(_) => Err(Error::Timeout { call, within }),
    }
}

/// A client for `endpoints` (balanced across them).
pub async fn connect(endpoints: &[String], tls: Option<&ClientTls>) -> Result<Client, Error> {
    open(endpoints, tls, ConnectOptions::new().with_timeout(CALL_TIMEOUT)).await
}

/// A client for one endpoint without a per-request deadline, for calls that stream for as long as
/// the data takes (the maintenance snapshot). Callers bound the time between messages instead.
pub async fn connect_streaming(endpoint: &str, tls: Option<&ClientTls>) -> Result<Client, Error> {
    let options = ConnectOptions::new().with_keep_alive(Duration::from_secs(10), CALL_TIMEOUT);
    open(&[endpoint.to_owned()], tls, options).await
}

async fn open(
    endpoints: &[String],
    tls: Option<&ClientTls>,
    options: ConnectOptions,
) -> Result<Client, Error> {
    let mut options = options.with_connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        options = options.with_tls(tls.options());
    }
    let connecting =
        tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(endpoints, Some(options)));
    match connecting.await {
        Ok(result) => {
            result.map_err(|source| Error::Connect { endpoints: endpoints.join(","), source })
        }
        Err(_) => Err(Error::Timeout { call: "connect", within: CONNECT_TIMEOUT }),
    }
}

/// The revision of the key-value store now, as one endpoint sees it.
pub async fn revision(client: &mut Client) -> Result<i64, Error> {
    let options = etcd_client::GetOptions::new().with_count_only();
    let response = bounded("get (revision)", client.get("\0", Some(options))).await?;
    Ok(response.header().map(|h| h.revision()).unwrap_or_default())
}

/// What etcd answers for a revision compacted away.
fn is_compacted(err: &Error) -> bool {
    matches!(err, Error::Call { source, .. } if source.to_string().contains("required revision has been compacted"))
}

/// The current revision, and whether the history before it is compacted away already (a read
/// at the revision before answers "compacted"): under NOSPACE, what compaction can free is freed.
pub async fn history_compacted(client: &mut Client) -> Result<(i64, bool), Error> {
    let current = revision(client).await?;
    if current <= 1 {
        return Ok((current, true));
    }
    let options = GetOptions::new().with_revision(current - 1).with_count_only();
    match bounded("get (compacted?)", client.get("\0", Some(options))).await {
        Ok(_) => Ok((current, false)),
        Err(err) if is_compacted(&err) => Ok((current, true)),
        Err(err) => Err(err),
    }
}

/// Compacts the history up to the current revision and waits until every member's backend has
/// applied it (`physical`); returns that revision. Compacted already is done.
pub async fn compact_history(client: &mut Client) -> Result<i64, Error> {
    let current = revision(client).await?;
    let options = CompactionOptions::new().with_physical();
    match bounded_within(MAINTENANCE_TIMEOUT, "compact", client.compact(current, Some(options)))
        .await
    {
        Ok(_) => Ok(current),
        Err(err) if is_compacted(&err) => Ok(current),
        Err(err) => Err(err),
    }
}

/// Defragments the backend of the member at `endpoint` (asked of it alone): its file shrinks to
/// the data it holds. The member serves nothing meanwhile.
pub async fn defragment(endpoint: &str, tls: Option<&ClientTls>) -> Result<(), Error> {
    let mut client = connect(&[endpoint.to_owned()], tls).await?;
    bounded_within(MAINTENANCE_TIMEOUT, "defragment", client.defragment()).await?;
    Ok(())
}

/// What one member's key-value store hashes to at a revision (etcd's `HashKV`): members that
/// hold the same data up to `revision`, compacted at the same revision, give the same hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    pub compact_revision: i64,
}

/// The hash of the key-value store of the member at `endpoint` at `revision` (asked of it
/// alone). It walks the member's whole backend: a maintenance call.
pub async fn hash_kv(
    endpoint: &str,
    tls: Option<&ClientTls>,
    revision: i64,
) -> Result<KvHash, Error> {
    let mut client = connect(&[endpoint.to_owned()], tls).await?;
    let response = bounded_within(MAINTENANCE_TIMEOUT, "hash kv", client.hash_kv(revision)).await?;
    Ok(KvHash { hash: response.hash(), compact_revision: response.compact_version() })
}

/// Disarms `alarm` for each of `members`: writes (NOSPACE), requests (CORRUPT) are accepted
/// again.
pub async fn disarm(client: &mut Client, alarm: AlarmKind, members: &[u64]) -> Result<(), Error> {
    let kind = match alarm {
        AlarmKind::Nospace => AlarmType::Nospace,
        AlarmKind::Corrupt => AlarmType::Corrupt,
    };
    for member in members {
        let mut options = AlarmOptions::new();
        options.with_member(*member);
        bounded("alarm disarm", client.alarm(AlarmAction::Deactivate, kind, Some(options))).await?;
    }
    Ok(())
}

/// A member as etcd lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until a newly added member has started.
    pub name: String,
    pub peer_url: String,
    pub client_url: Option<String>,
    pub is_learner: bool,
}

/// What one endpoint says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EndpointStatus {
    pub member_id: u64,
    pub leader: u64,
    pub cluster_id: u64,
    pub version: String,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    /// The cluster's active alarms, as every member reports them with its status.
    pub alarms: Vec<Alarm>,
    /// Size of the member's backend file, and of the data in it (the rest is free pages that
    /// only a defragmentation returns), in bytes.
    pub db_size: i64,
    pub db_size_in_use: i64,
    /// The revision of its key-value store (what it has applied).
    pub revision: i64,
}

/// An alarm etcd raised for a member (what `etcdctl alarm list` shows): `NOSPACE` when its
/// backend reached the quota (writes are refused until space is freed and the alarm disarmed),
/// `CORRUPT` when the members' data differ (requests are refused).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alarm {
    pub member_id: u64,
    pub kind: String,
}

/// An alarm the operator disarms once it mended what raised it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmKind {
    /// A backend reached its quota: writes are refused.
    Nospace,
    /// Members' data differ: requests are refused.
    Corrupt,
}

/// The alarms among a status response's errors, written as `memberID:N alarm:KIND` (protobuf's
/// text form of an alarm); other errors (no leader) are not alarms.
fn alarms_of(errors: &[String]) -> Vec<Alarm> {
    errors
        .iter()
        .filter_map(|error| {
            let field = |name: &str| {
                error.split_whitespace().find_map(|part| part.strip_prefix(name)).map(str::to_owned)
            };
            let kind = field("alarm:")?;
            // Protobuf's text form leaves out a zero member ID (etcd 3.5's compaction check
            // raises CORRUPT for member 0: "it isn't clear which member's data is corrupted").
            let member_id = field("memberID:").map_or(Some(0), |id| id.parse().ok())?;
            Some(Alarm { member_id, kind })
        })
        .collect()
}

/// The cluster ID and member list, from the first of `endpoints` that answers. Each is asked on
/// its own connection, the next one [`ASK_NEXT_AFTER`] after the one before unless an answer came:
/// over one balanced connection a call that lands on a member as it stops (a rolling restart)
/// fails the whole list although the others would answer, and asking strictly in turn would
/// wait out a frozen member's connect timeout first. etcd's own client retries a member list on
/// another endpoint for the same reason.
pub async fn member_list_from_any(
    endpoints: &[String],
    tls: Option<&ClientTls>,
) -> Result<(u64, Vec<Member>), Error> {
    let mut asks: FuturesUnordered<_> = (0u32..)
        .zip(endpoints)
        .map(|(i, endpoint)| async move {
            tokio::time::sleep(ASK_NEXT_AFTER * i).await;
            let listed = async {
                let mut client = connect(std::slice::from_ref(endpoint), tls).await?;
                member_list(&mut client).await
            };
            listed
                .await
                .inspect_err(|err| tracing::debug!(endpoint, %err, "member list not answered"))
        })
        .collect();
    let mut failed = None;
    while let Some(answer) = asks.next().await {
        match answer {
            Ok(listed) => return Ok(listed),
            Err(err) => failed = Some(err),
        }
    }
    Err(failed.unwrap_or(Error::NoEndpoint { call: "member list" }))
}

/// The member list and the cluster ID.
pub async fn member_list(client: &mut Client) -> Result<(u64, Vec<Member>), Error> {
    let response = bounded("member list", client.member_list()).await?;
    let cluster_id = response.header().map(|h| h.cluster_id()).unwrap_or_default();
    let members = response
        .members()
        .iter()
        .map(|m| Member {
            id: m.id(),
            name: m.name().to_owned(),
            peer_url: m.peer_urls().first().cloned().unwrap_or_default(),
            client_url: m.client_urls().first().cloned(),
            is_learner: m.is_learner(),
        })
        .collect();
    Ok((cluster_id, members))
}

/// Adds a learner: quorum is unchanged whether or not its process ever starts.
pub async fn add_learner(client: &mut Client, peer_url: &str) -> Result<u64, Error> {
    let options = MemberAddOptions::new().with_is_learner();
    let response =
        bounded("member add (learner)", client.member_add([peer_url], Some(options))).await?;
    Ok(response.member().map(|m| m.id()).unwrap_or_default())
}

/// Promotes a learner; [`Error::NotYet`] until it has caught up with the leader.
pub async fn promote(client: &mut Client, id: u64) -> Result<(), Error> {
    bounded("member promote", client.member_promote(id)).await?;
    Ok(())
}

pub async fn remove(client: &mut Client, id: u64) -> Result<(), Error> {
    bounded("member remove", client.member_remove(id)).await?;
    Ok(())
}

/// Hands leadership to `to`; must be sent to the current leader.
pub async fn move_leader(
    leader_endpoint: &str,
    tls: Option<&ClientTls>,
    to: u64,
) -> Result<(), Error> {
    let mut client = connect(&[leader_endpoint.to_owned()], tls).await?;
    bounded("move leader", client.move_leader(to)).await?;
    Ok(())
}

/// Status of one endpoint, asked of that endpoint alone (learners answer this too).
pub async fn endpoint_status(
    endpoint: &str,
    tls: Option<&ClientTls>,
) -> Result<EndpointStatus, Error> {
    let mut client = connect(&[endpoint.to_owned()], tls).await?;
    let status = bounded("status", client.status()).await?;
    Ok(EndpointStatus {
        member_id: status.header().map(|h| h.member_id()).unwrap_or_default(),
        cluster_id: status.header().map(|h| h.cluster_id()).unwrap_or_default(),
        leader: status.leader(),
        version: status.version().to_owned(),
        is_learner: status.is_learner(),
        raft_term: status.raft_term(),
        raft_index: status.raft_index(),
        raft_applied_index: status.raft_applied_index(),
        alarms: alarms_of(status.errors()),
        db_size: status.db_size(),
        db_size_in_use: status.raft_used_db_size(),
        revision: status.header().map(|h| h.revision()).unwrap_or_default(),
    })
}

/// A member ID as etcdctl prints it.
pub fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd writes each alarm of a status response as protobuf's text form, beside other errors.
    #[test]
    fn alarms_are_read_from_a_status_responses_errors() {
        let errors = [
            "etcdserver: no leader".to_owned(),
            "memberID:10276657743932975437 alarm:NOSPACE ".to_owned(),
            "memberID:42 alarm:CORRUPT".to_owned(),
            // etcd 3.5's compaction check raises CORRUPT for member 0, which protobuf's text
            // form leaves out.
            "alarm:CORRUPT ".to_owned(),
        ];
        assert_eq!(
            alarms_of(&errors),
            [
                Alarm { member_id: 10276657743932975437, kind: "NOSPACE".into() },
                Alarm { member_id: 42, kind: "CORRUPT".into() },
                Alarm { member_id: 0, kind: "CORRUPT".into() },
            ]
        );
    }
}
