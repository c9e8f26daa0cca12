//! CA rollover without downtime. Peers and clients trust a bundle; the sequence is:
//!
//! 1. the CA nears expiry → a new CA is created and the bundle holds old + new;
//! 2. once everything trusts the bundle → leaves are re-issued by the new CA;
//! 3. once every leaf is from the new CA → the old CA leaves the bundle.
//!
//! At no point does a certificate in use stop being trusted by the other side.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::cluster::{ClusterPkiRequest, PkiPart};
use crate::inspect::{certificates, is_signed_by};
use crate::issue::issue_ca;
use crate::renewal::needs_renewal;
use crate::{CertKeyPair, Error, Lifetimes};

/// Who signs, and who is still trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// The CA that signs new leaves.
    pub current: CertKeyPair,
    /// The CA being retired, still in the bundle until no leaf depends on it.
    pub previous_ca_pem: Option<String>,
}

impl Trust {
    /// PEM of every CA to trust: current first.
    pub fn bundle(&self) -> String {
        let mut bundle = self.current.cert_pem.clone();
        if let Some(previous) = &self.previous_ca_pem {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(previous);
        }
        bundle
    }
}

/// The one next step of a rollover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloverStep {
    /// Nothing to do.
    Steady,
    /// Step 1: trust this new CA next to the current one (it becomes `current`).
    IntroduceCa(Box<CertKeyPair>),
    /// Waiting for every member and client to load the bundle before switching leaves.
    AwaitBundle,
    /// Step 2 (also ordinary leaf renewal): re-issue the leaves from `current`.
    ReissueLeaves,
    /// Step 3: drop the previous CA from the bundle.
    RetirePreviousCa,
}

/// Decides the next step from the trust state, the leaves in use and whether the current bundle
/// has reached every consumer. `ca_name` names a new CA if one is needed; `rotation_requested`
/// (a person asked for a new CA) starts a rollover as an expiring CA would.
pub fn next_step(
    trust: &Trust,
    leaves: &[&str],
    bundle_distributed: bool,
    rotation_requested: bool,
    ca_name: &str,
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<RolloverStep, Error> {
    let current = certificates(&trust.current.cert_pem, "current CA")?.remove(0);
    let mut all_from_current = true;
    let mut any_due = false;
    for leaf in leaves {
        let der = certificates(leaf, "leaf")?.remove(0);
        all_from_current &= is_signed_by(&der, &current);
        any_due |= needs_renewal(leaf, None, None, now, lifetimes)?.is_some();
    }
    if trust.previous_ca_pem.is_some() {
        return Ok(if !bundle_distributed {
            RolloverStep::AwaitBundle
        } else if all_from_current {
            RolloverStep::RetirePreviousCa
        } else {
            RolloverStep::ReissueLeaves
        });
    }
    if rotation_requested
        || needs_renewal(&trust.current.cert_pem, None, None, now, lifetimes)?.is_some()
    {
        return Ok(RolloverStep::IntroduceCa(Box::new(issue_ca(ca_name, now, lifetimes)?)));
    }
    Ok(if any_due || !all_from_current {
        RolloverStep::ReissueLeaves
    } else {
        RolloverStep::Steady
    })
}

/// Applies a step to the trust state (leaf re-issue is the caller's, with `trust.current`).
pub fn apply(trust: Trust, step: &RolloverStep) -> Trust {
    match step {
        RolloverStep::IntroduceCa(new) => {
            Trust { current: (**new).clone(), previous_ca_pem: Some(trust.current.cert_pem) }
        }
        RolloverStep::RetirePreviousCa => Trust { previous_ca_pem: None, ..trust },
        RolloverStep::Steady | RolloverStep::AwaitBundle | RolloverStep::ReissueLeaves => trust,
    }
}

/// A leaf as stored: the pair and the CA bundle kept beside it for its consumers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLeaf {
    pub pair: CertKeyPair,
    pub bundle: String,
}

/// What to do with one leaf's Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafAction {
    Keep,
    /// The certificate stays, but the bundle beside it is not the one to trust now.
    Rebundle,
    /// Issue it again, for the reason given (absent, due, names or signer changed, unreadable).
    Reissue(String),
}

/// For each leaf of a cluster, in [`PkiPart::LEAVES`] order: keep it, rewrite it with `bundle`,
/// or issue it again. `signer` is the CA every leaf must come from, when leaves are moving to
/// it; `None` while a new CA's bundle is still spreading, so no leaf moves early.
pub fn leaf_actions(
    request: &ClusterPkiRequest,
    stored: &BTreeMap<PkiPart, StoredLeaf>,
    bundle: &str,
    signer: Option<&str>,
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Vec<(PkiPart, LeafAction)> {
    let action = |part: PkiPart| {
        let Some(leaf) = stored.get(&part) else {
            return LeafAction::Reissue("missing".to_owned());
        };
        let names = request.names_of(part);
        match needs_renewal(&leaf.pair.cert_pem, Some(&names), signer, now, lifetimes) {
            Ok(Some(reason)) => LeafAction::Reissue(reason.to_string()),
            Err(unreadable) => LeafAction::Reissue(unreadable.to_string()),
            Ok(None) if leaf.bundle != bundle => LeafAction::Rebundle,
            Ok(None) => LeafAction::Keep,
        }
    };
    PkiPart::LEAVES.into_iter().map(|part| (part, action(part))).collect()
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::issue::{LeafSpec, Usage, issue_leaf};

    fn leaf(ca: &CertKeyPair, now: OffsetDateTime) -> CertKeyPair {
        let names = ["m.example".to_owned()];
        let spec = LeafSpec { common_name: "m", subject_alt_names: &names, usage: Usage::Peer };
        issue_leaf(ca, &spec, now, &Lifetimes::default()).unwrap()
    }

    #[test]
    fn full_rollover_walks_through_every_step_in_order() {
        let lifetimes = Lifetimes::default();
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let old_ca = issue_ca("ca-1", start, &lifetimes).unwrap();
        let mut trust = Trust { current: old_ca.clone(), previous_ca_pem: None };
        let mut peer = leaf(&old_ca, start);

        assert_eq!(
            next_step(&trust, &[&peer.cert_pem], true, false, "ca-2", start, &lifetimes).unwrap(),
            RolloverStep::Steady
        );

        // Seven years on the CA is past two thirds of its ten; the leaf was renewed meanwhile.
        let later = start + Duration::days(7 * 365);
        peer = leaf(&trust.current, later);
        let step =
            next_step(&trust, &[&peer.cert_pem], true, false, "ca-2", later, &lifetimes).unwrap();
        assert!(matches!(step, RolloverStep::IntroduceCa(_)), "{step:?}");
        trust = apply(trust, &step);
        assert_eq!(trust.previous_ca_pem.as_deref(), Some(old_ca.cert_pem.as_str()));
        assert!(
            trust.bundle().contains(&old_ca.cert_pem)
                && trust.bundle().contains(&trust.current.cert_pem)
        );

        let step =
            next_step(&trust, &[&peer.cert_pem], false, false, "ca-2", later, &lifetimes).unwrap();
        assert_eq!(step, RolloverStep::AwaitBundle, "leaves wait until the bundle is everywhere");

        let step =
            next_step(&trust, &[&peer.cert_pem], true, false, "ca-2", later, &lifetimes).unwrap();
        assert_eq!(step, RolloverStep::ReissueLeaves);
        peer = leaf(&trust.current, later);

        let step =
            next_step(&trust, &[&peer.cert_pem], true, false, "ca-2", later, &lifetimes).unwrap();
        assert_eq!(step, RolloverStep::RetirePreviousCa);
        trust = apply(trust, &step);
        assert_eq!(trust.bundle(), trust.current.cert_pem);
        assert_eq!(
            next_step(&trust, &[&peer.cert_pem], true, false, "ca-3", later, &lifetimes).unwrap(),
            RolloverStep::Steady
        );
    }

    #[test]
    fn an_expiring_leaf_alone_is_reissued_from_the_same_ca() {
        let lifetimes = Lifetimes::default();
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ca = issue_ca("ca", start, &lifetimes).unwrap();
        let peer = leaf(&ca, start);
        let trust = Trust { current: ca, previous_ca_pem: None };
        let step = next_step(
            &trust,
            &[&peer.cert_pem],
            true,
            false,
            "ca",
            start + Duration::days(300),
            &lifetimes,
        )
        .unwrap();
        assert_eq!(step, RolloverStep::ReissueLeaves);
    }

    #[test]
    fn a_requested_rotation_introduces_a_new_ca_once_and_then_rolls_over_as_usual() {
        let lifetimes = Lifetimes::default();
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ca = issue_ca("ca", start, &lifetimes).unwrap();
        let peer = leaf(&ca, start);
        let trust = Trust { current: ca, previous_ca_pem: None };
        let step =
            next_step(&trust, &[&peer.cert_pem], true, true, "ca", start, &lifetimes).unwrap();
        assert!(matches!(step, RolloverStep::IntroduceCa(_)), "{step:?}");
        // Mid-rollover a request changes nothing: the bundle must settle first.
        let trust = apply(trust, &step);
        let step =
            next_step(&trust, &[&peer.cert_pem], false, true, "ca", start, &lifetimes).unwrap();
        assert_eq!(step, RolloverStep::AwaitBundle);
    }

    #[test]
    fn leaf_actions_reissue_what_is_absent_or_wrong_and_rebundle_what_is_only_stale() {
        let lifetimes = Lifetimes::default();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let request = ClusterPkiRequest {
            cluster: "demo".into(),
            namespace: "ns".into(),
            max_members: 3,
            extra_sans: Vec::new(),
        };
        let old_ca = issue_ca("old", now, &lifetimes).unwrap();
        let pki = crate::issue_cluster_pki(&request, now).unwrap();
        let bundle = pki.ca.cert_pem.clone();
        let mut stored: BTreeMap<PkiPart, StoredLeaf> = [PkiPart::Peer, PkiPart::Server]
            .into_iter()
            .map(|part| (part, StoredLeaf { pair: pki.part(part).clone(), bundle: bundle.clone() }))
            .collect();
        // The operator's client certificate is from the old CA; the user's is absent.
        let from_old = leaf(&old_ca, now);
        stored.insert(PkiPart::Client, StoredLeaf { pair: from_old, bundle: "stale".into() });

        let actions = leaf_actions(&request, &stored, &bundle, None, now, &lifetimes);
        assert_eq!(actions[0], (PkiPart::Peer, LeafAction::Keep));
        assert_eq!(actions[1], (PkiPart::Server, LeafAction::Keep));
        // No signer yet (a new CA's bundle is spreading): a leaf that is otherwise fine stays,
        // but its names are still checked (this one carries a SAN a client certificate must not).
        assert!(
            matches!(&actions[2], (PkiPart::Client, LeafAction::Reissue(why)) if why.contains("names"))
        );
        assert_eq!(actions[3], (PkiPart::UserClient, LeafAction::Reissue("missing".into())));

        let signer = Some(pki.ca.cert_pem.as_str());
        stored.get_mut(&PkiPart::Server).unwrap().bundle = "stale".into();
        let actions = leaf_actions(&request, &stored, &bundle, signer, now, &lifetimes);
        assert_eq!(actions[1], (PkiPart::Server, LeafAction::Rebundle));
        assert_eq!(
            actions[2],
            (PkiPart::Client, LeafAction::Reissue("issued by another CA".into()))
        );
        assert_eq!(actions.len(), 4);
    }
}
