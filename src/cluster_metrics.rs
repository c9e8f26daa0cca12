//! Per-cluster figures for `/metrics`, set from the status each reconcile computes (the same on
//! Kubernetes and in `local`): size and membership, readiness, quorum, the leader and how often
//! it changed, the phase (one series per phase, 1 for the current one), the versions, when each
//! certificate expires, etcd's alarms, whether the voters' data agreed, and the membership steps taken. Every series carries `namespace` and `cluster`, and all of a
//! cluster's series go when it is deleted.

use etcd_crds::conditions::types;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use etcd_crds::{ClusterPhase, EtcdClusterStatus, MemberRole};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    cluster: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    namespace: String,
    cluster: String,
    /// What every member runs (empty while they differ).
    current: String,
    /// What the spec asks for.
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    namespace: String,
    cluster: String,
    /// ca, peer, server, client (the operator's) or user-client.
    certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    namespace: String,
    cluster: String,
    alarm: String,
}

/// etcd's alarm kinds (besides NONE): each has a series, 0 or 1.
const ALARMS: [&str; 2] = ["NOSPACE", "CORRUPT"];

fn alarm_labels(labels: &ClusterLabels, alarm: &str) -> AlarmLabels {
    AlarmLabels {
        namespace: labels.namespace.clone(),
        cluster: labels.cluster.clone(),
        alarm: alarm.to_owned(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    namespace: String,
    cluster: String,
    step: String,
}

const PHASES: [ClusterPhase; 8] = [
    ClusterPhase::Creating,
    ClusterPhase::Running,
    ClusterPhase::Scaling,
    ClusterPhase::Upgrading,
    ClusterPhase::Degraded,
    ClusterPhase::Failed,
    ClusterPhase::Recovering,
    ClusterPhase::Stopped,
];

fn phase_name(phase: ClusterPhase) -> String {
    format!("{phase:?}")
}

fn certificate_name(part: etcd_certs::PkiPart) -> &'static str {
    match part {
        etcd_certs::PkiPart::Ca => "ca",
        etcd_certs::PkiPart::Peer => "peer",
        etcd_certs::PkiPart::Server => "server",
        etcd_certs::PkiPart::Client => "client",
        etcd_certs::PkiPart::UserClient => "user-client",
    }
}

fn certificate_labels(labels: &ClusterLabels, part: etcd_certs::PkiPart) -> CertificateLabels {
    CertificateLabels {
        namespace: labels.namespace.clone(),
        cluster: labels.cluster.clone(),
        certificate: certificate_name(part).to_owned(),
    }
}

/// What a cluster's series were last set from: the leader, to count changes, and the version
/// series, to replace it when the versions change.
#[derive(Default)]
struct Last {
    leader: Option<String>,
    version: Option<VersionLabels>,
    steps: Vec<StepLabels>,
}

#[derive(Clone, Default)]
pub struct ClusterMetrics {
    size: Family<ClusterLabels, Gauge>,
    members: Family<ClusterLabels, Gauge>,
    voters: Family<ClusterLabels, Gauge>,
    learners: Family<ClusterLabels, Gauge>,
    ready: Family<ClusterLabels, Gauge>,
    quorum: Family<ClusterLabels, Gauge>,
    leader: Family<ClusterLabels, Gauge>,
    leader_changes: Family<ClusterLabels, Counter>,
    phase: Family<PhaseLabels, Gauge>,
    version: Family<VersionLabels, Gauge>,
    steps: Family<StepLabels, Counter>,
    alarms: Family<AlarmLabels, Gauge>,
    data_consistent: Family<ClusterLabels, Gauge>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    last: Arc<Mutex<HashMap<ClusterLabels, Last>>>,
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let gauges = [
            ("cluster_size", "Members the spec asks for", &self.size),
            ("cluster_members", "Members in etcd's member list", &self.members),
            ("cluster_voters", "Voting members", &self.voters),
            ("cluster_learners", "Learners (members joining)", &self.learners),
            ("cluster_ready_members", "Voting members that answer", &self.ready),
            ("cluster_quorum", "1 when a quorum of voters answers", &self.quorum),
            ("cluster_leader", "1 when a member reports a leader", &self.leader),
        ];
        for (name, help, family) in gauges {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "cluster_leader_changes",
            "Leader changes the operator has seen",
            self.leader_changes.clone(),
        );
        registry.register("cluster_phase", "1 for the cluster's phase", self.phase.clone());
        registry.register(
            "cluster_version_info",
            "The version every member runs (current) and the spec's (target)",
            self.version.clone(),
        );
        registry.register(
            "cluster_certificate_expiry_timestamp_seconds",
            "When each certificate of the cluster's PKI expires (the operator renews it before)",
            self.certificate_expiry.clone(),
        );
        registry.register(
            "cluster_alarm",
            "1 while etcd raises the alarm (NOSPACE: writes refused; CORRUPT: members' data differ)",
            self.alarms.clone(),
        );
        registry.register(
            "cluster_data_consistent",
            "1 when the voters held the same data at the last check, 0 when they did not (absent before the first)",
            self.data_consistent.clone(),
        );
        registry.register(
            "cluster_membership_steps",
            "Membership steps taken, by kind",
            self.steps.clone(),
        );
    }

    /// Sets every series of a cluster from its status and spec.
    pub fn observe(
        &self,
        labels: &ClusterLabels,
        size: i32,
        target_version: &str,
        status: &EtcdClusterStatus,
    ) {
        let voters = status.members.iter().filter(|m| m.role == Some(MemberRole::Voter)).count();
        let learners =
            status.members.iter().filter(|m| m.role == Some(MemberRole::Learner)).count();
        let ready = status.members.iter().filter(|m| m.ready).count();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.size.get_or_create(labels).set(i64::from(size));
        self.members.get_or_create(labels).set(count(status.members.len()));
        self.voters.get_or_create(labels).set(count(voters));
        self.learners.get_or_create(labels).set(count(learners));
        self.ready.get_or_create(labels).set(count(ready));
        let quorum = voters > 0 && ready > voters / 2;
        self.quorum.get_or_create(labels).set(i64::from(quorum));
        self.leader.get_or_create(labels).set(i64::from(status.leader_id.is_some()));
        for phase in PHASES {
            let series = PhaseLabels {
                namespace: labels.namespace.clone(),
                cluster: labels.cluster.clone(),
                phase: phase_name(phase),
            };
            self.phase.get_or_create(&series).set(i64::from(status.phase == Some(phase)));
        }
        let raised =
            status.conditions.iter().find(|c| c.type_ == types::ETCD_ALARMS && c.status == "True");
        for alarm in ALARMS {
            let on = raised.is_some_and(|c| c.reason.split(',').any(|kind| kind == alarm));
            self.alarms.get_or_create(&alarm_labels(labels, alarm)).set(i64::from(on));
        }
        let consistent = status.conditions.iter().find(|c| c.type_ == types::DATA_CONSISTENT);
        if let Some(condition) = consistent {
            let ok = condition.status == "True";
            self.data_consistent.get_or_create(labels).set(i64::from(ok));
        }
        let version = VersionLabels {
            namespace: labels.namespace.clone(),
            cluster: labels.cluster.clone(),
            current: status.current_version.clone().unwrap_or_default(),
            target: target_version.to_owned(),
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let last = last.entry(labels.clone()).or_default();
        if let (Some(before), Some(now)) = (&last.leader, &status.leader_id)
            && before != now
        {
            self.leader_changes.get_or_create(labels).inc();
        }
        // Present from the first pass (at 0), so that rate() and the dashboard see it.
        self.leader_changes.get_or_create(labels).inc_by(0);
        if status.leader_id.is_some() {
            last.leader = status.leader_id.clone();
        }
        if let Some(before) = last.version.replace(version.clone())
            && before != version
        {
            self.version.remove(&before);
        }
        self.version.get_or_create(&version).set(1);
    }

    /// Sets when each certificate of the cluster's PKI expires.
    pub fn certificates(&self, labels: &ClusterLabels, pki: &etcd_certs::ClusterPki) {
        for part in etcd_certs::PkiPart::ALL {
            let name = certificate_name(part);
            let Ok(info) = etcd_certs::inspect::inspect(&pki.part(part).cert_pem, name) else {
                continue;
            };
            self.certificate_expiry
                .get_or_create(&certificate_labels(labels, part))
                .set(info.not_after.unix_timestamp());
        }
    }

    /// Counts a membership step about to be taken (waiting and idling are not steps).
    pub fn step(&self, labels: &ClusterLabels, kind: &str) {
        if matches!(kind, "wait" | "done") {
            return;
        }
        let series = StepLabels {
            namespace: labels.namespace.clone(),
            cluster: labels.cluster.clone(),
            step: kind.to_owned(),
        };
        self.steps.get_or_create(&series).inc();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let steps = &mut last.entry(labels.clone()).or_default().steps;
        if !steps.contains(&series) {
            steps.push(series);
        }
    }

    /// Removes every series of a deleted cluster.
    pub fn forget(&self, labels: &ClusterLabels) {
        for family in [
            &self.size,
            &self.members,
            &self.voters,
            &self.learners,
            &self.ready,
            &self.quorum,
            &self.leader,
        ] {
            family.remove(labels);
        }
        self.leader_changes.remove(labels);
        self.data_consistent.remove(labels);
        for alarm in ALARMS {
            self.alarms.remove(&alarm_labels(labels, alarm));
        }
        for part in etcd_certs::PkiPart::ALL {
            self.certificate_expiry.remove(&certificate_labels(labels, part));
        }
        for phase in PHASES {
            self.phase.remove(&PhaseLabels {
                namespace: labels.namespace.clone(),
                cluster: labels.cluster.clone(),
                phase: phase_name(phase),
            });
        }
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(labels);
        if let Some(last) = last {
            if let Some(version) = last.version {
                self.version.remove(&version);
            }
            for step in last.steps {
                self.steps.remove(&step);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_crds::MemberStatus;

    fn text(metrics: &ClusterMetrics) -> String {
        let mut registry = Registry::with_prefix("etcd_operator");
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    fn member(name: &str, role: MemberRole, ready: bool) -> MemberStatus {
        MemberStatus { name: name.into(), role: Some(role), ready, ..MemberStatus::default() }
    }

    #[test]
    fn a_status_sets_every_series_and_a_deleted_cluster_leaves_none() {
        let metrics = ClusterMetrics::default();
        let labels = ClusterLabels { namespace: "prod".into(), cluster: "main".into() };
        let mut status = EtcdClusterStatus {
            phase: Some(ClusterPhase::Scaling),
            leader_id: Some("a".into()),
            current_version: Some("3.5.1".into()),
            members: vec![
                member("main-0", MemberRole::Voter, true),
                member("main-1", MemberRole::Voter, true),
                member("main-2", MemberRole::Voter, false),
                member("main-3", MemberRole::Learner, false),
            ],
            ..EtcdClusterStatus::default()
        };
        metrics.observe(&labels, 5, "3.5.1", &status);
        metrics.step(&labels, "promote");
        metrics.step(&labels, "wait");
        status.leader_id = Some("b".into());
        status.conditions.push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: etcd_crds::conditions::types::ETCD_ALARMS.into(),
            status: "True".into(),
            reason: "CORRUPT,NOSPACE".into(),
            message: "NOSPACE on main-0: ...".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        });
        metrics.observe(&labels, 5, "3.6.0", &status);
        let out = text(&metrics);
        let series = |line: &str| out.lines().any(|l| l == line);
        assert!(
            series(r#"etcd_operator_cluster_size{namespace="prod",cluster="main"} 5"#),
            "{out}"
        );
        assert!(series(r#"etcd_operator_cluster_voters{namespace="prod",cluster="main"} 3"#));
        assert!(series(r#"etcd_operator_cluster_learners{namespace="prod",cluster="main"} 1"#));
        assert!(series(
            r#"etcd_operator_cluster_ready_members{namespace="prod",cluster="main"} 2"#
        ));
        assert!(series(r#"etcd_operator_cluster_quorum{namespace="prod",cluster="main"} 1"#));
        assert!(series(
            r#"etcd_operator_cluster_leader_changes_total{namespace="prod",cluster="main"} 1"#
        ));
        assert!(series(
            r#"etcd_operator_cluster_phase{namespace="prod",cluster="main",phase="Scaling"} 1"#
        ));
        assert!(series(
            r#"etcd_operator_cluster_phase{namespace="prod",cluster="main",phase="Running"} 0"#
        ));
        assert!(
            series(
                r#"etcd_operator_cluster_version_info{namespace="prod",cluster="main",current="3.5.1",target="3.6.0"} 1"#
            ),
            "{out}"
        );
        assert!(!out.contains(r#"target="3.5.1""#), "the old version series is gone: {out}");
        assert!(series(
            r#"etcd_operator_cluster_membership_steps_total{namespace="prod",cluster="main",step="promote"} 1"#
        ));
        assert!(!out.contains(r#"step="wait""#));
        for alarm in ["NOSPACE", "CORRUPT"] {
            assert!(series(&format!(
                r#"etcd_operator_cluster_alarm{{namespace="prod",cluster="main",alarm="{alarm}"}} 1"#
            )));
        }

        let request = etcd_certs::ClusterPkiRequest {
            cluster: "main".into(),
            namespace: "prod".into(),
            max_members: 3,
            extra_sans: Vec::new(),
        };
        let now = time::OffsetDateTime::now_utc();
        let pki = etcd_certs::issue_cluster_pki(&request, now).unwrap();
        metrics.certificates(&labels, &pki);
        let out = text(&metrics);
        let expiry = |certificate: &str| -> i64 {
            let series = format!(
                r#"etcd_operator_cluster_certificate_expiry_timestamp_seconds{{namespace="prod",cluster="main",certificate="{certificate}"}} "#
            );
            let line =
                out.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{out}"));
            line[series.len()..].parse().unwrap()
        };
        assert!(expiry("ca") > expiry("peer"), "the CA outlives its leaves");
        assert!(expiry("server") > now.unix_timestamp());
        assert_eq!(expiry("client"), expiry("user-client"));

        metrics.forget(&labels);
        assert!(!text(&metrics).contains(r#"cluster="main""#), "{}", text(&metrics));
    }
}
