//! `PUT /metrics`: where Firecracker flushes its JSON metrics (one document a line, every 60
//! seconds and on `FlushMetrics`).

use std::borrow::Cow;
use std::path::PathBuf;

use http::Method;
use serde::Serialize;

use super::client::Request;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

impl Request for Metrics {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/metrics".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_uses_the_swagger_field_name() {
        let metrics = Metrics {
            metrics_path: "/run/vm/metrics.json".into(),
        };
        assert_eq!(
            serde_json::to_value(metrics).unwrap(),
            serde_json::json!({"metrics_path": "/run/vm/metrics.json"})
        );
    }
}
