//! The Kubernetes adapter of the member port: members are StatefulSet pods. Starting a member
//! writes its bootstrap entry (its pod's `member-init` waits for it) and makes sure its ordinal
//! has a pod; stopping lowers the StatefulSet to below its ordinal (or deletes the pod of a
//! member in the middle, whose recreated pod then waits for an entry that is gone); wiping
//! deletes its PersistentVolumeClaim.

use std::collections::{BTreeMap, BTreeSet};

use etcd_crds::EtcdCluster;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::bootstrap::BootstrapEntry;
use super::member_init::NO_DATA_EXIT_CODE;
use super::objects::bootstrap_configmap;
use crate::etcd::ClusterState;
use crate::membership::planner::Wanted;
use crate::membership::{Error, MemberPort, MemberUrls};
use crate::names::{self, FIELD_MANAGER};
use crate::retry::ignore_not_found;

pub struct KubeMembers {
    pub client: Client,
    pub cluster: EtcdCluster,
    /// The cluster's claims as this pass already listed them (to grow them), if it did:
    /// `with_data` reads these instead of listing them again.
    pub claims: Option<Vec<PersistentVolumeClaim>>,
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::State { path: what.into(), reason: source.to_string() }
}

/// A pod of `cluster`'s StatefulSet: its name is one the StatefulSet gives, and the StatefulSet
/// named after the cluster controls it.
fn owned_by_statefulset(pod: &Pod, cluster: &str) -> bool {
    let controller =
        pod.metadata.owner_references.iter().flatten().find(|owner| owner.controller == Some(true));
    pod.metadata.name.as_deref().is_some_and(|name| names::is_member_of(cluster, name))
        && controller.is_some_and(|owner| owner.kind == "StatefulSet" && owner.name == cluster)
}

fn ordinal(member: &str) -> Option<i32> {
    etcd_certs::cluster::member_ordinal(member).and_then(|o| i32::try_from(o).ok())
}

impl KubeMembers {
    fn name(&self) -> String {
        names::name(&self.cluster)
    }

    fn namespace(&self) -> String {
        names::namespace(&self.cluster)
    }

    fn selector(&self) -> String {
        names::selector_string(&self.name())
    }

    async fn entries(&self) -> Result<BTreeMap<String, BootstrapEntry>, Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace());
        let name = names::bootstrap_configmap(&self.name());
        let map = api.get_opt(&name).await.map_err(kube_err(format!("get ConfigMap {name}")))?;
        // Entries are written back (apply_entries) only after they were read here.
        let uid = self.cluster.metadata.uid.as_deref().unwrap_or_default();
        if let Some(why) =
            map.as_ref().and_then(|m| crate::ownership::foreign("ConfigMap", &m.metadata, uid))
        {
            return Err(Error::State { path: format!("ConfigMap {name}").into(), reason: why });
        }
        Ok(map
            .and_then(|m| m.data)
            .unwrap_or_default()
            .values()
            .filter_map(|text| serde_json::from_str::<BootstrapEntry>(text).ok())
            .map(|entry| (entry.name.clone(), entry))
            .collect())
    }

    /// The key that seals an entry forcing a new cluster ([`BootstrapEntry::seal`]), from the
    /// cluster's seal Secret, made (32 random bytes, controlled by the EtcdCluster) the first
    /// time a recovery needs it. A Secret of that name that is not the cluster's is not used.
    async fn seal_key(&self) -> Result<Vec<u8>, Error> {
        use k8s_openapi::api::core::v1::Secret;
        use kube::Resource;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace());
        let name = names::seal_secret(&self.name());
        let uid = self.cluster.metadata.uid.as_deref().unwrap_or_default();
        let key_of = |secret: Secret| {
            if let Some(why) = crate::ownership::foreign("Secret", &secret.metadata, uid) {
                return Err(Error::State { path: format!("Secret {name}").into(), reason: why });
            }
            secret
                .data
                .and_then(|mut data| data.remove(names::SEAL_KEY))
                .map(|key| key.0)
                .filter(|key| key.len() >= 32)
                .ok_or_else(|| Error::State {
                    path: format!("Secret {name}").into(),
                    reason: format!("has no key {:?} of 32 bytes or more", names::SEAL_KEY),
                })
        };
        if let Some(secret) =
            api.get_opt(&name).await.map_err(kube_err(format!("get Secret {name}")))?
        {
            return key_of(secret);
        }
        let mut key = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).map_err(
            |_| Error::State {
                path: format!("Secret {name}").into(),
                reason: "no randomness".into(),
            },
        )?;
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace()),
                labels: Some(names::labels(&self.name())),
                owner_references: self.cluster.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                names::SEAL_KEY.to_owned(),
                k8s_openapi::ByteString(key.clone()),
            )])),
            ..Secret::default()
        };
        match api.create(&Default::default(), &secret).await {
            Ok(_) => Ok(key),
            // Made meanwhile (a pass before a crash): that one is the key.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let made = api.get(&name).await.map_err(kube_err(format!("get Secret {name}")))?;
                key_of(made)
            }
            Err(err) => Err(kube_err(format!("create Secret {name}"))(err)),
        }
    }

    async fn apply_entries(&self, entries: &BTreeMap<String, BootstrapEntry>) -> Result<(), Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace());
        let list: Vec<BootstrapEntry> = entries.values().cloned().collect();
        let map = bootstrap_configmap(&self.cluster, &list);
        let name = names::bootstrap_configmap(&self.name());
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&map))
            .await
            .map_err(kube_err(format!("apply ConfigMap {name}")))?;
        Ok(())
    }

    /// Once the cluster is bootstrapped, every entry that says "new" says "existing". etcd
    /// started with `initial-cluster-state: new` on an empty data directory bootstraps again,
    /// with the very same member and cluster IDs: pods that all came back on empty volumes
    /// would form an empty cluster indistinguishable from the real one. With "existing" a blank
    /// member asks its peers and is sent their data, or, with none to ask, does not start,
    /// which the operator sees as the loss it is. Only a new pod reads the entry: a container
    /// restarted in the same pod still starts on the configuration member-init wrote then.
    /// Every member of a static bootstrap is a voter from its first start, so each entry also
    /// requires its data from now on.
    pub async fn settle_bootstrap(&self) -> Result<(), Error> {
        let mut entries = self.entries().await?;
        let mut changed = false;
        for entry in entries.values_mut().filter(|e| e.state == ClusterState::New) {
            entry.state = ClusterState::Existing;
            entry.data_required = true;
            changed = true;
        }
        if changed {
            self.apply_entries(&entries).await?;
        }
        Ok(())
    }

    /// The entries of `voters` require their data (see [`BootstrapEntry::data_required`]).
    /// Promotion marks a learner before it votes; this catches the entries an earlier release
    /// of the operator wrote without the mark.
    pub async fn require_data_of(&self, voters: &BTreeSet<String>) -> Result<(), Error> {
        let mut entries = self.entries().await?;
        let mut changed = false;
        for entry in entries.values_mut().filter(|e| voters.contains(&e.name)) {
            if entry.state == ClusterState::Existing && !entry.data_required {
                entry.data_required = true;
                changed = true;
            }
        }
        if changed {
            self.apply_entries(&entries).await?;
        }
        Ok(())
    }

    /// Member pods that cannot start, and why, in the words of whoever stops them.
    pub async fn stalled(&self) -> Result<Stalled, Error> {
        let pods = self.pods().await?;
        let image_pulls: Vec<_> = pods.iter().filter_map(image_pull_failure).collect();
        let superseded = if image_pulls.is_empty() {
            Vec::new()
        } else {
            superseded(&pods, &self.revisions().await?)
        };
        Ok(Stalled {
            unschedulable: pods.iter().filter_map(unschedulable).collect(),
            image_pulls,
            superseded,
        })
    }

    /// The StatefulSet's current and update revisions, once its controller has seen the
    /// current template (none before).
    async fn revisions(&self) -> Result<Vec<String>, Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace());
        let name = self.name();
        let sts = api.get_opt(&name).await.map_err(kube_err(format!("get StatefulSet {name}")))?;
        let Some(sts) = sts else { return Ok(Vec::new()) };
        let Some(status) = sts.status.filter(|s| s.observed_generation == sts.metadata.generation)
        else {
            return Ok(Vec::new());
        };
        Ok(status.current_revision.into_iter().chain(status.update_revision).collect())
    }

    /// Deletes a pod that never started on its template (see [`Stalled::superseded`]): it
    /// serves nothing, and the StatefulSet recreates it on the revision its partition gives it.
    pub async fn delete_superseded(&self, pod: &str) -> Result<(), Error> {
        self.delete_pod(pod).await
    }

    async fn pods(&self) -> Result<Vec<Pod>, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace());
        let pods = api
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(kube_err(format!("list pods of {}", self.name())))?;
        // Only the StatefulSet's own pods: another chart's pods may carry the same labels.
        let cluster = self.name();
        Ok(pods.items.into_iter().filter(|pod| owned_by_statefulset(pod, &cluster)).collect())
    }

    /// Deletes a member's pod (see [`Self::force_delete_if_lost`] for one that cannot go).
    async fn delete_pod(&self, name: &str) -> Result<(), Error> {
        if self.force_delete_if_lost(name).await? {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace());
        ignore_not_found(api.delete(name, &DeleteParams::default()).await)
            .map_err(kube_err(format!("delete pod {name}")))
    }

    /// A pod still Terminating well past its grace period is on a node that no longer answers
    /// (its kubelet would have finished by then), and the StatefulSet will not recreate its
    /// ordinal until it is gone: it is force-deleted. Only for members etcd no longer has
    /// (wiped after removal, or a learner whose ordinal the removed member held): a member
    /// still in etcd is never force-deleted, since its process may still run on that node.
    /// True when the pod is gone or going.
    async fn force_delete_if_lost(&self, name: &str) -> Result<bool, Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace());
        let pod = api.get_opt(name).await.map_err(kube_err(format!("get pod {name}")))?;
        let Some(pod) = pod else { return Ok(true) };
        if pod.metadata.deletion_timestamp.is_none() {
            return Ok(false);
        }
        if stuck_terminating(&pod) {
            tracing::warn!(
                pod = name,
                "force-deleting a pod stuck Terminating on a node that does not answer"
            );
            ignore_not_found(api.delete(name, &DeleteParams::default().grace_period(0)).await)
                .map_err(kube_err(format!("force-delete pod {name}")))?;
        }
        Ok(true)
    }

    /// Deletes a member's data claim (none with ephemeral storage). PVC protection keeps it
    /// until no pod uses it.
    async fn delete_claim(&self, name: &str) -> Result<(), Error> {
        if self.cluster.spec.storage.ephemeral {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &self.namespace());
        let claim = names::data_claim(name);
        ignore_not_found(api.delete(&claim, &DeleteParams::default()).await)
            .map_err(kube_err(format!("delete PersistentVolumeClaim {claim}")))
    }

    async fn replicas(&self) -> Result<i32, Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace());
        let sts = api
            .get_opt(&self.name())
            .await
            .map_err(kube_err(format!("get StatefulSet {}", self.name())))?;
        Ok(sts.and_then(|s| s.spec).and_then(|s| s.replicas).unwrap_or(0))
    }

    async fn set_replicas(&self, replicas: i32) -> Result<(), Error> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace());
        let patch = json!({"spec": {"replicas": replicas}});
        api.patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err(format!("scale StatefulSet {}", self.name())))?;
        Ok(())
    }
}

/// The pod's etcd container has run (running now, or exited and being restarted); a pod still
/// in member-init, waiting for its entry, has not.
fn started_etcd(pod: &Pod) -> bool {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.is_some_and(|statuses| {
        statuses.iter().any(|c| {
            let ran = |state: Option<&k8s_openapi::api::core::v1::ContainerState>| {
                state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            };
            c.name == "etcd" && (ran(c.state.as_ref()) || ran(c.last_state.as_ref()))
        })
    })
}

/// The pod's member-init refused to start etcd because the volume lost the member's data
/// ([`super::member_init::Error::NoData`], told by its exit code), and its etcd never ran: a pod
/// whose etcd ran had its data when it started.
fn found_no_data(pod: &Pod) -> bool {
    let statuses = pod.status.as_ref().and_then(|s| s.init_container_statuses.as_ref());
    let refused = statuses.is_some_and(|statuses| {
        statuses.iter().filter(|c| c.name == "member-init").any(|c| {
            [c.state.as_ref(), c.last_state.as_ref()]
                .into_iter()
                .flatten()
                .any(|s| s.terminated.as_ref().is_some_and(|t| t.exit_code == NO_DATA_EXIT_CODE))
        })
    });
    refused && !started_etcd(pod)
}

/// Member pods that cannot start: each as the pod's name and what stops it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stalled {
    /// The scheduler could not place them (`PodScheduled` False, reason `Unschedulable`).
    pub unschedulable: Vec<(String, String)>,
    /// The kubelet cannot pull an image of theirs: the image, the reason and its message.
    pub image_pulls: Vec<(String, String)>,
    /// Those of them on a revision the StatefulSet neither runs nor wants any more (a mistyped
    /// version, corrected): nothing else would restart them, since the roll holds every other pod until
    /// all are healthy and the StatefulSet leaves pods below its partition as they are.
    pub superseded: Vec<String>,
}

/// Pods stuck pulling an image of a revision that is neither of the StatefulSet's `revisions`
/// (current and update). One on the current revision stays: recreated, it would be the same.
fn superseded(pods: &[Pod], revisions: &[String]) -> Vec<String> {
    if revisions.is_empty() {
        return Vec::new();
    }
    pods.iter()
        .filter(|pod| image_pull_failure(pod).is_some())
        .filter(|pod| {
            let labels = pod.metadata.labels.as_ref();
            let revision = labels.and_then(|l| l.get("controller-revision-hash"));
            revision.is_some_and(|r| !revisions.contains(r))
        })
        .filter_map(|pod| pod.metadata.name.clone())
        .collect()
}

/// The pod's name and which image its kubelet cannot pull (a container of it, init or not,
/// waiting in `ErrImagePull`, `ImagePullBackOff` or `InvalidImageName`), with the kubelet's
/// reason and message (`pkg/kubelet/images/types.go`).
fn image_pull_failure(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let statuses = status.init_container_statuses.iter().chain(&status.container_statuses);
    let failure = statuses.flatten().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        matches!(reason, "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName").then(|| {
            let message = waiting.message.as_deref().unwrap_or_default();
            format!("image {} cannot be pulled ({reason}): {message}", c.image)
        })
    })?;
    Some((pod.metadata.name.clone().unwrap_or_default(), failure))
}

/// The pod's name and the scheduler's message, if the scheduler could not place it.
fn unschedulable(pod: &Pod) -> Option<(String, String)> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled")?;
    (scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable")).then(
        || {
            (
                pod.metadata.name.clone().unwrap_or_default(),
                scheduled.message.clone().unwrap_or_default(),
            )
        },
    )
}

/// A pod still Terminating more than 30 s past its grace period: its kubelet would have finished
/// by then, so its node does not answer. The API server sets `deletionTimestamp` to the end of the
/// grace period (the time of the request plus the grace), not to the time of the request.
fn stuck_terminating(pod: &Pod) -> bool {
    stuck_at(pod, k8s_openapi::jiff::Timestamp::now().as_second())
}

fn stuck_at(pod: &Pod, now: i64) -> bool {
    let Some(grace_ends) = pod.metadata.deletion_timestamp.as_ref() else { return false };
    now - grace_ends.0.as_second() > 30
}

impl MemberPort for KubeMembers {
    fn urls(&self, name: &str) -> Result<MemberUrls, Error> {
        let (peer, client) = names::member_urls(
            &self.name(),
            &self.namespace(),
            name,
            self.cluster.spec.security.tls.enabled,
        );
        Ok(MemberUrls { client, peer })
    }

    /// Members whose pod is not being deleted and whose etcd container has started: running
    /// now, or exited and being restarted by the kubelet. A removed member's etcd exits within
    /// a second and then crash-loops; its pod still has to be retired. A pod still waiting in
    /// member-init for its entry runs nothing.
    async fn running(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self
            .pods()
            .await?
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none() && started_etcd(pod))
            .filter_map(|pod| pod.metadata.name)
            .collect())
    }

    /// Pods that started etcd and still exist, Terminating ones included: one on a node that
    /// does not answer may still run there, and only its node's recovery or a person (`kubectl
    /// delete pod --force`) can say it does not.
    async fn may_run(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self
            .pods()
            .await?
            .into_iter()
            .filter(started_etcd)
            .filter_map(|p| p.metadata.name)
            .collect())
    }

    /// The entry goes (no pod of this ordinal starts etcd again), the pod that may run is
    /// deleted gracefully (never forced: its node may be cut off with the process running),
    /// and the claim with the old data is deleted. A member already fenced is left alone, so
    /// that the pod the StatefulSet recreates (waiting for an entry) is not churned.
    async fn fence(&self, name: &str) -> Result<(), Error> {
        let mut entries = self.entries().await?;
        let had_entry = entries.remove(name).is_some();
        if had_entry {
            self.apply_entries(&entries).await?;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace());
        let pod = api.get_opt(name).await.map_err(kube_err(format!("get pod {name}")))?;
        let runs = pod
            .as_ref()
            .is_some_and(|p| started_etcd(p) && p.metadata.deletion_timestamp.is_none());
        if had_entry || runs {
            // Before the pod: see `wipe`.
            self.delete_claim(name).await?;
        }
        if runs {
            ignore_not_found(api.delete(name, &DeleteParams::default()).await)
                .map_err(kube_err(format!("delete pod {name}")))?;
        }
        Ok(())
    }

    /// The operator cannot look inside a volume: evidence of a bootstrapped cluster is the
    /// cluster ID recorded in status, never a claim.
    async fn member_data(&self) -> Result<BTreeSet<String>, Error> {
        Ok(BTreeSet::new())
    }

    /// Members whose volume exists (with ephemeral storage, whose pod runs), less those whose
    /// member-init found the volume empty though the member had been a voter: their claim was
    /// replaced (a lost local volume, "delete the PVC and the pod"), and only a new member may
    /// start on it.
    async fn with_data(&self) -> Result<BTreeSet<String>, Error> {
        if self.cluster.spec.storage.ephemeral {
            return self.running().await;
        }
        let pods = self.pods().await?;
        let emptied: BTreeSet<String> = pods
            .iter()
            .filter(|p| found_no_data(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let claims = match &self.claims {
            Some(claims) => claims.clone(),
            None => {
                let api: Api<PersistentVolumeClaim> =
                    Api::namespaced(self.client.clone(), &self.namespace());
                super::claims::list(&api, &self.name())
                    .await
                    .map_err(kube_err(format!("list claims of {}", self.name())))?
            }
        };
        // A claim being deleted is data being lost, not data to start from.
        Ok(claims
            .into_iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| names::member_of_claim(&c.metadata.name?).map(str::to_owned))
            .filter(|member| !emptied.contains(member))
            .collect())
    }

    async fn start(
        &self,
        name: &str,
        initial: &[Wanted],
        state: ClusterState,
        token: &str,
    ) -> Result<(), Error> {
        let mut entries = self.entries().await?;
        let mut entry = BootstrapEntry::new(name, initial, state, token);
        // A restart keeps the mark (a voter stays one); a learner's first start has no entry
        // left (the ordinal's previous member was wiped with it).
        entry.data_required = match state {
            ClusterState::New => false,
            ClusterState::Existing => entries.get(name).is_some_and(|e| e.data_required),
            // Forcing a new cluster from an empty directory would make an empty cluster.
            ClusterState::ForceNew => true,
        };
        if state == ClusterState::ForceNew {
            // The entry is read on every start of the pod; member-init forces once per attempt,
            // and only on an entry the operator sealed.
            let attempt = k8s_openapi::jiff::Timestamp::now().as_millisecond();
            entry.attempt = Some(attempt.to_string());
            entry.seal(&self.seal_key().await?, &self.namespace(), &self.name());
        }
        entries.insert(name.to_owned(), entry);
        self.apply_entries(&entries).await?;
        let wanted = ordinal(name).map_or(0, |o| o + 1);
        if self.replicas().await? < wanted {
            self.set_replicas(wanted).await?;
        }
        if state == ClusterState::ForceNew {
            // Only a new pod reads the entry: the one running (a StatefulSet that never saw the
            // stop's lower replica count keeps it) goes.
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace());
            let pod = api.get_opt(name).await.map_err(kube_err(format!("get pod {name}")))?;
            if pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none() && started_etcd(&p)) {
                self.delete_pod(name).await?;
            }
        }
        Ok(())
    }

    async fn stop(&self, name: &str) -> Result<(), Error> {
        let Some(ordinal) = ordinal(name) else { return Ok(()) };
        let replicas = self.replicas().await?;
        if ordinal + 1 >= replicas {
            // The highest ordinal (or, scaling to zero, each in turn down to 0).
            self.set_replicas(ordinal.min(replicas)).await
        } else {
            let mut entries = self.entries().await?;
            if entries.remove(name).is_some() {
                self.apply_entries(&entries).await?;
            }
            self.delete_pod(name).await
        }
    }

    /// Members the StatefulSet and kubelet bring back by themselves: an admitted ordinal with its
    /// bootstrap entry, whose pod is starting, crash-looping, being replaced (a rolling update)
    /// or about to be created. Not a pod stuck Terminating on a lost node: that needs the
    /// operator.
    async fn restarting(&self, down: &BTreeSet<String>) -> Result<BTreeSet<String>, Error> {
        let entries = self.entries().await?;
        let replicas = self.replicas().await?;
        let pods = self.pods().await?;
        Ok(down
            .iter()
            .filter(|name| entries.contains_key(*name))
            .filter(|name| ordinal(name).is_some_and(|o| o < replicas))
            .filter(|name| {
                let pod = pods.iter().find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
                !pod.is_some_and(stuck_terminating)
            })
            .cloned()
            .collect())
    }

    /// Entries that still say ForceNew, of pods that started etcd on them: a restart of that
    /// container reuses the configuration member-init wrote at the pod's start, which forces.
    async fn forced(&self) -> Result<BTreeSet<String>, Error> {
        let entries = self.entries().await?;
        if !entries.values().any(|e| e.state == ClusterState::ForceNew) {
            return Ok(BTreeSet::new());
        }
        let running = self.running().await?;
        Ok(entries
            .into_values()
            .filter(|e| e.state == ClusterState::ForceNew && running.contains(&e.name))
            .map(|e| e.name)
            .collect())
    }

    /// The entry says "existing" (the member keeps needing its data), then the pod goes: only a
    /// new pod reads the entry, and the one the StatefulSet creates starts etcd normally.
    async fn end_force(&self, name: &str) -> Result<(), Error> {
        let mut entries = self.entries().await?;
        if let Some(entry) = entries.get_mut(name).filter(|e| e.state == ClusterState::ForceNew) {
            entry.state = ClusterState::Existing;
            entry.attempt = None;
            entry.seal = None;
            entry.data_required = true;
            self.apply_entries(&entries).await?;
        }
        self.delete_pod(name).await
    }

    async fn require_data(&self, name: &str) -> Result<(), Error> {
        self.require_data_of(&BTreeSet::from([name.to_owned()])).await
    }

    async fn release_removed(&self, name: &str) -> Result<(), Error> {
        self.force_delete_if_lost(name).await.map(drop)
    }

    /// The entry goes first (a recreated pod waits instead of starting on old data), then the
    /// claim, then the pod. PVC protection keeps the claim until no pod uses it, so it goes
    /// after the pod whatever the order; but the StatefulSet controller creates no pod for a
    /// claim being deleted, only for one that is not (`createPersistentVolumeClaims` in
    /// pkg/controller/statefulset/stateful_pod_control.go). Deleted pod first, the pod the
    /// StatefulSet recreates before the claim's deletion arrives holds the old claim: it cannot
    /// start (the kubelet mounts no claim being deleted) and the claim cannot go while it
    /// exists. kube-sim caught that when requests went out a little slower.
    async fn wipe(&self, name: &str) -> Result<(), Error> {
        let mut entries = self.entries().await?;
        if entries.remove(name).is_some() {
            self.apply_entries(&entries).await?;
        }
        self.delete_claim(name).await?;
        self.delete_pod(name).await
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::owned_by_statefulset;

    fn pod_waiting(init: &str, main: &str) -> Pod {
        let status = |name: &str, image: &str, reason: &str| {
            serde_json::json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": format!("{reason} for {image}")}}})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-2"},
            "status": {
                "initContainerStatuses": [status("member-init", "operator:0.2.0", init)],
                "containerStatuses": [status("etcd", "etcd:3.5.99", main)],
            }
        }))
        .unwrap_or_default()
    }

    /// What kubelet writes while it cannot pull (`pkg/kubelet/images/types.go`): the image named,
    /// an init container's too; waiting for other reasons (a pull under way) is no failure.
    #[test]
    fn an_image_pull_failure_names_the_image() {
        let failed = super::image_pull_failure(&pod_waiting("PodInitializing", "ImagePullBackOff"));
        let (pod, why) = failed.unwrap_or_default();
        assert_eq!(pod, "demo-2");
        assert!(why.starts_with("image etcd:3.5.99 cannot be pulled (ImagePullBackOff)"), "{why}");
        let init = super::image_pull_failure(&pod_waiting("ErrImagePull", "PodInitializing"));
        assert!(init.is_some_and(|(_, why)| why.contains("operator:0.2.0")));
        assert_eq!(
            super::image_pull_failure(&pod_waiting("PodInitializing", "ContainerCreating")),
            None
        );
    }

    /// Only a pod that cannot pull and is on another revision than the wanted one goes.
    #[test]
    fn a_pod_stuck_on_a_replaced_revision_is_superseded() {
        let on = |revision: &str, pod: Pod| {
            let mut pod = pod;
            pod.metadata.labels =
                Some([("controller-revision-hash".to_owned(), revision.to_owned())].into());
            pod
        };
        let revisions = |r: &[&str]| r.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
        // demo-5d4: the mistyped version, demo-1aa current, demo-7f9 the corrected one.
        let stuck = on("demo-5d4", pod_waiting("PodInitializing", "ImagePullBackOff"));
        let pods = [stuck.clone()];
        assert_eq!(super::superseded(&pods, &revisions(&["demo-1aa", "demo-7f9"])), ["demo-2"]);
        let wanted = revisions(&["demo-1aa", "demo-5d4"]);
        assert!(super::superseded(&pods, &wanted).is_empty(), "still the wanted one");
        let current = revisions(&["demo-5d4", "demo-7f9"]);
        assert!(super::superseded(&pods, &current).is_empty(), "recreated, it would be the same");
        assert!(super::superseded(&pods, &[]).is_empty(), "the controller has not caught up");
        let pulling = on("demo-5d4", pod_waiting("PodInitializing", "ContainerCreating"));
        assert!(super::superseded(&[pulling], &revisions(&["demo-1aa", "demo-7f9"])).is_empty());
    }

    /// The kubelet keeps the refused member-init's exit in `lastState` while it waits to retry
    /// (`pkg/kubelet/kuberuntime/kuberuntime_container.go`); any other failure is not data loss,
    /// nor a refusal from before etcd ran in this pod.
    #[test]
    fn a_pod_whose_member_init_found_no_data_is_told_by_its_exit_code() {
        let pod = |code: i32, etcd_ran: bool| -> Pod {
            let etcd = if etcd_ran {
                serde_json::json!({"running": {"startedAt": "2026-12-07T00:00:00Z"}})
            } else {
                serde_json::json!({"waiting": {"reason": "PodInitializing"}})
            };
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "demo-1"},
                "status": {
                    "initContainerStatuses": [{"name": "member-init", "image": "op", "imageID": "",
                        "ready": false, "restartCount": 2,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": code, "reason": "Error"}}}],
                    "containerStatuses": [{"name": "etcd", "image": "etcd", "imageID": "",
                        "ready": false, "restartCount": 0, "state": etcd}],
                }
            }))
            .unwrap_or_default()
        };
        assert!(super::found_no_data(&pod(3, false)));
        assert!(!super::found_no_data(&pod(1, false)), "another failure");
        assert!(!super::found_no_data(&pod(3, true)), "etcd ran in this pod");
    }

    #[test]
    fn only_the_statefulsets_own_pods_are_members() {
        let pod = |name: &str, owner: Option<(&str, &str)>| {
            let mut pod = Pod::default();
            pod.metadata.name = Some(name.into());
            pod.metadata.owner_references = owner.map(|(kind, name)| {
                vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    kind: kind.into(),
                    name: name.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            });
            pod
        };
        assert!(owned_by_statefulset(&pod("main-0", Some(("StatefulSet", "main"))), "main"));
        assert!(owned_by_statefulset(&pod("main-12", Some(("StatefulSet", "main"))), "main"));
        // Bitnami's release `main`: same labels, its own StatefulSet `main-etcd`.
        assert!(!owned_by_statefulset(
            &pod("main-etcd-0", Some(("StatefulSet", "main-etcd"))),
            "main"
        ));
        assert!(!owned_by_statefulset(&pod("main-0", None), "main"), "a bare pod");
        assert!(!owned_by_statefulset(&pod("main-0", Some(("ReplicaSet", "main"))), "main"));
    }

    #[test]
    fn ordinals() {
        assert_eq!(super::ordinal("demo-12"), Some(12));
        assert_eq!(super::ordinal("my-db-0"), Some(0));
        assert_eq!(super::ordinal("nope"), None);
    }

    /// kube-apiserver writes `deletionTimestamp` as the request's time plus the grace period
    /// (`staging/src/k8s.io/apiserver/pkg/registry/rest/delete.go`, `BeforeDelete`): a pod
    /// deleted at t with 30 s of grace has t+30 there and is stuck from t+60 on, not from t+90.
    #[test]
    fn a_pod_is_stuck_30_s_after_its_grace_period_ends() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let deleted_at = 1_000_000;
        let mut pod = k8s_openapi::api::core::v1::Pod::default();
        pod.metadata.deletion_grace_period_seconds = Some(30);
        let grace_ends = k8s_openapi::jiff::Timestamp::from_second(deleted_at + 30).unwrap();
        pod.metadata.deletion_timestamp = Some(Time(grace_ends));
        assert!(!super::stuck_at(&pod, deleted_at + 59));
        assert!(super::stuck_at(&pod, deleted_at + 61));
        assert!(!super::stuck_at(&k8s_openapi::api::core::v1::Pod::default(), deleted_at + 1000));
    }
}
