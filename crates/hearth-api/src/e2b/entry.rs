//! envd's `EntryInfo` in proto3 JSON, from the agent's [`FileStat`].

use hearth_engine::{FileKind, FileStat};
use serde_json::{json, Value};

/// `stat` of `path` as envd describes it.
pub fn entry_info(path: &str, stat: &FileStat) -> Value {
    let kind = match stat.kind {
        FileKind::Dir => "FILE_TYPE_DIRECTORY",
        FileKind::Symlink => "FILE_TYPE_SYMLINK",
        FileKind::File | FileKind::Other => "FILE_TYPE_FILE",
    };
    let modified = chrono::DateTime::from_timestamp(stat.mtime, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut entry = json!({
        "name": stat.name,
        "type": kind,
        "path": path,
        // proto3 JSON writes int64 as a string.
        "size": stat.size.to_string(),
        "mode": stat.mode,
        "permissions": permissions(stat),
        "owner": owner_name(stat.uid),
        "group": owner_name(stat.gid),
        "modifiedTime": modified,
        "isSymlink": stat.kind == FileKind::Symlink,
    });
    if let Some(target) = &stat.link_target {
        entry["symlinkTarget"] = json!(target);
    }
    entry
}

/// The agent reports ids, not names; root is the one name every image shares.
fn owner_name(id: u32) -> String {
    match id {
        0 => "root".to_owned(),
        id => id.to_string(),
    }
}

/// `ls -l`'s mode string, like `drwxr-xr-x`.
fn permissions(stat: &FileStat) -> String {
    let kind = match stat.kind {
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::File | FileKind::Other => '-',
    };
    let mut text = String::with_capacity(10);
    text.push(kind);
    for shift in [6, 3, 0] {
        let bits = (stat.mode >> shift) & 0o7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

/// `dir` joined with `name`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_entries_carry_envd_names_and_int64_as_string() {
        let stat = FileStat {
            name: "x".into(),
            kind: FileKind::Dir,
            size: 4096,
            mode: 0o750,
            uid: 0,
            gid: 1000,
            mtime: 0,
            link_target: None,
        };
        let entry = entry_info("/tmp/x", &stat);
        assert_eq!(entry["type"], "FILE_TYPE_DIRECTORY");
        assert_eq!(entry["size"], "4096");
        assert_eq!(entry["permissions"], "drwxr-x---");
        assert_eq!(entry["group"], "1000");
        assert_eq!(entry["modifiedTime"], "1970-01-01T00:00:00Z");
        assert_eq!(join("/", "a"), "/a");
    }
}
