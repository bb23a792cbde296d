//! The environment of an exec'd process.

use thiserror::Error;

/// Docker's default `PATH` for Linux containers.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a PTY process gets as `TERM` unless the request sets one.
const DEFAULT_TERM: &str = "xterm";

#[derive(Debug, Error)]
#[error("environment entry `{entry}` is not KEY=VALUE")]
pub struct EnvError {
    entry: String,
}

/// The process environment: defaults, then the request's `KEY=VALUE` entries overriding them in
/// place, then `TERM` for a terminal that has none.
pub fn build(
    hostname: Option<&str>,
    requested: &[String],
    tty: bool,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
    ];
    if let Some(hostname) = hostname {
        env.push(("HOSTNAME".to_owned(), hostname.to_owned()));
    }
    for entry in requested {
        let Some((key, value)) = entry.split_once('=').filter(|(key, _)| !key.is_empty()) else {
            return Err(EnvError {
                entry: entry.clone(),
            });
        };
        set(&mut env, key, value);
    }
    if tty && lookup(&env, "TERM").is_none() {
        set(&mut env, "TERM", DEFAULT_TERM);
    }
    Ok(env)
}

pub fn lookup<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, value)| value.as_str())
}

pub fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_owned(),
        None => env.push((key.to_owned(), value.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(env: &[(String, String)]) -> Vec<String> {
        env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn test_build_defaults_include_hostname() {
        let env = build(Some("box"), &[], false).unwrap();
        assert_eq!(
            pairs(&env),
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/root".into(),
                "HOSTNAME=box".into()
            ]
        );
    }

    #[test]
    fn test_build_request_overrides_defaults_and_adds_new_keys() {
        let env = build(None, &["HOME=/home/u".into(), "A=b=c".into()], false).unwrap();
        assert_eq!(lookup(&env, "HOME"), Some("/home/u"));
        assert_eq!(lookup(&env, "A"), Some("b=c"), "only the first `=` splits");
    }

    #[test]
    fn test_build_tty_defaults_term_unless_given() {
        let env = build(None, &[], true).unwrap();
        assert_eq!(lookup(&env, "TERM"), Some("xterm"));
        let env = build(None, &["TERM=vt100".into()], true).unwrap();
        assert_eq!(lookup(&env, "TERM"), Some("vt100"));
        let env = build(None, &[], false).unwrap();
        assert_eq!(lookup(&env, "TERM"), None);
    }

    #[test]
    fn test_build_rejects_entries_without_key_value() {
        assert!(build(None, &["JUSTKEY".into()], false).is_err());
        assert!(build(None, &["=value".into()], false).is_err());
    }

    #[test]
    fn test_build_allows_empty_value() {
        let env = build(None, &["EMPTY=".into()], false).unwrap();
        assert_eq!(lookup(&env, "EMPTY"), Some(""));
    }
}
