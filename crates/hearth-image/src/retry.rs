//! Retrying registry requests that failed for a reason that may pass: exponential backoff with
//! jitter over a time window. A registry restarting for a few seconds, a dropped connection or a
//! 5xx is waited out; a 4xx, a digest or size mismatch or a full disk fails at once.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use oci_client::errors::OciDistributionError;

/// The first wait; each later one doubles, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(250);
const MAX_WAIT: Duration = Duration::from_secs(8);

/// How a run of attempts went, for the error that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub count: u32,
    pub elapsed: Duration,
}

/// Calls `attempt` until it succeeds, fails for good (`transient` false) or the next wait would
/// end past `window` after the first call. The error comes back with how many attempts were made.
pub(crate) async fn retrying<T, E, Fut>(
    window: Duration,
    what: &str,
    transient: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, (E, Attempts)>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let started = Instant::now();
    let mut wait = FIRST_WAIT;
    let mut count = 0;
    loop {
        count += 1;
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let jittered = jitter(wait);
        if !transient(&error) || started.elapsed() + jittered > window {
            let elapsed = started.elapsed();
            return Err((error, Attempts { count, elapsed }));
        }
        tracing::warn!(
            attempt = count,
            retry_in_ms = jittered.as_millis(),
            error = &error as &dyn std::error::Error,
            "{what} failed; retrying"
        );
        tokio::time::sleep(jittered).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
}

/// `wait` scaled by a random factor in [0.5, 1): parallel pulls do not retry in step.
fn jitter(wait: Duration) -> Duration {
    let random = std::hash::RandomState::new().build_hasher().finish();
    let factor = 0.5 + (random % 1000) as f64 / 2000.0;
    wait.mul_f64(factor)
}

/// True for registry failures another attempt may not meet: no connection, a timeout, a reset
/// or cut-off body, a 5xx or a 429.
pub(crate) fn is_transient(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::RequestError(e) => match e.status() {
            Some(status) => status.is_server_error() || status.as_u16() == 429,
            None => {
                e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
            }
        },
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed (transient: {0})")]
    struct Failure(bool);

    #[tokio::test]
    async fn test_transient_failures_are_retried_until_the_window_ends() {
        let calls = Cell::new(0);
        let window = Duration::from_millis(600);
        let result: Result<(), _> = retrying(
            window,
            "test",
            |e: &Failure| e.0,
            || {
                calls.set(calls.get() + 1);
                async { Err(Failure(true)) }
            },
        )
        .await;
        let (_, attempts) = result.unwrap_err();
        // Waits of 0.125-0.25 s then 0.25-0.5 s: two or three retries fit in 0.6 s.
        assert!((2..=4).contains(&attempts.count), "{attempts:?}");
        assert!(attempts.elapsed <= window, "{attempts:?}");
        assert_eq!(calls.get(), attempts.count);
    }

    #[tokio::test]
    async fn test_permanent_failure_is_not_retried() {
        let result: Result<(), _> = retrying(
            Duration::from_secs(10),
            "test",
            |e: &Failure| e.0,
            || async { Err(Failure(false)) },
        )
        .await;
        assert_eq!(result.unwrap_err().1.count, 1);
    }

    #[test]
    fn test_jitter_stays_within_half_to_whole_wait() {
        let wait = Duration::from_secs(2);
        let jittered = jitter(wait);
        assert!(jittered >= wait / 2 && jittered < wait, "{jittered:?}");
    }
}
