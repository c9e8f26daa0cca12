//! The kinds this API server serves: the built-in ones the operator and kubectl touch, and any
//! kind a CustomResourceDefinition declares (read from the CRD object, as kube-apiserver's
//! apiextensions server does; nothing here knows any particular CRD).

use serde_json::Value;

/// Where the replica count and selector of a kind's scale subresource live.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// A printer column for `kubectl get` (Table responses).
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub json_path: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status: bool,
    pub scale: Option<Scale>,
    /// The CRD's structural schema (defaults, pruning, validation); `None` for built-in kinds.
    pub schema: Option<Value>,
    pub columns: Vec<Column>,
    /// Subresources other than status and scale (pods/log).
    pub extra_subresources: Vec<&'static str>,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as kube-apiserver names a resource in messages.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Where its group version is served: `api/v1` or `apis/GROUP/VERSION`.
    pub fn url_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}", self.api_version())
        }
    }

    /// The key objects of this kind are stored under: `group/plural` (one version per kind here).
    pub fn resource(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
) -> Kind {
    Kind {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        short_names: short.iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        namespaced,
        status: false,
        scale: None,
        schema: None,
        columns: Vec::new(),
        extra_subresources: Vec::new(),
    }
}

fn workload_scale() -> Option<Scale> {
    Some(Scale {
        spec_replicas: ".spec.replicas".into(),
        status_replicas: ".status.replicas".into(),
        label_selector: None,
    })
}

/// The built-in kinds served.
pub fn builtins() -> Vec<Kind> {
    let mut kinds = vec![
        builtin("", "v1", "Namespace", "namespaces", false, &["ns"]),
        builtin("", "v1", "Pod", "pods", true, &["po"]),
        builtin("", "v1", "Service", "services", true, &["svc"]),
        builtin("", "v1", "Endpoints", "endpoints", true, &["ep"]),
        builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"]),
        builtin("", "v1", "Secret", "secrets", true, &[]),
        builtin("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"]),
        builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, &["pvc"]),
        builtin("", "v1", "Event", "events", true, &["ev"]),
        builtin("", "v1", "Node", "nodes", false, &["no"]),
        builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"]),
        builtin("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"]),
        builtin("apps", "v1", "ControllerRevision", "controllerrevisions", true, &[]),
        builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[]),
        builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[]),
        builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[]),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
            &[],
        ),
        builtin(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
            &[],
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
        ),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true, &[]),
        builtin("events.k8s.io", "v1", "Event", "events", true, &["ev"]),
        builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"]),
        builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, &["sc"]),
    ];
    for kind in &mut kinds {
        match kind.plural.as_str() {
            "pods" => {
                kind.status = true;
                kind.extra_subresources = vec!["log"];
            }
            "deployments" | "statefulsets" => {
                kind.status = true;
                kind.scale = workload_scale();
            }
            "persistentvolumeclaims"
            | "services"
            | "namespaces"
            | "customresourcedefinitions"
            | "poddisruptionbudgets"
            | "nodes" => kind.status = true,
            _ => {}
        }
    }
    kinds
}

/// The kinds a CustomResourceDefinition object declares (one per served version).
pub fn from_crd(crd: &Value) -> Vec<Kind> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .map(|v| {
            let sub = &v["subresources"];
            let plural = text(&names["plural"]);
            Kind {
                group: text(&spec["group"]),
                version: text(&v["name"]),
                kind: text(&names["kind"]),
                singular: names["singular"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| text(&names["kind"]).to_lowercase()),
                plural,
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                status: sub.get("status").is_some(),
                scale: sub.get("scale").map(|s| Scale {
                    spec_replicas: text(&s["specReplicasPath"]),
                    status_replicas: text(&s["statusReplicasPath"]),
                    label_selector: s["labelSelectorPath"].as_str().map(str::to_owned),
                }),
                schema: Some(v["schema"]["openAPIV3Schema"].clone()),
                columns: v["additionalPrinterColumns"]
                    .as_array()
                    .map(|cols| {
                        cols.iter()
                            .map(|c| Column {
                                name: text(&c["name"]),
                                type_: text(&c["type"]),
                                json_path: text(&c["jsonPath"]),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                extra_subresources: Vec::new(),
            }
        })
        .collect()
}

/// Reads a simple JSONPath (`.a.b.c`, as printer columns and scale paths use) out of `value`.
pub fn json_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
        .try_fold(value, |v, part| v.get(part))
}

/// Sets a simple JSONPath in `value`, creating objects on the way.
pub fn set_json_path(value: &mut Value, path: &str, new: Value) {
    let parts: Vec<&str> =
        path.trim_start_matches('.').split('.').filter(|p| !p.is_empty()).collect();
    let mut at = value;
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let Some(map) = at.as_object_mut() else { return };
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), new);
            return;
        }
        at = map.entry((*part).to_owned()).or_insert_with(|| Value::Object(Default::default()));
    }
}
