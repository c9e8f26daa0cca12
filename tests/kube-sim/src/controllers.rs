//! The control plane's controllers, each a loop over the store (as kube-controller-manager's are
//! over informers): CRD registration, garbage collection by ownerReferences, PVC binding,
//! expansion and protection, the scheduler, the StatefulSet and Deployment controllers, and
//! Service endpoints.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::admission::PVC_PROTECTION;
use crate::resources::{self, Kind};
use crate::selector::Selector;
use crate::store::{self, Store};

pub const DEFAULT_STORAGE_CLASS: &str = "standard";

fn kind(store: &Store, resource: &str) -> Option<Kind> {
    store.lock().kind(resource).cloned()
}

/// Reads, changes and writes an object until the write is not a conflict.
pub fn modify(
    store: &Store,
    resource: &str,
    namespace: &str,
    name: &str,
    change: impl Fn(&mut Value),
) -> Option<Value> {
    let kind = kind(store, resource)?;
    for _ in 0..10 {
        let mut object = store.get(resource, namespace, name)?;
        let before = object.clone();
        change(&mut object);
        if object == before {
            return Some(object);
        }
        match store.update(&kind, object) {
            Ok(updated) => return Some(updated),
            Err(store::Error::Conflict { .. }) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Deletes as a controller's DELETE call with default options does: a pod running on a node
/// ends gracefully (its kubelet sends SIGTERM and waits its grace period).
fn delete(store: &Store, resource: &str, namespace: &str, name: &str) {
    if let Some(kind) = kind(store, resource) {
        let _ = store.delete_as_requested(&kind, namespace, name, None);
    }
}

/// A CRD's kinds are served from the moment it is stored (and dropped with it), as the
/// apiextensions server's discovery follows CRD events.
fn on_event(store: &Store, event: &store::Event) {
    if event.resource != "apiextensions.k8s.io/customresourcedefinitions" {
        return;
    }
    if event.type_ == "DELETED" {
        for kind in resources::from_crd(&event.object) {
            store.drop_resource(&kind);
            store.unregister(&kind.resource());
        }
    } else {
        crd_changed(store, &event.object);
    }
}

/// A CRD was created or changed: serve its kinds and mark it Established.
pub fn crd_changed(store: &Store, crd: &Value) {
    store.register_kinds(resources::from_crd(crd));
    if !crd["status"]["conditions"].is_null() {
        return;
    }
    let name = store::name_of(crd);
    modify(store, "apiextensions.k8s.io/customresourcedefinitions", "", &name, |crd| {
        let now = store::now();
        crd["status"]["conditions"] = json!([
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ]);
        crd["status"]["acceptedNames"] = crd["spec"]["names"].clone();
        crd["status"]["storedVersions"] = json!(
            crd["spec"]["versions"]
                .as_array()
                .map(|v| v
                    .iter()
                    .filter(|v| v["storage"] == true)
                    .map(|v| v["name"].clone())
                    .collect::<Vec<_>>())
                .unwrap_or_default()
        );
    });
}

/// Drops the ownerReference to `uid` from every object (propagationPolicy Orphan).
pub fn orphan(store: &Store, uid: &str) {
    let owned: Vec<(String, String, String)> = store
        .lock()
        .all()
        .filter(|(_, o)| owners(o).iter().any(|r| r["uid"] == uid))
        .map(|(r, o)| (r.to_owned(), store::namespace_of(o), store::name_of(o)))
        .collect();
    for (resource, namespace, name) in owned {
        modify(store, &resource, &namespace, &name, |o| {
            if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"] != uid);
            }
        });
    }
}

fn owners(object: &Value) -> Vec<Value> {
    object["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default()
}

/// Garbage collection: an object whose owners are all gone (by uid) is deleted, as the
/// garbage collector's background propagation does.
fn collect_garbage(store: &Store) {
    type Dependent = (String, String, String, Vec<Value>);
    let (uids, candidates): (std::collections::HashSet<String>, Vec<Dependent>) = {
        let inner = store.lock();
        let uids = inner
            .all()
            .filter_map(|(_, o)| o["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        let candidates = inner
            .all()
            .filter(|(_, o)| !owners(o).is_empty() && o["metadata"]["deletionTimestamp"].is_null())
            .map(|(r, o)| (r.to_owned(), store::namespace_of(o), store::name_of(o), owners(o)))
            .collect();
        (uids, candidates)
    };
    for (resource, namespace, name, refs) in candidates {
        if refs.iter().all(|r| !uids.contains(r["uid"].as_str().unwrap_or_default())) {
            tracing::info!(%resource, %namespace, %name, "garbage collector: owner gone, deleting");
            delete(store, &resource, &namespace, &name);
        }
    }
}

/// Claims bind at once (a provisioner that always succeeds), grow when their StorageClass allows
/// expansion (controller-side and file-system resize in one step), and lose their protection
/// finalizer once deleted and unused by any pod that has not terminated.
fn claims(store: &Store) {
    let pods = store.list("/pods", None);
    let classes = store.list("storage.k8s.io/storageclasses", None);
    for claim in store.list("/persistentvolumeclaims", None) {
        let (namespace, name) = (store::namespace_of(&claim), store::name_of(&claim));
        let requested = claim["spec"]["resources"]["requests"]["storage"].clone();
        if claim["status"]["phase"] != "Bound" {
            let uid = claim["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            modify(store, "/persistentvolumeclaims", &namespace, &name, |c| {
                c["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
                c["status"] = json!({"phase": "Bound", "accessModes": c["spec"]["accessModes"], "capacity": {"storage": requested}});
            });
        } else if claim["status"]["capacity"]["storage"] != requested {
            let class = claim["spec"]["storageClassName"].as_str().unwrap_or_default();
            let expandable = classes
                .iter()
                .any(|c| store::name_of(c) == class && c["allowVolumeExpansion"] == true);
            if expandable {
                modify(store, "/persistentvolumeclaims", &namespace, &name, |c| {
                    c["status"]["capacity"]["storage"] = requested.clone();
                });
            }
        }
        let deleting = !claim["metadata"]["deletionTimestamp"].is_null();
        let protected = claim["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == PVC_PROTECTION));
        if deleting && protected {
            let in_use = pods.iter().any(|p| {
                store::namespace_of(p) == namespace
                    && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                    && p["spec"]["volumes"].as_array().is_some_and(|vs| {
                        vs.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == name.as_str())
                    })
            });
            if !in_use {
                modify(store, "/persistentvolumeclaims", &namespace, &name, |c| {
                    if let Some(f) = c["metadata"]["finalizers"].as_array_mut() {
                        f.retain(|f| f != PVC_PROTECTION);
                    }
                });
            }
        }
    }
}

/// The scheduler: a pending pod goes to the ready node with the fewest pods. Like
/// kube-scheduler, which assumes each pod on its node in its cache before it schedules the
/// next, a pod placed in this pass counts for the next one (the StatefulSet's pods created
/// together are spread, not stacked on one node).
fn schedule(store: &Store, nodes: &[String], frozen: &dyn Fn(&str) -> bool) {
    let pods = store.list("/pods", None);
    let mut load: HashMap<String, usize> = HashMap::new();
    for node in pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()) {
        *load.entry(node.to_owned()).or_default() += 1;
    }
    for pod in pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].is_null() && p["metadata"]["deletionTimestamp"].is_null())
    {
        let on = |node: &str| load.get(node).copied().unwrap_or(0);
        let Some(node) = nodes.iter().filter(|n| !frozen(n)).min_by_key(|n| on(n)).cloned() else {
            continue;
        };
        *load.entry(node.clone()).or_default() += 1;
        let (namespace, name) = (store::namespace_of(pod), store::name_of(pod));
        modify(store, "/pods", &namespace, &name, |p| {
            if p["spec"]["nodeName"].is_null() {
                p["spec"]["nodeName"] = json!(node);
                let conditions = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
                if !conditions.iter().any(|c| c["type"] == "PodScheduled") {
                    let mut with = conditions;
                    with.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": store::now()}));
                    p["status"]["conditions"] = Value::Array(with);
                }
            }
        });
    }
}

pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod_ready(pod)
        && pod["metadata"]["deletionTimestamp"].is_null()
}

/// The controller reference of `owner`.
fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

fn controlled_by(object: &Value, owner: &Value) -> bool {
    owners(object).iter().any(|r| r["uid"] == owner["metadata"]["uid"] && r["controller"] == true)
}

/// A stable short hash of a pod template (the controller-revision-hash label).
fn template_hash(template: &Value) -> String {
    let text = template.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10).map(|i| alphabet[((h >> (i * 6)) % alphabet.len() as u64) as usize] as char).collect()
}

/// Creates an object as a controller does through the API: with the defaults and built-in
/// admission the API server applies (controllers' writes match no webhook here).
fn create(store: &Store, resource: &str, object: Value) {
    if let Some(kind) = kind(store, resource) {
        let mut object = object;
        crate::admission::defaults(store, &kind, &mut object);
        if let Err(err) = store.create(&kind, object) {
            tracing::debug!(%err, resource, "create failed");
        }
    }
}

/// The template's revision of a StatefulSet, kept as a ControllerRevision as Kubernetes does,
/// so pods below the partition are recreated from the revision they were made from.
fn revision(store: &Store, sts: &Value, template: &Value) -> String {
    let hash = template_hash(template);
    let name = format!("{}-{hash}", store::name_of(sts));
    let namespace = store::namespace_of(sts);
    if store.get("apps/controllerrevisions", &namespace, &name).is_none() {
        create(
            store,
            "apps/controllerrevisions",
            json!({
                "metadata": {"name": name, "namespace": namespace, "labels": sts["spec"]["selector"]["matchLabels"], "ownerReferences": [controller_ref(sts)]},
                "data": {"spec": {"template": template}},
                "revision": sts["metadata"]["generation"],
            }),
        );
    }
    name
}

/// The StatefulSet controller (`pkg/controller/statefulset/stateful_set_control.go`): claims
/// before pods, both pod management policies, deletion from the highest ordinal, failed pods
/// replaced, rolling updates above the partition one pod at a time with the others ready, and
/// status as the controller reports it.
fn statefulsets(store: &Store) {
    for sts in store.list("apps/statefulsets", None) {
        if !sts["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        statefulset(store, &sts);
    }
}

fn statefulset(store: &Store, sts: &Value) {
    let namespace = store::namespace_of(sts);
    let name = store::name_of(sts);
    let spec = &sts["spec"];
    let replicas = spec["replicas"].as_i64().unwrap_or(1);
    let parallel = spec["podManagementPolicy"] == "Parallel";
    let partition = spec["updateStrategy"]["rollingUpdate"]["partition"].as_i64().unwrap_or(0);
    let on_delete = spec["updateStrategy"]["type"] == "OnDelete";
    let template = &spec["template"];
    let update_revision = revision(store, sts, template);
    let current_revision = sts["status"]["currentRevision"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| update_revision.clone());
    let template_of = |rev: &str| -> Value {
        store
            .get("apps/controllerrevisions", &namespace, rev)
            .map(|r| r["data"]["spec"]["template"].clone())
            .unwrap_or_else(|| template.clone())
    };
    let selector = Selector::from_label_selector(&spec["selector"]);
    let pods: BTreeMap<i64, Value> = store
        .list("/pods", Some(&namespace))
        .into_iter()
        .filter(|p| controlled_by(p, sts) && selector.matches(&p["metadata"]["labels"]))
        .filter_map(|p| {
            let ordinal = store::name_of(&p).rsplit_once('-')?.1.parse::<i64>().ok()?;
            Some((ordinal, p))
        })
        .collect();
    let revision_of = |p: &Value| {
        p["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap_or_default().to_owned()
    };

    // Replace failed pods; create missing ones (claims first).
    let mut blocked = false;
    for ordinal in 0..replicas {
        match pods.get(&ordinal) {
            Some(pod)
                if pod["status"]["phase"] == "Failed"
                    && pod["metadata"]["deletionTimestamp"].is_null() =>
            {
                delete(store, "/pods", &namespace, &store::name_of(pod));
                blocked = true;
            }
            Some(pod) => {
                if !parallel && !running_and_ready(pod) {
                    blocked = true;
                }
            }
            None if blocked && !parallel => break,
            None => {
                let rev = if ordinal < partition && !on_delete {
                    current_revision.clone()
                } else {
                    update_revision.clone()
                };
                if !create_claims(store, sts, ordinal) {
                    blocked = true;
                    continue;
                }
                create(store, "/pods", pod_for(sts, ordinal, &template_of(&rev), &rev));
                if !parallel {
                    blocked = true;
                }
            }
        }
        if blocked && !parallel {
            break;
        }
    }
    // Condemned pods: the highest ordinal first; one at a time unless Parallel.
    let condemned: Vec<&Value> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
    for pod in &condemned {
        if pod["metadata"]["deletionTimestamp"].is_null() {
            delete(store, "/pods", &namespace, &store::name_of(pod));
        }
        if !parallel {
            break;
        }
    }
    // Rolling update: the highest ordinal not on the update revision, at or above the
    // partition, once every other pod is running and ready.
    if !on_delete && condemned.is_empty() {
        let all_ready = (0..replicas).all(|o| pods.get(&o).is_some_and(running_and_ready));
        if all_ready
            && let Some((_, pod)) = pods
                .range(partition..replicas)
                .rev()
                .find(|(_, p)| revision_of(p) != update_revision)
        {
            tracing::info!(pod = %store::name_of(pod), revision = %update_revision, "statefulset: rolling pod to the update revision");
            delete(store, "/pods", &namespace, &store::name_of(pod));
        }
    }
    // Status.
    let existing: Vec<&Value> = pods.values().collect();
    let ready = existing.iter().filter(|p| running_and_ready(p)).count();
    let updated = existing.iter().filter(|p| revision_of(p) == update_revision).count();
    let current = existing.iter().filter(|p| revision_of(p) == current_revision).count();
    let done = updated as i64 == replicas && existing.len() as i64 == replicas;
    let status = json!({
        "observedGeneration": sts["metadata"]["generation"],
        "replicas": existing.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": if done { updated } else { current },
        "updatedReplicas": updated,
        "currentRevision": if done { update_revision.clone() } else { current_revision.clone() },
        "updateRevision": update_revision,
        "collisionCount": 0,
    });
    if sts["status"] != status {
        modify(store, "apps/statefulsets", &namespace, &name, |s| s["status"] = status.clone());
    }
}

/// Creates the claims of `ordinal` that do not exist; false while one is being deleted (the
/// controller waits for it to go before making a pod that would use it).
fn create_claims(store: &Store, sts: &Value, ordinal: i64) -> bool {
    let namespace = store::namespace_of(sts);
    let mut ok = true;
    for template in sts["spec"]["volumeClaimTemplates"].as_array().cloned().unwrap_or_default() {
        let claim = format!("{}-{}-{ordinal}", store::name_of(&template), store::name_of(sts));
        match store.get("/persistentvolumeclaims", &namespace, &claim) {
            Some(existing) if !existing["metadata"]["deletionTimestamp"].is_null() => ok = false,
            Some(_) => {}
            None => {
                let mut labels =
                    template["metadata"]["labels"].as_object().cloned().unwrap_or_default();
                for (k, v) in
                    sts["spec"]["selector"]["matchLabels"].as_object().into_iter().flatten()
                {
                    labels.insert(k.clone(), v.clone());
                }
                let mut object = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace, "labels": labels}, "spec": template["spec"]});
                if sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete" {
                    object["metadata"]["ownerReferences"] = json!([controller_ref(sts)]);
                }
                create(store, "/persistentvolumeclaims", object);
            }
        }
    }
    ok
}

fn pod_for(sts: &Value, ordinal: i64, template: &Value, revision: &str) -> Value {
    let name = format!("{}-{ordinal}", store::name_of(sts));
    let mut labels = template["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
    labels.insert("apps.kubernetes.io/pod-index".into(), json!(ordinal.to_string()));
    labels.insert("controller-revision-hash".into(), json!(revision));
    let mut spec = template["spec"].clone();
    spec["hostname"] = json!(name);
    spec["subdomain"] = sts["spec"]["serviceName"].clone();
    let mut volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    for claim in sts["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
        let volume = store::name_of(claim);
        volumes.retain(|v| v["name"] != volume.as_str());
        volumes.push(json!({"name": volume, "persistentVolumeClaim": {"claimName": format!("{volume}-{}-{ordinal}", store::name_of(sts))}}));
    }
    spec["volumes"] = Value::Array(volumes);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": store::namespace_of(sts), "labels": labels, "annotations": template["metadata"]["annotations"], "ownerReferences": [controller_ref(sts)]},
        "spec": spec,
    })
}

/// A Deployment controller enough to run the operator: pods from the template (no ReplicaSet in
/// between), replaced when the template changes once the new ones are ready.
fn deployments(store: &Store) {
    for deploy in store.list("apps/deployments", None) {
        let namespace = store::namespace_of(&deploy);
        let name = store::name_of(&deploy);
        let replicas = deploy["spec"]["replicas"].as_i64().unwrap_or(1) as usize;
        let template = &deploy["spec"]["template"];
        let hash = template_hash(template);
        let pods: Vec<Value> = store
            .list("/pods", Some(&namespace))
            .into_iter()
            .filter(|p| controlled_by(p, &deploy))
            .collect();
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] != "Failed"
            })
            .collect();
        let (new, old): (Vec<&Value>, Vec<&Value>) = live
            .iter()
            .partition(|p| p["metadata"]["labels"]["pod-template-hash"] == hash.as_str());
        for pod in pods.iter().filter(|p| {
            p["status"]["phase"] == "Failed" && p["metadata"]["deletionTimestamp"].is_null()
        }) {
            delete(store, "/pods", &namespace, &store::name_of(pod));
        }
        for _ in new.len()..replicas {
            let mut labels =
                template["metadata"]["labels"].as_object().cloned().unwrap_or_default();
            labels.insert("pod-template-hash".into(), json!(hash));
            create(
                store,
                "/pods",
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{name}-{hash}-{}", &store::uid()[..5]), "namespace": namespace, "labels": labels, "annotations": template["metadata"]["annotations"], "ownerReferences": [controller_ref(&deploy)]},
                    "spec": template["spec"],
                }),
            );
        }
        for extra in new.iter().skip(replicas) {
            delete(store, "/pods", &namespace, &store::name_of(extra));
        }
        let new_ready = new.iter().filter(|p| running_and_ready(p)).count();
        if new_ready >= replicas.min(new.len()) && new_ready > 0 {
            for pod in &old {
                delete(store, "/pods", &namespace, &store::name_of(pod));
            }
        }
        let ready = live.iter().filter(|p| running_and_ready(p)).count();
        let status = json!({
            "observedGeneration": deploy["metadata"]["generation"], "replicas": live.len(), "updatedReplicas": new.len(),
            "readyReplicas": ready, "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": if ready > 0 { "True" } else { "False" }, "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."}],
        });
        if deploy["status"] != status {
            modify(store, "apps/deployments", &namespace, &name, |d| d["status"] = status.clone());
        }
    }
}

/// A ready endpoint of a Service for `port` (the Service port): a ready pod's IP and the
/// target port (a named port resolved through the pod's container ports).
pub fn service_endpoint(
    store: &Store,
    namespace: &str,
    service: &str,
    port: u16,
) -> Option<(String, u16)> {
    let svc = store.get("/services", namespace, service)?;
    let selector = Selector::from_map(&svc["spec"]["selector"]);
    let port_spec = svc["spec"]["ports"]
        .as_array()?
        .iter()
        .find(|p| p["port"].as_u64() == Some(u64::from(port)))?
        .clone();
    store
        .list("/pods", Some(namespace))
        .into_iter()
        .filter(|p| {
            !selector.is_empty()
                && selector.matches(&p["metadata"]["labels"])
                && running_and_ready(p)
        })
        .find_map(|pod| {
            let ip = pod["status"]["podIP"].as_str()?.to_owned();
            let target = match &port_spec["targetPort"] {
                Value::Number(n) => n.as_u64()? as u16,
                Value::String(named) => pod["spec"]["containers"]
                    .as_array()?
                    .iter()
                    .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                    .find(|p| p["name"] == named.as_str())?["containerPort"]
                    .as_u64()? as u16,
                _ => port,
            };
            Some((ip, target))
        })
}

/// The names DNS answers for: pods by `hostname.subdomain` under a headless Service of that
/// name (ready ones, or all with `publishNotReadyAddresses`), and Services by the IPs of their
/// ready endpoints (no kube-proxy here: a name resolves to the endpoints it would balance over).
pub fn dns_records(store: &Store) -> Vec<(String, String)> {
    let mut records = vec![
        ("10.96.0.1".to_owned(), "kubernetes.default.svc".to_owned()),
        ("10.96.0.1".to_owned(), "kubernetes.default.svc.cluster.local".to_owned()),
        ("10.96.0.1".to_owned(), "kubernetes.default".to_owned()),
    ];
    let pods = store.list("/pods", None);
    for svc in store.list("/services", None) {
        let namespace = store::namespace_of(&svc);
        let name = store::name_of(&svc);
        let selector = Selector::from_map(&svc["spec"]["selector"]);
        if selector.is_empty() {
            continue;
        }
        let not_ready_too = svc["spec"]["publishNotReadyAddresses"] == true;
        let headless = svc["spec"]["clusterIP"] == "None";
        for pod in pods.iter().filter(|p| {
            store::namespace_of(p) == namespace && selector.matches(&p["metadata"]["labels"])
        }) {
            let Some(ip) = pod["status"]["podIP"].as_str() else { continue };
            // Ready endpoints (not terminating); every address with publishNotReadyAddresses.
            if !not_ready_too && !running_and_ready(pod) {
                continue;
            }
            for suffix in ["svc", "svc.cluster.local"] {
                records.push((ip.to_owned(), format!("{name}.{namespace}.{suffix}")));
                if headless
                    && pod["spec"]["subdomain"] == name.as_str()
                    && let Some(host) = pod["spec"]["hostname"].as_str()
                {
                    records.push((ip.to_owned(), format!("{host}.{name}.{namespace}.{suffix}")));
                }
            }
        }
    }
    records
}

/// Runs the controllers: on every change and at least once a second.
pub async fn run(
    store: Arc<Store>,
    nodes: Vec<String>,
    frozen: Arc<dyn Fn(&str) -> bool + Send + Sync>,
) {
    let mut events = store.subscribe();
    loop {
        if let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            on_event(&store, &event);
        }
        // Let a burst of events settle into one pass.
        while let Ok(Ok(event)) =
            tokio::time::timeout(Duration::from_millis(20), events.recv()).await
        {
            on_event(&store, &event);
        }
        collect_garbage(&store);
        claims(&store);
        schedule(&store, &nodes, frozen.as_ref());
        statefulsets(&store);
        deployments(&store);
    }
}
