//! Label and field selectors as kube-apiserver parses them (`k8s.io/apimachinery/pkg/labels`):
//! `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by commas.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Vec<String> {
    let (mut out, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect()
}

fn set(text: &str) -> Vec<String> {
    text.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

impl Selector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for term in terms(text) {
            let requirement = if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(v))
            } else if let Some((k, v)) = term.split_once(" in ") {
                Requirement::In(k.trim().into(), set(v))
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if term.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
                Requirement::Exists(term.clone())
            } else {
                return Err(format!("unable to parse requirement: {term}"));
            };
            out.push(requirement);
        }
        Ok(Self(out))
    }

    /// A selector from a LabelSelector object (`matchLabels` and `matchExpressions`).
    pub fn from_label_selector(selector: &Value) -> Self {
        let mut out = Vec::new();
        if let Some(labels) = selector["matchLabels"].as_object() {
            for (k, v) in labels {
                out.push(Requirement::Equals(k.clone(), v.as_str().unwrap_or_default().into()));
            }
        }
        for expr in selector["matchExpressions"].as_array().into_iter().flatten() {
            let key = expr["key"].as_str().unwrap_or_default().to_owned();
            let values: Vec<String> = expr["values"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            out.push(match expr["operator"].as_str() {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("DoesNotExist") => Requirement::NotExists(key),
                _ => Requirement::Exists(key),
            });
        }
        Self(out)
    }

    /// A selector from a plain map (a Service's `spec.selector`).
    pub fn from_map(map: &Value) -> Self {
        Self(
            map.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.as_str().unwrap_or_default().into()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `labels` (a JSON map, or null) satisfy every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Field selectors: the same syntax over an object's fields (`metadata.name=x`).
    pub fn matches_fields(&self, object: &Value) -> bool {
        let get = |k: &str| crate::resources::json_path(object, k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k).unwrap_or_default() == v,
            Requirement::NotEquals(k, v) => get(k).unwrap_or_default() != v,
            _ => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_parse_and_match_as_kubernetes_does() {
        let labels = json!({"app": "etcd", "tier": "db"});
        assert!(Selector::parse("app=etcd,tier in (db, cache)").unwrap().matches(&labels));
        assert!(!Selector::parse("app=etcd,!tier").unwrap().matches(&labels));
        assert!(Selector::parse("app!=web,tier").unwrap().matches(&labels));
        assert!(!Selector::parse("tier notin (db)").unwrap().matches(&labels));
        assert!(Selector::parse("").unwrap().matches(&labels));
    }
}
