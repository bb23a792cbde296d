//! envd's `EntryInfo` in proto3 JSON, from the agent's [`FileStat`].

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use hearth_engine::{Engine, FileKind, FileStat};
use serde_json::{json, Value};

/// Most bytes of the guest's `/etc/passwd` or `/etc/group` read to name owners: the guest
/// writes them, and a name lookup is not worth more.
const MAX_ID_FILE: usize = 1024 * 1024;

/// User and group names by id, as the guest's `/etc/passwd` and `/etc/group` give them:
/// envd reports names, the agent ids.
#[derive(Debug, Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// The names `stats` need; the files are read only when an id other than root's is
    /// among them, and an id the guest does not name (or files it does not have) stays a
    /// number.
    pub async fn of<'a>(
        engine: &Engine,
        sandbox: &str,
        stats: impl IntoIterator<Item = &'a FileStat>,
    ) -> Names {
        let (mut users, mut groups) = (false, false);
        for stat in stats {
            users |= stat.uid != 0;
            groups |= stat.gid != 0;
        }
        let read = |path: &'static str, wanted: bool| async move {
            if !wanted {
                return HashMap::new();
            }
            let mut out = Capped::default();
            match engine.read_file(sandbox, path, &mut out).await {
                Ok(_) => id_names(&String::from_utf8_lossy(&out.bytes)),
                Err(_) => HashMap::new(),
            }
        };
        Names {
            users: read("/etc/passwd", users).await,
            groups: read("/etc/group", groups).await,
        }
    }

    fn user(&self, id: u32) -> String {
        name_of(&self.users, id)
    }

    fn group(&self, id: u32) -> String {
        name_of(&self.groups, id)
    }
}

fn name_of(names: &HashMap<u32, String>, id: u32) -> String {
    match (id, names.get(&id)) {
        (_, Some(name)) => name.clone(),
        (0, None) => "root".to_owned(),
        (id, None) => id.to_string(),
    }
}

/// `name:x:id:...` lines (passwd and group share the first three fields); the first name
/// of an id wins, as with getpwuid.
fn id_names(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let printable = !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control);
        if let (true, Ok(id)) = (printable, id.trim().parse::<u32>()) {
            names.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    names
}

/// A sink that refuses more than [`MAX_ID_FILE`] bytes.
#[derive(Debug, Default)]
struct Capped {
    bytes: Vec<u8>,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() + data.len() > MAX_ID_FILE {
            return Poll::Ready(Err(std::io::Error::other("the file is too large to read")));
        }
        self.bytes.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `stat` of `path` as envd describes it.
pub fn entry_info(path: &str, stat: &FileStat, names: &Names) -> Value {
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
        "owner": names.user(stat.uid),
        "group": names.group(stat.gid),
        "modifiedTime": modified,
        "isSymlink": stat.kind == FileKind::Symlink,
    });
    if let Some(target) = &stat.link_target {
        entry["symlinkTarget"] = json!(target);
    }
    entry
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
        let entry = entry_info("/tmp/x", &stat, &Names::default());
        assert_eq!(entry["type"], "FILE_TYPE_DIRECTORY");
        assert_eq!(entry["size"], "4096");
        assert_eq!(entry["permissions"], "drwxr-x---");
        assert_eq!(entry["group"], "1000");
        assert_eq!(entry["modifiedTime"], "1970-01-01T00:00:00Z");
        assert_eq!(join("/", "a"), "/a");
    }

    #[test]
    fn test_owner_names_come_from_the_guests_files_and_fall_back_to_ids() {
        let users = id_names(
            "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n\
                              junk\nalias:x:1000:1\nbad\u{7}:x:7:7\n",
        );
        let names = Names {
            users,
            groups: HashMap::new(),
        };
        assert_eq!(names.user(1000), "user");
        assert_eq!(names.user(0), "root");
        assert_eq!(names.user(7), "7");
        assert_eq!(names.group(0), "root");
        assert_eq!(names.group(1000), "1000");
    }
}
