//! A CRI call whose client deadline (`grpc-timeout`) passes is answered DEADLINE_EXCEEDED.
//!
//! tonic enforces the header itself but answers an expired one with CANCELLED ("Timeout
//! expired"), and when that answer reaches the client before its own timer fires, the
//! client reports CANCELLED: critest's "should timeout" specs and the kubelet's logs expect
//! DEADLINE_EXCEEDED. This layer runs inside tonic's and gives up a few milliseconds earlier
//! (half the budget when it is shorter than that, as critest's 1 ms PullImage is), so its
//! answer is the one sent: tonic polls the call before its own timer. Giving up only drops
//! the answer: a lifecycle call's work goes on in its own task (see `lifecycle`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::Error;
use tonic::codegen::http;

/// How much earlier than the deadline this layer gives up: more than the timer granularity
/// (1 ms) and the trip back to the client.
const MARGIN: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

type BoxedResponse<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxedResponse<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let budget = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let answer = self.inner.call(request);
        let Some(budget) = budget else {
            return Box::pin(answer);
        };
        let give_up = match budget.checked_sub(MARGIN) {
            Some(left) if !left.is_zero() => left,
            _ => budget / 2,
        };
        Box::pin(async move {
            match tokio::time::timeout(give_up, answer).await {
                Ok(answered) => answered,
                Err(_) => {
                    let status: tonic::Status = Error::deadline_exceeded(format!(
                        "the client's deadline ({} µs) passed before the answer",
                        budget.as_micros()
                    ))
                    .into();
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The gRPC wire format of a timeout: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_junk_does_not() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999u"),
            Some(Duration::from_micros(99_999))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for junk in ["", "m", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(junk), None, "{junk:?}");
        }
    }

    fn slow_service() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone {
        tower::service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        })
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        if let Some(timeout) = timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", timeout.parse().unwrap());
        }
        request
    }

    #[tokio::test]
    async fn an_expired_client_deadline_is_deadline_exceeded_not_cancelled() {
        let mut service = DeadlineLayer.layer(slow_service());
        let started = std::time::Instant::now();
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request(Some("30m")))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(150));
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(
            status.message().contains("30000 µs"),
            "{}",
            status.message()
        );
        // critest's 1 ms PullImage: answered DEADLINE_EXCEEDED too, not left to tonic.
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request(Some("999000n")))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    }

    #[tokio::test]
    async fn a_call_within_its_deadline_or_without_one_is_answered_as_is() {
        let mut service = DeadlineLayer.layer(slow_service());
        for timeout in [None, Some("5S")] {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(request(timeout))
                .await
                .unwrap();
            assert!(
                tonic::Status::from_header_map(response.headers()).is_none(),
                "{timeout:?}"
            );
        }
    }
}
