//! `PUT /actions`: starting the instance and asking the guest to stop.

use std::borrow::Cow;

use http::Method;
use serde::Serialize;

use super::client::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Action {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionType {
    /// Boots the configured machine.
    InstanceStart,
    /// Presses Ctrl+Alt+Del on the guest's i8042 keyboard controller (x86 only); a guest
    /// started with `reboot=k` then resets, which ends Firecracker.
    SendCtrlAltDel,
    /// Writes the metrics now rather than at the next 60-second tick.
    FlushMetrics,
}

impl Action {
    pub const fn new(action_type: ActionType) -> Self {
        Action { action_type }
    }
}

impl Request for Action {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/actions".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_names_the_action_as_the_swagger_enum_does() {
        for (action, name) in [
            (ActionType::InstanceStart, "InstanceStart"),
            (ActionType::SendCtrlAltDel, "SendCtrlAltDel"),
            (ActionType::FlushMetrics, "FlushMetrics"),
        ] {
            assert_eq!(
                serde_json::to_value(Action::new(action)).unwrap(),
                serde_json::json!({ "action_type": name })
            );
        }
    }
}
