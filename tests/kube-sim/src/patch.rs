//! Patches as kube-apiserver applies them: JSON merge patch (RFC 7386), JSON patch (RFC 6902),
//! strategic merge patch (lists merged by their patch merge key) and server-side apply with
//! field managers (`metadata.managedFields`, conflicts, fields a manager stops applying removed).
//!
//! Server-side apply follows `sigs.k8s.io/structured-merge-diff`: each manager owns a set of
//! leaf fields; an apply that sets a field another manager owns to a different value conflicts
//! (409) unless forced, which moves ownership; a field the applier owned before and leaves out
//! now is removed unless another manager owns it too; a non-apply write makes its manager own
//! what it changed. Lists are keyed by the merge keys Kubernetes' types declare (containers by
//! name, ...); everything else is atomic, as for CRDs without `x-kubernetes-list-type: map`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// The merge key of a list field, as Kubernetes' Go types declare `patchMergeKey` (and SSA's
/// `listMapKeys`), for the lists the operator and kubectl write. `None`: atomic.
fn merge_key(field: &str, item: &Value) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "webhooks"
        | "versions" => "name",
        "volumeMounts" => "mountPath",
        "ports" if item.get("containerPort").is_some() => "containerPort",
        "ports" => "port",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Lists of scalars merged as sets.
fn is_set(field: &str) -> bool {
    field == "finalizers"
}

fn key_of(field: &str, item: &Value) -> Option<(String, Value)> {
    let key = merge_key(field, item)?;
    Some((key.to_owned(), item.get(key)?.clone()))
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// An RFC 6902 patch as kube-apiserver applies it (evanphx/json-patch): a `test` of `null`
/// passes on a path that does not exist, as kube-runtime's finalizer helper relies on.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let mut ops =
        patch.as_array().cloned().ok_or("invalid JSON patch: not a list of operations")?;
    ops.retain(|op| {
        let missing = op["path"].as_str().is_some_and(|p| target.pointer(p).is_none());
        !(op["op"] == "test" && op["value"].is_null() && missing)
    });
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &patch).map_err(|e| e.to_string())
}

/// A strategic merge patch: maps merge, `null` deletes, keyed lists merge by key (`$patch:
/// delete` removes an item, `$patch: replace` the whole list), set lists union, other lists are
/// replaced.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        if let Some(m) = replaced.as_object_mut() {
            m.remove("$patch");
        }
        *target = replaced;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(map) = target.as_object_mut() else { return };
    for (field, value) in patch_map {
        if field.starts_with('$') {
            continue;
        }
        if let Some(rest) = field.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) =
                (map.get_mut(rest).and_then(Value::as_array_mut), value.as_array())
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        match value {
            Value::Null => {
                map.remove(field);
            }
            Value::Array(items) => {
                let current = map.entry(field.clone()).or_insert(Value::Null);
                merge_list(field, current, items);
            }
            Value::Object(_) => {
                strategic_merge(map.entry(field.clone()).or_insert(Value::Null), value)
            }
            other => {
                map.insert(field.clone(), other.clone());
            }
        }
    }
}

fn merge_list(field: &str, current: &mut Value, items: &[Value]) {
    let keyed = items.first().is_some_and(|i| merge_key(field, i).is_some() && i.is_object());
    if is_set(field) {
        let list = current.as_array().cloned().unwrap_or_default();
        let mut merged = list.clone();
        for item in items {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        *current = Value::Array(merged);
        return;
    }
    if !keyed || !current.is_array() {
        let cleaned: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
            .cloned()
            .collect();
        *current = Value::Array(cleaned);
        return;
    }
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        *current =
            Value::Array(items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect());
        return;
    }
    let Some(list) = current.as_array_mut() else { return };
    for item in items {
        let Some((key, value)) = key_of(field, item) else { continue };
        let position = list.iter().position(|e| e.get(&key) == Some(&value));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                list.remove(i);
            }
            continue;
        }
        match position {
            Some(i) => strategic_merge(&mut list[i], item),
            None => list.push(item.clone()),
        }
    }
}

/// One step of a field path: a map field, a keyed list item, or a set member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Field(String),
    Key(String),
    Set(String),
}

type Path = Vec<Step>;

impl Step {
    fn encode(&self) -> String {
        match self {
            Step::Field(f) => format!("f:{f}"),
            Step::Key(k) => format!("k:{k}"),
            Step::Set(v) => format!("v:{v}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (kind, rest) = text.split_at_checked(2)?;
        Some(match kind {
            "f:" => Step::Field(rest.to_owned()),
            "k:" => Step::Key(rest.to_owned()),
            "v:" => Step::Set(rest.to_owned()),
            _ => return None,
        })
    }
}

/// Metadata fields no manager owns (they are the server's, or the record itself).
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "selfLink",
];

/// The leaf paths of an object (what a manager that wrote it would own). `status` is left out
/// for the main resource of kinds with a status subresource, and only `status` is walked for it.
fn leaves(object: &Value, part: Part) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(map) = object.as_object() else { return out };
    for (field, value) in map {
        let included = match part {
            Part::Main { status_separate } => !(status_separate && field == "status"),
            Part::Status => field == "status",
        };
        if !included || field == "apiVersion" || field == "kind" {
            continue;
        }
        let mut path = vec![Step::Field(field.clone())];
        if field == "metadata" {
            if let Some(meta) = value.as_object() {
                for (mf, mv) in meta {
                    if SERVER_METADATA.contains(&mf.as_str()) {
                        continue;
                    }
                    path.push(Step::Field(mf.clone()));
                    walk(mf, mv, &mut path, &mut out);
                    path.pop();
                }
            }
            continue;
        }
        walk(field, value, &mut path, &mut out);
    }
    out
}

fn walk(field: &str, value: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (f, v) in map {
                path.push(Step::Field(f.clone()));
                walk(f, v, path, out);
                path.pop();
            }
        }
        Value::Array(items) if is_set(field) => {
            for item in items {
                path.push(Step::Set(item.to_string()));
                out.insert(path.clone());
                path.pop();
            }
        }
        Value::Array(items)
            if !items.is_empty()
                && items.iter().all(|i| i.is_object() && key_of(field, i).is_some()) =>
        {
            for item in items {
                let Some((key, value)) = key_of(field, item) else { continue };
                path.push(Step::Key(json!({ key: value }).to_string()));
                walk("", item, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

#[derive(Clone, Copy)]
pub enum Part {
    Main { status_separate: bool },
    Status,
}

/// The value at `path`, if present.
fn at<'a>(object: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut here = object;
    for step in path {
        here = match step {
            Step::Field(f) => here.get(f)?,
            Step::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                here.as_array()?
                    .iter()
                    .find(|i| key.iter().all(|(kf, kv)| i.get(kf) == Some(kv)))?
            }
            Step::Set(v) => {
                let member: Value = serde_json::from_str(v).ok()?;
                here.as_array()?.iter().find(|i| **i == member)?
            }
        };
    }
    Some(here)
}

/// Removes the field at `path`; an emptied map or a keyed item left with only its key goes too.
fn remove(object: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut chain: Vec<&Step> = parents.iter().collect();
    remove_in(object, &mut chain, last);
}

fn remove_in(here: &mut Value, parents: &mut Vec<&Step>, last: &Step) {
    if parents.is_empty() {
        match last {
            Step::Field(f) => {
                if let Some(m) = here.as_object_mut() {
                    m.remove(f);
                }
            }
            Step::Key(k) => {
                if let (Ok(key), Some(list)) =
                    (serde_json::from_str::<Map<String, Value>>(k), here.as_array_mut())
                {
                    list.retain(|i| !key.iter().all(|(kf, kv)| i.get(kf) == Some(kv)));
                }
            }
            Step::Set(v) => {
                if let (Ok(member), Some(list)) =
                    (serde_json::from_str::<Value>(v), here.as_array_mut())
                {
                    list.retain(|i| *i != member);
                }
            }
        }
        return;
    }
    let step = parents.remove(0);
    let child = match step {
        Step::Field(f) => here.get_mut(f),
        Step::Key(k) => {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let list = here.as_array_mut();
            let found = list.and_then(|l| {
                l.iter_mut().find(|i| key.iter().all(|(kf, kv)| i.get(kf) == Some(kv)))
            });
            if let Some(item) = found {
                remove_in(item, parents, last);
                let only_key =
                    item.as_object().is_some_and(|m| m.keys().all(|f| key.contains_key(f)));
                if only_key && let Some(list) = here.as_array_mut() {
                    list.retain(|i| !key.iter().all(|(kf, kv)| i.get(kf) == Some(kv)));
                }
            }
            return;
        }
        Step::Set(_) => None,
    };
    if let Some(child) = child {
        remove_in(child, parents, last);
        let emptied = child.as_object().is_some_and(Map::is_empty);
        if emptied && let (Step::Field(f), Some(m)) = (step, here.as_object_mut()) {
            m.remove(f);
        }
    }
}

/// Merges an applied configuration into the live object: maps recursively, keyed lists by key
/// (in the applied order, other managers' items after), sets as unions, the rest replaced.
fn merge_applied(live: &mut Value, applied: &Value, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (f, v) in a {
                match l.get_mut(f) {
                    Some(existing) => merge_applied(existing, v, f),
                    None => {
                        l.insert(f.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) if is_set(field) => {
            for v in a {
                if !l.contains(v) {
                    l.push(v.clone());
                }
            }
        }
        (Value::Array(l), Value::Array(a))
            if !a.is_empty() && a.iter().all(|i| i.is_object() && key_of(field, i).is_some()) =>
        {
            let mut merged = Vec::new();
            for item in a {
                let Some((key, value)) = key_of(field, item) else { continue };
                match l.iter().position(|e| e.get(&key) == Some(&value)) {
                    Some(i) => {
                        let mut existing = l.remove(i);
                        merge_applied(&mut existing, item, "");
                        merged.push(existing);
                    }
                    None => merged.push(item.clone()),
                }
            }
            merged.append(l);
            *l = merged;
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// A manager's entry in `managedFields`.
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: String,
    fields: BTreeSet<Path>,
}

fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                    subresource: e["subresource"].as_str().map(str::to_owned),
                    time: e["time"].as_str().unwrap_or_default().to_owned(),
                    fields: decode_fields(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode_fields(tree: &Value) -> BTreeSet<Path> {
    fn go(tree: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = tree.as_object() else { return };
        let children: Vec<_> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, v) in children {
            if let Some(step) = Step::decode(k) {
                path.push(step);
                go(v, path, out);
                path.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    go(tree, &mut Vec::new(), &mut out);
    out
}

fn encode_fields(fields: &BTreeSet<Path>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in fields {
        let mut here = &mut root;
        for step in path {
            let Some(map) = here.as_object_mut() else { break };
            here = map.entry(step.encode()).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

fn write_entries(object: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&e.fields),
            });
            if let Some(sub) = e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        object["metadata"]["managedFields"] = Value::Array(list);
    }
}

/// A request's identity for field management.
pub struct Manager<'a> {
    pub name: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub part: Part,
}

/// Server-side apply of `applied` onto `live` (`None`: the object does not exist yet).
/// Returns the new object, or the conflicts (field paths and their owners) when not forced.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &Manager<'_>,
    force: bool,
) -> Result<Value, String> {
    let mut object = live.cloned().unwrap_or_else(|| json!({"metadata": {}}));
    let mut managers = entries(&object);
    let new_fields = leaves(applied, manager.part);
    let mine = |e: &Entry| {
        e.manager == manager.name
            && e.operation == "Apply"
            && e.subresource.as_deref() == manager.subresource
    };
    let previous: BTreeSet<Path> =
        managers.iter().filter(|e| mine(e)).flat_map(|e| e.fields.clone()).collect();
    let mut conflicts = Vec::new();
    for entry in managers.iter_mut().filter(|e| !mine(e)) {
        let taken: Vec<Path> = entry
            .fields
            .iter()
            .filter(|p| new_fields.contains(*p) && at(&object, p) != at(applied, p))
            .cloned()
            .collect();
        if !taken.is_empty() && !force {
            for path in &taken {
                let text: Vec<String> = path.iter().map(Step::encode).collect();
                conflicts.push(format!("conflict with \"{}\": .{}", entry.manager, text.join(".")));
            }
        }
        for path in taken {
            entry.fields.remove(&path);
        }
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            conflicts.join("; ")
        ));
    }
    let owned_by_others: BTreeSet<Path> =
        managers.iter().filter(|e| !mine(e)).flat_map(|e| e.fields.clone()).collect();
    for path in previous.difference(&new_fields) {
        if !owned_by_others.contains(path) {
            remove(&mut object, path);
        }
    }
    let mut applied_body = applied.clone();
    if let Some(m) = applied_body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    merge_applied(&mut object, &applied_body, "");
    // An apply that changes nothing (same object, same fields owned) keeps the entry's time, so
    // the object stays as it was and is not written: structured-merge-diff returns no object
    // for it, and managedFieldsUpdater.Apply stamps the time only when one came back
    // (k8s.io/apimachinery/pkg/util/managedfields/internal/managedfieldsupdater.go). A
    // controller re-applying its desired state every resync must not cause a watch event.
    let unchanged = live.is_some_and(|live| without_managed(live) == without_managed(&object))
        && managers.iter().filter(|e| mine(e)).map(|e| &e.fields).eq([&new_fields]);
    if !unchanged {
        managers.retain(|e| !mine(e));
        managers.push(Entry {
            manager: manager.name.to_owned(),
            operation: "Apply".into(),
            api_version: manager.api_version.to_owned(),
            subresource: manager.subresource.map(str::to_owned),
            time: crate::store::now(),
            fields: new_fields,
        });
    }
    write_entries(&mut object, managers);
    Ok(object)
}

/// `object` without its managedFields: what an apply is judged to change.
fn without_managed(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    object
}

/// Records a non-apply write: `manager` owns what it changed, and nobody owns what it removed.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &Manager<'_>) {
    let mut managers = old.map(entries).unwrap_or_default();
    let before = old.map(|o| leaves(o, manager.part)).unwrap_or_default();
    let after = leaves(new, manager.part);
    let changed: BTreeSet<Path> = after
        .iter()
        .filter(|p| !before.contains(*p) || old.and_then(|o| at(o, p)) != at(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = before.difference(&after).cloned().collect();
    for entry in &mut managers {
        let is_me = entry.manager == manager.name
            && entry.operation == "Update"
            && entry.subresource.as_deref() == manager.subresource;
        entry.fields.retain(|p| !removed.contains(p) && (is_me || !changed.contains(p)));
    }
    if !changed.is_empty() {
        match managers.iter_mut().find(|e| {
            e.manager == manager.name
                && e.operation == "Update"
                && e.subresource.as_deref() == manager.subresource
        }) {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = crate::store::now();
            }
            None => managers.push(Entry {
                manager: manager.name.to_owned(),
                operation: "Update".into(),
                api_version: manager.api_version.to_owned(),
                subresource: manager.subresource.map(str::to_owned),
                time: crate::store::now(),
                fields: changed,
            }),
        }
    }
    write_entries(new, managers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(name: &str) -> Manager<'_> {
        Manager {
            name,
            api_version: "v1",
            subresource: None,
            part: Part::Main { status_separate: true },
        }
    }

    #[test]
    fn a_field_left_out_of_the_next_apply_is_removed_unless_another_manager_owns_it() {
        let first =
            json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
        let object = apply(None, &first, &manager("kubectl"), false).unwrap();
        let mut updated = object.clone();
        updated["data"]["other"] = json!("owned by the operator");
        record_update(Some(&object), &mut updated, &manager("operator"));
        let second = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v"}});
        let object = apply(Some(&updated), &second, &manager("kubectl"), false).unwrap();
        assert_eq!(object["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(object["data"]["other"], "owned by the operator");
    }

    #[test]
    fn changing_a_field_another_manager_owns_conflicts_unless_forced() {
        let object = apply(
            None,
            &json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}}),
            &manager("a"),
            false,
        )
        .unwrap();
        let other = json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}});
        let err = apply(Some(&object), &other, &manager("b"), false).unwrap_err();
        assert!(err.contains("conflict with \"a\""), "{err}");
        let forced = apply(Some(&object), &other, &manager("b"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let same = json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}});
        assert!(apply(Some(&forced), &same, &manager("c"), false).is_ok(), "same value: shared");
    }

    #[test]
    fn keyed_lists_merge_by_key() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic_merge(&mut pod, &json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}));
        assert_eq!(pod["spec"]["containers"][1]["image"], "z");
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 2);
        strategic_merge(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
    }
}
