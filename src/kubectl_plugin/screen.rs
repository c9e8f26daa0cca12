//! `kubectl etcd status`: an EtcdCluster, its members, conditions and backups on one screen,
//! from what the API holds (the operator's status), as text. No I/O here.

use etcd_crds::{EtcdBackup, EtcdCluster, MemberRole};
use kube::ResourceExt;

/// The header, then the rows, as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut all = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    all.extend_from_slice(rows);
    crate::columns::table(&all)
}

fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

fn time(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.0.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// The screen for `cluster` and the EtcdBackups of its namespace (those of other clusters are
/// left out).
pub fn status(cluster: &EtcdCluster, backups: &[EtcdBackup]) -> String {
    let name = cluster.name_any();
    let status = cluster.status.clone().unwrap_or_default();
    let phase = status.phase.map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"));
    let leader = status.members.iter().find(|m| m.leader).map(|m| m.name.as_str());
    let mut out = format!(
        "EtcdCluster {}/{name}: {phase}, {}/{} ready, version {}\ncluster ID {}, leader {}\n",
        cluster.namespace().unwrap_or_default(),
        status.ready_replicas,
        cluster.spec.size,
        or_dash(status.current_version.as_deref().or(Some(cluster.spec.version.as_str()))),
        or_dash(status.cluster_id.as_deref()),
        or_dash(leader),
    );
    if !status.client_endpoints.is_empty() {
        out += &format!("clients: {}\n", status.client_endpoints.join(", "));
    }
    if let Some(scaling) = &status.scaling {
        out += &format!(
            "scaling {} → {} voters: {}\n",
            scaling.current_size, scaling.target_size, scaling.step
        );
    }

    let members: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{}{}", m.name, if m.leader { " *" } else { "" }),
                or_dash(m.id.as_deref()),
                match m.role {
                    Some(MemberRole::Learner) => "learner".into(),
                    Some(MemberRole::Voter) => "voter".into(),
                    None => "-".into(),
                },
                if m.ready { "yes".into() } else { "no".into() },
                or_dash(m.version.as_deref()),
                crate::columns::backend(m),
                crate::columns::raft(m),
                match (&m.unhealthy_since, &m.last_error) {
                    (Some(since), Some(why)) => format!("{} ({why})", time(Some(since))),
                    (Some(since), None) => time(Some(since)),
                    (None, _) => String::new(),
                },
            ]
        })
        .collect();
    out += "\n";
    let header = [
        "MEMBER",
        "ID",
        "ROLE",
        "READY",
        "VERSION",
        "DB USED/FILE",
        "RAFT INDEX/APPLIED",
        "UNHEALTHY SINCE",
    ];
    out += &table(&header, &members);

    let conditions: Vec<Vec<String>> = status
        .conditions
        .iter()
        .map(|c| vec![c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()])
        .collect();
    out += "\n";
    out += &table(&["CONDITION", "STATUS", "REASON", "MESSAGE"], &conditions);

    let backups: Vec<Vec<String>> = backups
        .iter()
        .filter(|b| b.spec.cluster_ref.name == name)
        .map(|b| {
            let s = b.status.clone().unwrap_or_default();
            let newest = s.backups.first();
            vec![
                b.name_any(),
                or_dash(b.spec.schedule.as_deref()),
                s.phase.map_or_else(|| "-".to_owned(), |p| format!("{p:?}")),
                time(s.last_successful_time.as_ref()),
                newest.map_or_else(|| "-".to_owned(), |r| r.location.clone()),
                match newest {
                    Some(r) if r.verified_time.is_some() => "yes".into(),
                    Some(_) => "no".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    out += "\n";
    if backups.is_empty() {
        out += &format!("no EtcdBackup of {name}\n");
    } else {
        out += &table(
            &["BACKUP", "SCHEDULE", "PHASE", "LAST SUCCESS", "NEWEST", "VERIFIED"],
            &backups,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_screen_names_the_leader_members_conditions_and_this_clusters_backups() {
        let cluster: EtcdCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "demo", "namespace": "prod"},
            "spec": {"size": 3, "version": "3.5.21"},
            "status": {
                "phase": "Degraded", "readyReplicas": 2, "clusterID": "cdf818194e3a8c32",
                "currentVersion": "3.5.21",
                "members": [
                    {"name": "demo-0", "id": "8e9e05c52164694d", "ready": true, "role": "Voter", "leader": true, "version": "3.5.21",
                     "dbSize": 41943040, "dbSizeInUse": 1258291, "raftIndex": 1204, "raftAppliedIndex": 1204},
                    {"name": "demo-1", "id": "91bc3c398fb3c146", "ready": false, "role": "Voter",
                     "unhealthySince": "2026-12-07T13:00:00Z", "lastError": "connection refused"},
                ],
                "conditions": [{"type": "Available", "status": "True", "reason": "QuorumReady",
                    "message": "2 of 3 voters ready", "lastTransitionTime": "2026-12-07T13:00:00Z"}],
            },
        }))
        .unwrap();
        let backup = |name: &str, of: &str| -> EtcdBackup {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "etcd.etcd.io/v1alpha1", "kind": "EtcdBackup",
                "metadata": {"name": name},
                "spec": {"clusterRef": {"name": of}, "schedule": "0 * * * *",
                         "destination": {"s3": {"bucket": "b"}}},
                "status": {"phase": "Scheduled", "backups": [{"location": "s3://b/demo-1.db", "size": 1,
                    "revision": 9, "sha256": "00", "verifiedTime": "2026-12-07T12:00:05Z"}]},
            }))
            .unwrap()
        };
        let screen = status(&cluster, &[backup("hourly", "demo"), backup("theirs", "other")]);
        assert!(screen.starts_with("EtcdCluster prod/demo: Degraded, 2/3 ready, version 3.5.21\ncluster ID cdf818194e3a8c32, leader demo-0\n"), "{screen}");
        assert!(
            screen.contains(
                "demo-0 *  8e9e05c52164694d  voter  yes    3.5.21   1.2 MiB/40.0 MiB  1204/1204"
            ),
            "{screen}"
        );
        assert!(
            screen.contains("demo-1    91bc3c398fb3c146  voter  no     -        -                 -                   2026-12-07 13:00:00Z (connection refused)"),
            "{screen}"
        );
        assert!(screen.contains("Available  True    QuorumReady  2 of 3 voters ready"), "{screen}");
        assert!(
            screen.contains("hourly  0 * * * *  Scheduled  -             s3://b/demo-1.db  yes"),
            "{screen}"
        );
        assert!(!screen.contains("theirs"), "{screen}");
    }
}
