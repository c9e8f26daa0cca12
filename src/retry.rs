//! Retrying what can succeed by waiting. A Kubernetes API call the server could not serve now (a
//! 5xx, a 429, a dropped or refused connection) is tried again with exponential backoff; a call
//! the server refused for a reason (403, 404, 409, 422, a malformed request) is final and comes
//! back at once, so that it is reported instead of hidden behind retries.

use std::future::Future;
use std::time::Duration;

const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Whether `err` may go away by itself: the API server unavailable, overloaded or unreachable.
pub fn transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The write lost a race: the object changed since the caller read it (409 Conflict, not
/// AlreadyExists). Sending the same request again fails the same way, so this is not
/// [`transient`]; reading again and deciding again may succeed.
pub fn stale(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409 && status.reason == "Conflict")
}

/// A deletion (or a read) whose object is already gone has what it wanted: 404 is success.
pub fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Runs `attempt` until it succeeds or fails for good (`is_transient` false), pausing 0.25 s,
/// 0.5 s, 1 s, ... up to 30 s between tries; each transient failure is logged with `what`.
pub async fn with_backoff<T, E, F, Fut>(
    what: &str,
    is_transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt().await {
            Err(err) if is_transient(&err) => {
                tracing::warn!(%err, retry_in = ?pause, "{what} failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn status(code: u16) -> kube::Error {
        refusal(code, "Test")
    }

    fn refusal(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("injected", reason).with_code(code)))
    }

    #[test]
    fn a_lost_race_is_stale_and_an_existing_name_is_not() {
        assert!(stale(&refusal(409, "Conflict")));
        assert!(!stale(&refusal(409, "AlreadyExists")));
        assert!(!stale(&refusal(422, "Invalid")));
        assert!(!stale(&refusal(503, "ServiceUnavailable")));
    }

    #[test]
    fn server_trouble_is_transient_and_a_refusal_is_not() {
        for code in [500, 503, 504, 429] {
            assert!(transient(&status(code)), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!transient(&status(code)), "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success_and_a_final_one_is_returned() {
        let calls = AtomicU32::new(0);
        let outcome = with_backoff("get", transient, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..3 => Err(status(503)),
                _ => Ok("done"),
            }
        })
        .await;
        assert_eq!(outcome.unwrap(), "done");
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicU32::new(0);
        let outcome: Result<(), _> = with_backoff("get", transient, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(403))
        })
        .await;
        assert!(outcome.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a refusal is not retried");
    }
}
