//! Status conditions (`metav1.Condition`) as every kind here reports them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets `condition` in `conditions`, keeping `lastTransitionTime` when the status did not change
/// (metav1.Condition semantics: the time says when the status last flipped, not when it was seen).
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

/// A condition observed now for the given generation.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let mut conditions = Vec::new();
        let first = condition("Ready", true, "AllMembersReady", "3/3".into(), Some(1));
        let first_time = first.last_transition_time.clone();
        set_condition(&mut conditions, first);
        std::thread::sleep(Duration::from_millis(2));
        set_condition(
            &mut conditions,
            condition("Ready", true, "AllMembersReady", "3/3".into(), Some(2)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first_time);
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            condition("Ready", false, "MemberDown", "2/3".into(), Some(2)),
        );
        assert_ne!(conditions[0].last_transition_time, first_time);
        assert_eq!(conditions[0].reason, "MemberDown");
    }
}
