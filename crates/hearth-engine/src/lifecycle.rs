//! The rules of a sandbox's life: which operation each state allows, and what names are
//! allowed. Pure logic over records, so every client gets the same answers.
//!
//! ```text
//! create ──► created ──start──► starting ──► running ──► exited
//!                                  │                       ▲
//!                                  └──────► failed ────────┘ (start again from either)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::EngineError;
use crate::sandbox::ID_HEX_DIGITS;
use crate::state::{SandboxRecord, SandboxState};

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "deft", "eager", "fond", "glad", "hardy", "keen", "lucid", "merry",
    "noble", "proud", "quick", "rapid", "sage", "tidy", "vivid", "warm", "zesty",
];
const NOUNS: &[&str] = &[
    "otter", "heron", "lynx", "badger", "falcon", "marten", "wren", "bison", "ibis", "koala",
    "lemur", "moose", "newt", "orca", "puffin", "quail", "raven", "stoat", "tapir", "vole",
];

/// Longest name a sandbox may have.
const MAX_NAME_LEN: usize = 64;

/// A docker-like name such as `brave-otter-0a1b`, picked from the id so it is stable for it.
pub(crate) fn generated_name(id: &str) -> String {
    let n = u64::from_str_radix(id, 16).unwrap_or_default();
    let adjective = ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize];
    let noun = NOUNS[((n / ADJECTIVES.len() as u64) % NOUNS.len() as u64) as usize];
    format!("{adjective}-{noun}-{}", &id[..4.min(id.len())])
}

/// Names are letters, digits, `-`, `_` and `.`, starting with a letter or digit: safe in paths,
/// URLs and terminals.
pub(crate) fn check_name(name: &str) -> Result<(), EngineError> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid || name.len() > MAX_NAME_LEN {
        return Err(EngineError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Longest timeout a sandbox may have: longer is a mistake, and would overflow timers.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

pub(crate) fn check_timeout(timeout: Duration) -> Result<(), EngineError> {
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(EngineError::InvalidTimeout(timeout));
    }
    Ok(())
}

/// Most labels a sandbox carries, and their longest key and value: metadata to find sandboxes
/// by, not a store.
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY_LEN: usize = 63;
const MAX_LABEL_VALUE_LEN: usize = 256;

/// Label keys are name-like (plus `/`, for `team/project` prefixes); values are printable text
/// without control characters, so `hearth ls` can show both as they are.
pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), EngineError> {
    if labels.len() > MAX_LABELS {
        return Err(EngineError::InvalidLabel(format!(
            "{} labels; at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (key, value) in labels {
        let key_ok = key.len() <= MAX_LABEL_KEY_LEN
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !key_ok {
            return Err(EngineError::InvalidLabel(format!(
                "key `{}`: use up to {MAX_LABEL_KEY_LEN} letters, digits, `-`, `_`, `.` or `/`, \
                 starting with a letter or digit",
                key.escape_debug()
            )));
        }
        if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
            return Err(EngineError::InvalidLabel(format!(
                "value of `{key}`: at most {MAX_LABEL_VALUE_LEN} bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// `KEY` (the label is set) or `KEY=VALUE` (set to that): how `hearth ls --label` and the
/// API's list pick sandboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    pub key: String,
    pub value: Option<String>,
}

impl std::str::FromStr for LabelSelector {
    type Err = EngineError;

    fn from_str(text: &str) -> Result<Self, EngineError> {
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (text, None),
        };
        if key.is_empty() {
            return Err(EngineError::InvalidLabel(format!(
                "selector `{}`: give KEY or KEY=VALUE",
                text.escape_debug()
            )));
        }
        Ok(LabelSelector {
            key: key.to_owned(),
            value,
        })
    }
}

impl LabelSelector {
    pub fn matches(&self, record: &SandboxRecord) -> bool {
        match (record.labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        }
    }
}

/// `KEY=VALUE`, as `--label` and the API's create take labels.
pub fn parse_label(text: &str) -> Result<(String, String), EngineError> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(EngineError::InvalidLabel(format!(
            "`{}`: give KEY=VALUE",
            text.escape_debug()
        ))),
    }
}

/// Refuses a name that lookups could take for an id (they match a name or an id prefix, case
/// insensitively): twelve hex digits like every id, or hex that begins one of `ids`.
pub(crate) fn check_not_id_like<'a>(
    name: &str,
    mut ids: impl Iterator<Item = &'a str>,
) -> Result<(), EngineError> {
    if !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let lower = name.to_ascii_lowercase();
    if name.len() == ID_HEX_DIGITS || ids.any(|id| id.starts_with(&lower)) {
        return Err(EngineError::NameLooksLikeId(name.to_owned()));
    }
    Ok(())
}

/// exec, files and copies need a running sandbox.
pub(crate) fn check_running(record: &SandboxRecord) -> Result<(), EngineError> {
    if record.state != SandboxState::Running {
        return Err(EngineError::NotRunning {
            name: record.name.clone(),
            id: record.id.clone(),
            state: record.state,
        });
    }
    Ok(())
}

/// `start` boots a sandbox that is not live: created, exited or failed.
pub(crate) fn check_startable(record: &SandboxRecord) -> Result<(), EngineError> {
    if record.state.is_live() {
        return Err(EngineError::AlreadyLive {
            name: record.name.clone(),
            state: record.state,
        });
    }
    Ok(())
}

/// What `remove` must do first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Nothing runs: forget it.
    Forget,
    /// It is live and `force` was given: kill it, then forget it.
    KillFirst,
}

pub(crate) fn removal(record: &SandboxRecord, force: bool) -> Result<Removal, EngineError> {
    match (record.state.is_live(), force) {
        (false, _) => Ok(Removal::Forget),
        (true, true) => Ok(Removal::KillFirst),
        (true, false) => Err(EngineError::StillLive {
            name: record.name.clone(),
            state: record.state,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn test_labels_take_name_like_keys_and_printable_values() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(check_labels(&labels(&[("team/ci", "nightly run #4"), ("a", "")])).is_ok());
        for bad in [
            labels(&[("", "x")]),
            labels(&[("-x", "x")]),
            labels(&[("a b", "x")]),
            labels(&[("k", "line\nbreak")]),
            labels(&[("k", "\u{1b}[31m")]),
            labels(&[(&"k".repeat(64), "x")]),
            labels(&[("k", &"v".repeat(257))]),
        ] {
            let error = check_labels(&bad).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        let many: BTreeMap<String, String> =
            (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_labels(&many).is_err());
    }

    #[test]
    fn test_label_selectors_match_a_key_or_a_key_and_value() {
        let mut labeled = record(SandboxState::Running);
        labeled.labels.insert("team".into(), "ci".into());
        let select = |text: &str| text.parse::<LabelSelector>().unwrap().matches(&labeled);
        assert!(select("team"));
        assert!(select("team=ci"));
        assert!(!select("team=web"));
        assert!(!select("owner"));
        assert!(!select("team="));
        assert!("=ci".parse::<LabelSelector>().is_err());
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_label("novalue").is_err());
    }

    fn record(state: SandboxState) -> SandboxRecord {
        SandboxRecord {
            state,
            ..crate::state::test_record("0123456789ab", "web")
        }
    }

    const ALL: [SandboxState; 5] = SandboxState::ALL;

    #[test]
    fn test_only_a_running_sandbox_takes_execs() {
        for state in ALL {
            let result = check_running(&record(state));
            assert_eq!(result.is_ok(), state == SandboxState::Running, "{state}");
            if let Err(e) = result {
                assert_eq!(e.kind(), ErrorKind::Conflict);
                assert!(e.to_string().contains(&format!("is {state}, not running")));
            }
        }
    }

    #[test]
    fn test_start_refuses_live_sandboxes_only() {
        for state in ALL {
            let result = check_startable(&record(state));
            assert_eq!(result.is_err(), state.is_live(), "{state}");
            if let Err(e) = result {
                assert_eq!(e.kind(), ErrorKind::Conflict);
            }
        }
    }

    #[test]
    fn test_remove_needs_force_for_live_sandboxes() {
        for state in ALL {
            let expected = if state.is_live() {
                Removal::KillFirst
            } else {
                Removal::Forget
            };
            assert_eq!(removal(&record(state), true).unwrap(), expected);
            let unforced = removal(&record(state), false);
            assert_eq!(unforced.is_err(), state.is_live(), "{state}");
        }
        let e = removal(&record(SandboxState::Running), false).unwrap_err();
        assert!(e.to_string().contains("stop it first"), "{e}");
    }

    #[test]
    fn test_generated_names_are_valid_and_stable() {
        let name = generated_name("0123456789ab");
        assert_eq!(name, generated_name("0123456789ab"));
        assert!(check_name(&name).is_ok(), "{name}");
    }

    #[test]
    fn test_names_that_read_as_ids_are_refused() {
        let ids = ["0a1b2c3d4e5f", "ffff00001111"];
        for name in ["123456789abc", "0A1B", "ffff0"] {
            let e = check_not_id_like(name, ids.into_iter()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}");
        }
        for name in ["cafe", "web-1", "0a1b2c3d4e5fz"] {
            assert!(check_not_id_like(name, ids.into_iter()).is_ok(), "{name}");
        }
    }

    #[test]
    fn test_bad_names_are_refused() {
        for name in ["", "-x", "a b", "a/b", "a\u{1b}", &"x".repeat(65)] {
            let e = check_name(name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name:?}");
        }
        assert!(check_name(&"x".repeat(64)).is_ok());
    }
}
