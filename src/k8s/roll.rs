//! Restarting members on a new pod template, whatever changed in it (a version, `options`,
//! `resources`, `podTemplate`, the trust bundle of a CA rollover, what a new operator release
//! builds): one rule for all of them. The StatefulSet's rolling update is held by its partition
//! (ordinals at or above it take the new template). A template that changes in this apply holds
//! every pod (partition = replicas); the operator then lowers the partition one ordinal at a time,
//! highest first, and only while every member is a ready voter, every pod is ready, and every pod
//! the partition let go already runs the new template. A member that does not come back healthy
//! stops the roll where it is, and a member that is down holds the roll before it starts.
//!
//! The StatefulSet controller itself would not wait: with `podManagementPolicy: Parallel` it
//! deletes the highest pod not on the update revision and waits for that pod only
//! (`pkg/controller/statefulset/stateful_set_control.go`, `updateStatefulSet`), so a roll it ran
//! alone would restart a second member while another is down.
//!
//! The leader is never restarted while it leads: when the next ordinal to move is the leader's,
//! the partition holds and leadership first moves to another member, one already on the new
//! template when there is one (the rule `local` follows, in `membership::upgrade`).
//!
//! What changes nothing etcd sees restarts nobody: the member-init image (the operator's own)
//! follows an operator upgrade only together with another change of the template; alone, the
//! StatefulSet keeps the image it has (`keep_init_image`), so upgrading the operator restarts no
//! member unless what it builds for etcd changed.

use etcd_crds::{EtcdClusterStatus, MemberRole, MemberStatus};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodTemplateSpec};

/// What the roll does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roll {
    /// The partition to apply.
    pub partition: i32,
    /// Leadership to move first, from the leader to this member (the partition holds meanwhile).
    pub hand_over: Option<HandOver>,
}

/// A leadership transfer, by what the status recorded of the two members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOver {
    pub leader_url: String,
    pub to_id: u64,
    pub to: String,
}

/// The StatefulSet as it is, as far as a roll needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Current {
    pub replicas: i32,
    pub partition: i32,
    /// Pods on the update revision and ready pods, as the StatefulSet's status counts them for
    /// the generation it has observed (`None` while the status lags the spec).
    pub updated: Option<i32>,
    pub ready: Option<i32>,
}

impl Current {
    pub fn of(sts: &StatefulSet) -> Self {
        let spec = sts.spec.as_ref();
        let partition = spec
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let status =
            sts.status.as_ref().filter(|s| s.observed_generation == sts.metadata.generation);
        Self {
            replicas: spec.and_then(|s| s.replicas).unwrap_or(0),
            partition,
            updated: status.map(|s| s.updated_replicas.unwrap_or(0)),
            ready: status.map(|s| s.ready_replicas.unwrap_or(0)),
        }
    }
}

/// The roll of the cluster's StatefulSet: `current` is what exists (`None`: nothing yet),
/// `template_changes` whether this apply changes the pod template, `status` the members as last
/// observed.
pub fn roll(
    cluster: &str,
    current: Option<Current>,
    template_changes: bool,
    status: &EtcdClusterStatus,
) -> Roll {
    let go = |partition| Roll { partition, hand_over: None };
    let Some(current) = current else { return go(0) };
    if current.replicas == 0 {
        // No pod to protect: a cluster started from zero starts on the new template.
        return go(0);
    }
    if template_changes {
        // Every pod held; the next pass lets the first go once all are healthy.
        return go(current.replicas);
    }
    let partition = current.partition.min(current.replicas);
    if partition == 0 {
        return go(0);
    }
    let healthy = usize::try_from(current.replicas).is_ok_and(|r| status.members.len() == r)
        && status.members.iter().all(|m| m.ready && m.role == Some(MemberRole::Voter))
        && current.ready == Some(current.replicas)
        && current.updated == Some(current.replicas - partition);
    if !healthy {
        return go(partition);
    }
    let next = partition - 1;
    let ordinal = |m: &MemberStatus| {
        let ordinal = etcd_certs::cluster::member_ordinal(m.name.strip_prefix(cluster)?)?;
        i32::try_from(ordinal).ok()
    };
    let Some(leader) = status.members.iter().find(|m| m.leader && ordinal(m) == Some(next)) else {
        return go(next);
    };
    let id = |m: &MemberStatus| u64::from_str_radix(m.id.as_deref()?, 16).ok();
    let candidates = status.members.iter().filter(|m| ordinal(m) != Some(next) && id(m).is_some());
    let to = candidates
        .clone()
        .filter(|m| ordinal(m).is_some_and(|o| o >= partition))
        .max_by_key(|m| ordinal(m))
        .or_else(|| candidates.max_by_key(|m| ordinal(m)));
    match (to, &leader.client_url) {
        (Some(to), Some(leader_url)) => Roll {
            partition,
            hand_over: Some(HandOver {
                leader_url: leader_url.clone(),
                to_id: id(to).unwrap_or_default(),
                to: to.name.clone(),
            }),
        },
        // A single member, or nobody to hand over to: it restarts as leader (etcd's graceful
        // stop hands over if it can).
        _ => go(next),
    }
}

/// Holds `sts`'s rolling update at `partition` (ordinals at or above it take the new template).
pub fn hold(sts: &mut StatefulSet, partition: i32) {
    if let Some(rolling) = sts
        .spec
        .as_mut()
        .and_then(|s| s.update_strategy.as_mut())
        .and_then(|u| u.rolling_update.as_mut())
    {
        rolling.partition = Some(partition);
    }
}

/// An annotation of the StatefulSet's pod template: what its members were started with.
pub fn template_annotation<'a>(sts: &'a StatefulSet, key: &str) -> Option<&'a str> {
    let template = sts.spec.as_ref()?.template.metadata.as_ref()?;
    template.annotations.as_ref()?.get(key).map(String::as_str)
}

/// How long a claim may wait in `FileSystemResizePending` before its pod is restarted for it. A
/// driver that grows mounted file systems finishes within seconds of the volume's growth (the
/// kubelet's volume manager expands volumes in use on its next pass); one that cannot finishes
/// only when the volume is staged again, as its pod starts.
pub const FILESYSTEM_RESIZE_GRACE_SECONDS: i64 = 60;

/// The value of the template's filesystem-resize annotation: `size` (the spec's) once a claim
/// has waited `FILESYSTEM_RESIZE_GRACE_SECONDS` in `FileSystemResizePending` (its driver cannot
/// grow a mounted file system), else what the template has (`current`), so that the members are
/// restarted once per size that needs it, through the roll, and never again for it.
pub fn filesystem_resize(
    claims: &[PersistentVolumeClaim],
    size: &str,
    current: Option<&str>,
    now_second: i64,
) -> Option<String> {
    let waiting = claims.iter().any(|claim| {
        let conditions = claim.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.into_iter().flatten().any(|c| {
            c.type_ == "FileSystemResizePending"
                && c.status == "True"
                && c.last_transition_time.as_ref().is_some_and(|since| {
                    now_second - since.0.as_second() >= FILESYSTEM_RESIZE_GRACE_SECONDS
                })
        })
    });
    if waiting { Some(size.to_owned()) } else { current.map(str::to_owned) }
}

/// A fingerprint of what the members run: the pod template without the member-init image.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let mut template = template.clone();
    if let Some(inits) = template.spec.as_mut().and_then(|s| s.init_containers.as_mut()) {
        for init in inits {
            init.image = None;
        }
    }
    crate::names::fingerprint(serde_json::to_string(&template).unwrap_or_default().as_bytes())
}

/// Whether `wanted` changes what the members of `current` run; when it does not, `wanted` keeps
/// the member-init image `current` has, so that an operator upgrade alone changes no template.
/// Both carry their [`template_hash`] in `annotation`.
pub fn keep_init_image(
    wanted: &mut StatefulSet,
    current: Option<&StatefulSet>,
    annotation: &str,
) -> bool {
    let hash_of = |sts: &StatefulSet| {
        sts.metadata.annotations.as_ref().and_then(|a| a.get(annotation)).cloned()
    };
    let Some(current) = current else { return false };
    if hash_of(current) != hash_of(wanted) {
        return true;
    }
    let image = |sts: &StatefulSet| {
        sts.spec.as_ref()?.template.spec.as_ref()?.init_containers.as_ref()?.first()?.image.clone()
    };
    let kept = image(current);
    if let Some(init) = wanted
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|s| s.init_containers.as_mut())
        .and_then(|i| i.first_mut())
        && kept.is_some()
    {
        init.image = kept;
    }
    false
}

#[cfg(test)]
mod tests {
    use etcd_crds::MemberStatus;

    use super::*;

    fn status(ready: &[bool]) -> EtcdClusterStatus {
        EtcdClusterStatus {
            members: ready
                .iter()
                .enumerate()
                .map(|(i, ready)| MemberStatus {
                    name: format!("c-{i}"),
                    id: Some(format!("{:x}", i + 1)),
                    client_url: Some(format!("https://c-{i}:2379")),
                    ready: *ready,
                    role: Some(MemberRole::Voter),
                    ..MemberStatus::default()
                })
                .collect(),
            ..EtcdClusterStatus::default()
        }
    }

    fn sts(partition: i32, updated: i32, ready: i32) -> Option<Current> {
        Some(Current { replicas: 3, partition, updated: Some(updated), ready: Some(ready) })
    }

    #[test]
    fn a_changed_template_holds_every_pod_then_rolls_one_at_a_time_highest_first() {
        let all = status(&[true, true, true]);
        assert_eq!(roll("c", sts(0, 3, 3), true, &all).partition, 3);
        // Held at 3 (nothing updated yet), all healthy: c-2 goes.
        assert_eq!(roll("c", sts(3, 0, 3), false, &all).partition, 2);
        // c-2 restarting on the new template (not ready): hold.
        assert_eq!(roll("c", sts(2, 1, 2), false, &status(&[true, true, false])).partition, 2);
        // c-2 back on the new template: c-1, then c-0, then done.
        assert_eq!(roll("c", sts(2, 1, 3), false, &all).partition, 1);
        assert_eq!(roll("c", sts(1, 2, 3), false, &all).partition, 0);
        assert_eq!(roll("c", sts(0, 3, 3), false, &all).partition, 0);
    }

    /// The defect this rule fixes: a template change (a CA rollover's trust bundle, an option)
    /// with one member down must restart nobody, where the StatefulSet controller alone would
    /// delete the highest pod at once.
    #[test]
    fn a_member_down_holds_the_roll_before_it_starts_and_wherever_it_is() {
        let one_down = status(&[true, false, true]);
        assert_eq!(roll("c", sts(0, 3, 2), true, &one_down).partition, 3);
        assert_eq!(roll("c", sts(3, 0, 2), false, &one_down).partition, 3);
        assert_eq!(roll("c", sts(2, 1, 2), false, &one_down).partition, 2);
        // A pod the partition let go that is not on the new template yet (the StatefulSet has
        // not recreated it): hold.
        assert_eq!(roll("c", sts(2, 0, 3), false, &status(&[true, true, true])).partition, 2);
        // The StatefulSet's status lags its spec: hold.
        let lagging = Some(Current { replicas: 3, partition: 2, updated: None, ready: None });
        assert_eq!(roll("c", lagging, false, &status(&[true, true, true])).partition, 2);
        // A learner or a missing member is not healthy either.
        let mut learner = status(&[true, true, true]);
        learner.members[0].role = Some(MemberRole::Learner);
        assert_eq!(roll("c", sts(3, 0, 3), false, &learner).partition, 3);
        assert_eq!(roll("c", sts(3, 0, 3), false, &status(&[true, true])).partition, 3);
    }

    #[test]
    fn nothing_to_hold_without_pods() {
        assert_eq!(roll("c", None, true, &EtcdClusterStatus::default()).partition, 0);
        let stopped = Some(Current { replicas: 0, partition: 3, updated: Some(0), ready: Some(0) });
        assert_eq!(roll("c", stopped, true, &EtcdClusterStatus::default()).partition, 0);
    }

    #[test]
    fn the_leader_hands_over_before_its_pod_restarts() {
        let mut s = status(&[true, true, true]);
        s.members[1].leader = true;
        // c-2 moved; c-1 is next and leads: the partition holds, leadership goes to c-2.
        let next = roll("c", sts(2, 1, 3), false, &s);
        assert_eq!(next.partition, 2);
        let hand_over = next.hand_over.unwrap();
        assert_eq!(
            (hand_over.to.as_str(), hand_over.leader_url.as_str()),
            ("c-2", "https://c-1:2379")
        );
        assert_eq!(hand_over.to_id, 3);
        // At the start of a roll, a leading c-2 hands over before any pod moves.
        let mut start = status(&[true, true, true]);
        start.members[2].leader = true;
        let first = roll("c", sts(3, 0, 3), false, &start);
        assert_eq!(first.partition, 3, "nothing moves yet");
        assert_eq!(first.hand_over.map(|h| h.to), Some("c-1".to_owned()));
        // Once another member leads, c-1 moves.
        s.members[1].leader = false;
        s.members[2].leader = true;
        assert_eq!(roll("c", sts(2, 1, 3), false, &s), Roll { partition: 1, hand_over: None });
    }

    fn pending_since(second: Option<i64>) -> PersistentVolumeClaim {
        let since = second.and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok());
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data-c-0"},
            "status": {"conditions": [{"type": "FileSystemResizePending", "status": "True",
                "lastTransitionTime": since.map(|t| t.to_string())}]}
        }))
        .unwrap_or_default()
    }

    /// A claim that waits past the grace restarts the members for the spec's size, once: the
    /// value stays what it was until another size needs it.
    #[test]
    fn a_file_system_that_only_grows_on_restart_rolls_the_members_once_per_size() {
        let now = 1_000_000;
        let fresh = [pending_since(Some(now - 10))];
        assert_eq!(
            filesystem_resize(&fresh, "20Gi", None, now),
            None,
            "an online resize may still finish"
        );
        let stuck = [pending_since(Some(now - FILESYSTEM_RESIZE_GRACE_SECONDS))];
        assert_eq!(filesystem_resize(&stuck, "20Gi", None, now).as_deref(), Some("20Gi"));
        assert_eq!(filesystem_resize(&stuck, "20Gi", Some("20Gi"), now).as_deref(), Some("20Gi"));
        // Grown (no condition any more): the template keeps its value, restarting nobody.
        assert_eq!(filesystem_resize(&[], "20Gi", Some("20Gi"), now).as_deref(), Some("20Gi"));
        assert_eq!(filesystem_resize(&[], "40Gi", Some("20Gi"), now).as_deref(), Some("20Gi"));
        assert_eq!(filesystem_resize(&[pending_since(None)], "20Gi", None, now), None);
    }

    fn statefulset(init_image: &str, etcd_image: &str) -> StatefulSet {
        use k8s_openapi::api::core::v1::{Container, PodSpec};
        let mut sts = StatefulSet::default();
        let template = PodTemplateSpec {
            spec: Some(PodSpec {
                init_containers: Some(vec![Container {
                    name: "member-init".into(),
                    image: Some(init_image.into()),
                    ..Container::default()
                }]),
                containers: vec![Container {
                    name: "etcd".into(),
                    image: Some(etcd_image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..PodTemplateSpec::default()
        };
        sts.metadata.annotations = Some([("hash".to_owned(), template_hash(&template))].into());
        sts.spec =
            Some(k8s_openapi::api::apps::v1::StatefulSetSpec { template, ..Default::default() });
        sts
    }

    fn init_image(sts: &StatefulSet) -> Option<String> {
        sts.spec.as_ref()?.template.spec.as_ref()?.init_containers.as_ref()?[0].image.clone()
    }

    #[test]
    fn an_operator_upgrade_alone_changes_no_template() {
        let current = statefulset("operator:1", "etcd:v3.5.21");
        let mut wanted = statefulset("operator:2", "etcd:v3.5.21");
        assert!(!keep_init_image(&mut wanted, Some(&current), "hash"));
        assert_eq!(init_image(&wanted).as_deref(), Some("operator:1"), "the running image stays");
        // With another change, the new member-init image comes along.
        let mut upgraded = statefulset("operator:2", "etcd:v3.6.6");
        assert!(keep_init_image(&mut upgraded, Some(&current), "hash"));
        assert_eq!(init_image(&upgraded).as_deref(), Some("operator:2"));
        // A new StatefulSet is no change to hold.
        assert!(!keep_init_image(&mut statefulset("operator:2", "x"), None, "hash"));
    }
}
