//! The object store: JSON objects by resource, namespace and name, one resourceVersion counter
//! for everything (as etcd's revision is for kube-apiserver), and a bounded event history that
//! watches replay from (a watch from a version older than the history gets 410 Gone).
//!
//! Semantics copied from kube-apiserver's generic registry (`staging/src/k8s.io/apiserver/pkg/
//! registry/generic/registry/store.go`): an update with a stale resourceVersion is a conflict;
//! `generation` moves when anything but metadata and status changes; deleting an object with
//! finalizers only sets `deletionTimestamp`, and it goes when the last finalizer is removed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resources::Kind;

/// Events kept for watches that resume from an older resourceVersion.
const HISTORY: usize = 20_000;

#[derive(Clone, Debug)]
pub struct Event {
    pub type_: &'static str,
    pub resource: String,
    pub object: Value,
    pub rv: u64,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum Error {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    #[error("{0}")]
    Gone(String),
}

impl Error {
    pub fn code(&self) -> u16 {
        match self {
            Error::NotFound { .. } => 404,
            Error::AlreadyExists { .. } | Error::Conflict { .. } => 409,
            Error::Gone(_) => 410,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } => "Conflict",
            Error::Gone(_) => "Expired",
        }
    }
}

type Key = (String, String, String);

pub struct Inner {
    pub kinds: Vec<Kind>,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Event>,
}

pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
}

pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// A random-looking, unique UUID (version 4 layout).
pub fn uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (a, b) = (mix(seed), mix(seed.wrapping_add(1)));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn meta(object: &Value) -> &Value {
    &object["metadata"]
}

pub fn name_of(object: &Value) -> String {
    meta(object)["name"].as_str().unwrap_or_default().to_owned()
}

pub fn namespace_of(object: &Value) -> String {
    meta(object)["namespace"].as_str().unwrap_or_default().to_owned()
}

pub fn rv_of(object: &Value) -> Option<u64> {
    meta(object)["resourceVersion"].as_str().and_then(|s| s.parse().ok())
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// The grace period a pod's deletion gets, as the pod strategy's `CheckGracefulDelete`
/// (`pkg/registry/core/pod/strategy.go`) decides it: the caller's, else the pod's
/// terminationGracePeriodSeconds (30 by default); none for a pod never scheduled to a node or
/// whose containers have all ended (phase Failed or Succeeded); a negative one becomes 1.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let scheduled = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let ended = matches!(pod["status"]["phase"].as_str(), Some("Failed" | "Succeeded"));
    if !scheduled || ended {
        return 0;
    }
    let period =
        requested.or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30);
    if period < 0 { 1 } else { period }
}

fn finalizers(object: &Value) -> bool {
    meta(object)["finalizers"].as_array().is_some_and(|f| !f.is_empty())
}

impl Inner {
    pub fn kind(&self, resource: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.resource() == resource)
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
    }

    /// Objects of `resource` (in `namespace`, or everywhere with `None`).
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, ns, _), _)| r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every object (garbage collection looks at all of them).
    pub fn all(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.objects.iter().map(|((r, _, _), v)| (r.as_str(), v))
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn record(
        &mut self,
        type_: &'static str,
        resource: &str,
        object: Value,
        tx: &broadcast::Sender<Event>,
    ) {
        let event = Event { type_, resource: resource.to_owned(), object, rv: self.rv };
        self.history.push_back(event.clone());
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let _ = tx.send(event);
    }

    /// Events after `rv` for `resource`, or Gone when the history no longer reaches back there.
    pub fn since(&self, resource: &str, rv: u64) -> Result<Vec<Event>, Error> {
        if let Some(first) = self.history.front()
            && first.rv > rv + 1
            && rv < self.rv
        {
            return Err(Error::Gone(format!("too old resource version: {rv} ({})", first.rv - 1)));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv && e.resource == resource).cloned().collect())
    }
}

impl Store {
    pub fn new(kinds: Vec<Kind>) -> Arc<Self> {
        let (events, _) = broadcast::channel(HISTORY);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                kinds,
                objects: BTreeMap::new(),
                rv: 1,
                history: VecDeque::new(),
            }),
            events,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock().get(resource, namespace, name).cloned()
    }

    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.lock().list(resource, namespace)
    }

    pub fn register_kinds(&self, kinds: Vec<Kind>) {
        let mut inner = self.lock();
        for kind in kinds {
            inner.kinds.retain(|k| k.resource() != kind.resource());
            inner.kinds.push(kind);
        }
    }

    pub fn unregister(&self, resource: &str) {
        self.lock().kinds.retain(|k| k.resource() != resource);
    }

    pub fn create(&self, kind: &Kind, mut object: Value) -> Result<Value, Error> {
        let mut inner = self.lock();
        let name = name_of(&object);
        let namespace = if kind.namespaced { namespace_of(&object) } else { String::new() };
        let key = (kind.resource(), namespace.clone(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(Error::AlreadyExists { resource: kind.resource_name(), name });
        }
        inner.rv += 1;
        let rv = inner.rv;
        let metadata = &mut object["metadata"];
        metadata["uid"] = json!(uid());
        metadata["resourceVersion"] = json!(rv.to_string());
        metadata["creationTimestamp"] = json!(now());
        metadata["generation"] = json!(1);
        if let Some(m) = metadata.as_object_mut() {
            m.remove("deletionTimestamp");
            if !kind.namespaced {
                m.remove("namespace");
            }
        }
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        inner.objects.insert(key, object.clone());
        inner.record("ADDED", &kind.resource(), object.clone(), &self.events);
        Ok(object)
    }

    /// Replaces an object. A resourceVersion in `object` must be the current one; generation
    /// moves when the spec part changed; the last finalizer gone from a deleted object removes it.
    pub fn update(&self, kind: &Kind, mut object: Value) -> Result<Value, Error> {
        let mut inner = self.lock();
        let name = name_of(&object);
        let namespace = if kind.namespaced { namespace_of(&object) } else { String::new() };
        let key = (kind.resource(), namespace, name.clone());
        let Some(current) = inner.objects.get(&key).cloned() else {
            return Err(Error::NotFound { resource: kind.resource_name(), name });
        };
        if let Some(rv) = rv_of(&object)
            && Some(rv) != rv_of(&current)
        {
            return Err(Error::Conflict { resource: kind.resource_name(), name });
        }
        // Fields the server owns.
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "generation"] {
            match current["metadata"].get(field) {
                Some(v) => object["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if spec_part(&object) != spec_part(&current) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            object["metadata"]["generation"] = json!(generation);
        }
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if object == current {
            return Ok(current);
        }
        inner.rv += 1;
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        if object["metadata"].get("deletionTimestamp").is_some() && !finalizers(&object) {
            inner.objects.remove(&key);
            inner.record("DELETED", &kind.resource(), object.clone(), &self.events);
            return Ok(object);
        }
        inner.objects.insert(key, object.clone());
        inner.record("MODIFIED", &kind.resource(), object.clone(), &self.events);
        Ok(object)
    }

    /// Deletes an object: at once without finalizers, else by setting deletionTimestamp.
    /// Returns the object as it now is (or was).
    pub fn delete(&self, kind: &Kind, namespace: &str, name: &str) -> Result<Value, Error> {
        let mut inner = self.lock();
        let namespace = if kind.namespaced { namespace } else { "" };
        let key = (kind.resource(), namespace.to_owned(), name.to_owned());
        let Some(mut current) = inner.objects.get(&key).cloned() else {
            return Err(Error::NotFound { resource: kind.resource_name(), name: name.to_owned() });
        };
        inner.rv += 1;
        current["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        if finalizers(&current) {
            if current["metadata"].get("deletionTimestamp").is_none() {
                current["metadata"]["deletionTimestamp"] = json!(now());
                inner.objects.insert(key, current.clone());
                inner.record("MODIFIED", &kind.resource(), current.clone(), &self.events);
            }
            return Ok(current);
        }
        inner.objects.remove(&key);
        inner.record("DELETED", &kind.resource(), current.clone(), &self.events);
        Ok(current)
    }

    /// Deletes an object as a DELETE call does, `grace` being the caller's grace period if it
    /// gave one. A pod that has a grace period (see [`pod_grace_period`]) is only marked: its
    /// kubelet stops the containers (SIGTERM, the period, SIGKILL) and then removes it.
    /// Controllers delete pods this way too, as theirs go through the API with default options.
    pub fn delete_as_requested(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        grace: Option<i64>,
    ) -> Result<Value, Error> {
        if kind.resource() == "/pods"
            && let Some(pod) = self.get("/pods", namespace, name)
        {
            let period = pod_grace_period(&pod, grace);
            if period > 0 {
                return self.mark_deleting(kind, namespace, name, period);
            }
        }
        self.delete(kind, namespace, name)
    }

    /// Graceful deletion of a pod: marked with deletionTimestamp and its grace period; the
    /// kubelet removes it once its containers have stopped.
    fn mark_deleting(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        grace: i64,
    ) -> Result<Value, Error> {
        let mut inner = self.lock();
        let key = (kind.resource(), namespace.to_owned(), name.to_owned());
        let Some(mut current) = inner.objects.get(&key).cloned() else {
            return Err(Error::NotFound { resource: kind.resource_name(), name: name.to_owned() });
        };
        if current["metadata"].get("deletionTimestamp").is_some() {
            return Ok(current);
        }
        inner.rv += 1;
        current["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        current["metadata"]["deletionTimestamp"] = json!(now());
        current["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        inner.objects.insert(key, current.clone());
        inner.record("MODIFIED", &kind.resource(), current.clone(), &self.events);
        Ok(current)
    }

    /// Drops every object of a resource (its CRD went away).
    pub fn drop_resource(&self, kind: &Kind) {
        let names: Vec<(String, String)> = {
            let inner = self.lock();
            inner
                .objects
                .keys()
                .filter(|(r, _, _)| *r == kind.resource())
                .map(|(_, ns, n)| (ns.clone(), n.clone()))
                .collect()
        };
        for (ns, name) in names {
            let mut inner = self.lock();
            if let Some(object) = inner.objects.remove(&(kind.resource(), ns.clone(), name.clone()))
            {
                inner.rv += 1;
                inner.record("DELETED", &kind.resource(), object, &self.events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 7},
            "status": {"phase": phase},
        })
    }

    #[test]
    fn a_pod_on_a_node_is_deleted_gracefully_as_the_pod_strategy_decides() {
        let store = Store::new(crate::resources::builtins());
        let kind = store.lock().kind("/pods").cloned().expect("pods are served");
        for object in [
            pod("running", Some("node-1"), "Running"),
            pod("pending", None, "Pending"),
            pod("failed", Some("node-1"), "Failed"),
            pod("forced", Some("node-1"), "Running"),
        ] {
            store.create(&kind, object).expect("created");
        }
        // The pod's own grace period: marked, left for its kubelet to stop and remove.
        store.delete_as_requested(&kind, "default", "running", None).expect("deleted");
        let running = store.get("/pods", "default", "running").expect("still there");
        assert!(running["metadata"]["deletionTimestamp"].is_string(), "{running}");
        assert_eq!(running["metadata"]["deletionGracePeriodSeconds"], 7);
        // Never scheduled, already ended, or a grace period of 0: gone at once.
        store.delete_as_requested(&kind, "default", "pending", None).expect("deleted");
        store.delete_as_requested(&kind, "default", "failed", None).expect("deleted");
        store.delete_as_requested(&kind, "default", "forced", Some(0)).expect("deleted");
        for name in ["pending", "failed", "forced"] {
            assert!(store.get("/pods", "default", name).is_none(), "{name} is still there");
        }
    }
}
