//! Properties over generated input: defaulting produces what validation accepts, defaulting is
//! idempotent, and no byte sequence makes the request parser panic.

use etcd_webhook::mutate::Kind;
use etcd_webhook::review::{Answer, Mode, review};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Cluster specs a user might write: valid values, some fields left out, versions with a `v` and
/// whitespace that mutation normalises.
fn cluster_object() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(vec![0, 1, 3, 5, 7, 9])),
        prop::option::of((4u32..=6, 0u32..40, any::<bool>(), any::<bool>())),
        prop::option::of(prop::sample::select(vec!["1Gi", "8Gi", "500M", "20G"])),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec!["snapshot-count", "heartbeat-interval", "election-timeout"])),
    )
        .prop_map(|(size, version, storage, ephemeral, flag)| {
            let mut spec = serde_json::Map::new();
            if let Some(size) = size {
                spec.insert("size".into(), json!(size));
            }
            if let Some((minor, patch, v, pad)) = version {
                let text = format!("{}{}3.{minor}.{patch}{}", if pad { " " } else { "" }, if v { "v" } else { "" }, if pad { " " } else { "" });
                spec.insert("version".into(), json!(text));
            }
            if storage.is_some() || ephemeral.is_some() {
                let mut s = serde_json::Map::new();
                if let Some(size) = storage {
                    s.insert("size".into(), json!(size));
                }
                if let Some(e) = ephemeral {
                    s.insert("ephemeral".into(), json!(e));
                }
                spec.insert("storage".into(), Value::Object(s));
            }
            if let Some(flag) = flag {
                spec.insert("options".into(), json!({"extraArgs": {flag: "100"}}));
            }
            json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
        })
}

/// An AdmissionReview of `object` (and `old`, on UPDATE), as kube-apiserver sends it.
fn review_of(operation: &str, object: &Value, old: Option<&Value>) -> Vec<u8> {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "etcd.etcd.io", "version": "v1alpha1", "kind": "EtcdCluster"},
            "resource": {"group": "etcd.etcd.io", "version": "v1alpha1", "resource": "etcdclusters"},
            "operation": operation, "userInfo": {}, "object": object, "oldObject": old,
        }
    });
    body.to_string().into_bytes()
}

fn answer(mode: Mode, object: &Value) -> Answer {
    review(Kind::EtcdCluster, mode, &review_of("CREATE", object, None))
        .expect("a well-formed review")
        .0
}

/// `object` with the mutating webhook's patch applied.
fn mutated(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(patch) = answer(Mode::Mutate, object).patch {
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

/// An object admitted under older rules stays annotatable and deletable: an UPDATE that leaves
/// the spec as it is (a finalizer removed, an annotation set) is not judged again, while one that
/// changes the spec is.
#[test]
fn an_update_that_keeps_the_spec_is_not_judged_again() {
    let stored = json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "p", "namespace": "default", "finalizers": ["etcd.etcd.io/cleanup"]},
        "spec": {"size": 4, "version": "3.5.21"}});
    let mut annotated = stored.clone();
    annotated["metadata"]["annotations"] = json!({"etcd.etcd.io/skip-final-backup": "yes"});
    annotated["metadata"]["finalizers"] = json!([]);
    let verdict = |object: &Value| {
        review(Kind::EtcdCluster, Mode::Validate, &review_of("UPDATE", object, Some(&stored)))
            .expect("a well-formed review")
            .0
    };
    assert!(verdict(&annotated).allowed, "a metadata change was denied");
    let mut resized = annotated.clone();
    resized["spec"]["size"] = json!(6);
    assert!(!verdict(&resized).allowed, "a spec change escaped validation");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutation_output_always_validates(object in cluster_object()) {
        let out = mutated(&object);
        let verdict = answer(Mode::Validate, &out);
        prop_assert!(verdict.allowed, "{out} denied: {}", verdict.message);
    }

    #[test]
    fn mutation_is_idempotent(object in cluster_object()) {
        let once = mutated(&object);
        let again = answer(Mode::Mutate, &once);
        prop_assert!(again.patch.is_none(), "{once} patched again: {again:?}");
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for mode in [Mode::Validate, Mode::Mutate] {
            let _ = review(Kind::EtcdCluster, mode, &body);
        }
    }

    #[test]
    fn arbitrary_objects_in_a_wellformed_review_never_panic(spec in arbitrary_json(3), op in prop::sample::select(vec!["CREATE", "UPDATE", "DELETE"])) {
        let object = json!({"apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": "x"}, "spec": spec});
        let body = review_of(op, &object, Some(&object));
        for mode in [Mode::Validate, Mode::Mutate] {
            let (answer, _) = review(Kind::EtcdCluster, mode, &body).expect("a well-formed review");
            prop_assert_eq!(answer.uid, "u");
        }
    }
}

fn arbitrary_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9. v]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(depth, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "size",
                    "version",
                    "storage",
                    "security",
                    "tls",
                    "options",
                    "extraArgs",
                    "repository",
                    "x"
                ])
                .prop_map(str::to_owned),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
