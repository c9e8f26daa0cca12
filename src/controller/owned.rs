//! The objects the EtcdCluster controller writes, as its metadata-only watches see them, and
//! what it last wrote or read there: a reconcile that would apply an object exactly as it
//! already is, or read PKI Secrets that have not changed since it last read them, does neither.
//!
//! A steady cluster is looked at every 30 s. That cost 13 API requests, nine of them to learn
//! that nothing had changed: four server-side applies that wrote nothing and five Secret reads.
//! A thousand idle clusters would have cost the API server three hundred requests a second.
//! Pods, claims and the StatefulSet are still read on every pass: membership decisions and the
//! recovery fence must not rest on a view that may lag.
//!
//! A record is trusted only while the object's resourceVersion, as the watch last delivered
//! it, is the one the operator's own apply returned (or its read saw). Any other write, a
//! deletion, a watch that has not caught up, or a store not yet listed, and the request is
//! made. A record older than [`TRUSTED_FOR`] is not trusted either: whatever the watches say,
//! each request is repeated now and then, and a decision that depends on the clock (a
//! certificate due for renewal, months ahead) waits at most that long.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use serde::Serialize;

use crate::etcd::ClientTls;

/// How long a record is trusted at most.
pub const TRUSTED_FOR: Duration = Duration::from_secs(300);

/// The watched objects' versions and the records checked against them.
pub struct Owned {
    services: Store<PartialObjectMeta<Service>>,
    budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    secrets: Store<PartialObjectMeta<Secret>>,
    applied: Mutex<HashMap<AppliedKey, Applied>>,
    pki: Mutex<HashMap<String, KnownPki>>,
}

/// What the controller's watches fill [`Owned`]'s stores with.
pub struct Writers {
    pub services: Writer<PartialObjectMeta<Service>>,
    pub budgets: Writer<PartialObjectMeta<PodDisruptionBudget>>,
    pub secrets: Writer<PartialObjectMeta<Secret>>,
}

/// The kinds whose versions [`Owned`] keeps.
pub trait Watched: kube::Resource<DynamicType = ()> + Clone + Sized + 'static {
    fn store(owned: &Owned) -> &Store<PartialObjectMeta<Self>>;
}

impl Watched for Service {
    fn store(owned: &Owned) -> &Store<PartialObjectMeta<Self>> {
        &owned.services
    }
}

impl Watched for PodDisruptionBudget {
    fn store(owned: &Owned) -> &Store<PartialObjectMeta<Self>> {
        &owned.budgets
    }
}

impl Watched for Secret {
    fn store(owned: &Owned) -> &Store<PartialObjectMeta<Self>> {
        &owned.secrets
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AppliedKey {
    /// The EtcdCluster's uid: a cluster created again under the same name starts afresh.
    owner: String,
    kind: String,
    name: String,
}

impl AppliedKey {
    fn new(owner: &str, kind: &str, name: &str) -> Self {
        Self { owner: owner.to_owned(), kind: kind.to_owned(), name: name.to_owned() }
    }
}

struct Applied {
    digest: u64,
    version: String,
    at: Instant,
}

struct KnownPki {
    inputs: u64,
    /// Each Secret's name and resourceVersion as read.
    versions: BTreeMap<String, String>,
    tls: ClientTls,
    at: Instant,
}

impl Owned {
    /// Stores and writers for the controller's watches to fill.
    pub fn watched() -> (Self, Writers) {
        let (services, services_writer) = reflector::store();
        let (budgets, budgets_writer) = reflector::store();
        let (secrets, secrets_writer) = reflector::store();
        let owned =
            Self { services, budgets, secrets, applied: Mutex::default(), pki: Mutex::default() };
        let writers =
            Writers { services: services_writer, budgets: budgets_writer, secrets: secrets_writer };
        (owned, writers)
    }

    /// Stores that no watch fills: no record is ever trusted, every request is made.
    pub fn unwatched() -> Self {
        Self::watched().0
    }

    /// The resourceVersion of `namespace/name` as its watch last delivered it.
    pub fn version<K: Watched>(&self, namespace: &str, name: &str) -> Option<String> {
        let object = K::store(self).get(&ObjectRef::new(name).within(namespace))?;
        object.metadata.resource_version.clone()
    }

    /// Whether the apply of `kind/name` (of the cluster whose uid is `owner`) with this
    /// `digest` was the last one made, and the object is still at the version it returned
    /// (`live`, as a watch or a read just saw it).
    pub fn already_applied(
        &self,
        owner: &str,
        kind: &str,
        name: &str,
        digest: u64,
        live: Option<&str>,
    ) -> bool {
        let key = AppliedKey::new(owner, kind, name);
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.get(&key).is_some_and(|a| {
            a.digest == digest && Some(a.version.as_str()) == live && a.at.elapsed() < TRUSTED_FOR
        })
    }

    /// Records an apply and the resourceVersion the API server answered it with.
    pub fn record_apply(
        &self,
        owner: &str,
        kind: &str,
        name: &str,
        digest: u64,
        version: Option<String>,
    ) {
        let key = AppliedKey::new(owner, kind, name);
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        match version {
            Some(version) => applied.insert(key, Applied { digest, version, at: Instant::now() }),
            None => applied.remove(&key),
        };
    }

    /// The client TLS last read from the cluster's PKI Secrets, if it was read with equal
    /// `inputs` (what else the PKI's decisions depend on) and every Secret is still at the
    /// version it was read at.
    pub fn known_pki(&self, owner: &str, inputs: &impl Hash, namespace: &str) -> Option<ClientTls> {
        let pki = self.pki.lock().unwrap_or_else(|p| p.into_inner());
        let known = pki.get(owner)?;
        let current = known.inputs == hash(inputs)
            && known.at.elapsed() < TRUSTED_FOR
            && known.versions.iter().all(|(name, version)| {
                self.version::<Secret>(namespace, name).as_ref() == Some(version)
            });
        current.then(|| known.tls.clone())
    }

    /// Records a read of the PKI that wrote nothing: its Secrets' versions and the TLS from it.
    pub fn record_pki(
        &self,
        owner: &str,
        inputs: &impl Hash,
        versions: BTreeMap<String, String>,
        tls: ClientTls,
    ) {
        let known = KnownPki { inputs: hash(inputs), versions, tls, at: Instant::now() };
        self.pki.lock().unwrap_or_else(|p| p.into_inner()).insert(owner.to_owned(), known);
    }

    /// Drops what is known of a deleted cluster.
    pub fn forget(&self, owner: &str) {
        self.applied.lock().unwrap_or_else(|p| p.into_inner()).retain(|key, _| key.owner != owner);
        self.pki.lock().unwrap_or_else(|p| p.into_inner()).remove(owner);
    }
}

/// A digest of `object` as JSON: two applies of equal objects have equal digests.
pub fn digest(object: &impl Serialize) -> u64 {
    hash(&serde_json::to_vec(object).unwrap_or_default())
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;

    use super::*;

    fn seen<K: Watched + Default>(
        writer: &mut Writer<PartialObjectMeta<K>>,
        name: &str,
        version: &str,
    ) {
        let mut object = PartialObjectMeta::<K>::default();
        object.metadata.name = Some(name.to_owned());
        object.metadata.namespace = Some("prod".to_owned());
        object.metadata.resource_version = Some(version.to_owned());
        writer.apply_watcher_event(&Event::Apply(object));
    }

    fn tls() -> ClientTls {
        ClientTls { ca_pem: "ca".into(), cert_pem: "cert".into(), key_pem: "key".into() }
    }

    /// Whether `owner`'s apply of `K/name` with `digest` is trusted, `name`'s version as the
    /// watch last delivered it.
    fn trusted<K: Watched>(owned: &Owned, owner: &str, name: &str, digest: u64) -> bool {
        let live = owned.version::<K>("prod", name);
        owned.already_applied(owner, &K::kind(&()), name, digest, live.as_deref())
    }

    #[test]
    fn an_apply_is_trusted_while_the_object_is_at_the_version_it_returned() {
        let (owned, mut writers) = Owned::watched();
        let digest = digest(&serde_json::json!({"spec": {"ports": [2379]}}));
        assert!(!trusted::<Service>(&owned, "uid", "demo-client", digest));
        owned.record_apply("uid", "Service", "demo-client", digest, Some("7".into()));
        // The watch has not delivered the apply's own write yet.
        assert!(!trusted::<Service>(&owned, "uid", "demo-client", digest));
        seen(&mut writers.services, "demo-client", "7");
        assert!(trusted::<Service>(&owned, "uid", "demo-client", digest));
        // Another object, another cluster, other content: not this record.
        assert!(!owned.already_applied("uid", "Service", "demo", digest, Some("7")));
        assert!(!trusted::<Service>(&owned, "uid2", "demo-client", digest));
        assert!(!trusted::<Service>(&owned, "uid", "demo-client", digest + 1));
        // Someone else wrote it.
        seen(&mut writers.services, "demo-client", "9");
        assert!(!trusted::<Service>(&owned, "uid", "demo-client", digest));
    }

    #[test]
    fn a_deleted_object_or_an_old_record_is_not_trusted() {
        let (owned, mut writers) = Owned::watched();
        seen(&mut writers.budgets, "demo", "3");
        owned.record_apply("uid", "PodDisruptionBudget", "demo", 1, Some("3".into()));
        assert!(trusted::<PodDisruptionBudget>(&owned, "uid", "demo", 1));
        let mut gone = PartialObjectMeta::<PodDisruptionBudget>::default();
        gone.metadata.name = Some("demo".into());
        gone.metadata.namespace = Some("prod".into());
        writers.budgets.apply_watcher_event(&Event::Delete(gone));
        assert_eq!(owned.version::<PodDisruptionBudget>("prod", "demo"), None);
        assert!(!trusted::<PodDisruptionBudget>(&owned, "uid", "demo", 1));

        seen(&mut writers.budgets, "demo", "4");
        owned.record_apply("uid", "PodDisruptionBudget", "demo", 1, Some("4".into()));
        let key = AppliedKey::new("uid", "PodDisruptionBudget", "demo");
        if let Some(applied) = owned.applied.lock().unwrap().get_mut(&key) {
            applied.at = Instant::now().checked_sub(TRUSTED_FOR).unwrap_or(applied.at);
        }
        assert!(!trusted::<PodDisruptionBudget>(&owned, "uid", "demo", 1));
    }

    #[test]
    fn a_pki_read_is_reused_while_every_secret_and_input_is_the_same() {
        let (owned, mut writers) = Owned::watched();
        let versions: BTreeMap<String, String> =
            [("demo-ca", "1"), ("demo-peer-tls", "2")].map(|(n, v)| (n.into(), v.into())).into();
        owned.record_pki("uid", &("demo", "rotate-1"), versions, tls());
        // The store has not listed the Secrets yet.
        assert!(owned.known_pki("uid", &("demo", "rotate-1"), "prod").is_none());
        seen(&mut writers.secrets, "demo-ca", "1");
        seen(&mut writers.secrets, "demo-peer-tls", "2");
        assert_eq!(
            owned.known_pki("uid", &("demo", "rotate-1"), "prod").map(|t| t.cert_pem),
            Some("cert".into())
        );
        // A person asked for a new CA: other inputs.
        assert!(owned.known_pki("uid", &("demo", "rotate-2"), "prod").is_none());
        seen(&mut writers.secrets, "demo-peer-tls", "5");
        assert!(owned.known_pki("uid", &("demo", "rotate-1"), "prod").is_none());
        owned.forget("uid");
        seen(&mut writers.secrets, "demo-peer-tls", "2");
        assert!(owned.known_pki("uid", &("demo", "rotate-1"), "prod").is_none());
    }

    #[test]
    fn without_watches_nothing_is_trusted() {
        let owned = Owned::unwatched();
        owned.record_apply("uid", "Service", "demo", 1, Some("3".into()));
        let live = owned.version::<Service>("prod", "demo");
        assert_eq!(live, None);
        assert!(!owned.already_applied("uid", "Service", "demo", 1, live.as_deref()));
    }
}
