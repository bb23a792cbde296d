//! The rules of a sandbox's life: which operation each state allows, and what names are
//! allowed. Pure logic over records, so every client gets the same answers.
//!
//! ```text
//! create ──► created ──start──► starting ──► running ──► exited
//!                                  │                       ▲
//!                                  └──────► failed ────────┘ (start again from either)
//! ```

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

    fn record(state: SandboxState) -> SandboxRecord {
        SandboxRecord {
            id: "0123456789ab".into(),
            name: "web".into(),
            image: "default".into(),
            command: Vec::new(),
            state,
            created_at: 0,
            vcpus: 1,
            mem_size_mib: 512,
            backend: "test".into(),
            supervisor_pid: None,
            exit_code: None,
            error: None,
            auto_remove: false,
            health: None,
        }
    }

    const ALL: [SandboxState; 5] = [
        SandboxState::Created,
        SandboxState::Starting,
        SandboxState::Running,
        SandboxState::Exited,
        SandboxState::Failed,
    ];

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
