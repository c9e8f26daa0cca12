//! Leader election against a fake Lease API: a holder whose clock is behind keeps its leadership
//! while it renews, a silent holder loses it after the Lease duration as this replica measures it,
//! and a released Lease is taken at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_operator::controller::leader::{LEASE_NAME, Leadership};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use serde_json::{Value, json};

const NAMESPACE: &str = "etcd-operator-system";

/// The Lease as the API server stores it, and every write this replica sent.
#[derive(Default)]
struct Store {
    lease: Option<Value>,
    resource_version: u64,
    writes: Vec<(Method, Value)>,
    /// Another replica renews before every read, with a wall clock this far behind.
    live_holder_behind_seconds: Option<i64>,
    /// Writes fail with 503, as from an API server this replica cannot reach.
    refuse_writes: bool,
}

fn micro_time(at: Timestamp) -> Value {
    serde_json::to_value(MicroTime(at)).unwrap_or_default()
}

/// Now by a wall clock `offset_seconds` ahead of the true time (negative: behind).
fn clock(offset_seconds: i64) -> Timestamp {
    Timestamp::now() + SignedDuration::from_secs(offset_seconds)
}

fn lease(holder: &str, renewed: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NAMESPACE},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": micro_time(renewed), "renewTime": micro_time(renewed),
                 "leaseTransitions": 3}
    })
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .expect("a response")
}

fn status(code: u16, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": reason, "metadata": {}})
}

impl Store {
    fn stored(&mut self) -> Option<Value> {
        if let (Some(behind), Some(lease)) = (self.live_holder_behind_seconds, self.lease.as_mut())
        {
            lease["spec"]["renewTime"] = micro_time(clock(-behind));
            self.resource_version += 1;
        }
        let rv = self.resource_version.to_string();
        self.lease.as_mut().map(|lease| {
            lease["metadata"]["resourceVersion"] = Value::String(rv);
            lease.clone()
        })
    }

    /// Answers one request the way kube-apiserver does for Leases: GET, create, and updates that
    /// must carry the current resourceVersion.
    fn serve(&mut self, method: Method, body: Value) -> Response<Body> {
        if method == Method::GET {
            return match self.stored() {
                Some(lease) => reply(StatusCode::OK, &lease),
                None => reply(StatusCode::NOT_FOUND, &status(404, "NotFound")),
            };
        }
        self.writes.push((method.clone(), body.clone()));
        if self.refuse_writes {
            return reply(StatusCode::SERVICE_UNAVAILABLE, &status(503, "ServiceUnavailable"));
        }
        if method == Method::PUT {
            let sent = body["metadata"]["resourceVersion"].as_str().unwrap_or_default();
            if sent != self.resource_version.to_string() {
                return reply(StatusCode::CONFLICT, &status(409, "Conflict"));
            }
        }
        self.live_holder_behind_seconds = None;
        self.resource_version += 1;
        self.lease = Some(body);
        let stored = self.stored().unwrap_or_default();
        reply(StatusCode::OK, &stored)
    }
}

fn client(store: Arc<Mutex<Store>>) -> kube::Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let store = store.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            Ok::<_, std::convert::Infallible>(store.serve(parts.method, body))
        }
    });
    kube::Client::new(service, NAMESPACE)
}

fn holder(store: &Mutex<Store>) -> Option<String> {
    let store = store.lock().unwrap_or_else(|p| p.into_inner());
    store.lease.as_ref()?["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_clock_is_behind_keeps_the_lease_while_it_renews() {
    let store = Arc::new(Mutex::new(Store {
        lease: Some(lease("replica-a", clock(-120))),
        live_holder_behind_seconds: Some(120),
        ..Store::default()
    }));
    let acquired = tokio::time::timeout(
        Duration::from_secs(120),
        Leadership::acquire(client(store.clone()), NAMESPACE, "replica-b"),
    )
    .await;
    assert!(acquired.is_err(), "took the Lease from a holder that renews");
    let writes = store.lock().unwrap_or_else(|p| p.into_inner()).writes.clone();
    let first: Vec<_> = writes.iter().take(2).collect();
    assert!(
        writes.is_empty(),
        "wrote the Lease of a live holder {} times: {first:?}",
        writes.len()
    );
    assert_eq!(holder(&store).as_deref(), Some("replica-a"));
}

#[tokio::test(start_paused = true)]
async fn a_silent_holder_loses_the_lease_after_its_duration_even_with_a_clock_ahead() {
    // The holder's last renewal is stamped a minute in the future (its clock is ahead): only how
    // long this replica has seen the same record counts.
    let store = Arc::new(Mutex::new(Store {
        lease: Some(lease("replica-a", clock(60))),
        ..Store::default()
    }));
    let started = tokio::time::Instant::now();
    let leadership = Leadership::acquire(client(store.clone()), NAMESPACE, "replica-b").await;
    let waited = started.elapsed();
    assert!(leadership.is_ok());
    assert!(
        (Duration::from_secs(15)..Duration::from_secs(20)).contains(&waited),
        "took the Lease after {waited:?}"
    );
    assert_eq!(holder(&store).as_deref(), Some("replica-b"));
    let store = store.lock().unwrap_or_else(|p| p.into_inner());
    let taken = &store.lease.as_ref().map(|l| l["spec"].clone()).unwrap_or_default();
    assert_eq!(taken["leaseTransitions"], 4, "{taken}");
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_once_and_a_leader_keeps_renewing() {
    let store = Arc::new(Mutex::new(Store::default()));
    let first = Leadership::acquire(client(store.clone()), NAMESPACE, "replica-a").await;
    let Ok(mut first) = first else { panic!("the first replica never led") };
    assert_eq!(holder(&store).as_deref(), Some("replica-a"));

    // A leader that renews stays leader; the other replica waits.
    let waiting = tokio::spawn(Leadership::acquire(client(store.clone()), NAMESPACE, "replica-b"));
    let lost = tokio::time::timeout(Duration::from_secs(60), first.lost()).await;
    assert!(lost.is_err(), "the renewing leader lost its Lease");
    assert!(!waiting.is_finished(), "the second replica led beside the first");

    let released = tokio::time::Instant::now();
    first.release().await;
    let second = waiting.await;
    assert!(matches!(second, Ok(Ok(_))), "the second replica did not take the released Lease");
    assert!(released.elapsed() < Duration::from_secs(5), "took {:?}", released.elapsed());
    assert_eq!(holder(&store).as_deref(), Some("replica-b"));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_before_others_may_take_over() {
    let store = Arc::new(Mutex::new(Store::default()));
    let Ok(mut leader) = Leadership::acquire(client(store.clone()), NAMESPACE, "replica-a").await
    else {
        panic!("never led")
    };
    let cut = tokio::time::Instant::now();
    store.lock().unwrap_or_else(|p| p.into_inner()).refuse_writes = true;
    leader.lost().await;
    let stepped_down = cut.elapsed();
    assert!(stepped_down < Duration::from_secs(15), "led for {stepped_down:?} without renewing");
}
