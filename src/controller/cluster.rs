//! The EtcdCluster controller: TLS Secrets, the cluster's objects (server-side apply), then one
//! membership step through the Kubernetes member port, with status written before the step and
//! an Event for every membership action. A finalizer guards cleanup ([`super::deletion`]).

use etcd_crds::conditions::types;
use std::sync::Arc;
use std::time::Duration;

use etcd_crds::conditions::{condition, set_condition};
use etcd_crds::{ClusterPhase, EtcdCluster, MemberRole};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::owned::Watched;
use super::{Context, Error, kube_err, namespace_of, write_status};
use crate::etcd::{AlarmKind, ClientTls};
use crate::k8s::members::KubeMembers;
use crate::k8s::{objects, roll};
use crate::membership::planner::Step;
use crate::membership::reconcile::{Plan, Target, act, plan};
use crate::membership::recovery;
use crate::membership::status::{quorum_lost_for, quorum_lost_since};
use crate::names::{self, FIELD_MANAGER};
use crate::tls::cluster_secrets::{
    MembersTrust, PkiOutcome, TrustRollout, bundle_fingerprint, ensure_cluster_pki,
};

/// Guards deletion until the operator has cleaned up (volumes under reclaimPolicy Delete).
pub const FINALIZER: &str = "etcd.etcd.io/cleanup";

pub async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciles.measure("etcdcluster", reconcile_once(cluster, &ctx)).await
}

async fn reconcile_once(cluster: Arc<EtcdCluster>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = namespace_of(&*cluster)?;
    let api: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, cluster, |event| async {
        match event {
            Finalizer::Apply(cluster) => apply(&cluster, ctx).await,
            Finalizer::Cleanup(cluster) => super::deletion::cleanup(&cluster, ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)))
}

/// Server-side applies one of the cluster's objects, unless this very object was applied last
/// and the object is still at the version that apply returned (`live`: its resourceVersion as a
/// watch or a read just saw it), so that nobody changed it since ([`super::owned`]).
async fn apply_object<K>(
    ctx: &Context,
    cluster: &EtcdCluster,
    object: &K,
    live: Option<String>,
) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let namespace = names::namespace(cluster);
    let owner = cluster.uid().unwrap_or_default();
    let kind = K::kind(&());
    let name = object.meta().name.clone().unwrap_or_default();
    let digest = super::owned::digest(object);
    if ctx.owned.already_applied(&owner, &kind, &name, digest, live.as_deref()) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    // Forced only over this cluster's own object (another manager's edit of a field the operator
    // sets is undone, as Kubernetes' controllers do); a new object is applied unforced, so one
    // created meanwhile by someone else conflicts instead of being taken over.
    let current =
        api.get_metadata_opt(&name).await.map_err(kube_err(format!("get {kind} {name}")))?;
    if let Some(why) =
        current.as_ref().and_then(|c| crate::ownership::foreign(&kind, &c.metadata, &owner))
    {
        return Err(Error::NotOwned(why));
    }
    let params = PatchParams::apply(FIELD_MANAGER);
    let params = if current.is_some() { params.force() } else { params };
    let applied = api
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(kube_err(format!("apply {kind} {name}")))?;
    ctx.owned.record_apply(&owner, &kind, &name, digest, applied.meta().resource_version.clone());
    Ok(())
}

/// [`apply_object`] of a kind whose versions a watch keeps.
async fn apply_watched<K>(ctx: &Context, cluster: &EtcdCluster, object: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Watched
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let live = ctx.owned.version::<K>(&names::namespace(cluster), &name);
    apply_object(ctx, cluster, object, live).await
}

/// One reconcile of a live cluster, in three steps: its TLS, its Kubernetes objects, then one
/// membership step.
async fn apply(cluster: &EtcdCluster, ctx: &Context) -> Result<Action, Error> {
    let name = cluster.name_any();
    let namespace = names::namespace(cluster);
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let current_sts =
        sts_api.get_opt(&name).await.map_err(kube_err(format!("get StatefulSet {name}")))?;
    let uid = cluster.uid().unwrap_or_default();
    let repository = &cluster.spec.repository;
    if !ctx.image_repositories.contains(repository) {
        let message = format!(
            "{repository} is not an image repository this operator runs members from; it allows \
             {} (--allowed-image-repositories); nothing is changed until it is",
            ctx.image_repositories.join(", ")
        );
        let refusal = etcd_certs::ValidationError { reason: "RepositoryNotAllowed", message };
        return refuse(cluster, ctx, &namespace, types::IMAGE_ALLOWED, refusal).await;
    }
    let tls = match ensure_tls(cluster, ctx, &namespace, current_sts.as_ref()).await? {
        Ok(tls) => tls,
        Err(invalid) => {
            return refuse(cluster, ctx, &namespace, types::TLS_SECRETS_VALID, invalid).await;
        }
    };
    if let Some(why) = current_sts
        .as_ref()
        .and_then(|sts| crate::ownership::foreign("StatefulSet", &sts.metadata, &uid))
    {
        return refuse(cluster, ctx, &namespace, types::OBJECTS_OWNED, not_owned(why)).await;
    }
    let volumes = match apply_objects(cluster, ctx, &namespace, current_sts, tls.as_ref()).await {
        Err(Error::NotOwned(why)) => {
            return refuse(cluster, ctx, &namespace, types::OBJECTS_OWNED, not_owned(why)).await;
        }
        volumes => volumes?,
    };
    membership_step(cluster, ctx, &namespace, tls.as_ref(), volumes).await
}

fn not_owned(message: String) -> etcd_certs::ValidationError {
    etcd_certs::ValidationError { reason: "ObjectNotOwned", message }
}

/// The TLS the operator talks to members with: the cluster's own PKI (created, renewed and
/// rolled over here), the user's Secrets (or why they cannot be used), or none.
async fn ensure_tls(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
    current_sts: Option<&StatefulSet>,
) -> Result<Result<Option<ClientTls>, etcd_certs::ValidationError>, Error> {
    let tls = &cluster.spec.security.tls;
    if !tls.enabled {
        return Ok(Ok(None));
    }
    if !tls.auto_tls {
        return Ok(user_tls(cluster, ctx, namespace).await?.map(Some));
    }
    let name = cluster.name_any();
    let request = etcd_certs::ClusterPkiRequest {
        cluster: name.clone(),
        namespace: namespace.to_owned(),
        max_members: etcd_crds::MAX_MEMBERS,
        extra_sans: Vec::new(),
    };
    let owner = cluster.controller_owner_ref(&()).ok_or_else(|| Error::NoOwnerReference {
        kind: EtcdCluster::kind(&()).into_owned(),
        name: name.clone(),
    })?;
    let rollout = TrustRollout {
        rotate_ca: cluster.annotations().get(etcd_crds::ROTATE_CA_ANNOTATION).cloned(),
        members: members_trust(current_sts),
        propagation: time::Duration::try_from(ctx.ca_bundle_propagation)
            .unwrap_or(time::Duration::MAX),
    };
    let uid = cluster.uid().unwrap_or_default();
    let inputs = (&request, &rollout);
    if let Some(tls) = ctx.owned.known_pki(&uid, &inputs, namespace) {
        return Ok(Ok(Some(tls)));
    }
    let now = time::OffsetDateTime::now_utc();
    let ensured =
        match ensure_cluster_pki(&ctx.client, namespace, &request, &owner, &rollout, now).await {
            Ok(ensured) => ensured,
            Err(crate::tls::Error::NotOwned(why)) => return Ok(Err(not_owned(why))),
            Err(err) => return Err(err.into()),
        };
    ctx.clusters.certificates(&metric_labels(cluster), &ensured.pki);
    if let PkiOutcome::Rotated(what) = &ensured.outcome {
        ctx.event(cluster, EventType::Normal, "CertificatesRotated", what.clone()).await;
    }
    // The operator trusts the whole bundle: during a CA rollover members' certificates may
    // come from either CA.
    let tls = ClientTls {
        ca_pem: ensured.trust_bundle,
        cert_pem: ensured.pki.client.cert_pem,
        key_pem: ensured.pki.client.key_pem,
    };
    if let Some(read_at) = ensured.read_at {
        ctx.owned.record_pki(&uid, &inputs, read_at, tls.clone());
    }
    Ok(Ok(Some(tls)))
}

/// The cluster's Services, disruption budget and StatefulSet (server-side apply), and its
/// claims grown to the spec's size (first: a claim whose file system grows only when its pod
/// restarts changes the template).
async fn apply_objects(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
    current_sts: Option<StatefulSet>,
    tls: Option<&ClientTls>,
) -> Result<Volumes, Error> {
    apply_watched(ctx, cluster, &objects::headless_service(cluster)).await?;
    apply_watched(ctx, cluster, &objects::client_service(cluster)).await?;
    apply_watched(ctx, cluster, &objects::pod_disruption_budget(cluster)).await?;
    let volumes = expand_claims(cluster, ctx, namespace).await?;
    let live = current_sts.as_ref().and_then(|s| s.metadata.resource_version.clone());
    let replicas = current_sts.as_ref().and_then(|s| s.spec.as_ref()?.replicas).unwrap_or(0);
    let restart = objects::RestartFor {
        trust: tls.map(|tls| bundle_fingerprint(&tls.ca_pem)),
        filesystem_resize: roll::filesystem_resize(
            volumes.claims.as_deref().unwrap_or_default(),
            &cluster.spec.storage.size.0,
            current_sts.as_ref().and_then(|sts| {
                roll::template_annotation(sts, names::FILESYSTEM_RESIZE_ANNOTATION)
            }),
            k8s_openapi::jiff::Timestamp::now().as_second(),
        ),
    };
    let mut statefulset = objects::statefulset(cluster, replicas, &ctx.operator_image, &restart);
    let changes = roll::keep_init_image(
        &mut statefulset,
        current_sts.as_ref(),
        names::TEMPLATE_HASH_ANNOTATION,
    );
    let previous_status = cluster.status.clone().unwrap_or_default();
    let current = current_sts.as_ref().map(roll::Current::of);
    let roll = roll::roll(&cluster.name_any(), current, changes, &previous_status);
    if let Some(hand_over) = &roll.hand_over {
        hand_over_leadership(cluster, ctx, tls, hand_over).await;
    }
    roll::hold(&mut statefulset, roll.partition);
    if let (Some(current), Some(spec)) =
        (current_sts.as_ref().and_then(|s| s.spec.as_ref()), statefulset.spec.as_mut())
    {
        // volumeClaimTemplates are immutable: a grown storage size is carried out on the
        // claims themselves (expand_claims), and the StatefulSet keeps the templates it has.
        spec.volume_claim_templates = current.volume_claim_templates.clone();
    }
    apply_object(ctx, cluster, &statefulset, live).await?;
    Ok(volumes)
}

/// Moves leadership off a member whose pod the roll restarts next. "Not yet" answers (a leader
/// change under way) are left to the next reconcile, which decides again from a new status.
async fn hand_over_leadership(
    cluster: &EtcdCluster,
    ctx: &Context,
    tls: Option<&ClientTls>,
    hand_over: &roll::HandOver,
) {
    let message =
        format!("moving leadership to {} before the roll restarts the leader", hand_over.to);
    tracing::info!(cluster = %cluster.name_any(), "{message}");
    ctx.event(cluster, EventType::Normal, "MoveLeader", message).await;
    // Whatever the answer, the partition holds in this pass; the next decides again from a new
    // status (a leader that changed meanwhile refuses with "not leader").
    if let Err(err) = crate::etcd::move_leader(&hand_over.leader_url, tls, hand_over.to_id).await {
        tracing::warn!(cluster = %cluster.name_any(), %err, "leadership hand-over not done yet");
    }
}

/// Observe, plan one membership step, write status (before the step, so that what a restart
/// from zero needs is recorded first), publish Events, perform the step.
async fn membership_step(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
    tls: Option<&ClientTls>,
    volumes: Volumes,
) -> Result<Action, Error> {
    let name = cluster.name_any();
    let port = KubeMembers {
        client: ctx.client.clone(),
        cluster: cluster.clone(),
        claims: volumes.claims,
    };
    let mut target = Target {
        cluster: name.clone(),
        size: usize::try_from(cluster.spec.size).unwrap_or(0),
        generation: cluster.metadata.generation,
        token: cluster.uid().unwrap_or_else(|| name.clone()),
        replace_after: Target::seconds(cluster.spec.replace_unhealthy_after_seconds),
        version: Some(cluster.spec.version.clone()),
        rolls_versions: false,
        recovery: recovery::Policy {
            ephemeral: cluster.spec.storage.ephemeral,
            ..recovery::Policy::of(cluster)
        },
        quota_backend_bytes: cluster.spec.options.quota_backend_bytes,
        check_consistency_every: Target::seconds(
            cluster.spec.maintenance.consistency_check_seconds,
        ),
    };
    let previous = cluster.status.clone().unwrap_or_default();
    if quorum_lost_for(&previous) >= target.recovery.after {
        // What recovery could restore if no member survives; looked up only when it could act.
        let backups = super::backup::of_cluster(ctx, namespace, &name)
            .await
            .map_err(kube_err("list the EtcdBackups"))?;
        target.recovery.newest_backup = super::backup::newest_verified(&backups);
    }
    let Plan { step, mut status, voters, restore } = plan(&port, &target, tls, &previous).await?;
    if cluster.spec.security.tls.enabled && !cluster.spec.security.tls.auto_tls {
        let valid = condition(
            types::TLS_SECRETS_VALID,
            true,
            "SecretsValid",
            "the peer, server and client Secrets are valid".into(),
            cluster.metadata.generation,
        );
        set_condition(&mut status.conditions, valid);
    }
    // A refusal that no longer holds (the foreign object was removed) is cleared.
    for (kind, reason, message) in [
        (types::OBJECTS_OWNED, "ObjectsOwned", "every object of the cluster is its own"),
        (types::IMAGE_ALLOWED, "RepositoryAllowed", "the image repository is allowed"),
        (types::TLS_SECRETS_VALID, "SecretsValid", "the cluster's TLS Secrets are usable"),
    ] {
        if status.conditions.iter().any(|c| c.type_ == kind && c.status == "False") {
            let cleared =
                condition(kind, true, reason, message.into(), cluster.metadata.generation);
            set_condition(&mut status.conditions, cleared);
        }
    }
    // Claims are not watched: while they grow, look again soon rather than at the next health
    // check.
    let expanding = volumes.expansion.as_ref().is_some_and(|c| c.reason == EXPANDING);
    if let Some(expansion) = volumes.expansion {
        set_condition(&mut status.conditions, expansion);
    }
    let stalled = port.stalled().await?;
    let generation = cluster.metadata.generation;
    set_condition(&mut status.conditions, scheduling(&stalled.unschedulable, generation));
    set_condition(&mut status.conditions, image_pulls(&stalled.image_pulls, generation));
    for pod in &stalled.superseded {
        let message = format!("deleting {pod}: it never started on a template since replaced");
        ctx.event(cluster, EventType::Normal, "DeleteSupersededPod", message).await;
        port.delete_superseded(pod).await?;
    }
    status.selector = Some(names::selector_string(&name));
    let labels = metric_labels(cluster);
    ctx.clusters.observe(&labels, cluster.spec.size, &cluster.spec.version, &status);
    ctx.clusters.step(&labels, step.kind());
    if previous.cluster_id.is_none() && status.cluster_id.is_some() {
        // Bootstrapped: before the cluster ID is recorded, no entry may say "new" any more.
        port.settle_bootstrap().await?;
    }
    if status.cluster_id.is_some() {
        let voters = status.members.iter().filter(|m| m.role == Some(MemberRole::Voter));
        port.require_data_of(&voters.map(|m| m.name.clone()).collect()).await?;
    }
    if status != previous {
        write_status::<EtcdCluster, _>(ctx, namespace, &name, &status).await?;
    }
    if previous.phase != status.phase {
        let note = format!("{:?} → {:?}", previous.phase, status.phase);
        ctx.event(cluster, EventType::Normal, "PhaseChanged", note).await;
    }
    if !matches!(step, Step::Done | Step::Wait { .. }) {
        ctx.event(cluster, EventType::Normal, step_reason(&step), step.to_string()).await;
    }
    act(&port, &step, &target, tls, &voters).await?;
    if let Some(point) = restore {
        restore_from_backup(cluster, ctx, namespace, &point, &previous).await?;
    }
    // Mid-change, the next step waits on something no watched object reports (a learner
    // answering: `/readyz` keeps its pod unready; a member just promoted answering as a voter),
    // so look again soon.
    let changing = matches!(status.phase, Some(ClusterPhase::Creating | ClusterPhase::Scaling));
    Ok(match step {
        Step::Done if expanding => Action::requeue(Duration::from_secs(5)),
        Step::Done => Action::requeue(ctx.health_interval),
        Step::Wait { .. } if changing => Action::requeue(Duration::from_secs(1)),
        Step::Wait { .. } => Action::requeue(Duration::from_secs(5)),
        // A step's effect (a learner added, promoted) is the next step's cue.
        _ => Action::requeue(Duration::from_secs(1)),
    })
}

/// No member survives and a person approved: the newest verified backup is restored by an
/// EtcdRestore of type Replace, named after this loss (so that it is made once, whatever the
/// crashes in between). It keeps the spec, deletes the cluster (a foreground deletion, which
/// waits while a pod on a lost node is not confirmed gone: that fences it) and creates the
/// cluster again from the backup on the same claims, with a new cluster ID.
async fn restore_from_backup(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
    point: &recovery::RestorePoint,
    previous: &etcd_crds::EtcdClusterStatus,
) -> Result<(), Error> {
    use etcd_crds::{BackupReference, EtcdRestore, EtcdRestoreSpec, RestoreSource, RestoreType};
    let name = cluster.name_any();
    let since = quorum_lost_since(previous).map_or(0, |t| t.as_second());
    let restore_name = format!("{name}-recovery-{since}");
    let restore = EtcdRestore {
        metadata: kube::api::ObjectMeta {
            name: Some(restore_name.clone()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        spec: EtcdRestoreSpec {
            cluster_name: name.clone(),
            restore_type: RestoreType::Replace,
            source: RestoreSource {
                backup_ref: Some(BackupReference {
                    name: point.backup.clone(),
                    record: Some(point.location.clone()),
                }),
                location: None,
            },
            cluster_spec: None,
        },
        status: None,
    };
    let api: Api<EtcdRestore> = Api::namespaced(ctx.client.clone(), namespace);
    match api.create(&kube::api::PostParams::default(), &restore).await {
        Ok(_) => {
            let note = format!(
                "no member survives: restoring {} (EtcdBackup {}, revision {}, taken {}) through EtcdRestore {restore_name}",
                point.location, point.backup, point.revision, point.taken
            );
            ctx.event(cluster, EventType::Warning, "RestoringFromBackup", note).await;
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(kube_err(format!("create EtcdRestore {restore_name}"))(err)),
    }
}

/// The labels of a cluster's series on /metrics.
pub fn metric_labels(cluster: &EtcdCluster) -> crate::cluster_metrics::ClusterLabels {
    crate::cluster_metrics::ClusterLabels {
        namespace: names::namespace(cluster),
        cluster: cluster.name_any(),
    }
}

/// Which trust bundle the member pods run with: the template's, once the StatefulSet has rolled
/// every pod to its template and they are all ready (as the StatefulSet status reports it for
/// the generation it observed).
fn members_trust(statefulset: Option<&StatefulSet>) -> MembersTrust {
    let Some(sts) = statefulset else { return MembersTrust::NoMembers };
    let (Some(spec), Some(status)) = (&sts.spec, &sts.status) else {
        return MembersTrust::Restarting;
    };
    let replicas = spec.replicas.unwrap_or(1);
    let rolled = status.observed_generation == sts.metadata.generation
        && status.update_revision.is_some()
        && status.update_revision == status.current_revision
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.ready_replicas.unwrap_or(0) == replicas;
    match roll::template_annotation(sts, names::TRUST_BUNDLE_ANNOTATION) {
        Some(fingerprint) if rolled => MembersTrust::StartedWith(fingerprint.to_owned()),
        _ => MembersTrust::Restarting,
    }
}

/// Whether a claim's size is `wanted` or more, by value: provisioners round up (`10Gi` asked,
/// `10737418240` or `11Gi` given) or enforce minimums, and the text differs though the size is
/// there.
fn at_least(
    size: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    wanted: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> bool {
    let value = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        etcd_webhook::quantity::parse(&q.0)
    };
    match (size.and_then(value), value(wanted)) {
        (Some(size), Some(wanted)) => size >= wanted,
        _ => size == Some(wanted),
    }
}

/// Whether every member pod is placed; if not, which and why, in the scheduler's words (a pod
/// that cannot go anywhere but to another member's node stays Pending rather than share it).
fn scheduling(unplaced: &[(String, String)], generation: Option<i64>) -> Condition {
    if unplaced.is_empty() {
        return condition(
            types::MEMBERS_SCHEDULED,
            true,
            "Scheduled",
            "every member pod is placed".into(),
            generation,
        );
    }
    let message = unplaced
        .iter()
        .map(|(pod, why)| format!("{pod} cannot be scheduled: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    condition(types::MEMBERS_SCHEDULED, false, "Unschedulable", message, generation)
}

/// Whether any member pod waits on an image its kubelet cannot pull, naming the pod and the
/// image. Such a member never ran on it, so it is not replaced (a mistyped version must not cost
/// a member) and a roll holds until the spec names an image that exists.
fn image_pulls(failing: &[(String, String)], generation: Option<i64>) -> Condition {
    if failing.is_empty() {
        let message = "no member pod waits on an image it cannot pull".into();
        return condition(types::IMAGES_PULLED, true, "Pulled", message, generation);
    }
    let message =
        failing.iter().map(|(pod, why)| format!("{pod}: {why}")).collect::<Vec<_>>().join("; ");
    condition(types::IMAGES_PULLED, false, "ImagePullFailed", message, generation)
}

/// The VolumeExpansion reason while some claim has not reached the size asked.
const EXPANDING: &str = "Expanding";

/// The cluster's claims as a pass listed them, and how growing them stands.
struct Volumes {
    /// None with ephemeral storage.
    claims: Option<Vec<PersistentVolumeClaim>>,
    /// The VolumeExpansion condition.
    expansion: Option<Condition>,
}

/// Lists the cluster's claims and grows them to `spec.storage.size`.
async fn expand_claims(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Volumes, Error> {
    if cluster.spec.storage.ephemeral {
        return Ok(Volumes { claims: None, expansion: None });
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let claims = crate::k8s::claims::list(&api, &cluster.name_any())
        .await
        .map_err(kube_err("list the cluster's PersistentVolumeClaims"))?;
    let expansion = grow_claims(cluster, &api, &claims).await;
    Ok(Volumes { claims: Some(claims), expansion: Some(expansion) })
}

/// Grows each member's claim to `spec.storage.size` (the webhook refuses shrinking), and says
/// how far that got: every claim's capacity reached, still expanding, or refused by the API
/// server (a StorageClass without allowVolumeExpansion), with its reason.
async fn grow_claims(
    cluster: &EtcdCluster,
    api: &Api<PersistentVolumeClaim>,
    claims: &[PersistentVolumeClaim],
) -> Condition {
    let wanted = &cluster.spec.storage.size;
    let storage = |map: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| { map.and_then(|m| m.get("storage")).cloned() };
    let mut pending = Vec::new();
    for claim in claims {
        let name = claim.name_any();
        let requested = storage(
            claim
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref()),
        );
        if !at_least(requested.as_ref(), wanted) {
            let patch =
                serde_json::json!({"spec": {"resources": {"requests": {"storage": wanted}}}});
            if let Err(err) = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await
            {
                let refused = match &err {
                    kube::Error::Api(status) => status.message.clone(),
                    other => other.to_string(),
                };
                let message = format!("claim {name} cannot grow to {}: {refused}", wanted.0);
                let generation = cluster.metadata.generation;
                return condition(
                    types::VOLUME_EXPANSION,
                    false,
                    "ExpansionRefused",
                    message,
                    generation,
                );
            }
        }
        let capacity = storage(claim.status.as_ref().and_then(|s| s.capacity.as_ref()));
        if !at_least(capacity.as_ref(), wanted) {
            pending.push(name);
        }
    }
    if pending.is_empty() {
        let message = format!("{} claims have {}", claims.len(), wanted.0);
        condition(types::VOLUME_EXPANSION, true, "Expanded", message, cluster.metadata.generation)
    } else {
        let message = format!("growing to {}: {}", wanted.0, pending.join(", "));
        condition(types::VOLUME_EXPANSION, false, EXPANDING, message, cluster.metadata.generation)
    }
}

/// With autoTLS off, the user's Secrets are used as they are, once each is present, parseable,
/// inside its validity and chained to the CA it carries; the operator's identity is the client
/// Secret.
async fn user_tls(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<ClientTls, etcd_certs::ValidationError>, Error> {
    let tls = &cluster.spec.security.tls;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let now = time::OffsetDateTime::now_utc();
    let mut client = None;
    for (field, reference) in [
        ("peerSecretRef", &tls.peer_secret_ref),
        ("serverSecretRef", &tls.server_secret_ref),
        ("clientSecretRef", &tls.client_secret_ref),
    ] {
        let Some(reference) = reference else {
            return Ok(Err(etcd_certs::ValidationError {
                reason: "SecretMissing",
                message: format!("spec.security.tls.{field} is required when autoTLS is off"),
            }));
        };
        let secret = api
            .get_opt(&reference.name)
            .await
            .map_err(kube_err(format!("get Secret {}", reference.name)))?;
        if let Err(invalid) = etcd_certs::validate_tls_secret(&reference.name, secret.as_ref(), now)
        {
            return Ok(Err(invalid));
        }
        if field == "clientSecretRef" {
            client = secret;
        }
    }
    let decoded = client.as_ref().map(etcd_certs::secret::decode_tls_secret);
    Ok(match decoded {
        Some(Ok((pair, ca_pem))) => {
            Ok(ClientTls { ca_pem, cert_pem: pair.cert_pem, key_pem: pair.key_pem })
        }
        Some(Err(err)) => {
            Err(etcd_certs::ValidationError { reason: "SecretInvalid", message: err.to_string() })
        }
        None => Err(etcd_certs::ValidationError {
            reason: "SecretMissing",
            message: "no client Secret".into(),
        }),
    })
}

/// A Secret that cannot be used, or an object that is not the cluster's own, stops the reconcile
/// before any membership step: the condition (`kind`) says which and why, and the reconcile looks
/// again in 30 s.
async fn refuse(
    cluster: &EtcdCluster,
    ctx: &Context,
    namespace: &str,
    kind: &str,
    invalid: etcd_certs::ValidationError,
) -> Result<Action, Error> {
    let name = cluster.name_any();
    let previous = cluster.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let refused = condition(
        kind,
        false,
        invalid.reason,
        invalid.message.clone(),
        cluster.metadata.generation,
    );
    set_condition(&mut status.conditions, refused);
    if status != previous {
        write_status::<EtcdCluster, _>(ctx, namespace, &name, &status).await?;
        ctx.event(cluster, EventType::Warning, invalid.reason, invalid.message).await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// The Event reason of a membership step.
fn step_reason(step: &Step) -> &'static str {
    match step {
        Step::Bootstrap { .. } => "Bootstrap",
        Step::Restart { .. } => "RestartMembers",
        Step::AddLearner { .. } => "AddLearner",
        Step::StartLearner { .. } => "StartMember",
        Step::Promote { .. } => "PromoteMember",
        Step::MoveLeader { .. } => "MoveLeader",
        Step::Remove { .. } => "RemoveMember",
        Step::Retire { .. } => "RetireMember",
        Step::Upgrade { .. } => "UpgradeMember",
        Step::ForceNewCluster { .. } => "ForceNewCluster",
        Step::EndForce { .. } => "EndForceNewCluster",
        Step::StopAll { .. } => "StopCluster",
        Step::Compact => "NospaceCompact",
        Step::Defragment { .. } => "NospaceDefragment",
        Step::Disarm { alarm: AlarmKind::Nospace, .. } => "NospaceDisarm",
        Step::Disarm { alarm: AlarmKind::Corrupt, .. } => "CorruptDisarm",
        Step::Wait { .. } => "Waiting",
        Step::Done => "Converged",
    }
}

#[cfg(test)]
mod tests {
    /// A provisioner that rounds up, or writes bytes, has given what was asked.
    #[test]
    fn claim_sizes_compare_by_value() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let q = |s: &str| Quantity(s.to_owned());
        assert!(super::at_least(Some(&q("10737418240")), &q("10Gi")));
        assert!(super::at_least(Some(&q("11Gi")), &q("10Gi")));
        assert!(!super::at_least(Some(&q("8Gi")), &q("10Gi")));
        assert!(!super::at_least(None, &q("10Gi")));
    }

    #[test]
    fn an_unplaced_member_is_named_with_the_schedulers_message() {
        let why = "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.";
        let c = super::scheduling(&[("demo-2".into(), why.into())], Some(1));
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Unschedulable"));
        assert_eq!(c.message, format!("demo-2 cannot be scheduled: {why}"));
        assert_eq!(super::scheduling(&[], Some(1)).status, "True");
    }

    #[test]
    fn a_member_waiting_on_an_image_is_named_with_it() {
        let why = "image etcd:3.5.99 cannot be pulled (ImagePullBackOff): Back-off pulling image";
        let c = super::image_pulls(&[("demo-2".into(), why.into())], Some(1));
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ImagePullFailed"));
        assert_eq!(c.message, format!("demo-2: {why}"));
        assert_eq!(super::image_pulls(&[], Some(1)).status, "True");
    }
}
