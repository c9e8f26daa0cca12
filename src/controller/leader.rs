//! Leader election over a `coordination.k8s.io` Lease: every replica serves the webhooks, only
//! the leader reconciles and rotates certificates.
//!
//! Expiry is judged the way client-go's `leaderelection` package judges it, never by comparing
//! the holder's `renewTime` with this replica's wall clock: a replica takes the Lease only after
//! it has seen the same record, unchanged, for the Lease's duration by its own monotonic clock.
//! Nodes whose clocks disagree by more than the grace would otherwise each believe they lead.
//! Every write carries the resourceVersion it was decided on, so two replicas that decide at once
//! cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Name of the Lease in the operator's namespace.
pub const LEASE_NAME: &str = "etcd-operator-leader";
/// How long a record must stay unchanged before another replica may take the Lease.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps acting without a successful renewal. Shorter than the duration, so
/// that it has stopped before any other replica can decide that the Lease expired (client-go's
/// defaults for kube-controller-manager: 15 s, 10 s, 2 s).
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and the others look.
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// How long a stopping leader waits for its Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election on Lease {namespace}/{LEASE_NAME} failed: {source}")]
    Lease { namespace: String, source: kube::Error },
}

/// What this replica last saw of the Lease, and since when by its own clock.
#[derive(Debug, Clone)]
struct Observed {
    spec: LeaseSpec,
    since: Instant,
}

impl Observed {
    /// The new observation: the old one when nothing in the record changed (a live holder
    /// changes at least `renewTime` on every renewal), else this record, seen `now`.
    fn update(previous: Option<Self>, spec: LeaseSpec, now: Instant) -> Self {
        match previous {
            Some(previous) if previous.spec == spec => previous,
            _ => Self { spec, since: now },
        }
    }

    fn holder(&self) -> Option<&str> {
        self.spec.holder_identity.as_deref().filter(|holder| !holder.is_empty())
    }

    /// Whether `me` may write itself as the holder at `now`: nobody holds the Lease, `me` does,
    /// or the record has not changed for the duration it gives.
    fn free_for(&self, me: &str, now: Instant) -> bool {
        let duration = self.spec.lease_duration_seconds.map_or(LEASE_DURATION, |seconds| {
            Duration::from_secs(seconds.max(0).unsigned_abs().into())
        });
        match self.holder() {
            None => true,
            Some(holder) => holder == me || now.duration_since(self.since) >= duration,
        }
    }
}

/// The record by which `me` holds the Lease from `now`: a renewal keeps the acquisition time and
/// the count of transitions, a take-over starts a new term.
fn claim(current: &LeaseSpec, me: &str, now: Timestamp) -> LeaseSpec {
    let renewal = current.holder_identity.as_deref() == Some(me);
    let seconds = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(seconds),
        acquire_time: if renewal { current.acquire_time.clone() } else { Some(MicroTime(now)) },
        renew_time: Some(MicroTime(now)),
        lease_transitions: if renewal {
            current.lease_transitions
        } else {
            current.lease_transitions.map_or(Some(0), |n| Some(n.saturating_add(1)))
        },
        ..current.clone()
    }
}

/// The record that gives the Lease up: nobody holds it, so any replica takes it at its next look.
fn released(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// One replica's side of the election: the API calls, and what it has seen.
struct Elector {
    api: Api<Lease>,
    me: String,
    observed: Option<Observed>,
}

impl Elector {
    /// One attempt to hold the Lease; true when this replica holds it after the call.
    async fn try_hold(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.to_owned()), ..ObjectMeta::default() },
                spec: Some(claim(&LeaseSpec::default(), &self.me, Timestamp::now())),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.wrote(created, now)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(err),
            };
        };
        let observed =
            Observed::update(self.observed.take(), lease.spec.clone().unwrap_or_default(), now);
        let free = observed.free_for(&self.me, now);
        let spec = claim(&observed.spec, &self.me, Timestamp::now());
        self.observed = Some(observed);
        if !free {
            return Ok(false);
        }
        // The resourceVersion read above comes back with the write: if the Lease changed since,
        // the API server refuses it and this replica looks again.
        lease.spec = Some(spec);
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(written) => Ok(self.wrote(written, now)),
            Err(err) if crate::retry::stale(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn wrote(&mut self, lease: Lease, now: Instant) -> bool {
        self.observed = Some(Observed { spec: lease.spec.unwrap_or_default(), since: now });
        true
    }

    fn holds(&self) -> bool {
        self.observed.as_ref().and_then(Observed::holder) == Some(self.me.as_str())
    }

    /// Gives the Lease up if this replica still holds it.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else { return Ok(()) };
        let current = lease.spec.clone().unwrap_or_default();
        if current.holder_identity.as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released(&current, Timestamp::now()));
        self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await.map(drop)
    }
}

/// This replica's view of the election.
pub struct Leadership {
    state: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    /// Renews the Lease while this replica leads; hands the elector back when told to stop.
    task: JoinHandle<Elector>,
}

impl Leadership {
    /// Joins the election and waits until this replica leads. A refusal that waiting cannot cure
    /// (403: the Role is missing) is returned; an unreachable API server is waited out.
    pub async fn acquire(client: Client, namespace: &str, identity: &str) -> Result<Self, Error> {
        let mut elector = Elector {
            api: Api::namespaced(client, namespace),
            me: identity.to_owned(),
            observed: None,
        };
        loop {
            let started = Instant::now();
            match elector.try_hold().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) if crate::retry::transient(&err) => {
                    tracing::warn!(%err, "cannot read the leader Lease; trying again");
                }
                Err(source) => {
                    return Err(Error::Lease { namespace: namespace.to_owned(), source });
                }
            }
            tokio::time::sleep_until(started + RETRY_PERIOD).await;
        }
        let (sender, state) = watch::channel(true);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep(elector, Instant::now(), sender, stopped));
        Ok(Self { state, stop, task })
    }

    /// Resolves when leadership is lost: another replica holds the Lease, or this one could not
    /// renew it for `RENEW_DEADLINE`. The caller then exits so that no two replicas ever act on
    /// the same cluster: a restarted pod rejoins the election.
    pub async fn lost(&mut self) {
        while *self.state.borrow_and_update() {
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up, so that another replica leads at once instead of after the Lease
    /// expires (a rolling update of the operator would otherwise leave nobody reconciling for
    /// up to its duration). The caller has stopped acting as leader.
    pub async fn release(self) {
        let _ = self.stop.send(());
        let released = tokio::time::timeout(RELEASE_TIMEOUT, async {
            let mut elector = self.task.await.map_err(|err| err.to_string())?;
            elector.release().await.map_err(|err| err.to_string())
        })
        .await;
        match released {
            Ok(Ok(())) => tracing::info!("released the leader Lease"),
            Ok(Err(err)) => tracing::warn!(%err, "cannot release the leader Lease; it expires"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out; it expires"),
        }
    }
}

/// Renews every `RETRY_PERIOD` while leading. Leadership ends when another replica holds the
/// Lease or when no renewal succeeded within `RENEW_DEADLINE` of the start of the last good one.
async fn keep(
    mut elector: Elector,
    mut renewed: Instant,
    state: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) -> Elector {
    loop {
        tokio::select! {
            _ = &mut stop => return elector,
            () = tokio::time::sleep(RETRY_PERIOD) => {}
        }
        let started = Instant::now();
        let deadline = renewed + RENEW_DEADLINE;
        match tokio::time::timeout_at(deadline, elector.try_hold()).await {
            Ok(Ok(true)) => renewed = started,
            Ok(Ok(false)) if !elector.holds() => {
                tracing::warn!(holder = ?elector.observed.as_ref().and_then(Observed::holder), "another replica holds the leader Lease");
                break;
            }
            Ok(Ok(false)) => tracing::warn!("renewing the leader Lease lost a race; trying again"),
            Ok(Err(err)) => tracing::warn!(%err, "cannot renew the leader Lease; trying again"),
            Err(_) => {}
        }
        if Instant::now() >= deadline && renewed < started {
            tracing::warn!(deadline = ?RENEW_DEADLINE, "could not renew the leader Lease in time");
            break;
        }
    }
    let _ = state.send(false);
    // Stay until told to stop, so that `release` gets the elector back either way.
    let _ = stop.await;
    elector
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_second: i64) -> LeaseSpec {
        let at = Timestamp::from_second(renewed_second).unwrap_or(Timestamp::UNIX_EPOCH);
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(at)),
            renew_time: Some(MicroTime(at)),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_record_that_keeps_changing_is_never_expired_whatever_its_times_say() {
        let start = Instant::now();
        // renewTime 10 minutes in the past, as written by a holder whose clock is that far behind.
        let mut observed = Observed::update(None, spec("a", 1_000), start);
        for step in 1..=30u64 {
            let now = start + Duration::from_secs(2 * step);
            let renewed = 1_000 + i64::try_from(2 * step).unwrap_or_default();
            observed = Observed::update(Some(observed), spec("a", renewed), now);
            assert!(!observed.free_for("b", now), "taken at step {step}");
        }
    }

    #[test]
    fn an_unchanged_record_expires_after_its_duration_by_the_observer_clock() {
        let start = Instant::now();
        let observed = Observed::update(None, spec("a", 4_000_000_000), start);
        let later = start + Duration::from_secs(14);
        let observed = Observed::update(Some(observed), spec("a", 4_000_000_000), later);
        assert!(!observed.free_for("b", later));
        assert!(observed.free_for("b", start + Duration::from_secs(15)));
        assert!(observed.free_for("a", start), "the holder itself may always renew");
    }

    #[test]
    fn an_empty_holder_is_free_at_once() {
        let observed =
            Observed::update(None, released(&spec("a", 5), Timestamp::UNIX_EPOCH), Instant::now());
        assert!(observed.free_for("b", Instant::now()));
    }

    #[test]
    fn a_take_over_counts_a_transition_and_a_renewal_does_not() {
        let now = Timestamp::from_second(100).unwrap_or(Timestamp::UNIX_EPOCH);
        let taken = claim(&spec("a", 5), "b", now);
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let renewed = claim(&taken, "b", Timestamp::from_second(102).unwrap_or(now));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(claim(&LeaseSpec::default(), "a", now).lease_transitions, Some(0));
    }
}
