//! `PUT /logger`: where Firecracker writes its own log.

use std::borrow::Cow;
use std::path::PathBuf;

use http::Method;
use serde::Serialize;

use super::client::Request;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logger {
    /// Firecracker opens it without `O_APPEND` (it may be a FIFO), so it must be a file of its
    /// own, not shared with anything else Firecracker writes.
    pub log_path: PathBuf,
    pub level: LogLevel,
    pub show_level: bool,
    pub show_log_origin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
}

impl Logger {
    /// Info and up, with levels shown: the lines a failed start is explained with.
    pub fn to_file(log_path: PathBuf) -> Self {
        Logger {
            log_path,
            level: LogLevel::Info,
            show_level: true,
            show_log_origin: false,
        }
    }
}

impl Request for Logger {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/logger".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_uses_the_swagger_field_names() {
        assert_eq!(
            serde_json::to_value(Logger::to_file("/run/vm/firecracker.log".into())).unwrap(),
            serde_json::json!({
                "log_path": "/run/vm/firecracker.log",
                "level": "Info",
                "show_level": true,
                "show_log_origin": false,
            })
        );
    }
}
