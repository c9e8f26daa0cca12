//! Rules for EtcdBackup and the storage locations EtcdRestore shares with it.

use etcd_crds::{BackupDestination, EtcdBackupSpec, SecretReference};

use crate::verdict::Verdict;

pub fn validate(spec: &EtcdBackupSpec) -> Verdict {
    let mut verdict = Verdict::default();
    if spec.cluster_ref.name.trim().is_empty() {
        verdict.deny("spec.clusterRef.name", "must name an EtcdCluster in this namespace");
    }
    destination(
        &mut verdict,
        "spec.destination",
        &spec.destination,
        spec.credentials_secret_ref.as_ref(),
        "spec.credentialsSecretRef",
    );
    if let Some(schedule) = &spec.schedule
        && let Err(err) = schedule.parse::<croner::Cron>()
    {
        verdict.deny(
            "spec.schedule",
            format!("is not a cron expression ({err}); e.g. \"0 */6 * * *\""),
        );
    }
    if let Some(zone) = &spec.time_zone {
        if zone.parse::<chrono_tz::Tz>().is_err() {
            verdict.deny(
                "spec.timeZone",
                format!("is not an IANA time zone such as Europe/Berlin; got {zone:?}"),
            );
        }
        if spec.schedule.is_none() {
            verdict.warn("spec.timeZone", "has no effect without a schedule");
        }
    }
    if spec.retention < 1 {
        verdict
            .deny("spec.retention", format!("must keep at least 1 backup; got {}", spec.retention));
    }
    verdict
}

/// Exactly one backend, with what it needs.
pub fn destination(
    verdict: &mut Verdict,
    path: &str,
    destination: &BackupDestination,
    credentials: Option<&SecretReference>,
    credentials_path: &str,
) {
    let backends = destination.backends();
    match backends.len() {
        1 => {}
        0 => verdict.deny(path, "must set exactly one of s3, gcs, azure, volume; none is set"),
        _ => verdict.deny(
            path,
            format!("must set exactly one of s3, gcs, azure, volume; got {}", backends.join(", ")),
        ),
    }
    if let Some(s3) = &destination.s3
        && s3.bucket.trim().is_empty()
    {
        verdict.deny(&format!("{path}.s3.bucket"), "must name a bucket");
    }
    if let Some(volume) = &destination.volume
        && !volume.path.starts_with('/')
    {
        verdict.deny(
            &format!("{path}.volume.path"),
            format!("must be an absolute path; got {:?}", volume.path),
        );
    }
    if destination.needs_credentials() && credentials.is_none() {
        verdict.deny(credentials_path, format!("is required for {}", backends.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> EtcdBackupSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_scheduled_s3_backup_is_valid() {
        let verdict = validate(&spec(json!({
            "clusterRef": {"name": "demo"},
            "destination": {"s3": {"bucket": "b"}},
            "credentialsSecretRef": {"name": "creds"},
            "schedule": "0 */6 * * *",
            "timeZone": "Europe/Berlin"
        })));
        assert!(verdict.is_allowed(), "{verdict:?}");
    }

    #[test]
    fn every_fault_named() {
        let verdict = validate(&spec(json!({
            "clusterRef": {"name": ""},
            "destination": {"s3": {"bucket": "b"}, "volume": {"path": "relative"}},
            "schedule": "every tuesday",
            "timeZone": "Mars/Olympus",
            "retention": 0
        })));
        for path in [
            "spec.clusterRef.name",
            "spec.destination:",
            "spec.destination.volume.path",
            "spec.credentialsSecretRef",
            "spec.schedule",
            "spec.timeZone",
            "spec.retention",
        ] {
            assert!(verdict.violations.iter().any(|v| v.starts_with(path)), "{path}: {verdict:?}");
        }
    }

    #[test]
    fn a_volume_needs_no_credentials() {
        let verdict = validate(&spec(
            json!({"clusterRef": {"name": "demo"}, "destination": {"volume": {"path": "/backups"}}}),
        ));
        assert!(verdict.is_allowed(), "{verdict:?}");
        let none = validate(&spec(json!({"clusterRef": {"name": "demo"}, "destination": {}})));
        assert!(none.message().contains("none is set"));
    }
}
