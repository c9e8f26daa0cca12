//! The CRD YAML under crds/ is generated from the types; this fails when the two drift apart.
//! Regenerate with `cargo run -- crd > crds/all.yaml`.

use std::path::Path;

#[test]
fn committed_crd_yaml_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("all.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/all.yaml is committed");
    let generated = etcd_crds::crds_yaml().expect("the types render");
    assert!(
        committed == generated,
        "crds/all.yaml differs from the types; run `cargo run -- crd > crds/all.yaml`"
    );
}

#[test]
fn crds_declare_the_subresources_and_columns_users_rely_on() {
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&etcd_crds::crds_yaml().unwrap())
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect();
    assert_eq!(docs.len(), 3);
    let cluster = &docs[0];
    let version = &cluster["spec"]["versions"][0];
    assert_eq!(cluster["spec"]["names"]["shortNames"][0], "etcd");
    assert_eq!(version["subresources"]["scale"]["specReplicasPath"], ".spec.size");
    assert_eq!(version["subresources"]["scale"]["statusReplicasPath"], ".status.replicas");
    assert!(version["subresources"]["status"].is_mapping());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Phase", "Size", "Ready", "Version", "Age"]);
    let size = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"];
    assert_eq!(size["default"], 3);
    assert_eq!(size["enum"].as_sequence().unwrap().len(), 6);
}
