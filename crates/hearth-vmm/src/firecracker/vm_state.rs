//! `PATCH /vm`: pausing and resuming a running microVM.

use std::borrow::Cow;

use http::Method;
use serde::Serialize;

use super::client::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmState {
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    Paused,
    Resumed,
}

impl VmState {
    pub const PAUSED: VmState = VmState {
        state: State::Paused,
    };
    pub const RESUMED: VmState = VmState {
        state: State::Resumed,
    };
}

impl Request for VmState {
    const METHOD: Method = Method::PATCH;

    fn path(&self) -> Cow<'static, str> {
        "/vm".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_uses_the_swagger_enum() {
        assert_eq!(
            serde_json::to_value(VmState::PAUSED).unwrap(),
            serde_json::json!({"state": "Paused"})
        );
        assert_eq!(
            serde_json::to_value(VmState::RESUMED).unwrap(),
            serde_json::json!({"state": "Resumed"})
        );
    }
}
