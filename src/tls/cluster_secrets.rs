//! A cluster's PKI in Secrets owned by its EtcdCluster: created when absent, leaves re-issued
//! when due, and the CA rolled over through a trust bundle, one step per reconcile.

use std::collections::BTreeMap;

use etcd_certs::rollover::{self, LeafAction, RolloverStep, StoredLeaf, Trust};
use etcd_certs::secret::{CA_CERT, TLS_CERT, TLS_KEY, TLS_SECRET_TYPE, pem_field, tls_secret_data};
use etcd_certs::{CertKeyPair, ClusterPki, ClusterPkiRequest, Lifetimes, PkiPart};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, PostParams};
use time::OffsetDateTime;

use super::Error;
use super::bundle::{PREVIOUS_CA, annotation};
use super::bundle::{bundle_settled, bundle_stamp};
use super::{is_conflict, kube_err};

/// A cluster's PKI as it stands after [`ensure_cluster_pki`].
#[derive(Clone, Debug)]
pub struct EnsuredPki {
    /// The signing CA and the leaves in the Secrets.
    pub pki: ClusterPki,
    /// Every CA to trust: the signing CA, and during a rollover the previous one.
    pub trust_bundle: String,
    pub outcome: PkiOutcome,
    /// Each Secret's name and the resourceVersion it was read at, when nothing was written and
    /// no CA rollover is under way: the same call would decide the same for as long as the
    /// Secrets stay at these versions and its other inputs stay the same (until a certificate
    /// comes due, months ahead).
    pub read_at: Option<BTreeMap<String, String>>,
}

/// What ensuring a cluster's PKI did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PkiOutcome {
    Unchanged,
    Created,
    /// Leaves re-issued; the reason of the first that was due.
    Rotated(String),
}

/// What a cluster's CA rollover waits on, seen from outside the Secrets.
#[derive(Clone, Debug, Hash)]
pub struct TrustRollout {
    /// A token a person set to ask for a new CA (`etcd_crds::ROTATE_CA_ANNOTATION`); a rollover
    /// starts when it differs from the token the CA Secret says was handled last.
    pub rotate_ca: Option<String>,
    /// Which trust bundle the members were started with: etcd reads its trusted CA files only
    /// at start, so leaves move to a new CA only after every member restarted with the bundle.
    pub members: MembersTrust,
    /// How long a changed bundle takes to reach every other mounted copy (clients' pods).
    pub propagation: time::Duration,
}

/// The trust bundle the running members loaded, by [`bundle_fingerprint`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MembersTrust {
    /// No member pods exist yet.
    NoMembers,
    /// Every member pod was started with the bundle of this fingerprint, and is ready.
    StartedWith(String),
    /// Members are being restarted (or not all ready).
    Restarting,
}

/// A short, stable name for a trust bundle: the pod template carries it, so a changed bundle
/// rolls the members (one at a time, by the StatefulSet's rolling update).
pub fn bundle_fingerprint(bundle: &str) -> String {
    crate::names::fingerprint(bundle.as_bytes())
}

/// Creates a cluster's PKI Secrets when absent and re-issues leaves that are due (or whose names
/// changed), keeping the CA; rolls the CA over when it nears expiry or `rollout` asks. Secrets
/// are owned by the EtcdCluster so they go with it.
pub async fn ensure_cluster_pki(
    client: &Client,
    namespace: &str,
    request: &ClusterPkiRequest,
    owner: &OwnerReference,
    rollout: &TrustRollout,
    now: OffsetDateTime,
) -> Result<EnsuredPki, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut existing = BTreeMap::new();
    for part in PkiPart::ALL {
        let name = part.secret_name(&request.cluster);
        if let Some(secret) =
            api.get_opt(&name).await.map_err(kube_err(format!("get Secret {name}")))?
        {
            existing.insert(part, secret);
        }
    }
    if let Some(why) =
        existing.values().find_map(|s| crate::ownership::foreign("Secret", &s.metadata, &owner.uid))
    {
        return Err(Error::NotOwned(why));
    }
    let ca_name = &PkiPart::Ca.secret_name(&request.cluster);
    let Some(ca_secret) = existing.get(&PkiPart::Ca) else {
        let pki = etcd_certs::issue_cluster_pki(request, now)?;
        for part in PkiPart::ALL {
            let name = part.secret_name(&request.cluster);
            let mut secret =
                cluster_secret(&name, namespace, pki.part(part), &pki.ca.cert_pem, owner, None);
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                // A Secret left from an interrupted earlier attempt: replaced below on the next pass.
                Err(err) if is_conflict(&err) => {
                    let current =
                        api.get(&name).await.map_err(kube_err(format!("get Secret {name}")))?;
                    if let Some(why) =
                        crate::ownership::foreign("Secret", &current.metadata, &owner.uid)
                    {
                        return Err(Error::NotOwned(why));
                    }
                    secret.metadata.resource_version = current.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &secret)
                        .await
                        .map_err(kube_err(format!("replace Secret {name}")))?;
                }
                Err(err) => return Err(kube_err(format!("create Secret {name}"))(err)),
            }
        }
        let trust_bundle = pki.ca.cert_pem.clone();
        return Ok(EnsuredPki { pki, trust_bundle, outcome: PkiOutcome::Created, read_at: None });
    };
    let lifetimes = Lifetimes::default();
    let trust = Trust {
        current: CertKeyPair {
            cert_pem: pem_field(ca_secret, TLS_CERT)?,
            key_pem: pem_field(ca_secret, TLS_KEY)?,
        },
        previous_ca_pem: pem_field(ca_secret, PREVIOUS_CA).ok(),
    };
    let stored: BTreeMap<PkiPart, StoredLeaf> = PkiPart::LEAVES
        .into_iter()
        .filter_map(|part| {
            let secret = existing.get(&part)?;
            let pair = CertKeyPair {
                cert_pem: pem_field(secret, TLS_CERT).ok()?,
                key_pem: pem_field(secret, TLS_KEY).ok()?,
            };
            Some((part, StoredLeaf { pair, bundle: pem_field(secret, CA_CERT).ok()? }))
        })
        .collect();
    let members_trust = match &rollout.members {
        MembersTrust::NoMembers => true,
        MembersTrust::StartedWith(fingerprint) => {
            *fingerprint == bundle_fingerprint(&trust.bundle())
        }
        MembersTrust::Restarting => false,
    };
    let distributed = stored.len() == PkiPart::LEAVES.len()
        && stored.values().all(|leaf| leaf.bundle == trust.bundle())
        && members_trust
        && bundle_settled(ca_secret, now, rollout.propagation);
    let handled = annotation(ca_secret, etcd_crds::ROTATE_CA_ANNOTATION);
    let requested = rollout.rotate_ca.as_deref().filter(|token| handled != Some(*token));
    let leaf_pems: Vec<&str> = stored.values().map(|leaf| leaf.pair.cert_pem.as_str()).collect();
    let step = rollover::next_step(
        &trust,
        &leaf_pems,
        distributed,
        requested.is_some(),
        ca_name,
        now,
        &lifetimes,
    )?;
    let mut outcome = PkiOutcome::Unchanged;
    let trust = match &step {
        RolloverStep::IntroduceCa(_) | RolloverStep::RetirePreviousCa => {
            let trust = rollover::apply(trust, &step);
            let handled = requested.or(handled);
            let secret = ca_secret_with(ca_name, namespace, &trust, owner, ca_secret, handled, now);
            api.replace(ca_name, &PostParams::default(), &secret)
                .await
                .map_err(kube_err(format!("replace Secret {ca_name}")))?;
            let what = if requested.is_some() {
                "a new CA, as requested, is trusted beside the old one"
            } else if matches!(step, RolloverStep::IntroduceCa(_)) {
                "a new CA is trusted beside the old one"
            } else {
                "the previous CA is no longer trusted"
            };
            tracing::info!(secret = %ca_name, "CA rollover: {what}");
            outcome = PkiOutcome::Rotated(format!("{ca_name}: {what}"));
            trust
        }
        _ => trust,
    };
    let bundle = trust.bundle();
    // Leaves move to a new CA only once every consumer trusts it (the bundle has settled).
    let signer_check = matches!(step, RolloverStep::ReissueLeaves | RolloverStep::Steady)
        .then_some(trust.current.cert_pem.as_str());
    let fresh =
        etcd_certs::reissue_cluster_leaves(request, trust.current.clone(), now, &lifetimes)?;
    let mut pki = fresh.clone();
    let actions = rollover::leaf_actions(request, &stored, &bundle, signer_check, now, &lifetimes);
    for (part, action) in actions {
        let name = part.secret_name(&request.cluster);
        let (pair, why) = match (action, stored.get(&part)) {
            (LeafAction::Keep, Some(leaf)) => {
                pki.set_part(part, leaf.pair.clone());
                continue;
            }
            (LeafAction::Rebundle, Some(leaf)) => {
                pki.set_part(part, leaf.pair.clone());
                (leaf.pair.clone(), "the trusted CA bundle changed".to_owned())
            }
            (LeafAction::Reissue(why), _) => (fresh.part(part).clone(), why),
            (LeafAction::Keep | LeafAction::Rebundle, None) => {
                (fresh.part(part).clone(), "missing".to_owned())
            }
        };
        let current = existing.get(&part);
        tracing::info!(secret = %name, reason = %why, "updating a cluster certificate Secret");
        let secret = cluster_secret(
            &name,
            namespace,
            &pair,
            &bundle,
            owner,
            current.and_then(|s| s.metadata.resource_version.clone()),
        );
        if current.is_some() {
            api.replace(&name, &PostParams::default(), &secret)
                .await
                .map_err(kube_err(format!("replace Secret {name}")))?;
        } else {
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(kube_err(format!("create Secret {name}")))?;
        }
        if outcome == PkiOutcome::Unchanged {
            outcome = PkiOutcome::Rotated(format!("{name}: {why}"));
        }
    }
    // Leaves moved to the new CA mid-rollover: the old CA stays trusted until the new leaves
    // have reached every pod too, so the stamp restarts the wait.
    if trust.previous_ca_pem.is_some()
        && step == RolloverStep::ReissueLeaves
        && outcome != PkiOutcome::Unchanged
    {
        let handled = annotation(ca_secret, etcd_crds::ROTATE_CA_ANNOTATION);
        let secret = ca_secret_with(ca_name, namespace, &trust, owner, ca_secret, handled, now);
        api.replace(ca_name, &PostParams::default(), &secret)
            .await
            .map_err(kube_err(format!("replace Secret {ca_name}")))?;
    }
    let settled = outcome == PkiOutcome::Unchanged
        && step == RolloverStep::Steady
        && trust.previous_ca_pem.is_none();
    let read_at = settled.then(|| {
        existing
            .values()
            .filter_map(|s| Some((s.metadata.name.clone()?, s.metadata.resource_version.clone()?)))
            .collect()
    });
    pki.ca = trust.current;
    Ok(EnsuredPki { pki, trust_bundle: bundle, outcome, read_at })
}

/// The CA Secret for a trust state: the signing CA as the pair, the previous CA beside it while
/// it is still trusted, when the bundle changed and the last rotation request acted on.
fn ca_secret_with(
    name: &str,
    namespace: &str,
    trust: &Trust,
    owner: &OwnerReference,
    stored: &Secret,
    rotation_handled: Option<&str>,
    now: OffsetDateTime,
) -> Secret {
    let mut secret = cluster_secret(
        name,
        namespace,
        &trust.current,
        &trust.bundle(),
        owner,
        stored.metadata.resource_version.clone(),
    );
    if let (Some(previous), Some(data)) = (&trust.previous_ca_pem, secret.data.as_mut()) {
        data.insert(PREVIOUS_CA.to_owned(), ByteString(previous.clone().into_bytes()));
    }
    let mut annotations = bundle_stamp(now);
    if let Some(token) = rotation_handled {
        annotations.insert(etcd_crds::ROTATE_CA_ANNOTATION.to_owned(), token.to_owned());
    }
    secret.metadata.annotations = Some(annotations);
    secret
}

fn cluster_secret(
    name: &str,
    namespace: &str,
    pair: &CertKeyPair,
    ca_bundle: &str,
    owner: &OwnerReference,
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            owner_references: Some(vec![owner.clone()]),
            labels: Some(
                [crate::names::MANAGED_BY]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(tls_secret_data(pair, ca_bundle)),
        ..Secret::default()
    }
}
