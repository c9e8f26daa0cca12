//! RBAC authorization as kube-apiserver's RBAC authorizer decides it
//! (`plugin/pkg/auth/authorizer/rbac/rbac.go`): a request is allowed when a rule of a Role or
//! ClusterRole bound to the user (or one of its groups) matches its verb, API group, resource
//! (with `/subresource`), resource name and namespace. Denials carry kube-apiserver's message.

use serde_json::Value;

use crate::store::Store;

#[derive(Clone, Debug, PartialEq)]
pub enum User {
    /// The kubeconfig's user: system:masters.
    Admin,
    ServiceAccount {
        namespace: String,
        name: String,
    },
}

impl User {
    pub fn name(&self) -> String {
        match self {
            User::Admin => "kube-sim-admin".into(),
            User::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }

    pub fn groups(&self) -> Vec<String> {
        match self {
            User::Admin => vec!["system:masters".into(), "system:authenticated".into()],
            User::ServiceAccount { namespace, .. } => vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// What a request asks to do.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn rule_allows(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let verbs = strings(&rule["verbs"]);
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let names = strings(&rule["resourceNames"]);
    let resource = match attrs.subresource {
        Some(sub) => format!("{}/{sub}", attrs.resource),
        None => attrs.resource.to_owned(),
    };
    let resource_ok = resources.iter().any(|r| {
        *r == "*" || *r == resource || attrs.subresource.is_some_and(|sub| *r == format!("*/{sub}"))
    });
    verbs.iter().any(|v| *v == "*" || *v == attrs.verb)
        && groups.iter().any(|g| *g == "*" || *g == attrs.group)
        && resource_ok
        && (names.is_empty() || attrs.name.is_some_and(|n| names.contains(&n)))
}

fn subject_matches(subject: &Value, user: &User) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("ServiceAccount") => {
            matches!(user, User::ServiceAccount { namespace, name: n } if n == name && subject["namespace"].as_str() == Some(namespace))
        }
        Some("User") => user.name() == name,
        Some("Group") => user.groups().iter().any(|g| g == name),
        _ => false,
    }
}

fn role_rules(store: &Store, role_ref: &Value, namespace: &str) -> Vec<Value> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match role_ref["kind"].as_str() {
        Some("ClusterRole") => store.get("rbac.authorization.k8s.io/clusterroles", "", name),
        _ => store.get("rbac.authorization.k8s.io/roles", namespace, name),
    };
    role.and_then(|r| r["rules"].as_array().cloned()).unwrap_or_default()
}

/// Whether `user` may do what `attrs` says.
pub fn allowed(store: &Store, user: &User, attrs: &Attributes<'_>) -> bool {
    if *user == User::Admin {
        return true;
    }
    let bound = |binding: &Value| {
        binding["subjects"].as_array().is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
    };
    let cluster_wide = store
        .list("rbac.authorization.k8s.io/clusterrolebindings", None)
        .into_iter()
        .filter(|b| bound(b))
        .flat_map(|b| role_rules(store, &b["roleRef"], ""));
    let mut rules: Vec<Value> = cluster_wide.collect();
    if let Some(namespace) = attrs.namespace {
        for binding in store.list("rbac.authorization.k8s.io/rolebindings", Some(namespace)) {
            if bound(&binding) {
                rules.extend(role_rules(store, &binding["roleRef"], namespace));
            }
        }
    }
    rules.iter().any(|rule| rule_allows(rule, attrs))
}

/// kube-apiserver's Forbidden message.
pub fn forbidden_message(user: &User, attrs: &Attributes<'_>) -> String {
    let resource = match attrs.subresource {
        Some(sub) => format!("{}/{sub}", attrs.resource),
        None => attrs.resource.to_owned(),
    };
    let what = match attrs.name {
        Some(name) => format!("{resource} \"{name}\""),
        None => resource.clone(),
    };
    let scope = match attrs.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name(),
        attrs.verb,
        attrs.group
    )
}
