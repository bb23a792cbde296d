//! Filesystem requests against a real directory tree (the same code serves the guest's root).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::connect;
use hearth_agent_proto::{
    ErrorCode, FileKind, FileStat, FsRequest, GuestMessage, HostMessage, RemoteError,
};

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn error_of(replies: &[GuestMessage]) -> RemoteError {
    match replies.last() {
        Some(GuestMessage::Error(e)) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn write_file(target: &str, mode: u32, chunks: &[&[u8]]) -> Vec<GuestMessage> {
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::Fs(FsRequest::Write {
        path: target.to_owned(),
        mode,
    }));
    // A failure before the data (no such directory) is the answer instead of the go-ahead.
    match host.recv() {
        Some(GuestMessage::ReadyForData) => {}
        other => {
            host.finish();
            return other.into_iter().collect();
        }
    }
    for chunk in chunks {
        host.send(&HostMessage::Data(chunk.to_vec()));
    }
    host.send(&HostMessage::DataEnd);
    let replies: Vec<_> = std::iter::from_fn(|| host.recv()).collect();
    host.finish();
    replies
}

fn stat_of(target: &str) -> Result<FileStat, RemoteError> {
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::Fs(FsRequest::Stat {
        path: target.to_owned(),
    }));
    let reply = host.recv();
    host.finish();
    match reply {
        Some(GuestMessage::Stat(stat)) => Ok(stat),
        Some(GuestMessage::Error(e)) => Err(e),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn all_replies(fs: FsRequest) -> Vec<GuestMessage> {
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::Fs(fs));
    let replies: Vec<_> = std::iter::from_fn(|| host.recv()).collect();
    host.finish();
    replies
}

#[test]
fn test_write_then_read_then_stat_round_trip_with_mode() {
    let dir = tempfile::tempdir().unwrap();
    let target = path(&dir.path().join("data.bin"));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        write_file(&target, 0o640, &[b"head-", &big]),
        vec![GuestMessage::Done]
    );
    let on_disk = std::fs::read(&target).unwrap();
    assert_eq!(&on_disk[..5], b"head-");
    assert_eq!(&on_disk[5..], &big[..]);
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "the umask must not narrow the mode");

    let replies = all_replies(FsRequest::Read {
        path: target.clone(),
    });
    let Some(GuestMessage::Stat(stat)) = replies.first() else {
        panic!("read starts with a stat: {:?}", replies.first());
    };
    assert_eq!(stat.size, on_disk.len() as u64);
    assert_eq!(replies.last(), Some(&GuestMessage::Done));
    let read: Vec<u8> = replies
        .iter()
        .filter_map(|m| match m {
            GuestMessage::Data(d) => Some(d.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(read, on_disk);

    let stat = stat_of(&target).unwrap();
    assert_eq!(
        (stat.name.as_str(), stat.kind, stat.mode),
        ("data.bin", FileKind::File, 0o640)
    );
    // No temporary file is left beside the written one.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn test_mkdir_list_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    let replies = all_replies(FsRequest::Mkdir {
        path: path(&nested),
        mode: 0o700,
        parents: true,
    });
    assert_eq!(replies, vec![GuestMessage::Done]);
    assert_eq!(
        std::fs::metadata(&nested).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    // Without parents, an existing directory is an error; with them it is fine (mkdir -p).
    let replies = all_replies(FsRequest::Mkdir {
        path: path(&nested),
        mode: 0o755,
        parents: false,
    });
    assert_eq!(error_of(&replies).code, ErrorCode::AlreadyExists);

    std::fs::write(dir.path().join("a/file"), b"x").unwrap();
    std::os::unix::fs::symlink("b/c", dir.path().join("a/link")).unwrap();
    let replies = all_replies(FsRequest::List {
        path: path(&dir.path().join("a")),
    });
    assert_eq!(replies.last(), Some(&GuestMessage::Done));
    let entries: Vec<FileStat> = replies
        .into_iter()
        .filter_map(|m| match m {
            GuestMessage::Entries(e) => Some(e),
            _ => None,
        })
        .flatten()
        .collect();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.link_target.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("b", FileKind::Dir, None),
            ("file", FileKind::File, None),
            ("link", FileKind::Symlink, Some("b/c")),
        ]
    );

    let replies = all_replies(FsRequest::Remove {
        path: path(&dir.path().join("a")),
        recursive: false,
    });
    assert_eq!(error_of(&replies).code, ErrorCode::DirectoryNotEmpty);
    let replies = all_replies(FsRequest::Remove {
        path: path(&dir.path().join("a")),
        recursive: true,
    });
    assert_eq!(replies, vec![GuestMessage::Done]);
    assert!(!dir.path().join("a").exists());
}

#[test]
fn test_errors_name_the_path_and_carry_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let missing = path(&dir.path().join("missing"));
    let e = stat_of(&missing).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.to_string().contains(&missing), "{e}");

    let replies = all_replies(FsRequest::Read {
        path: path(dir.path()),
    });
    assert_eq!(error_of(&replies).code, ErrorCode::IsADirectory);

    let e = stat_of("relative/path").unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);

    let replies = all_replies(FsRequest::Remove {
        path: "/".to_owned(),
        recursive: true,
    });
    assert_eq!(error_of(&replies).code, ErrorCode::BadRequest);

    // Writing into a directory that does not exist fails before any data is taken.
    let replies = write_file(&path(&dir.path().join("nope/file")), 0o644, &[b"x"]);
    assert_eq!(error_of(&replies).code, ErrorCode::NotFound);
}

#[test]
fn test_write_cut_short_by_the_host_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("keep");
    std::fs::write(&target, b"old").unwrap();
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::Fs(FsRequest::Write {
        path: path(&target),
        mode: 0o644,
    }));
    assert_eq!(host.recv(), Some(GuestMessage::ReadyForData));
    host.send(&HostMessage::Data(b"partial new content".to_vec()));
    host.hang_up();
    // hang_up waits for the handler, so its clean-up has run.
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn test_rename_replaces_the_target_and_names_both_paths_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from"), dir.path().join("to"));
    std::fs::write(&from, b"new").unwrap();
    std::fs::write(&to, b"old").unwrap();
    let replies = all_replies(FsRequest::Rename {
        path: path(&from),
        to: path(&to),
    });
    assert_eq!(replies, vec![GuestMessage::Done]);
    assert_eq!(std::fs::read(&to).unwrap(), b"new");
    assert!(!from.exists());

    let replies = all_replies(FsRequest::Rename {
        path: path(&from),
        to: path(&to),
    });
    let e = error_of(&replies);
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.to_string().contains(&path(&from)), "{e}");

    let replies = all_replies(FsRequest::Rename {
        path: path(&to),
        to: "relative".to_owned(),
    });
    assert_eq!(error_of(&replies).code, ErrorCode::BadRequest);
}
