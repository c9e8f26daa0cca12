//! `kubectl etcd`: the operator's binary answers as a kubectl plugin when it is called
//! `kubectl-etcd` (a link or a copy of it on PATH). Each command does only what a person could
//! do with kubectl, with that person's own credentials (get, annotate, create), and prints the
//! kubectl command that does the same. What to ask is decided in `asks` and `screen`; this
//! module reads and writes the objects.

mod asks;
mod screen;

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use etcd_crds::{BackupPhase, EtcdBackup, EtcdCluster, EtcdRestore, RestorePhase};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use asks::Annotate;

/// The name a link to the binary has when kubectl finds it as the `etcd` plugin.
pub const PROGRAM: &str = "kubectl-etcd";
const FIELD_MANAGER: &str = "kubectl-etcd";
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Parser)]
#[command(
    name = "kubectl etcd",
    version,
    about = "Operate EtcdClusters: each command does what a person could do with kubectl, and says how."
)]
pub struct Cli {
    /// Namespace of the EtcdCluster (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Members, leader, versions, conditions and backups of a cluster, on one screen.
    Status { cluster: String },
    /// Approve the recovery of a cluster that lost its quorum, after showing what it will do.
    ApproveRecovery {
        cluster: String,
        /// Approve without asking (the plan is still printed).
        #[arg(long)]
        yes: bool,
    },
    /// Let the cluster's deletion go on without its final backup.
    SkipFinalBackup {
        cluster: String,
        /// Why the data is not needed; kept on the cluster and in its deletion Event.
        #[arg(long)]
        reason: String,
    },
    /// Give the cluster a new CA, without downtime.
    RotateCa { cluster: String },
    /// Take a backup now (a one-shot EtcdBackup) and wait until it is stored and verified.
    Backup {
        cluster: String,
        /// The EtcdBackup whose destination, credentials and encryption to use (default: the
        /// cluster's only EtcdBackup).
        #[arg(long)]
        like: Option<String>,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Restore a cluster from the newest verified backup of an EtcdBackup: an existing cluster
    /// is replaced (stopped, its data replaced, started again), a missing one created.
    Restore {
        cluster: String,
        /// The EtcdBackup whose newest verified backup to restore.
        #[arg(long)]
        from: String,
        /// Members of a new cluster.
        #[arg(long)]
        size: Option<i32>,
        /// etcd version of a new cluster.
        #[arg(long)]
        version: Option<String>,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Kubernetes API (kubeconfig): {0}")]
    Connect(kube::Error),
    #[error("cannot {what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("{0}")]
    Refused(String),
}

type Result<T> = std::result::Result<T, Error>;

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Api { what, source }
}

pub async fn run(cli: Cli) -> Result<()> {
    let client = crate::controller::api_client::connect().await.map_err(Error::Connect)?;
    let namespace = cli.namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let session = Session { client, namespace };
    match cli.command {
        Command::Status { cluster } => {
            let found = session.cluster(&cluster).await?;
            let backups = session.backups().await?;
            print!("{}", screen::status(&found, &backups));
            Ok(())
        }
        Command::ApproveRecovery { cluster, yes } => {
            let found = session.cluster(&cluster).await?;
            let approval = asks::approve_recovery(&found).map_err(Error::Refused)?;
            println!("{}", approval.effect);
            if !yes && !confirmed("Approve this recovery?")? {
                return Err(Error::Refused("not approved".into()));
            }
            session.annotate(&cluster, &approval).await
        }
        Command::SkipFinalBackup { cluster, reason } => {
            let found = session.cluster(&cluster).await?;
            let skip = asks::skip_final_backup(&found, &reason).map_err(Error::Refused)?;
            println!("{}", skip.effect);
            session.annotate(&cluster, &skip).await
        }
        Command::RotateCa { cluster } => {
            let found = session.cluster(&cluster).await?;
            let rotate = asks::rotate_ca(&found, Timestamp::now()).map_err(Error::Refused)?;
            println!("{}", rotate.effect);
            session.annotate(&cluster, &rotate).await
        }
        Command::Backup { cluster, like, timeout } => {
            session.cluster(&cluster).await?;
            let backups = session.backups().await?;
            let backup = asks::backup_now(&cluster, &backups, like.as_deref(), Timestamp::now())
                .map_err(Error::Refused)?;
            session.backup(backup, Duration::from_secs(timeout)).await
        }
        Command::Restore { cluster, from, size, version, timeout } => {
            let exists = session
                .clusters()
                .get_opt(&cluster)
                .await
                .map_err(api_error(format!("read EtcdCluster {}/{cluster}", session.namespace)))?;
            let spec = new_cluster_spec(size, version)?;
            let restore = asks::restore(&cluster, exists.is_some(), &from, spec, Timestamp::now())
                .map_err(Error::Refused)?;
            session.restore(restore, Duration::from_secs(timeout)).await
        }
    }
}

/// The spec of a cluster a restore creates, from the flags given; the webhook defaults the rest.
fn new_cluster_spec(
    size: Option<i32>,
    version: Option<String>,
) -> Result<Option<etcd_crds::EtcdClusterSpec>> {
    if size.is_none() && version.is_none() {
        return Ok(None);
    }
    let mut fields = serde_json::Map::new();
    if let Some(size) = size {
        fields.insert("size".into(), size.into());
    }
    if let Some(version) = version {
        fields.insert("version".into(), version.into());
    }
    serde_json::from_value(fields.into())
        .map(Some)
        .map_err(|e| Error::Refused(format!("--size/--version: {e}")))
}

/// A yes from the person at the terminal; refused when nobody is there to ask.
fn confirmed(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Refused(
            "not a terminal: pass --yes to approve without being asked".into(),
        ));
    }
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Refused(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

struct Session {
    client: Client,
    namespace: String,
}

impl Session {
    fn clusters(&self) -> Api<EtcdCluster> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn cluster(&self, name: &str) -> Result<EtcdCluster> {
        self.clusters()
            .get_opt(name)
            .await
            .map_err(api_error(format!("read EtcdCluster {}/{name}", self.namespace)))?
            .ok_or_else(|| Error::Refused(format!("no EtcdCluster {name} in {}", self.namespace)))
    }

    async fn backups(&self) -> Result<Vec<EtcdBackup>> {
        let api: Api<EtcdBackup> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default())
            .await
            .map_err(api_error(format!("list EtcdBackups in {}", self.namespace)))?
            .items)
    }

    async fn annotate(&self, cluster: &str, annotate: &Annotate) -> Result<()> {
        let patch =
            serde_json::json!({"metadata": {"annotations": {annotate.key: annotate.value}}});
        self.clusters()
            .patch(cluster, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(patch))
            .await
            .map_err(api_error(format!("annotate EtcdCluster {}/{cluster}", self.namespace)))?;
        println!("set {}={}", annotate.key, annotate.value);
        println!("the same as: {}", annotate.kubectl(&self.namespace, cluster));
        Ok(())
    }

    async fn backup(&self, backup: EtcdBackup, timeout: Duration) -> Result<()> {
        let api: Api<EtcdBackup> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = backup.name_any();
        api.create(&create_params(), &backup)
            .await
            .map_err(api_error(format!("create EtcdBackup {}/{name}", self.namespace)))?;
        println!(
            "created EtcdBackup {name} (one backup now, where {} stores them); waiting for it",
            backup.spec.cluster_ref.name
        );
        wait(&api, &name, timeout, |now: &EtcdBackup| {
            let status = now.status.clone().unwrap_or_default();
            match (status.phase, status.backups.first()) {
                (Some(BackupPhase::Succeeded), Some(record)) => Progress::Done(format!(
                    "stored {} (revision {}, {} bytes){}",
                    record.location,
                    record.revision,
                    record.size,
                    if record.verified_time.is_some() { ", verified by a restore" } else { "" }
                )),
                (Some(BackupPhase::Failed), _) => Progress::Failed(said(&status.conditions)),
                _ => Progress::Waiting(said(&status.conditions)),
            }
        })
        .await
    }

    async fn restore(&self, restore: EtcdRestore, timeout: Duration) -> Result<()> {
        let api: Api<EtcdRestore> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = restore.name_any();
        api.create(&create_params(), &restore)
            .await
            .map_err(api_error(format!("create EtcdRestore {}/{name}", self.namespace)))?;
        let cluster = restore.spec.cluster_name.clone();
        println!(
            "created EtcdRestore {name}: type {:?} of EtcdCluster {cluster} from the newest verified backup of {}; waiting for it",
            restore.spec.restore_type,
            restore.spec.source.backup_ref.as_ref().map_or("", |b| b.name.as_str())
        );
        wait(&api, &name, timeout, |now: &EtcdRestore| {
            let status = now.status.clone().unwrap_or_default();
            match status.phase {
                Some(RestorePhase::Succeeded) => {
                    Progress::Done(format!("restored: EtcdCluster {cluster} runs from the backup"))
                }
                Some(RestorePhase::Failed) => Progress::Failed(said(&status.conditions)),
                _ => Progress::Waiting(said(&status.conditions)),
            }
        })
        .await
    }
}

fn create_params() -> PostParams {
    PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}

/// Where an object the plugin created has got to, with what to print.
enum Progress {
    Done(String),
    Failed(String),
    Waiting(String),
}

/// Reads `name` every [`POLL`] until `progress` says it is done or failed, or `timeout` passed.
async fn wait<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    progress: impl Fn(&K) -> Progress,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = api.get(name).await.map_err(api_error(format!("read {name}")))?;
        match progress(&now) {
            Progress::Done(what) => {
                println!("{what}");
                return Ok(());
            }
            Progress::Failed(why) => return Err(Error::Refused(format!("{name} failed: {why}"))),
            Progress::Waiting(why) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Refused(format!(
                    "{name} not done after {}s: {why}",
                    timeout.as_secs()
                )));
            }
            Progress::Waiting(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// What the object's conditions say, for a person: each condition's type and message.
fn said(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    let said: Vec<String> =
        conditions.iter().map(|c| format!("{}: {}", c.type_, c.message)).collect();
    if said.is_empty() { "no condition reported yet".into() } else { said.join("; ") }
}
