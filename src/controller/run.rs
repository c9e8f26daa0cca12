//! `etcd-operator run`: the one HTTPS service (webhooks and probes; metrics on a port of their
//! own) and the webhook certificate kept current on every replica, and leader-only work (the
//! controllers, certificate renewal) behind a Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_certs::resolver::{ReloadableCert, certified_key};
use kube::core::PartialObjectMeta;

use super::leader::Leadership;
use crate::backup::endpoints::{ALLOW_FLAG, EndpointPolicy};
use crate::retry::{self, with_backoff};
use crate::server::{Metrics, Readiness, metrics_router, router, serve};
use crate::tls;
use crate::tls::webhook_secret::{Served, WebhookTls};

/// How often every replica re-reads the webhook Secret (and the leader checks for renewal).
const CERTIFICATE_CHECK: Duration = Duration::from_secs(60);
const READINESS_COMPONENT: &str = "webhook-certificate";

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what}: {source}")]
    Kube { what: &'static str, source: kube::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    #[error(transparent)]
    Server(#[from] crate::server::Error),
    #[error(transparent)]
    Leader(#[from] super::leader::Error),
    #[error("lost the leader Lease; exiting so that a restarted replica rejoins the election")]
    LostLeadership,
    #[error("{0}")]
    Usage(&'static str),
    #[error("{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error("a task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `etcd-operator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address of the HTTPS server (webhooks, /healthz, /readyz). The default takes IPv6 and
    /// IPv4 alike, so IPv6-only and dual-stack clusters reach the webhooks and probes.
    #[arg(long, default_value = "[::]:8443", env = "LISTEN")]
    pub listen: SocketAddr,
    /// Address of /metrics (HTTPS, the webhook's certificate): a port of its own, so that a
    /// NetworkPolicy can admit Prometheus to it without admitting it to the webhooks, and the
    /// API server to the webhooks without admitting it to every tenant's figures.
    #[arg(long, default_value = "[::]:9443", env = "METRICS_LISTEN")]
    pub metrics_listen: SocketAddr,
    /// Namespace the operator runs in (its Secrets, Lease and Service live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "etcd-operator-system")]
    pub namespace: String,
    /// Name of the Service in front of the webhook server: the serving certificate's DNS name.
    #[arg(long, env = "WEBHOOK_SERVICE", default_value = "etcd-operator-webhook")]
    pub service_name: String,
    /// Secret that holds the webhook CA and serving certificate.
    #[arg(long, env = "WEBHOOK_SECRET", default_value = "etcd-operator-webhook-tls")]
    pub webhook_secret: String,
    /// Validating and mutating webhook configurations whose caBundle the operator keeps current.
    #[arg(long, env = "WEBHOOK_CONFIGURATION", default_value = "etcd-operator")]
    pub webhook_configuration: String,
    /// Who issues the webhook's certificate: `operator` (it creates the Secret, renews it and
    /// keeps the webhook configurations' caBundle current, so it needs `patch` on them), or
    /// `provided` (the installer puts tls.crt and tls.key in the Secret and the CA in the
    /// configurations, as the chart can at install time, or cert-manager; the operator only
    /// reads and serves it, and needs no right on webhook configurations).
    #[arg(long, env = "WEBHOOK_CERTIFICATE", value_enum, default_value_t = Issuer::Operator)]
    pub webhook_certificate: Issuer,
    /// Identity of this replica in leader election (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The image each etcd pod runs as its member-init container. Default: the image of this
    /// replica's own `operator` container, read from its pod (POD_NAME), so that the image a
    /// kustomization or a registry mirror rewrote is the one members run too.
    #[arg(long, env = "OPERATOR_IMAGE")]
    pub operator_image: Option<String>,
    /// How long a changed CA bundle takes to reach every pod that mounts it: the kubelet's Secret
    /// sync (its --sync-frequency plus the Secret cache's TTL). A cluster CA rollover waits this
    /// long after the bundle changes before certificates move to the new CA.
    #[arg(long, env = "CA_BUNDLE_PROPAGATION_SECONDS", default_value_t = 180)]
    pub ca_bundle_propagation_seconds: u64,
    /// How many EtcdClusters are reconciled at once. A reconcile in flight holds a few hundred
    /// KiB (TLS sessions to the members, the objects it builds): unbounded, an operator that
    /// starts with a thousand clusters reconciles them all at once and outgrows its memory
    /// limit. A reconcile of a cluster that does not answer holds its place up to ~20 s.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 32)]
    pub max_concurrent_reconciles: u16,
    /// Host names, addresses and CIDR ranges that tenants' backup destinations may name although
    /// they are inside the cluster or the node (an in-cluster MinIO Service, say); these may also
    /// be plain HTTP. Comma-separated. Otherwise an endpoint must be HTTPS to a public address.
    #[arg(long, env = "BACKUP_ENDPOINT_ALLOW", value_delimiter = ',', value_name = "HOST|CIDR")]
    pub backup_endpoint_allow: Vec<String>,
    /// Image repositories members may run (`REPOSITORY:vVERSION`), comma-separated: etcd's own
    /// release repositories unless set (add a registry mirror here).
    #[arg(
        long,
        env = "ALLOWED_IMAGE_REPOSITORIES",
        value_delimiter = ',',
        default_values_t = etcd_crds::OFFICIAL_REPOSITORIES.iter().map(|r| r.to_string())
    )]
    pub allowed_image_repositories: Vec<String>,
    /// Namespaces whose EtcdClusters, EtcdBackups and EtcdRestores this operator serves,
    /// comma-separated; every namespace when unset. With a list, the operator needs rights in
    /// those namespaces only (Roles, as the chart's `watchNamespaces` grants them) and none on
    /// Secrets elsewhere. Each namespace has its own watches and its own
    /// `--max-concurrent-reconciles`.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', value_name = "NAMESPACE")]
    pub watch_namespaces: Vec<String>,
}

/// Who issues the webhook's serving certificate (`--webhook-certificate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Issuer {
    Operator,
    Provided,
}

/// The certificate to serve now. The operator's own is created when missing, and on the leader
/// renewed when due and its CA written into the webhook configurations when it changed from
/// `served`; a provided one is only read.
async fn current_certificate(
    webhook: &WebhookTls,
    issuer: Issuer,
    leading: bool,
    served: Option<&Served>,
) -> Result<Served, tls::Error> {
    let now = time::OffsetDateTime::now_utc();
    match issuer {
        Issuer::Provided => webhook.read_provided(now).await,
        Issuer::Operator => {
            if leading && webhook.rotate_if_due(now).await?.is_some() {
                tracing::info!("renewed the webhook serving certificate");
            }
            let current = webhook.ensure(now).await?.served();
            let bundle = current.ca_bundle.as_deref().unwrap_or_default();
            if leading && served.is_some_and(|served| served.ca_bundle != current.ca_bundle) {
                webhook.inject_ca_bundle(bundle).await?;
            }
            Ok(current)
        }
    }
}

/// Where the controllers watch: every namespace (`None`), or each namespace of the list.
fn watched_namespaces(listed: &[String]) -> Result<Vec<Option<String>>> {
    let mut namespaces: Vec<String> =
        listed.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
    namespaces.sort();
    namespaces.dedup();
    if let Some(bad) = namespaces.iter().find(|n| !crate::names::is_dns_label(n)) {
        return Err(Error::Flag {
            flag: "--watch-namespaces",
            reason: format!("{bad:?} is not a namespace name (a DNS label)"),
        });
    }
    Ok(if namespaces.is_empty() { vec![None] } else { namespaces.into_iter().map(Some).collect() })
}

pub async fn run(args: RunArgs) -> Result<()> {
    let namespaces = watched_namespaces(&args.watch_namespaces)?;
    let backup_endpoints = EndpointPolicy::parse(&args.backup_endpoint_allow)
        .map_err(|reason| Error::Flag { flag: ALLOW_FLAG, reason })?;
    let client = super::api_client::connect()
        .await
        .map_err(|source| Error::Kube { what: "connect to the Kubernetes API", source })?;
    let webhook = WebhookTls {
        client: client.clone(),
        namespace: args.namespace.clone(),
        secret: args.webhook_secret.clone(),
        service: args.service_name.clone(),
        configuration: args.webhook_configuration.clone(),
    };
    // The listener comes first, so that /healthz answers while the API server cannot be reached
    // (the liveness probe would otherwise restart the pod during an API outage, adding
    // CrashLoopBackOff to the wait). Until the webhook certificate is read, a throwaway one
    // serves and /readyz says why the replica is not ready: the API server calls webhooks only
    // at ready endpoints.
    let resolver = Arc::new(ReloadableCert::new(
        certified_key(&placeholder_certificate(&args.service_name)?)
            .map_err(crate::tls::Error::from)?,
    ));
    let readiness = Readiness::default();
    readiness.set(READINESS_COMPONENT, Some("the webhook certificate is not read yet".into()));
    let listener = crate::server::bind(args.listen).await?;
    let metrics = Arc::new(Metrics::default());
    let policy = etcd_webhook::Policy {
        authorizer: Arc::new(crate::server::subject_access::SubjectAccess::new(client.clone())),
        repositories: args.allowed_image_repositories.clone(),
        backups: Arc::new(super::known_backups::WatchedBackups::start(&client, &namespaces)),
    };
    let metrics_listener = crate::server::bind(args.metrics_listen).await?;
    let app = router(metrics.clone(), readiness.clone(), policy);
    let served = serve(listener, resolver.clone(), app, crate::shutdown::signal());
    let scraped = serve(
        metrics_listener,
        resolver.clone(),
        metrics_router(metrics.clone()),
        crate::shutdown::signal(),
    );
    // Either server stopping stops the replica: one without the other is not the operator.
    let mut server = tokio::spawn(async move { tokio::try_join!(served, scraped).map(|_| ()) });
    tracing::info!(listen = %args.listen, metrics = %args.metrics_listen, "serving /healthz, /readyz and /metrics; webhooks once the certificate is read");
    // Every start-up call waits out an unavailable API server instead of exiting: a restart
    // would only add the kubelet's CrashLoopBackOff to the wait.
    let issuer = args.webhook_certificate;
    let certificate = tokio::select! {
        read = with_backoff("read the webhook certificate", tls::Error::is_transient, || {
            current_certificate(&webhook, issuer, false, None)
        }) => read?,
        served = &mut server => return finished(served),
    };
    resolver.swap(certified_key(&certificate.serving).map_err(crate::tls::Error::from)?);
    readiness.set(READINESS_COMPONENT, None);
    tracing::info!("serving admission webhooks");

    let leading = Arc::new(AtomicBool::new(false));
    tokio::spawn(follow_certificate(
        webhook.clone(),
        issuer,
        resolver,
        readiness,
        leading.clone(),
        certificate,
        metrics.clone(),
    ));

    let identity =
        args.identity.clone().unwrap_or_else(|| format!("etcd-operator-{}", std::process::id()));
    let mut leadership = tokio::select! {
        leadership = Leadership::acquire(client.clone(), &args.namespace, &identity) => leadership?,
        served = &mut server => return finished(served),
    };
    leading.store(true, Ordering::SeqCst);
    tracing::info!(%identity, "leading");
    let identity = Some(identity);
    if issuer == Issuer::Operator {
        with_backoff("inject the webhook caBundle", tls::Error::is_transient, || async {
            let bundle = webhook.ensure(time::OffsetDateTime::now_utc()).await?.ca_bundle();
            webhook.inject_ca_bundle(&bundle).await
        })
        .await?;
    }
    let operator_image = match args.operator_image.clone() {
        Some(image) => image,
        None => {
            let transient =
                |err: &Error| matches!(err, Error::Kube { source, .. } if retry::transient(source));
            with_backoff("read the operator's own pod", transient, || {
                own_image(&client, &args.namespace, args.identity.as_deref())
            })
            .await?
        }
    };
    tracing::info!(%operator_image, "etcd pods run this image as member-init");
    let mut context = super::Context::new(client.clone(), operator_image, identity);
    context.ca_bundle_propagation = Duration::from_secs(args.ca_bundle_propagation_seconds);
    context.backup_endpoints = backup_endpoints;
    context.image_repositories = args.allowed_image_repositories.clone();
    {
        let mut registry = metrics.registry.lock().unwrap_or_else(|p| p.into_inner());
        context.backups.register(&mut registry);
        context.clusters.register(&mut registry);
        context.reconciles.register(&mut registry);
    }
    let controllers = controllers(&client, &context, namespaces, args.max_concurrent_reconciles);
    let outcome = tokio::select! {
        () = leadership.lost() => Err(Error::LostLeadership),
        () = keep_ca_bundle(webhook.clone(), issuer) => Ok(()),
        () = controllers => Ok(()),
        served = &mut server => finished(served),
    };
    leadership.release().await;
    outcome
}

/// The three controllers in each watched namespace (or once over all), each namespace with its
/// own watches and record of what was written, all sharing `context`'s settings and metrics.
async fn controllers(
    client: &kube::Client,
    context: &super::Context,
    namespaces: Vec<Option<String>>,
    concurrency: u16,
) {
    match namespaces.as_slice() {
        [None] => tracing::info!("watching every namespace"),
        listed => {
            let listed: Vec<&String> = listed.iter().flatten().collect();
            tracing::info!(namespaces = ?listed, "watching these namespaces only");
        }
    }
    futures::future::join_all(namespaces.into_iter().map(|namespace| {
        let (owned, owned_writers) = super::owned::Owned::watched();
        let context = Arc::new(context.sharing(owned));
        async move {
            let namespace = namespace.as_deref();
            tokio::join!(
                cluster_controller(client, namespace, context.clone(), owned_writers, concurrency),
                backup_controller(client, namespace, context.clone()),
                restore_controller(client, namespace, context),
            );
        }
    }))
    .await;
}

/// The image of this replica's `operator` container (or its only container), from its pod.
async fn own_image(client: &kube::Client, namespace: &str, pod: Option<&str>) -> Result<String> {
    let pod = pod.ok_or(Error::Usage(
        "set OPERATOR_IMAGE, or POD_NAME so that the operator can read its own image from its pod",
    ))?;
    let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace);
    let own = pods.get(pod).await.map_err(|source| Error::Kube {
        what: "read the operator's own pod (for its image)",
        source,
    })?;
    let containers = own.spec.map(|s| s.containers).unwrap_or_default();
    containers
        .iter()
        .find(|c| c.name == "operator")
        .or(containers.first())
        .and_then(|c| c.image.clone())
        .ok_or(Error::Usage("the operator's own pod has no container image"))
}

/// The EtcdCluster controller over one namespace or all, `concurrency` clusters at a time, woken
/// by changes to what it owns. Owned objects are watched as metadata only; the versions of those
/// it applies or reads every pass are kept in `writers`' stores, so that a pass that finds them
/// as it left them asks nothing.
async fn cluster_controller(
    client: &kube::Client,
    namespace: Option<&str>,
    context: Arc<super::Context>,
    writers: super::owned::Writers,
    concurrency: u16,
) {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::runtime::{Controller, watcher};
    use kube::runtime::{Predicate, predicates};
    let api = super::scoped::<etcd_crds::EtcdCluster>(client.clone(), namespace);
    // Woken by what people change (the spec, an annotation asking for a CA rotation or approving
    // a recovery, the deletion, which bumps the generation) and by the finalizer being added,
    // never by its own status writes: the status records the commit index, which every write
    // to etcd moves, so waking on it made a cluster under load reconciled several times a
    // second instead of every health interval.
    let woken_by =
        predicates::generation.combine(predicates::annotations).combine(predicates::finalizers);
    let (clusters, changes) = changes_of(api, woken_by);
    // Only what the operator made: not every Secret and ConfigMap of the cluster.
    let ours = || watcher::Config::default().labels(&crate::names::managed_by_selector());
    Controller::for_stream(changes, clusters)
        .owns(super::scoped::<StatefulSet>(client.clone(), namespace), ours())
        .owns(super::scoped::<ConfigMap>(client.clone(), namespace), ours())
        .owns_stream(owned_versions::<Service>(
            super::scoped(client.clone(), namespace),
            ours(),
            writers.services,
        ))
        .owns_stream(owned_versions::<PodDisruptionBudget>(
            super::scoped(client.clone(), namespace),
            ours(),
            writers.budgets,
        ))
        .owns_stream(owned_versions::<Secret>(
            super::scoped(client.clone(), namespace),
            ours(),
            writers.secrets,
        ))
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(super::cluster::reconcile, super::error_policy, context)
        .for_each(log_failure("reconcile error"))
        .await;
}

/// What a watch needs of an object kind, named once for the kinds watched below.
trait Watchable:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl Watchable for k8s_openapi::api::core::v1::Service {}
impl Watchable for k8s_openapi::api::core::v1::Secret {}
impl Watchable for k8s_openapi::api::policy::v1::PodDisruptionBudget {}
impl Watchable for etcd_crds::EtcdCluster {}
impl Watchable for etcd_crds::EtcdBackup {}

/// A metadata-only watch of the operator's objects of one kind, keeping their versions in
/// `writer`'s store, and yielding each object touched for the controller to wake its owner.
fn owned_versions<K>(
    api: kube::Api<PartialObjectMeta<K>>,
    config: kube::runtime::watcher::Config,
    writer: kube::runtime::reflector::store::Writer<PartialObjectMeta<K>>,
) -> impl futures::Stream<
    Item = std::result::Result<PartialObjectMeta<K>, kube::runtime::watcher::Error>,
> + Send
+ 'static
where
    K: Watchable,
{
    use kube::runtime::{WatchStreamExt, watcher};
    watcher(api, config)
        .default_backoff()
        // Managed fields are most of an object's metadata, and nothing here reads them.
        .modify(|object| object.metadata.managed_fields = None)
        .reflect(writer)
        .touched_objects()
}

/// Every object of `api`, kept in a store for a controller, and a trigger for each object whose
/// `woken_by` hash changed: a controller that writes its objects' status is not woken by its
/// own writes.
fn changes_of<K>(
    api: kube::Api<K>,
    woken_by: impl kube::runtime::Predicate<K> + Send + 'static,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = std::result::Result<K, kube::runtime::watcher::Error>> + Send + 'static,
)
where
    K: Watchable,
{
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store();
    let changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(woken_by, Default::default());
    (reader, changes)
}

/// The EtcdBackup controller: each object is looked at when it changes and when its next run is
/// due (the reconcile's requeue).
async fn backup_controller(
    client: &kube::Client,
    namespace: Option<&str>,
    context: Arc<super::Context>,
) {
    use futures::StreamExt;
    use kube::runtime::{Controller, predicates};
    let api = super::scoped::<etcd_crds::EtcdBackup>(client.clone(), namespace);
    // Woken by spec changes only: every failed run writes its status (consecutiveFailures),
    // and a trigger on that write would retry at once, around the error policy's back-off
    // (kube-sim showed hundreds of attempts in half a minute).
    let (backups, changes) = changes_of(api, predicates::generation);
    Controller::for_stream(changes, backups)
        .shutdown_on_signal()
        .run(super::backup::reconcile, super::error_policy, context)
        .for_each(log_failure("backup reconcile error"))
        .await;
}

/// The EtcdRestore controller, woken by its restores and by the clusters they create.
async fn restore_controller(
    client: &kube::Client,
    namespace: Option<&str>,
    context: Arc<super::Context>,
) {
    use futures::StreamExt;
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::{Controller, watcher};
    let api = super::scoped::<etcd_crds::EtcdRestore>(client.clone(), namespace);
    let clusters = super::scoped::<etcd_crds::EtcdCluster>(client.clone(), namespace);
    let restores_of = |cluster: etcd_crds::EtcdCluster| {
        let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
        cluster
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(super::restore::RESTORED_BY).cloned())
            .map(|name| ObjectRef::new(&name).within(&namespace))
    };
    Controller::new(api, watcher::Config::default())
        .watches(clusters, watcher::Config::default(), restores_of)
        .shutdown_on_signal()
        .run(super::restore::reconcile, super::error_policy, context)
        .for_each(log_failure("restore reconcile error"))
        .await;
}

/// Keeps the webhook configurations' caBundle equal to the CA the replicas serve with: a
/// configuration re-applied, replaced or recreated without it (so that every admission fails)
/// is mended as soon as the leader sees it, not at the next restart. A provided certificate's
/// caBundle is its issuer's to keep.
async fn keep_ca_bundle(webhook: WebhookTls, issuer: Issuer) {
    if issuer == Issuer::Provided {
        return std::future::pending().await;
    }
    use futures::StreamExt;
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let config = kube::runtime::watcher::Config::default()
        .fields(&format!("metadata.name={}", webhook.configuration));
    let validating =
        ca_bundles(webhook.client.clone(), config.clone(), |c: ValidatingWebhookConfiguration| {
            c.webhooks.unwrap_or_default().into_iter().map(|w| w.client_config.ca_bundle).collect()
        });
    let mutating = ca_bundles(webhook.client.clone(), config, |c: MutatingWebhookConfiguration| {
        c.webhooks.unwrap_or_default().into_iter().map(|w| w.client_config.ca_bundle).collect()
    });
    let seen = futures::stream::select(validating, mutating);
    let mut seen = std::pin::pin!(seen);
    while let Some(found) = seen.next().await {
        let result = async {
            let wanted = webhook.ensure(time::OffsetDateTime::now_utc()).await?.ca_bundle();
            if found.iter().any(|b| b.as_ref().map(|b| b.0.as_slice()) != Some(wanted.as_bytes())) {
                webhook.inject_ca_bundle(&wanted).await?;
                tracing::info!("restored the caBundle of the webhook configurations");
            }
            Ok::<_, crate::tls::Error>(())
        };
        if let Err(err) = result.await {
            tracing::warn!(%err, "cannot keep the webhook caBundle current; will retry on the next change");
        }
    }
}

/// The caBundle of each webhook of the configurations a watch sees, as they change.
fn ca_bundles<K>(
    client: kube::Client,
    config: kube::runtime::watcher::Config,
    bundles: fn(K) -> Vec<Option<k8s_openapi::ByteString>>,
) -> impl futures::Stream<Item = Vec<Option<k8s_openapi::ByteString>>> + Send
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    watcher(kube::Api::<K>::all(client), config)
        .default_backoff()
        .applied_objects()
        .filter_map(move |c| std::future::ready(c.ok().map(bundles)))
}

/// Logs a failed reconcile of a controller's stream; the error policy has already requeued it.
fn log_failure<T, E: std::fmt::Display>(
    what: &'static str,
) -> impl Fn(std::result::Result<T, E>) -> std::future::Ready<()> {
    move |result| {
        if let Err(err) = result {
            tracing::debug!(%err, "{what}");
        }
        std::future::ready(())
    }
}

fn finished(
    served: std::result::Result<
        std::result::Result<(), crate::server::Error>,
        tokio::task::JoinError,
    >,
) -> Result<()> {
    match served {
        Ok(result) => Ok(result?),
        Err(err) => Err(Error::Task(err.to_string())),
    }
}

/// Keeps the served certificate equal to the Secret's, and (on the leader) renews it before it
/// expires. A failure shows in /readyz and the logs; the loop keeps trying.
/// A certificate to serve probes with until the webhook's own is read, from a CA of its own
/// that nothing trusts, and nothing needs to: the kubelet does not verify a probe's certificate.
fn placeholder_certificate(service: &str) -> Result<etcd_certs::CertKeyPair> {
    let names = [service.to_owned()];
    let pki = etcd_certs::issue_webhook_pki(&names, time::OffsetDateTime::now_utc())
        .map_err(crate::tls::Error::from)?;
    Ok(pki.serving)
}

async fn follow_certificate(
    webhook: WebhookTls,
    issuer: Issuer,
    resolver: Arc<ReloadableCert>,
    readiness: Readiness,
    leading: Arc<AtomicBool>,
    mut served: Served,
    metrics: Arc<Metrics>,
) {
    loop {
        if let Some(ca) = &served.ca_pem {
            metrics.served_certificate("ca", ca);
        }
        metrics.served_certificate("serving", &served.serving.cert_pem);
        tokio::time::sleep(CERTIFICATE_CHECK).await;
        let result = async {
            let leading = leading.load(Ordering::SeqCst);
            let current = current_certificate(&webhook, issuer, leading, Some(&served)).await?;
            if current != served {
                resolver.swap(certified_key(&current.serving)?);
                served = current;
                tracing::info!("serving the renewed webhook certificate");
            }
            Ok::<_, crate::tls::Error>(())
        };
        match result.await {
            Ok(()) => readiness.set(READINESS_COMPONENT, None),
            Err(err) => {
                tracing::error!(%err, "webhook certificate check failed");
                readiness.set(READINESS_COMPONENT, Some(err.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::watched_namespaces;

    #[test]
    fn no_list_watches_every_namespace_and_a_list_each_once() {
        assert_eq!(watched_namespaces(&[]).unwrap(), [None]);
        assert_eq!(watched_namespaces(&[String::new()]).unwrap(), [None], "WATCH_NAMESPACES=\"\"");
        let listed = ["b".into(), " a".into(), "b".into()];
        assert_eq!(
            watched_namespaces(&listed).unwrap(),
            [Some("a".to_owned()), Some("b".to_owned())]
        );
    }

    #[test]
    fn a_name_that_cannot_be_a_namespace_is_refused_by_the_flag() {
        let err = watched_namespaces(&["tenant-a".into(), "Tenant_B".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--watch-namespaces: \"Tenant_B\" is not a namespace name (a DNS label)"
        );
    }
}
