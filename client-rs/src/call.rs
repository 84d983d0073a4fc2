//! How one RPC is sent: one deadline for the whole call, retries on
//! `UNAVAILABLE` only, and the circuit breaker around every attempt.
//!
//! This is the only place that loops or sleeps; every RPC method of
//! [`Client`](crate::Client) goes through [`run`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

use crate::breaker::CircuitBreaker;
use crate::Error;

/// A stream of server messages, each of which may be an error (for example
/// when the connection drops mid-stream).
pub type ResultStream<T> = Pin<Box<dyn Stream<Item = Result<T, Error>> + Send + 'static>>;

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether an RPC may be sent again after `UNAVAILABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and Evaluate and Record (which carry a `request_id`): a repeat
    /// cannot change state twice.
    OnUnavailable,
    /// Mutations without an idempotency key (halt, approve, grants): sent once.
    Never,
}

/// Timing of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallPolicy {
    /// Deadline for the whole call, retries and pauses included.
    pub(crate) timeout: Duration,
    /// Attempts after the first one.
    pub(crate) retries: u32,
    /// Pause before the first retry; doubled for each further one, up to 1 s.
    pub(crate) backoff: Duration,
}

/// Sends `request` through `attempt` until it succeeds, fails with an error
/// that is not retried, the retries are spent, or the deadline passes.
///
/// Every attempt gets a clone of the same request, so an idempotency key set
/// before the call is the same on every attempt. `attempt` also receives the
/// time left, to forward as the gRPC deadline.
pub(crate) async fn run<Req, Resp, F, Fut>(
    policy: CallPolicy,
    breaker: Option<&CircuitBreaker>,
    request: Req,
    mut attempt: F,
) -> Result<Resp, Error>
where
    Req: Clone,
    F: FnMut(Req, Duration) -> Fut,
    Fut: Future<Output = Result<Resp, tonic::Status>>,
{
    let deadline = Instant::now() + policy.timeout;
    let mut retries_left = policy.retries;
    let mut backoff = policy.backoff;
    let mut last_error: Option<Error> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(last_error.unwrap_or(Error::Timeout));
        }
        let permit = match breaker.map(CircuitBreaker::try_acquire).transpose() {
            Ok(permit) => permit,
            // The breaker opened during our own retries: the error that opened
            // it says more than "circuit open".
            Err(open) => return Err(last_error.unwrap_or(open)),
        };
        let result =
            match tokio::time::timeout(remaining, attempt(request.clone(), remaining)).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(status)) => Err(Error::from(status)),
                Err(_elapsed) => Err(Error::Timeout),
            };
        if let Some(permit) = permit {
            permit.record(&result);
        }
        let error = match result {
            Err(error) if error.is_retryable() && retries_left > 0 => error,
            other => return other,
        };
        retries_left -= 1;
        // Give up early rather than sleep into a deadline we cannot meet.
        if deadline.saturating_duration_since(Instant::now()) <= backoff {
            return Err(error);
        }
        last_error = Some(error);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::breaker::{CircuitBreakerConfig, Clock, SystemClock};

    fn policy(retries: u32) -> CallPolicy {
        CallPolicy {
            timeout: Duration::from_secs(5),
            retries,
            backoff: Duration::from_millis(10),
        }
    }

    type Log = Arc<Mutex<Vec<String>>>;
    type Answer = std::future::Ready<Result<u32, tonic::Status>>;

    /// An attempt function that answers from a script and logs what it was sent.
    fn scripted(
        script: Vec<Result<u32, tonic::Status>>,
    ) -> (Log, impl FnMut(String, Duration) -> Answer) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut script = script.into_iter();
        let attempt = move |request: String, _remaining: Duration| {
            log.lock().unwrap().push(request);
            std::future::ready(script.next().expect("script ran out"))
        };
        (seen, attempt)
    }

    fn unavailable() -> Result<u32, tonic::Status> {
        Err(tonic::Status::unavailable("connection refused"))
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_is_retried_with_the_same_request() {
        let (seen, attempt) = scripted(vec![unavailable(), unavailable(), Ok(7)]);
        let answer = run(policy(2), None, "req-1".to_owned(), attempt).await;
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(*seen.lock().unwrap(), vec!["req-1", "req-1", "req-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_after_the_configured_count() {
        let (seen, attempt) = scripted(vec![unavailable(), unavailable(), unavailable()]);
        let err = run(policy(2), None, "r".to_owned(), attempt)
            .await
            .unwrap_err();
        assert!(err.is_unavailable());
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_retries_sends_once() {
        let (seen, attempt) = scripted(vec![unavailable()]);
        let err = run(policy(0), None, "r".to_owned(), attempt)
            .await
            .unwrap_err();
        assert!(err.is_unavailable());
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn other_codes_are_never_retried() {
        for status in [
            tonic::Status::internal("boom"),
            tonic::Status::invalid_argument("bad"),
            tonic::Status::unknown("?"),
            tonic::Status::resource_exhausted("slow down"),
        ] {
            let code = status.code();
            let (seen, attempt) = scripted(vec![Err(status)]);
            let err = run(policy(2), None, "r".to_owned(), attempt)
                .await
                .unwrap_err();
            assert_eq!(err.code(), code);
            assert_eq!(
                seen.lock().unwrap().len(),
                1,
                "{code:?} must not be retried"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_times_out_at_the_deadline() {
        let started = Instant::now();
        let policy = CallPolicy {
            timeout: Duration::from_millis(300),
            ..policy(2)
        };
        let err = run(policy, None, (), |_, _| {
            std::future::pending::<Result<(), _>>()
        })
        .await
        .unwrap_err();
        assert!(err.is_timeout());
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_is_told_the_time_left() {
        let left = Arc::new(Mutex::new(Vec::new()));
        let log = left.clone();
        let policy = CallPolicy {
            timeout: Duration::from_millis(1000),
            retries: 1,
            backoff: Duration::from_millis(100),
        };
        let _ = run(policy, None, (), move |_, remaining| {
            log.lock().unwrap().push(remaining);
            std::future::ready(Err::<(), _>(tonic::Status::unavailable("down")))
        })
        .await;
        assert_eq!(
            *left.lock().unwrap(),
            vec![Duration::from_millis(1000), Duration::from_millis(900)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_is_started_when_the_backoff_would_pass_the_deadline() {
        let policy = CallPolicy {
            timeout: Duration::from_millis(50),
            retries: 2,
            backoff: Duration::from_millis(100),
        };
        let (seen, attempt) = scripted(vec![unavailable()]);
        let err = run(policy, None, "r".to_owned(), attempt)
            .await
            .unwrap_err();
        assert!(err.is_unavailable());
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_fast_without_sending() {
        let breaker = CircuitBreaker::new(
            CircuitBreakerConfig {
                failure_threshold: 1,
                cool_down: Duration::from_secs(60),
            },
            Arc::new(SystemClock) as Arc<dyn Clock>,
        );
        let (_, attempt) = scripted(vec![unavailable()]);
        let first = run(policy(0), Some(&breaker), "r".to_owned(), attempt).await;
        assert!(first.unwrap_err().is_retryable());

        let (seen, attempt) = scripted(vec![]);
        let err = run(policy(2), Some(&breaker), "r".to_owned(), attempt)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CircuitOpen));
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn when_retries_open_the_breaker_the_real_error_is_returned() {
        let breaker = CircuitBreaker::new(
            CircuitBreakerConfig {
                failure_threshold: 2,
                cool_down: Duration::from_secs(60),
            },
            Arc::new(SystemClock) as Arc<dyn Clock>,
        );
        let (seen, attempt) = scripted(vec![unavailable(), unavailable()]);
        let err = run(policy(5), Some(&breaker), "r".to_owned(), attempt)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(!matches!(err, Error::CircuitOpen));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
