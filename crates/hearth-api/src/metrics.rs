//! `GET /metrics` in Prometheus' text format: sandboxes by state (counted from the state
//! database at each scrape, so sandboxes the CLI made count too), latency histograms of the
//! operations users wait on, image pulls, and error answers by status.
//!
//! One middleware ([`track`]) records everything from the matched route, so handlers stay
//! free of bookkeeping.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_engine::SandboxState;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::server::AppState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

type LatencyFamily = Family<OperationLabel, Histogram, fn() -> Histogram>;

/// The server's metrics; shared by every request.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sandboxes: Family<StateLabel, Gauge>,
    latency: LatencyFamily,
    pulls: Family<OutcomeLabel, Counter>,
    errors: Family<StatusLabel, Counter>,
}

fn latency_histogram() -> Histogram {
    // 10 ms to about 80 s: an exec on a warm sandbox up to a cold pull-and-boot under TCG.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let sandboxes = Family::<StateLabel, Gauge>::default();
        registry.register("sandboxes", "Sandboxes by state", sandboxes.clone());
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "api_operation_duration_seconds",
            "Time to answer create (with its boot), start and exec requests",
            latency.clone(),
        );
        let pulls = Family::<OutcomeLabel, Counter>::default();
        registry.register("image_pulls", "Image pulls through the API", pulls.clone());
        let errors = Family::<StatusLabel, Counter>::default();
        registry.register(
            "api_errors",
            "Error answers (4xx and 5xx) by status",
            errors.clone(),
        );
        Metrics {
            registry,
            sandboxes,
            latency,
            pulls,
            errors,
        }
    }
}

impl Metrics {
    /// The exposition text, with the sandbox counts read now.
    fn render(&self, records: &[hearth_engine::SandboxRecord]) -> Result<String, ApiError> {
        // Every state, so a state with no sandboxes reads 0 rather than vanishing.
        for state in SandboxState::ALL {
            let count = records.iter().filter(|r| r.state == state).count();
            self.sandboxes
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot encode the metrics: {e}"),
            )
        })?;
        Ok(text)
    }

    fn record(&self, method: &Method, route: &str, status: StatusCode, started: Instant) {
        if status.is_client_error() || status.is_server_error() {
            self.errors
                .get_or_create(&StatusLabel {
                    status: status.as_u16(),
                })
                .inc();
        }
        if route == "/v1/images/pull" {
            let outcome = if status.is_success() { "ok" } else { "error" };
            self.pulls.get_or_create(&OutcomeLabel { outcome }).inc();
        }
        if let Some(operation) = timed_operation(method, route) {
            self.latency
                .get_or_create(&OperationLabel { operation })
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

/// The operations whose latency is tracked. A streamed exec answers before it ends, so only
/// the whole-answer exec counts.
fn timed_operation(method: &Method, route: &str) -> Option<&'static str> {
    match (method.as_str(), route) {
        ("POST", "/v1/sandboxes") => Some("create"),
        ("POST", "/v1/sandboxes/{sandbox}/start") => Some("start"),
        ("POST", "/v1/sandboxes/{sandbox}/exec") => Some("exec"),
        _ => None,
    }
}

/// Records the answer to every routed request.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    if let Some(route) = route {
        metrics.record(&method, &route, response.status(), started);
    }
    response
}

/// `GET /metrics`.
pub async fn serve(State(app): State<AppState>) -> Result<Response, ApiError> {
    let records = app.engine.list(true)?;
    let text = app.metrics.render(&records)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_answers_land_in_their_series() {
        let metrics = Metrics::default();
        let now = Instant::now();
        let post = Method::POST;
        metrics.record(&post, "/v1/sandboxes", StatusCode::CREATED, now);
        metrics.record(&post, "/v1/sandboxes/{sandbox}/exec", StatusCode::OK, now);
        metrics.record(&post, "/v1/images/pull", StatusCode::NOT_FOUND, now);
        metrics.record(
            &Method::GET,
            "/v1/sandboxes/{sandbox}",
            StatusCode::NOT_FOUND,
            now,
        );
        let text = metrics.render(&[]).unwrap();
        for line in [
            "hearth_sandboxes{state=\"running\"} 0",
            "hearth_api_operation_duration_seconds_count{operation=\"create\"} 1",
            "hearth_api_operation_duration_seconds_count{operation=\"exec\"} 1",
            "hearth_image_pulls_total{outcome=\"error\"} 1",
            "hearth_api_errors_total{status=\"404\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("operation=\"start\"} 1"), "{text}");
    }
}
