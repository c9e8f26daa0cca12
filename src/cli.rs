//! The command line: one binary, several roles (the README's "Command line" lists them).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::backup::encrypt::Key;
use crate::error::{Error, Result};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "etcd-operator",
    version,
    about = "A Kubernetes operator for etcd: admission webhooks and controllers in one HTTPS service, with its own TLS."
)]
pub struct Cli {
    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// In a cluster: the controllers and the HTTPS server (webhooks, metrics, probes).
    Run(crate::controller::run::RunArgs),
    /// Print the CRD YAML of EtcdCluster, EtcdBackup and EtcdRestore (what crds/ holds).
    Crd,
    /// Serve the admission endpoints alone, no cluster needed.
    Webhook(WebhookArgs),
    /// TLS material of a cluster, as the operator would store it.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run an EtcdCluster on this machine with real etcd processes.
    Local(LocalArgs),
    /// Take one snapshot of a cluster and store it.
    Backup(BackupArgs),
    /// Restore one member's data directory from a snapshot.
    Restore(RestoreArgs),
    /// Init container of each etcd pod: writes the member's etcd configuration.
    MemberInit(MemberInitArgs),
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address to listen on, e.g. 127.0.0.1:8443.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Directory with ca.crt, tls.crt and tls.key; a CA and serving certificate are issued into it when absent.
    #[arg(long)]
    pub cert_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Issue a cluster's PKI and write it as PEM files: ca.crt, peer.crt/key, server.crt/key, client.crt/key.
    Issue(CertsIssueArgs),
}

#[derive(Debug, Args)]
pub struct CertsIssueArgs {
    /// EtcdCluster name.
    #[arg(long)]
    pub cluster: String,
    /// EtcdCluster namespace.
    #[arg(long)]
    pub namespace: String,
    /// Directory to write the PEM files into (created if absent).
    #[arg(long)]
    pub out: PathBuf,
    /// A further DNS name or IP address for the peer and server certificates.
    #[arg(long = "extra-san", value_name = "NAME_OR_IP")]
    pub extra_sans: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LocalArgs {
    #[command(subcommand)]
    pub command: Option<LocalCommand>,
    #[command(flatten)]
    pub up: LocalUpArgs,
}

#[derive(Debug, Args)]
pub struct LocalUpArgs {
    /// EtcdCluster YAML; edits to it are reconciled while this runs.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Where members, PKI and status.json live.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Start a new cluster from this backup (s3://, gs://, az://, file:// or a path); its
    /// manifest's checksum is verified first. Ignored when the members already have data.
    #[arg(long, value_name = "LOCATION")]
    pub restore_from: Option<String>,
    /// `VERSION=DIR`: members of that etcd version run the etcd in DIR (etcdctl and etcdutl
    /// beside it restore backups). Repeatable. `etcd` on PATH serves the version it reports.
    #[arg(long = "etcd", value_name = "VERSION=DIR", value_parser = parse_etcd_flag)]
    pub etcd: Vec<(String, PathBuf)>,
    /// Serve the cluster's metrics (as the operator does on Kubernetes) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

fn parse_etcd_flag(text: &str) -> std::result::Result<(String, PathBuf), String> {
    crate::etcd::install::parse_flag(text).map_err(|err| err.to_string())
}

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Stop the etcd processes that `local` started.
    Down {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Print the cluster, its members and conditions (what status.json says) as tables.
    Status {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Client URLs of the cluster, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Where to store the snapshot: s3://bucket/key, gs://bucket/key, az://container/key,
    /// file:///path or a plain path. Its manifest goes beside it as KEY.manifest.json.
    #[arg(long)]
    pub to: String,
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// Seal the snapshot with AES-256-GCM under this key (32 bytes, raw or base64).
    #[arg(long, value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Zstd,
}

impl From<CompressionArg> for etcd_crds::Compression {
    fn from(arg: CompressionArg) -> Self {
        match arg {
            CompressionArg::None => Self::None,
            CompressionArg::Gzip => Self::Gzip,
            CompressionArg::Zstd => Self::Zstd,
        }
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where the snapshot is: s3://bucket/key, file:///path, gs://, az://.
    #[arg(long)]
    pub from: String,
    /// Data directory to create; it must not exist.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Member name.
    #[arg(long)]
    pub name: String,
    /// The restored cluster's members: name=peerURL,...
    #[arg(long)]
    pub initial_cluster: String,
    /// This member's peer URL.
    #[arg(long)]
    pub initial_advertise_peer_urls: String,
    /// Token of the restored cluster (every member of it must use the same).
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Expected SHA-256 of the stored object; the restore refuses anything else.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Key of an encrypted snapshot (32 bytes, raw or base64).
    #[arg(long, value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MemberInitArgs {
    /// This pod's name (NAME-ORDINAL).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,
    /// The EtcdCluster's name (its headless Service gives the member DNS names).
    #[arg(long)]
    pub cluster: String,
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Whether peer and client URLs use TLS.
    #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
    pub tls: bool,
    /// Directory where the operator's bootstrap entries are mounted.
    #[arg(long, default_value = "/etc/etcd-bootstrap")]
    pub bootstrap_dir: PathBuf,
    /// The etcd configuration file to write.
    #[arg(long, default_value = "/var/run/etcd/etcd.conf.yaml")]
    pub config_out: PathBuf,
    /// spec.options of the EtcdCluster, as JSON.
    #[arg(long, default_value = "{}")]
    pub options: String,
    /// How long to wait for this member's bootstrap entry, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
    /// spec.restore of the EtcdCluster, as JSON: a new member restores its data from it.
    #[arg(long)]
    pub restore: Option<String>,
    /// etcd's data directory (where a restore writes; recovery keeps a marker beside it).
    #[arg(long, default_value = crate::names::DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where the cluster's seal key is mounted: an entry that forces a new cluster must carry
    /// its seal. Unset (a pod from a template older than the seal) the force is not checked.
    #[arg(long)]
    pub seal_dir: Option<PathBuf>,
    /// The peer certificate's common name, when the operator issued it: the peer listener
    /// lets in no other (a client certificate of the same CA cannot speak raft).
    #[arg(long)]
    pub peer_common_name: Option<String>,
}

/// Runs one subcommand to completion.
pub async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Crd => {
            print!("{}", etcd_crds::crds_yaml()?);
            Ok(())
        }
        Command::Run(args) => Ok(crate::controller::run::run(args).await?),
        Command::Webhook(args) => serve_webhook(&args).await,
        Command::Certs(CertsCommand::Issue(args)) => issue_certs(&args),
        Command::Local(LocalArgs { command: Some(LocalCommand::Down { state_dir }), .. }) => {
            Ok(crate::local::down(&state_dir)?)
        }
        Command::Local(LocalArgs { command: Some(LocalCommand::Status { state_dir }), .. }) => {
            print!("{}", crate::local::report::render(&state_dir)?);
            Ok(())
        }
        Command::Local(LocalArgs {
            up:
                LocalUpArgs {
                    file: Some(file),
                    state_dir: Some(dir),
                    restore_from,
                    etcd,
                    metrics_listen,
                },
            ..
        }) => {
            let installs = crate::etcd::install::Installations::discover(&etcd)
                .map_err(|err| Error::BadArgument { flag: "--etcd", reason: err.to_string() })?;
            let options = crate::local::Options { restore_from, installs, metrics_listen };
            crate::local::up(&file, &dir, options).await
        }
        Command::Local(_) => Err(Error::Usage("local needs -f CLUSTER.yaml and --state-dir DIR")),
        Command::Backup(args) => backup(&args).await,
        Command::Restore(args) => restore(args).await,
        Command::MemberInit(args) => member_init(args).await,
    }
}

/// `backup`: one snapshot to object storage; prints the record (size, checksum, revision).
async fn backup(args: &BackupArgs) -> Result<()> {
    use crate::backup::Location;
    let tls = match (&args.cacert, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => Some(
            crate::etcd::ClientTls::from_files(ca, cert, key)
                .map_err(crate::backup::Error::from)?,
        ),
        (None, None, None) => None,
        _ => return Err(Error::Usage("--cacert, --cert and --key go together")),
    };
    let to = Location::parse(&args.to, &Default::default())?;
    let key = args.encryption_key_file.as_deref().map(Key::from_file).transpose()?;
    let compression = args.compression.into();
    let record =
        crate::backup::save::save(&args.endpoints, tls.as_ref(), &to, compression, key.as_ref())
            .await?;
    let json = serde_json::to_string_pretty(&record)
        .map_err(|e| Error::Output(format!("cannot print the backup record: {e}")))?;
    println!("{json}");
    Ok(())
}

/// `restore`: one member's data directory from a verified snapshot.
async fn restore(args: RestoreArgs) -> Result<()> {
    let from = crate::backup::Location::parse(&args.from, &Default::default())?;
    let member = crate::backup::restore::MemberSpec {
        name: args.name,
        initial_cluster: args.initial_cluster,
        peer_url: args.initial_advertise_peer_urls,
        cluster_token: args.initial_cluster_token,
        data_dir: args.data_dir,
        tools: None,
    };
    let key = args.encryption_key_file.as_deref().map(Key::from_file).transpose()?;
    // A person restoring on their own machine: no bound beyond their disk.
    let unbounded = u64::MAX;
    crate::backup::restore::restore(
        &from,
        args.sha256.as_deref(),
        &member,
        key.as_ref(),
        unbounded,
    )
    .await?;
    eprintln!("restored {} into {}", from.url, member.data_dir.display());
    Ok(())
}

/// `certs issue`: a cluster's PKI written as the PEM files the operator would store.
fn issue_certs(args: &CertsIssueArgs) -> Result<()> {
    let request = etcd_certs::ClusterPkiRequest {
        cluster: args.cluster.clone(),
        namespace: args.namespace.clone(),
        max_members: etcd_crds::MAX_MEMBERS,
        extra_sans: args.extra_sans.clone(),
    };
    let pki = etcd_certs::issue_cluster_pki(&request, time::OffsetDateTime::now_utc())
        .map_err(crate::tls::Error::from)?;
    crate::tls::files::write_pem_files(&args.out, &pki.files())?;
    println!(
        "wrote ca.crt, peer.crt/key, server.crt/key, client.crt/key to {}",
        args.out.display()
    );
    Ok(())
}

/// `webhook`: the admission endpoints and probes alone, until Ctrl-C.
async fn serve_webhook(args: &WebhookArgs) -> Result<()> {
    let key = crate::tls::cert_dir::load_or_issue(
        &args.cert_dir,
        &crate::tls::cert_dir::default_names(),
    )?;
    let resolver = std::sync::Arc::new(etcd_certs::resolver::ReloadableCert::new(key));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| crate::server::Error::Bind { addr: args.listen.to_string(), source })?;
    let policy = etcd_webhook::Policy {
        authorizer: std::sync::Arc::new(crate::server::subject_access::NoApiServer),
        repositories: etcd_crds::OFFICIAL_REPOSITORIES.iter().map(|r| r.to_string()).collect(),
        backups: std::sync::Arc::new(etcd_webhook::destinations::NoneKnown),
    };
    let app = crate::server::router(Default::default(), Default::default(), policy);
    tracing::info!(listen = %args.listen, cert_dir = %args.cert_dir.display(), "serving admission webhooks");
    crate::server::serve(listener, resolver, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// `member-init`: wait for this member's bootstrap entry, write its etcd config.
async fn member_init(args: MemberInitArgs) -> Result<()> {
    use crate::k8s::member_init::{Request, run};
    let options = serde_json::from_str(&args.options)
        .map_err(|err| Error::BadArgument { flag: "--options", reason: err.to_string() })?;
    let restore = match &args.restore {
        Some(json) => Some(
            serde_json::from_str(json)
                .map_err(|err| Error::BadArgument { flag: "--restore", reason: err.to_string() })?,
        ),
        None => None,
    };
    let request = Request {
        pod_name: args.pod_name,
        bootstrap_dir: args.bootstrap_dir,
        config_out: args.config_out,
        placement: crate::k8s::etcd_config::Placement {
            cluster: args.cluster,
            namespace: args.namespace,
            tls: args.tls,
            peer_common_name: args.peer_common_name,
        },
        options,
        timeout: std::time::Duration::from_secs(args.timeout_seconds),
        poll: std::time::Duration::from_secs(2),
        data_dir: args.data_dir,
        seal_dir: args.seal_dir,
        restore,
    };
    let entry = run(&request).await?;
    tracing::info!(member = %entry.name, state = ?entry.state, "wrote the etcd configuration");
    Ok(())
}
