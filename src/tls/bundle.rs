//! When a trust bundle last changed, as the Secret holding it records: every change waits for
//! its copies to reach every consumer before the next step of a rollover.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use time::OffsetDateTime;

/// Key of the CA Secret holding the previous CA while a rollover is under way.
pub const PREVIOUS_CA: &str = "previous-ca.crt";

/// Annotation of the CA Secret: when the trust bundle last changed, or mid-rollover the leaves
/// (RFC 3339); each change waits this long to reach every pod before the next.
pub const BUNDLE_SINCE: &str = "etcd.etcd.io/trust-bundle-since";
/// How long the webhook's changed bundle is given to reach the API server (it reloads webhook
/// configurations within seconds); a cluster's comes from the operator's setting.
pub const BUNDLE_PROPAGATION: time::Duration = time::Duration::minutes(3);

/// Whether the trust bundle last changed at least `propagation` ago, long enough for every copy
/// to have been refreshed (the kubelet syncs Secret volumes about once a minute; the API server
/// reloads webhook configurations within seconds).
pub fn bundle_settled(secret: &Secret, now: OffsetDateTime, propagation: time::Duration) -> bool {
    bundle_since(secret).is_none_or(|since| now - since >= propagation)
}

/// An annotation of `secret`.
pub fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// When the trust bundle of `secret` last changed, if it says.
pub fn bundle_since(secret: &Secret) -> Option<OffsetDateTime> {
    let stamp = annotation(secret, BUNDLE_SINCE)?;
    OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()
}

/// The annotation saying when a trust bundle changed.
pub fn bundle_stamp(at: OffsetDateTime) -> BTreeMap<String, String> {
    let stamp = at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    BTreeMap::from([(BUNDLE_SINCE.to_owned(), stamp)])
}
