//! Resolving an image config's `User` (`name`, `uid`, `name:group`, `uid:gid`) against the
//! guest's `/etc/passwd` and `/etc/group`, the way docker does.

use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use thiserror::Error;

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";

#[derive(Debug, Error)]
pub enum UserError {
    #[error("user `{spec}` is empty or malformed; expected name, uid, name:group or uid:gid")]
    Malformed { spec: String },
    #[error("unable to find user `{name}`: no matching entry in {}", path.display())]
    UnknownUser { name: String, path: PathBuf },
    #[error("unable to find group `{name}`: no matching entry in {}", path.display())]
    UnknownGroup { name: String, path: PathBuf },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups: every `/etc/group` entry listing the user by name.
    pub groups: Vec<Gid>,
    /// The user's home from `/etc/passwd`, when the user has an entry.
    pub home: Option<String>,
}

/// One `/etc/passwd` line's fields that matter here.
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// Resolves `spec` in the files at `passwd` and `group`. A numeric uid or gid need not have an
/// entry (docker allows that); a name must.
pub fn resolve(spec: &str, passwd: &Path, group: &Path) -> Result<Credentials, UserError> {
    let malformed = || UserError::Malformed {
        spec: spec.to_owned(),
    };
    let (user, group_spec) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user.is_empty() || group_spec.is_some_and(str::is_empty) {
        return Err(malformed());
    }
    let users = read_passwd(passwd)?;
    let entry =
        match user.parse::<u32>() {
            Ok(uid) => users.into_iter().find(|e| e.uid == uid).map_or(
                PasswdEntry {
                    name: String::new(),
                    uid,
                    gid: 0,
                    home: "/".to_owned(),
                },
                |e| e,
            ),
            Err(_) => users.into_iter().find(|e| e.name == user).ok_or_else(|| {
                UserError::UnknownUser {
                    name: user.to_owned(),
                    path: passwd.to_owned(),
                }
            })?,
        };
    let groups = read_group(group)?;
    let gid = match group_spec {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| UserError::UnknownGroup {
                    name: g.to_owned(),
                    path: group.to_owned(),
                })?,
        },
    };
    let mut supplementary = vec![Gid::from_raw(gid)];
    if !entry.name.is_empty() {
        for (_, id, members) in &groups {
            let id = Gid::from_raw(*id);
            if members.contains(&entry.name) && !supplementary.contains(&id) {
                supplementary.push(id);
            }
        }
    }
    Ok(Credentials {
        uid: Uid::from_raw(entry.uid),
        gid: Gid::from_raw(gid),
        groups: supplementary,
        home: Some(entry.home),
    })
}

/// The records of a colon-separated database that have at least `fields` fields and that
/// `parse` accepts; other lines are skipped. A missing file reads as empty, as in a minimal
/// image.
fn read_records<T>(
    path: &Path,
    fields: usize,
    parse: impl Fn(&[&str]) -> Option<T>,
) -> Result<Vec<T>, UserError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(UserError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok(text
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|record| record.len() >= fields)
        .filter_map(|record| parse(&record))
        .collect())
}

fn read_passwd(path: &Path) -> Result<Vec<PasswdEntry>, UserError> {
    read_records(path, 7, |fields| {
        Some(PasswdEntry {
            name: fields[0].to_owned(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5].to_owned(),
        })
    })
}

/// `(name, gid, members)` for each well-formed `/etc/group` line.
fn read_group(path: &Path) -> Result<Vec<(String, u32, Vec<String>)>, UserError> {
    read_records(path, 4, |fields| {
        let members = fields[3]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        Some((fields[0].to_owned(), fields[2].parse().ok()?, members))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/sh\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        broken line\n";
    const GROUP_TEXT: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nstaff:x:50:\n";

    struct Files {
        _dir: tempfile::TempDir,
        passwd: PathBuf,
        group: PathBuf,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(&passwd, PASSWD_TEXT).unwrap();
        std::fs::write(&group, GROUP_TEXT).unwrap();
        Files {
            _dir: dir,
            passwd,
            group,
        }
    }

    fn resolve_in(spec: &str) -> Result<Credentials, UserError> {
        let f = files();
        resolve(spec, &f.passwd, &f.group)
    }

    #[test]
    fn test_resolve_name_takes_passwd_ids_home_and_groups() {
        let creds = resolve_in("app").unwrap();
        assert_eq!(creds.uid, Uid::from_raw(1000));
        assert_eq!(creds.gid, Gid::from_raw(1000));
        assert_eq!(creds.groups, vec![Gid::from_raw(1000), Gid::from_raw(10)]);
        assert_eq!(creds.home.as_deref(), Some("/home/app"));
    }

    #[test]
    fn test_resolve_name_with_group_name_overrides_primary_group() {
        let creds = resolve_in("app:staff").unwrap();
        assert_eq!(creds.gid, Gid::from_raw(50));
    }

    #[test]
    fn test_resolve_numeric_uid_without_entry_gets_gid_zero() {
        let creds = resolve_in("4242").unwrap();
        assert_eq!(
            (creds.uid, creds.gid),
            (Uid::from_raw(4242), Gid::from_raw(0))
        );
        assert_eq!(creds.groups, vec![Gid::from_raw(0)]);
    }

    #[test]
    fn test_resolve_numeric_uid_and_gid() {
        let creds = resolve_in("1000:4343").unwrap();
        assert_eq!(
            (creds.uid, creds.gid),
            (Uid::from_raw(1000), Gid::from_raw(4343))
        );
        assert_eq!(creds.home.as_deref(), Some("/home/app"));
    }

    #[test]
    fn test_resolve_unknown_name_is_an_error_naming_passwd() {
        let err = resolve_in("nobody-here").unwrap_err();
        assert!(matches!(err, UserError::UnknownUser { .. }));
        assert!(err.to_string().contains("nobody-here"), "{err}");
        assert!(err.to_string().contains("passwd"), "{err}");
    }

    #[test]
    fn test_resolve_unknown_group_is_an_error() {
        let err = resolve_in("app:nogroup").unwrap_err();
        assert!(matches!(err, UserError::UnknownGroup { .. }), "{err}");
    }

    #[test]
    fn test_resolve_malformed_specs_are_refused() {
        for spec in ["", ":", "app:", ":10"] {
            assert!(
                matches!(resolve_in(spec), Err(UserError::Malformed { .. })),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn test_resolve_missing_passwd_allows_numeric_uid_only() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(resolve("0", &missing, &missing).is_ok());
        assert!(matches!(
            resolve("root", &missing, &missing),
            Err(UserError::UnknownUser { .. })
        ));
    }
}
