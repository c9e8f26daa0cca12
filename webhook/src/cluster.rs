//! Rules for EtcdCluster: sizes that keep a quorum meaningful, supported versions and one-minor
//! upgrades, fields that cannot change after creation, and etcd flags the operator owns.

use etcd_crds::{
    AutoCompactionMode, EtcdClusterSpec, EtcdVersion, OPERATOR_LABEL_KEYS, SUPPORTED_MINORS,
    TUNING_FLAGS, TlsSpec,
};

use crate::quantity;
use crate::verdict::Verdict;

use etcd_crds::SIZES;

/// Validates a spec on CREATE (`old` is `None`) or UPDATE.
pub fn validate(spec: &EtcdClusterSpec, old: Option<&EtcdClusterSpec>) -> Verdict {
    validate_at("spec", spec, old)
}

/// The same rules for a spec embedded elsewhere (an EtcdRestore's `clusterSpec`), with paths
/// under `prefix`.
pub fn validate_at(prefix: &str, spec: &EtcdClusterSpec, old: Option<&EtcdClusterSpec>) -> Verdict {
    let mut verdict = Verdict::default();
    let path = |field: &str| format!("{prefix}.{field}");
    size(&mut verdict, &path("size"), spec.size);
    let version = version(&mut verdict, &path("version"), &spec.version);
    if spec.repository.trim().is_empty() {
        verdict.deny(&path("repository"), "must name an image repository");
    }
    storage_size(
        &mut verdict,
        &path("storage.size"),
        &spec.storage.size.0,
        old.map(|o| o.storage.size.0.as_str()),
    );
    tls(&mut verdict, &path("security.tls"), &spec.security.tls);
    options(&mut verdict, &path("options"), spec);
    for key in spec.pod_template.labels.keys() {
        if OPERATOR_LABEL_KEYS.contains(&key.as_str()) {
            verdict.deny(
                &format!("{}[{key}]", path("podTemplate.labels")),
                "is set by the operator, which selects the cluster's pods by it",
            );
        }
    }
    if let Some(old) = old {
        update(&mut verdict, prefix, spec, old, version);
    }
    verdict
}

fn size(verdict: &mut Verdict, path: &str, size: i32) {
    if SIZES.contains(&size) {
        match size {
            0 => verdict.warn(
                path,
                "0 stops every member; data is kept and the cluster comes back when scaled up",
            ),
            1 => verdict.warn(
                path,
                "1 member has no fault tolerance: losing it loses the cluster until it returns",
            ),
            _ => {}
        }
    } else if size > 0 && size % 2 == 0 {
        verdict.deny(
            path,
            format!(
                "must be one of 0, 1, 3, 5, 7, 9; got {size} (an even size adds a member without adding fault tolerance: {size} members tolerate {} failures, as {} do)",
                (size - 1) / 2,
                size - 1
            ),
        );
    } else {
        verdict.deny(path, format!("must be one of 0, 1, 3, 5, 7, 9; got {size}"));
    }
}

fn version(verdict: &mut Verdict, path: &str, text: &str) -> Option<EtcdVersion> {
    let supported = || format!("3.{}–3.{}", SUPPORTED_MINORS.start(), SUPPORTED_MINORS.end());
    match text.parse::<EtcdVersion>() {
        Ok(version) if version.is_supported() => Some(version),
        Ok(version) => {
            verdict.deny(
                path,
                format!(
                    "etcd {version} is not supported; supported minor versions are {}",
                    supported()
                ),
            );
            None
        }
        Err(_) => {
            verdict.deny(path, format!("must be MAJOR.MINOR.PATCH, e.g. 3.5.21, with a supported minor ({}); got {text:?}", supported()));
            None
        }
    }
}

fn storage_size(verdict: &mut Verdict, path: &str, new: &str, old: Option<&str>) {
    let Some(new_bytes) = quantity::parse(new) else {
        verdict.deny(path, format!("must be a quantity such as 8Gi; got {new:?}"));
        return;
    };
    if new_bytes <= 0.0 {
        verdict.deny(path, format!("must be positive; got {new}"));
    }
    if let Some(old_bytes) = old.and_then(quantity::parse)
        && new_bytes < old_bytes
    {
        verdict.deny(
            path,
            format!(
                "may grow but never shrink (volumes cannot be made smaller); {} → {new}",
                old.unwrap_or_default()
            ),
        );
    }
}

fn tls(verdict: &mut Verdict, path: &str, tls: &TlsSpec) {
    let refs = [
        ("peerSecretRef", &tls.peer_secret_ref),
        ("serverSecretRef", &tls.server_secret_ref),
        ("clientSecretRef", &tls.client_secret_ref),
    ];
    if !tls.enabled {
        verdict.warn(path, "TLS is off: peer and client traffic, and every key and value, cross the network in clear text");
        for (field, secret) in refs {
            if secret.is_some() {
                verdict.deny(&format!("{path}.{field}"), "is only used with TLS enabled");
            }
        }
    } else if tls.auto_tls {
        for (field, secret) in refs {
            if secret.is_some() {
                verdict.deny(
                    &format!("{path}.{field}"),
                    "must be empty with autoTLS (the operator issues the certificates)",
                );
            }
        }
    } else {
        for (field, secret) in refs {
            if secret.as_ref().is_none_or(|s| s.name.trim().is_empty()) {
                verdict.deny(&format!("{path}.{field}"), "is required when autoTLS is off");
            }
        }
    }
}

/// The largest backend quota admitted: snapshots are bounded by it when they are restored.
const MAX_QUOTA_BACKEND_BYTES: i64 = 64 << 30;

fn options(verdict: &mut Verdict, path: &str, spec: &EtcdClusterSpec) {
    let options = &spec.options;
    if options.quota_backend_bytes <= 0 {
        verdict.deny(
            &format!("{path}.quotaBackendBytes"),
            format!("must be positive; got {}", options.quota_backend_bytes),
        );
    } else if options.quota_backend_bytes > MAX_QUOTA_BACKEND_BYTES {
        verdict.deny(
            &format!("{path}.quotaBackendBytes"),
            format!(
                "must be at most 64 GiB; got {}: a restore verifies snapshots up to twice the \
                 quota in scratch space, and etcd's own guidance stops at 8 GiB",
                options.quota_backend_bytes
            ),
        );
    } else if options.quota_backend_bytes > 8 * 1024 * 1024 * 1024 {
        verdict.warn(
            &format!("{path}.quotaBackendBytes"),
            "above 8 GiB, etcd's own guidance is that performance degrades",
        );
    }
    let retention = options.auto_compaction_retention.trim();
    let retention_ok = match options.auto_compaction_mode {
        AutoCompactionMode::Revision => retention.parse::<u64>().is_ok(),
        AutoCompactionMode::Periodic => retention.parse::<u64>().is_ok() || is_duration(retention),
    };
    if !retention_ok {
        verdict.deny(
            &format!("{path}.autoCompactionRetention"),
            format!("must be a revision count (Revision mode) or a duration such as 1h or 30m (Periodic mode); got {retention:?}"),
        );
    }
    for flag in options.extra_args.keys() {
        let name = flag.trim_start_matches('-');
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            verdict.deny(
                &format!("{path}.extraArgs[{flag}]"),
                "is not an etcd flag name (lowercase letters, digits and dashes)",
            );
        } else if !TUNING_FLAGS.contains(&name) {
            verdict.deny(
                &format!("{path}.extraArgs[{flag}]"),
                format!(
                    "--{name} is not a tuning flag: extraArgs takes only {} (the operator sets \
                     names, URLs, data directories, certificates and security itself, and \
                     options with fields of their own go there)",
                    TUNING_FLAGS.join(", ")
                ),
            );
        }
    }
}

/// Go-style durations as etcd takes them: `1h`, `30m`, `1h30m`, `90s`.
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "h", "m", "s"].into_iter().find(|u| rest.starts_with(u)) else {
            return false;
        };
        rest = &rest[unit.len()..];
        parts += 1;
    }
    parts > 0
}

fn update(
    verdict: &mut Verdict,
    prefix: &str,
    spec: &EtcdClusterSpec,
    old: &EtcdClusterSpec,
    new_version: Option<EtcdVersion>,
) {
    let path = |field: &str| format!("{prefix}.{field}");
    if let (Some(new), Ok(previous)) = (new_version, old.version.parse::<EtcdVersion>()) {
        if new < previous {
            verdict.deny(
                &path("version"),
                format!(
                    "downgrades are not supported ({previous} → {new}); restore a backup instead"
                ),
            );
        } else if new.major != previous.major || new.minor > previous.minor + 1 {
            verdict.deny(
                &path("version"),
                format!(
                    "upgrade one minor version at a time ({previous} → {new}); go to 3.{}.x first",
                    previous.minor + 1
                ),
            );
        } else if let Some(minimum) = EtcdVersion::minimum_before_minor(new.minor)
            .filter(|minimum| new.minor > previous.minor && previous < *minimum)
        {
            verdict.deny(
                &path("version"),
                format!(
                    "etcd's upgrade guide requires {minimum} or later before {}.{} ({previous} → {new}); go to {minimum} first",
                    new.major, new.minor
                ),
            );
        }
        if new != previous && spec.size != old.size {
            verdict.deny(prefix, "change version and size in separate updates, so that each rolls out and is checked on its own");
        }
    }
    let immutable = [
        (
            "storage.storageClassName",
            spec.storage.storage_class_name != old.storage.storage_class_name,
        ),
        ("storage.ephemeral", spec.storage.ephemeral != old.storage.ephemeral),
        ("security.tls.enabled", spec.security.tls.enabled != old.security.tls.enabled),
        ("security.tls.autoTLS", spec.security.tls.auto_tls != old.security.tls.auto_tls),
        ("restore", spec.restore != old.restore),
    ];
    for (field, changed) in immutable {
        if changed {
            verdict.deny(&path(field), "is immutable after creation");
        }
    }
}

#[cfg(test)]
mod tests {
    use etcd_crds::SecretReference;
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> EtcdClusterSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let verdict = validate(&spec(json!({})), None);
        assert!(verdict.is_allowed(), "{verdict:?}");
        assert!(verdict.warnings.is_empty());
    }

    #[test]
    fn every_size_rule() {
        for size in SIZES {
            assert!(validate(&spec(json!({"size": size})), None).is_allowed(), "{size}");
        }
        let even = validate(&spec(json!({"size": 4})), None);
        assert_eq!(even.violations.len(), 1);
        assert!(
            even.violations[0]
                .starts_with("spec.size: must be one of 0, 1, 3, 5, 7, 9; got 4 (an even size"),
            "{even:?}"
        );
        for bad in [-1, 11, 2] {
            assert!(!validate(&spec(json!({"size": bad})), None).is_allowed(), "{bad}");
        }
        assert_eq!(validate(&spec(json!({"size": 1})), None).warnings.len(), 1);
    }

    #[test]
    fn versions() {
        for good in ["3.4.23", "3.5.0", "3.6.4"] {
            assert!(validate(&spec(json!({"version": good})), None).is_allowed(), "{good}");
        }
        for bad in ["3.3.27", "3.7.0", "4.0.0", "v3.5.1", "latest", "3.5"] {
            let verdict = validate(&spec(json!({"version": bad})), None);
            assert!(
                verdict.violations.iter().any(|v| v.starts_with("spec.version: ")),
                "{bad}: {verdict:?}"
            );
        }
    }

    #[test]
    fn upgrades_one_minor_at_a_time_never_down() {
        let old = spec(json!({"version": "3.4.23"}));
        assert!(validate(&spec(json!({"version": "3.4.30"})), Some(&old)).is_allowed());
        assert!(validate(&spec(json!({"version": "3.5.21"})), Some(&old)).is_allowed());
        let skip = validate(&spec(json!({"version": "3.6.0"})), Some(&old));
        assert!(skip.message().contains("one minor version at a time"), "{skip:?}");
        let down = validate(&spec(json!({"version": "3.4.20"})), Some(&old));
        assert!(down.message().contains("downgrades are not supported"), "{down:?}");
        let both = validate(&spec(json!({"version": "3.5.21", "size": 5})), Some(&old));
        assert!(both.message().contains("separate updates"), "{both:?}");
    }

    #[test]
    fn a_minor_upgrade_waits_for_the_patch_etcd_requires_first() {
        let early = spec(json!({"version": "3.5.21"}));
        let refused = validate(&spec(json!({"version": "3.6.4"})), Some(&early));
        assert!(
            refused.message().contains("3.5.26 or later before 3.6")
                && refused.message().contains("go to 3.5.26 first"),
            "{refused:?}"
        );
        // The way through: the patch first, then the minor.
        assert!(validate(&spec(json!({"version": "3.5.26"})), Some(&early)).is_allowed());
        let ready = spec(json!({"version": "3.5.26"}));
        assert!(validate(&spec(json!({"version": "3.6.4"})), Some(&ready)).is_allowed());
        // 3.4 → 3.5 names no minimum.
        let old = spec(json!({"version": "3.4.23"}));
        assert!(validate(&spec(json!({"version": "3.5.0"})), Some(&old)).is_allowed());
    }

    #[test]
    fn immutable_fields_and_storage_growth() {
        let old = spec(json!({"storage": {"size": "10Gi", "storageClassName": "fast"}}));
        let changed = spec(json!({
            "storage": {"size": "5Gi", "storageClassName": "slow", "ephemeral": true},
            "security": {"tls": {"enabled": false}}
        }));
        let verdict = validate(&changed, Some(&old));
        for field in [
            "storage.size",
            "storage.storageClassName",
            "storage.ephemeral",
            "security.tls.enabled",
        ] {
            assert!(
                verdict.violations.iter().any(|v| v.starts_with(&format!("spec.{field}: "))),
                "{field}: {verdict:?}"
            );
        }
        let grown = spec(json!({"storage": {"size": "20G", "storageClassName": "fast"}}));
        assert!(validate(&grown, Some(&old)).is_allowed());
    }

    #[test]
    fn reserved_and_malformed_flags() {
        let verdict = validate(
            &spec(
                json!({"options": {"extraArgs": {"--data-dir": "/x", "name": "y", "Bad Flag": "z", "snapshot-count": "10000"}}}),
            ),
            None,
        );
        assert_eq!(verdict.violations.len(), 3, "{verdict:?}");
        assert!(
            verdict
                .message()
                .contains("spec.options.extraArgs[--data-dir]: --data-dir is not a tuning flag")
        );
    }

    /// Before, a pod template labelled `instance: other` made the members of one cluster
    /// endpoints of another's Services.
    #[test]
    fn the_selector_labels_are_the_operators() {
        for key in ["app.kubernetes.io/instance", "app.kubernetes.io/name"] {
            let verdict = validate(&spec(json!({"podTemplate": {"labels": {key: "other"}}})), None);
            assert!(verdict.message().contains("is set by the operator"), "{key}: {verdict:?}");
        }
        let own = json!({"podTemplate": {"labels": {"team": "payments"}}});
        assert!(validate(&spec(own), None).is_allowed());
    }

    #[test]
    fn the_backend_quota_has_an_upper_bound() {
        let at =
            |bytes: i64| validate(&spec(json!({"options": {"quotaBackendBytes": bytes}})), None);
        assert!(at(64 << 30).is_allowed());
        assert!(at((64 << 30) + 1).message().contains("must be at most 64 GiB"));
    }

    #[test]
    fn flags_that_would_weaken_the_cluster_are_refused() {
        for flag in [
            "client-transport-security",
            "peer-transport-security",
            "listen-client-http-urls",
            "enable-pprof",
            "unsafe-no-fsync",
            "log-outputs",
            "experimental-peer-skip-client-san-verification",
            "quota-backend-bytes",
        ] {
            let verdict = validate(&spec(json!({"options": {"extraArgs": {flag: "x"}}})), None);
            assert!(
                verdict.message().contains(&format!("--{flag} is not a tuning flag")),
                "{flag}: {verdict:?}"
            );
        }
        let tuning = json!({"options": {"extraArgs": {"heartbeat-interval": "200", "election-timeout": "2000", "feature-gates": "InitialCorruptCheck=true"}}});
        assert!(validate(&spec(tuning), None).is_allowed());
    }

    #[test]
    fn compaction_retention_matches_its_mode() {
        assert!(
            validate(&spec(json!({"options": {"autoCompactionRetention": "1h30m"}})), None)
                .is_allowed()
        );
        assert!(
            !validate(&spec(json!({"options": {"autoCompactionRetention": "soon"}})), None)
                .is_allowed()
        );
        assert!(!validate(&spec(json!({"options": {"autoCompactionMode": "Revision", "autoCompactionRetention": "1h"}})), None).is_allowed());
    }

    #[test]
    fn tls_modes() {
        let manual =
            spec(json!({"security": {"tls": {"autoTLS": false, "peerSecretRef": {"name": "p"}}}}));
        let verdict = validate(&manual, None);
        assert_eq!(verdict.violations.len(), 2, "{verdict:?}");
        let mut auto_with_ref = spec(json!({}));
        auto_with_ref.security.tls.peer_secret_ref = Some(SecretReference { name: "p".into() });
        assert!(!validate(&auto_with_ref, None).is_allowed());
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let verdict = validate(
            &spec(
                json!({"size": 4, "version": "2.0.0", "repository": " ", "storage": {"size": "lots"}}),
            ),
            None,
        );
        assert_eq!(verdict.violations.len(), 4, "{verdict:?}");
    }
}
