//! The webhook's own TLS: a CA (whose PEM becomes the webhook configurations' caBundle) and a
//! serving certificate for the operator's Service.

use time::OffsetDateTime;

use crate::issue::{LeafSpec, Usage, issue_ca, issue_leaf};
use crate::{CertKeyPair, Error, Lifetimes};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookPki {
    pub ca: CertKeyPair,
    pub serving: CertKeyPair,
}

/// The names kube-apiserver dials the webhook Service by.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")]
}

/// A new CA and a serving certificate for `names`.
pub fn issue_webhook_pki(names: &[String], now: OffsetDateTime) -> Result<WebhookPki, Error> {
    let lifetimes = Lifetimes::default();
    let ca = issue_ca("etcd-operator webhook CA", now, &lifetimes)?;
    let serving = issue_serving(&ca, names, now, &lifetimes)?;
    Ok(WebhookPki { ca, serving })
}

/// A serving certificate from an existing CA (rotation keeps the caBundle).
pub fn issue_serving(
    ca: &CertKeyPair,
    names: &[String],
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<CertKeyPair, Error> {
    let common_name = names.first().map(String::as_str).unwrap_or("etcd-operator-webhook");
    issue_leaf(
        ca,
        &LeafSpec { common_name, subject_alt_names: names, usage: Usage::Server },
        now,
        lifetimes,
    )
}
