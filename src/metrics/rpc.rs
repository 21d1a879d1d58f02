//! A tower layer timing every CRI request and counting the ones answered with an error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;

use super::METRICS;

#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

/// The method name of a gRPC path (`/runtime.v1.RuntimeService/Version` → `Version`).
/// Names that no CRI method could have are grouped, so a client cannot grow the series.
pub fn method_label(path: &str) -> String {
    let method = path.rsplit('/').next().unwrap_or_default();
    if !method.is_empty() && method.len() <= 64 && method.chars().all(|c| c.is_ascii_alphanumeric())
    {
        method.to_string()
    } else {
        "other".to_string()
    }
}

/// The gRPC code of a response whose status came in the headers (how errors are sent);
/// success is only known from the trailers, so no code here means OK.
pub fn error_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let code = tonic::Code::from(code);
    (code != tonic::Code::Ok).then_some(code)
}

fn record(method: &str, started: Instant, code: Option<tonic::Code>) {
    METRICS
        .rpc_duration
        .get_or_create(&[("method", method.to_string())])
        .observe(started.elapsed().as_secs_f64());
    if let Some(code) = code {
        METRICS
            .rpc_errors
            .get_or_create(&[
                ("method", method.to_string()),
                ("code", format!("{code:?}")),
            ])
            .inc();
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(r) => error_code(r.headers()),
                Err(_) => Some(tonic::Code::Unknown),
            };
            record(&method, started, code);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[test]
    fn method_names_come_from_the_path() {
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/ListContainerStats"),
            "ListContainerStats"
        );
        assert_eq!(method_label("/x/a.b"), "other");
        assert_eq!(method_label("/x/{}"), "other");
        assert_eq!(method_label(""), "other");
    }

    #[tokio::test]
    async fn errors_are_counted_by_code_and_every_call_is_timed() {
        let inner = tower::service_fn(|r: http::Request<()>| async move {
            let status = if r.uri().path().ends_with("Fail") {
                tonic::Status::not_found("no such thing")
            } else {
                tonic::Status::ok("")
            };
            let mut response = http::Response::new(());
            if status.code() != tonic::Code::Ok {
                status.add_header(response.headers_mut()).unwrap();
            }
            Ok::<_, std::convert::Infallible>(response)
        });
        let mut service = RpcMetricsLayer.layer(inner);
        let errors = |method: &str, code: &str| {
            METRICS
                .rpc_errors
                .get(&[("method", method.into()), ("code", code.into())])
                .map_or(0, |c| c.get())
        };
        let calls = |method: &str| {
            METRICS
                .rpc_duration
                .get(&[("method", method.into())])
                .map_or(0, |h| h.count())
        };
        let before_errors = errors("TestMetricsFail", "NotFound");
        let before_calls = calls("TestMetricsOk");
        for path in ["/s/TestMetricsFail", "/s/TestMetricsOk"] {
            let request = http::Request::builder().uri(path).body(()).unwrap();
            service.ready().await.unwrap().call(request).await.unwrap();
        }
        assert_eq!(errors("TestMetricsFail", "NotFound"), before_errors + 1);
        assert_eq!(errors("TestMetricsOk", "Ok"), 0);
        assert_eq!(calls("TestMetricsOk"), before_calls + 1);
    }
}
