//! `etcd-operator local status`: what `status.json` says, as a person reads it, in the manner of
//! `kubectl get`: the cluster, its members, its conditions, and how to reach it with etcdctl.

use std::path::Path;

use etcd_crds::{EtcdCluster, EtcdClusterStatus, MemberRole};

use crate::columns::table;
use crate::membership::Error;

/// The report of the local cluster in `dir`.
pub fn render(dir: &Path) -> Result<String, Error> {
    let path = dir.join("status.json");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let status: EtcdClusterStatus = serde_json::from_slice(&bytes)
        .map_err(|err| Error::State { path: path.clone(), reason: err.to_string() })?;
    let accepted: Option<EtcdCluster> = std::fs::read(dir.join("accepted.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let dash = || "-".to_owned();
    let name = accepted.as_ref().and_then(|c| c.metadata.name.clone()).unwrap_or_else(dash);
    let size = accepted.as_ref().map_or_else(dash, |c| c.spec.size.to_string());
    let leader = status.members.iter().find(|m| m.leader).map_or_else(dash, |m| m.name.clone());
    let text = |value: Option<String>| value.unwrap_or_else(dash);
    let mut out = table(&[
        ["NAME", "PHASE", "SIZE", "READY", "VERSION", "LEADER", "CLUSTER ID"]
            .map(String::from)
            .to_vec(),
        vec![
            name,
            status.phase.map_or_else(dash, |p| format!("{p:?}")),
            size,
            format!("{}/{}", status.ready_replicas, status.replicas),
            text(status.current_version.clone()),
            leader,
            text(status.cluster_id.clone()),
        ],
    ]);
    if let Some(scaling) = &status.scaling {
        out.push_str(&format!(
            "scaling {} → {} voters: {}\n",
            scaling.current_size, scaling.target_size, scaling.step
        ));
    }
    out.push('\n');
    let mut members = vec![
        [
            "MEMBER",
            "ROLE",
            "HEALTH",
            "VERSION",
            "LEADER",
            "DB USED/FILE",
            "RAFT INDEX/APPLIED",
            "CLIENT URL",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for m in &status.members {
        let role = match m.role {
            Some(MemberRole::Voter) => "voter",
            Some(MemberRole::Learner) => "learner",
            None => "-",
        };
        let health = if m.ready {
            "ready"
        } else if m.unhealthy_since.is_some() {
            "not answering"
        } else {
            "not ready"
        };
        members.push(vec![
            m.name.clone(),
            role.to_owned(),
            health.to_owned(),
            text(m.version.clone()),
            if m.leader { "yes".to_owned() } else { String::new() },
            crate::columns::backend(m),
            crate::columns::raft(m),
            text(m.client_url.clone()),
        ]);
    }
    out.push_str(&table(&members));
    out.push('\n');
    let mut conditions =
        vec![["CONDITION", "STATUS", "REASON", "MESSAGE"].map(String::from).to_vec()];
    for c in &status.conditions {
        conditions.push(vec![
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
        ]);
    }
    out.push_str(&table(&conditions));
    if !status.client_endpoints.is_empty() {
        let pki = dir.join("pki");
        let file = |f: &str| pki.join(f).display().to_string();
        out.push_str(&format!(
            "\netcdctl --endpoints {} --cacert {} --cert {} --key {} endpoint status -w table\n",
            status.client_endpoints.join(","),
            file("ca.crt"),
            file("client.crt"),
            file("client.key"),
        ));
    }
    Ok(out)
}
