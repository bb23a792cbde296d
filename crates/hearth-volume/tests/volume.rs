//! The server against real files in temporary directories (the tests run as root).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use hearth_agent_proto::volume::{
    Entry, Handle, NodeId, SetTime, VolumeOp, VolumeReply, MAX_NAME_LEN, MAX_VOLUME_IO, ROOT_NODE,
};
use hearth_agent_proto::{encode_frame, read_frame, write_frame, GuestMessage, HostMessage};
use hearth_volume::{serve, ServeError, VolumeError, VolumeServer};

/// A mapped directory `vol` with a sibling `outside` holding a file the guest must never reach.
struct Fixture {
    _tmp: tempfile::TempDir,
    vol: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        let outside = tmp.path().join("outside");
        fs::create_dir(&vol).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"top secret").unwrap();
        Fixture {
            _tmp: tmp,
            vol,
            outside,
        }
    }

    fn server(&self) -> VolumeServer {
        VolumeServer::open(&self.vol, false).unwrap()
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            tree(&self.outside),
            BTreeMap::from([(
                "secret".to_owned(),
                snapshot_of(&self.outside.join("secret"))
            )])
        );
        assert_eq!(
            fs::read(self.outside.join("secret")).unwrap(),
            b"top secret"
        );
    }
}

/// Name -> (mode, size, uid, gid, mtime) of everything below `dir`.
fn tree(dir: &Path) -> BTreeMap<String, (u32, u64, u32, u32, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, snapshot_of(&path));
        }
    }
    out
}

fn snapshot_of(path: &Path) -> (u32, u64, u32, u32, i64, i64) {
    let meta = fs::symlink_metadata(path).unwrap();
    let size = if meta.is_dir() { 0 } else { meta.size() };
    (
        meta.mode(),
        size,
        meta.uid(),
        meta.gid(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

fn ok(server: &mut VolumeServer, op: VolumeOp) -> VolumeReply {
    let shown = op.clone();
    match server.call(op) {
        Some(Ok(reply)) => reply,
        other => panic!("{shown:?} -> {other:?}"),
    }
}

fn err(server: &mut VolumeServer, op: VolumeOp) -> i32 {
    let shown = op.clone();
    match server.call(op) {
        Some(Err(errno)) => errno,
        other => panic!("{shown:?} should fail, got {other:?}"),
    }
}

fn entry(reply: VolumeReply) -> Entry {
    match reply {
        VolumeReply::Entry(entry) => entry,
        other => panic!("expected an entry, got {other:?}"),
    }
}

fn lookup(server: &mut VolumeServer, parent: NodeId, name: &str) -> Entry {
    entry(ok(
        server,
        VolumeOp::Lookup {
            parent,
            name: name.into(),
        },
    ))
}

fn create(server: &mut VolumeServer, parent: NodeId, name: &str, mode: u32) -> (Entry, Handle) {
    match ok(
        server,
        VolumeOp::Create {
            parent,
            name: name.into(),
            mode,
            umask: 0,
            flags: libc::O_RDWR,
        },
    ) {
        VolumeReply::Created { entry, handle } => (entry, handle),
        other => panic!("expected Created, got {other:?}"),
    }
}

fn mkdir(server: &mut VolumeServer, parent: NodeId, name: &str, mode: u32) -> Entry {
    entry(ok(
        server,
        VolumeOp::Mkdir {
            parent,
            name: name.into(),
            mode,
            umask: 0,
        },
    ))
}

fn open(server: &mut VolumeServer, node: NodeId, flags: i32) -> Handle {
    match ok(server, VolumeOp::Open { node, flags }) {
        VolumeReply::Opened(handle) => handle,
        other => panic!("expected Opened, got {other:?}"),
    }
}

fn read(server: &mut VolumeServer, handle: Handle, offset: u64, size: u32) -> Vec<u8> {
    match ok(
        server,
        VolumeOp::Read {
            handle,
            offset,
            size,
        },
    ) {
        VolumeReply::Data(data) => data,
        other => panic!("expected Data, got {other:?}"),
    }
}

fn getattr_err(server: &mut VolumeServer, node: NodeId) -> i32 {
    err(server, VolumeOp::GetAttr { node })
}

fn set_mode(node: NodeId, mode: u32) -> VolumeOp {
    VolumeOp::SetAttr {
        node,
        handle: None,
        mode: Some(mode),
        size: None,
        atime: None,
        mtime: None,
    }
}

fn truncate(node: NodeId, size: u64) -> VolumeOp {
    VolumeOp::SetAttr {
        node,
        handle: None,
        mode: None,
        size: Some(size),
        atime: None,
        mtime: None,
    }
}

#[test]
fn open_refuses_what_is_not_a_directory() {
    let fx = Fixture::new();
    assert!(matches!(
        VolumeServer::open(&fx.outside.join("secret"), false),
        Err(VolumeError::NotADirectory { .. })
    ));
    assert!(matches!(
        VolumeServer::open(&fx.vol.join("missing"), false),
        Err(VolumeError::Resolve { .. })
    ));
}

#[test]
fn create_write_read_stat_round_trip() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let (file, handle) = create(&mut server, ROOT_NODE, "f", 0o640);
    assert_eq!(file.attr.mode & 0o7777, 0o640);
    assert_eq!(
        ok(
            &mut server,
            VolumeOp::Write {
                handle,
                offset: 0,
                data: b"hello world".to_vec(),
            }
        ),
        VolumeReply::Written(11)
    );
    assert_eq!(read(&mut server, handle, 6, 100), b"world");
    assert_eq!(read(&mut server, handle, 100, 100), b"");
    ok(
        &mut server,
        VolumeOp::Fsync {
            handle,
            datasync: true,
        },
    );
    assert_eq!(server.call(VolumeOp::Release { handle }), None);

    let VolumeReply::Attr(attr) = ok(&mut server, VolumeOp::GetAttr { node: file.node }) else {
        panic!("expected Attr");
    };
    assert_eq!(attr.size, 11);
    assert_eq!(attr.ino, fs::metadata(fx.vol.join("f")).unwrap().ino());
    assert_eq!(fs::read(fx.vol.join("f")).unwrap(), b"hello world");

    // A second lookup reuses the node.
    assert_eq!(lookup(&mut server, ROOT_NODE, "f").node, file.node);

    let handle = open(&mut server, file.node, libc::O_RDONLY);
    assert_eq!(read(&mut server, handle, 0, u32::MAX), b"hello world");
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Write {
                handle,
                offset: 0,
                data: b"x".to_vec(),
            }
        ),
        libc::EBADF
    );

    // Appending writes land at the end whatever offset is sent; truncation through a handle.
    let handle = open(&mut server, file.node, libc::O_WRONLY | libc::O_APPEND);
    ok(
        &mut server,
        VolumeOp::Write {
            handle,
            offset: 0,
            data: b"!".to_vec(),
        },
    );
    assert_eq!(fs::read(fx.vol.join("f")).unwrap(), b"hello world!");
    let VolumeReply::Attr(attr) = ok(
        &mut server,
        VolumeOp::SetAttr {
            node: file.node,
            handle: Some(handle),
            mode: None,
            size: Some(5),
            atime: None,
            mtime: Some(SetTime::At {
                secs: 1_000_000,
                nanos: 5,
            }),
        },
    ) else {
        panic!("expected Attr");
    };
    assert_eq!(attr.size, 5);
    assert_eq!(attr.mtime, (1_000_000, 5));
    assert_eq!(fs::read(fx.vol.join("f")).unwrap(), b"hello");

    // Truncation without a handle, and O_TRUNC on open.
    ok(
        &mut server,
        VolumeOp::SetAttr {
            node: file.node,
            handle: None,
            mode: None,
            size: Some(2),
            atime: Some(SetTime::Now),
            mtime: None,
        },
    );
    assert_eq!(fs::read(fx.vol.join("f")).unwrap(), b"he");
    open(&mut server, file.node, libc::O_WRONLY | libc::O_TRUNC);
    assert_eq!(fs::read(fx.vol.join("f")).unwrap(), b"");

    assert!(matches!(ok(&mut server, VolumeOp::StatFs), VolumeReply::StatFs(s) if s.blocks > 0));
}

#[test]
fn hostile_numbers_are_errors() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let (file, handle) = create(&mut server, ROOT_NODE, "f", 0o644);
    let read_err = |server: &mut VolumeServer, offset| {
        err(
            server,
            VolumeOp::Read {
                handle,
                offset,
                size: 10,
            },
        )
    };
    assert_eq!(read_err(&mut server, u64::MAX), libc::EINVAL);
    assert_eq!(read_err(&mut server, i64::MAX as u64 + 1), libc::EINVAL);
    // A read ending past i64::MAX is the kernel's EINVAL, not an overflow in the server.
    assert_eq!(read_err(&mut server, i64::MAX as u64 - 1), libc::EINVAL);
    assert!(
        err(
            &mut server,
            VolumeOp::Write {
                handle,
                offset: u64::MAX,
                data: b"x".to_vec(),
            }
        ) > 0
    );
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Write {
                handle,
                offset: 0,
                data: vec![0; MAX_VOLUME_IO as usize + 1],
            }
        ),
        libc::EINVAL
    );
    let set = |size, mtime| VolumeOp::SetAttr {
        node: file.node,
        handle: None,
        mode: None,
        size,
        atime: None,
        mtime,
    };
    assert_eq!(err(&mut server, set(Some(u64::MAX), None)), libc::EINVAL);
    assert_eq!(
        err(
            &mut server,
            set(
                None,
                Some(SetTime::At {
                    secs: 0,
                    nanos: 2_000_000_000,
                })
            )
        ),
        libc::EINVAL
    );
    for flags in [libc::O_ACCMODE, -1] {
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Open {
                    node: file.node,
                    flags,
                }
            ),
            libc::EINVAL
        );
    }
    // Flags about resolution or creation are dropped, not honoured.
    let handle = open(
        &mut server,
        file.node,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CREAT | libc::O_PATH | libc::O_TMPFILE,
    );
    assert_eq!(read(&mut server, handle, 0, 1), b"");
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Rename {
                parent: ROOT_NODE,
                name: b"f".to_vec(),
                new_parent: ROOT_NODE,
                new_name: b"g".to_vec(),
                flags: libc::RENAME_WHITEOUT,
            }
        ),
        libc::EINVAL
    );
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Rename {
                parent: ROOT_NODE,
                name: b"f".to_vec(),
                new_parent: ROOT_NODE,
                new_name: b"g".to_vec(),
                flags: 0x100,
            }
        ),
        libc::EINVAL
    );
    assert!(fx.vol.join("f").exists());
}

#[test]
fn mkdir_and_readdir_in_batches() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let dir = mkdir(&mut server, ROOT_NODE, "d", 0o755);
    let long = "n".repeat(200);
    for i in 0..3000 {
        fs::write(fx.vol.join("d").join(format!("{long}{i:04}")), b"").unwrap();
    }
    fs::create_dir(fx.vol.join("d/sub")).unwrap();
    let VolumeReply::Opened(handle) = ok(&mut server, VolumeOp::OpenDir { node: dir.node }) else {
        panic!("expected Opened");
    };

    let list = |server: &mut VolumeServer| {
        let mut names = Vec::new();
        let mut offset = 0;
        let mut batches = 0;
        loop {
            let VolumeReply::Entries(batch) = ok(server, VolumeOp::ReadDir { handle, offset })
            else {
                panic!("expected Entries");
            };
            if batch.is_empty() {
                break;
            }
            batches += 1;
            let mut frame = Vec::new();
            encode_frame(
                &HostMessage::VolumeReply {
                    id: 1,
                    result: Ok(VolumeReply::Entries(batch.clone())),
                },
                &mut frame,
            )
            .unwrap();
            assert!(frame.len() <= 80 << 10, "batch of {} bytes", frame.len());
            for entry in batch {
                assert!(entry.offset > offset);
                offset = entry.offset;
                names.push((String::from_utf8(entry.name).unwrap(), entry.kind));
            }
        }
        (names, batches)
    };
    let (names, batches) = list(&mut server);
    assert_eq!(names.len(), 3003);
    assert!(batches > 5, "{batches} batches");
    let dir_kind = libc::S_IFDIR;
    assert!(names.contains(&(".".to_owned(), dir_kind)));
    assert!(names.contains(&("..".to_owned(), dir_kind)));
    assert!(names.contains(&("sub".to_owned(), dir_kind)));
    assert!(names.contains(&(format!("{long}2999"), libc::S_IFREG)));

    // Starting over at 0 re-reads the directory.
    fs::write(fx.vol.join("d/late"), b"").unwrap();
    let (names, _) = list(&mut server);
    assert_eq!(names.len(), 3004);

    // An offset past the end, a file handle and an unknown handle.
    assert_eq!(
        ok(
            &mut server,
            VolumeOp::ReadDir {
                handle,
                offset: u64::MAX,
            }
        ),
        VolumeReply::Entries(Vec::new())
    );
    let (_, file_handle) = create(&mut server, ROOT_NODE, "f", 0o644);
    assert_eq!(
        err(
            &mut server,
            VolumeOp::ReadDir {
                handle: file_handle,
                offset: 0,
            }
        ),
        libc::ENOTDIR
    );

    // A listing read first from the middle still has a snapshot to index.
    let VolumeReply::Opened(fresh) = ok(&mut server, VolumeOp::OpenDir { node: dir.node }) else {
        panic!("expected Opened");
    };
    let VolumeReply::Entries(middle) = ok(
        &mut server,
        VolumeOp::ReadDir {
            handle: fresh,
            offset: 3000,
        },
    ) else {
        panic!("expected Entries");
    };
    assert_eq!(middle.len(), 4);
    assert_eq!(middle[0].offset, 3001);

    // The root's `..` is the root itself, not the host directory's parent.
    let VolumeReply::Opened(root_handle) = ok(&mut server, VolumeOp::OpenDir { node: ROOT_NODE })
    else {
        panic!("expected Opened");
    };
    let VolumeReply::Entries(entries) = ok(
        &mut server,
        VolumeOp::ReadDir {
            handle: root_handle,
            offset: 0,
        },
    ) else {
        panic!("expected Entries");
    };
    let root_ino = fs::metadata(&fx.vol).unwrap().ino();
    let dotdot = entries.iter().find(|e| e.name == b"..").unwrap();
    assert_eq!(dotdot.ino, root_ino);
}

#[test]
fn rename_moves_nodes() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let (a, _) = create(&mut server, ROOT_NODE, "a", 0o644);
    let rename = |name: &str, new_parent, new_name: &str, flags| VolumeOp::Rename {
        parent: ROOT_NODE,
        name: name.into(),
        new_parent,
        new_name: new_name.into(),
        flags,
    };
    ok(&mut server, rename("a", ROOT_NODE, "b", 0));
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Lookup {
                parent: ROOT_NODE,
                name: b"a".to_vec(),
            }
        ),
        libc::ENOENT
    );
    assert_eq!(lookup(&mut server, ROOT_NODE, "b").node, a.node);
    ok(&mut server, VolumeOp::GetAttr { node: a.node });

    // A directory, and a child looked up through its new name.
    let d1 = mkdir(&mut server, ROOT_NODE, "d1", 0o755);
    let (child, _) = create(&mut server, d1.node, "child", 0o644);
    ok(&mut server, rename("d1", ROOT_NODE, "d2", 0));
    assert!(fx.vol.join("d2/child").exists());
    assert_eq!(lookup(&mut server, ROOT_NODE, "d2").node, d1.node);
    assert_eq!(lookup(&mut server, d1.node, "child").node, child.node);
    ok(&mut server, VolumeOp::GetAttr { node: child.node });

    // Into another directory.
    ok(&mut server, rename("b", d1.node, "b", 0));
    assert!(fx.vol.join("d2/b").exists());
    assert_eq!(lookup(&mut server, d1.node, "b").node, a.node);

    // Replacing a target detaches its node.
    let (x, _) = create(&mut server, ROOT_NODE, "x", 0o644);
    let (y, _) = create(&mut server, ROOT_NODE, "y", 0o644);
    assert_eq!(
        err(
            &mut server,
            rename("x", ROOT_NODE, "y", libc::RENAME_NOREPLACE)
        ),
        libc::EEXIST
    );
    ok(&mut server, rename("x", ROOT_NODE, "y", 0));
    assert_eq!(getattr_err(&mut server, y.node), libc::ENOENT);
    assert_eq!(lookup(&mut server, ROOT_NODE, "y").node, x.node);
    server.call(VolumeOp::Forget {
        node: y.node,
        count: 1,
    });
    assert_eq!(lookup(&mut server, ROOT_NODE, "y").node, x.node);

    // Exchange swaps the names.
    let (p, hp) = create(&mut server, ROOT_NODE, "p", 0o644);
    let (q, hq) = create(&mut server, ROOT_NODE, "q", 0o644);
    for (handle, data) in [(hp, b"P"), (hq, b"Q")] {
        ok(
            &mut server,
            VolumeOp::Write {
                handle,
                offset: 0,
                data: data.to_vec(),
            },
        );
    }
    ok(
        &mut server,
        rename("p", ROOT_NODE, "q", libc::RENAME_EXCHANGE),
    );
    assert_eq!(fs::read(fx.vol.join("p")).unwrap(), b"Q");
    assert_eq!(lookup(&mut server, ROOT_NODE, "q").node, p.node);
    assert_eq!(lookup(&mut server, ROOT_NODE, "p").node, q.node);

    // Moving a directory into itself is the kernel's EINVAL and changes nothing.
    let sub = mkdir(&mut server, d1.node, "sub", 0o755);
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Rename {
                parent: ROOT_NODE,
                name: b"d2".to_vec(),
                new_parent: sub.node,
                new_name: b"loop".to_vec(),
                flags: 0,
            }
        ),
        libc::EINVAL
    );
    ok(&mut server, VolumeOp::GetAttr { node: sub.node });
}

#[test]
fn hard_links_are_new_nodes() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let (f, handle) = create(&mut server, ROOT_NODE, "f", 0o644);
    ok(
        &mut server,
        VolumeOp::Write {
            handle,
            offset: 0,
            data: b"data".to_vec(),
        },
    );
    let d = mkdir(&mut server, ROOT_NODE, "d", 0o755);
    let g = entry(ok(
        &mut server,
        VolumeOp::Link {
            node: f.node,
            new_parent: d.node,
            new_name: b"g".to_vec(),
        },
    ));
    assert_ne!(g.node, f.node);
    assert_eq!(g.attr.ino, f.attr.ino);
    assert_eq!(g.attr.nlink, 2);
    assert_eq!(fs::read(fx.vol.join("d/g")).unwrap(), b"data");
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Link {
                node: d.node,
                new_parent: ROOT_NODE,
                new_name: b"e".to_vec(),
            }
        ),
        libc::EPERM
    );
    assert!(!fx.vol.join("e").exists());

    // Renaming one link onto the other is a no-op that keeps both names.
    ok(
        &mut server,
        VolumeOp::Link {
            node: f.node,
            new_parent: ROOT_NODE,
            new_name: b"h".to_vec(),
        },
    );
    ok(
        &mut server,
        VolumeOp::Rename {
            parent: ROOT_NODE,
            name: b"f".to_vec(),
            new_parent: ROOT_NODE,
            new_name: b"h".to_vec(),
            flags: 0,
        },
    );
    assert_eq!(lookup(&mut server, ROOT_NODE, "f").node, f.node);

    // Unlinking one name leaves the other.
    ok(
        &mut server,
        VolumeOp::Unlink {
            parent: ROOT_NODE,
            name: b"f".to_vec(),
        },
    );
    assert_eq!(getattr_err(&mut server, f.node), libc::ENOENT);
    ok(&mut server, VolumeOp::GetAttr { node: g.node });
}

#[test]
fn symlinks_are_stored_but_never_followed() {
    let fx = Fixture::new();
    std::os::unix::fs::symlink("/etc", fx.vol.join("etc")).unwrap();
    std::os::unix::fs::symlink("../outside", fx.vol.join("up")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", fx.vol.join("secret")).unwrap();
    let mut server = fx.server();
    let probe = format!("hearth-volume-probe-{}", std::process::id());

    for link in ["etc", "up"] {
        let node = lookup(&mut server, ROOT_NODE, link);
        assert_eq!(node.attr.mode & libc::S_IFMT, libc::S_IFLNK);
        for name in ["passwd", "secret", &probe] {
            let errno = err(
                &mut server,
                VolumeOp::Lookup {
                    parent: node.node,
                    name: name.into(),
                },
            );
            assert!(errno == libc::ELOOP || errno == libc::ENOTDIR, "{errno}");
        }
        assert!(
            err(
                &mut server,
                VolumeOp::Create {
                    parent: node.node,
                    name: probe.clone().into(),
                    mode: 0o644,
                    umask: 0,
                    flags: libc::O_RDWR,
                }
            ) > 0
        );
        assert!(
            err(
                &mut server,
                VolumeOp::Mkdir {
                    parent: node.node,
                    name: probe.clone().into(),
                    mode: 0o755,
                    umask: 0,
                }
            ) > 0
        );
        assert!(
            err(
                &mut server,
                VolumeOp::Symlink {
                    parent: node.node,
                    name: probe.clone().into(),
                    target: b"x".to_vec(),
                }
            ) > 0
        );
        assert!(
            err(
                &mut server,
                VolumeOp::Unlink {
                    parent: node.node,
                    name: b"secret".to_vec(),
                }
            ) > 0
        );
        assert!(err(&mut server, VolumeOp::OpenDir { node: node.node }) > 0);
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Open {
                    node: node.node,
                    flags: libc::O_RDONLY,
                }
            ),
            libc::ELOOP
        );
        // chmod is ignored on a symlink (it would follow), truncation refused.
        ok(&mut server, set_mode(node.node, 0o777));
        assert_eq!(err(&mut server, truncate(node.node, 0)), libc::EINVAL);
        assert!(
            err(
                &mut server,
                VolumeOp::Link {
                    node: node.node,
                    new_parent: node.node,
                    new_name: b"x".to_vec(),
                }
            ) > 0
        );
    }

    // A link to a file outside: open refuses, times change the link itself.
    let secret = lookup(&mut server, ROOT_NODE, "secret");
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Open {
                node: secret.node,
                flags: libc::O_RDONLY | libc::O_TRUNC,
            }
        ),
        libc::ELOOP
    );
    ok(
        &mut server,
        VolumeOp::SetAttr {
            node: secret.node,
            handle: None,
            mode: None,
            size: None,
            atime: Some(SetTime::At { secs: 7, nanos: 0 }),
            mtime: Some(SetTime::At { secs: 7, nanos: 0 }),
        },
    );
    assert_eq!(
        fs::symlink_metadata(fx.vol.join("secret")).unwrap().mtime(),
        7
    );
    // A hard link of the symlink is a second symlink, not a link to the target.
    let hard = entry(ok(
        &mut server,
        VolumeOp::Link {
            node: secret.node,
            new_parent: ROOT_NODE,
            new_name: b"secret2".to_vec(),
        },
    ));
    assert_eq!(hard.attr.mode & libc::S_IFMT, libc::S_IFLNK);

    // Guest-made symlinks are stored as given and read back, never resolved.
    let made = entry(ok(
        &mut server,
        VolumeOp::Symlink {
            parent: ROOT_NODE,
            name: b"passwd".to_vec(),
            target: b"/etc/passwd".to_vec(),
        },
    ));
    assert_eq!(
        fs::read_link(fx.vol.join("passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        ok(&mut server, VolumeOp::ReadLink { node: made.node }),
        VolumeReply::Data(b"/etc/passwd".to_vec())
    );
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Open {
                node: made.node,
                flags: libc::O_WRONLY,
            }
        ),
        libc::ELOOP
    );
    let symlink = |target: Vec<u8>| VolumeOp::Symlink {
        parent: ROOT_NODE,
        name: b"bad".to_vec(),
        target,
    };
    assert_eq!(
        err(&mut server, symlink(vec![b'a'; 4096])),
        libc::ENAMETOOLONG
    );
    assert_eq!(err(&mut server, symlink(b"a\0b".to_vec())), libc::EINVAL);
    assert_eq!(err(&mut server, symlink(Vec::new())), libc::ENOENT);
    ok(&mut server, symlink(vec![b'a'; 4095]));
    assert_eq!(
        err(&mut server, VolumeOp::ReadLink { node: ROOT_NODE }),
        libc::EINVAL
    );

    fx.assert_outside_untouched();
    assert!(!Path::new("/etc").join(&probe).exists());
}

#[test]
fn bad_names_are_refused() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let long = vec![b'x'; MAX_NAME_LEN + 1];
    let cases: [(&[u8], i32); 6] = [
        (b"..", libc::EINVAL),
        (b".", libc::EINVAL),
        (b"a/b", libc::EINVAL),
        (b"", libc::EINVAL),
        (b"a\0b", libc::EINVAL),
        (&long, libc::ENAMETOOLONG),
    ];
    for (name, expected) in cases {
        let name = name.to_vec();
        let ops = [
            VolumeOp::Lookup {
                parent: ROOT_NODE,
                name: name.clone(),
            },
            VolumeOp::Mkdir {
                parent: ROOT_NODE,
                name: name.clone(),
                mode: 0o755,
                umask: 0,
            },
            VolumeOp::Create {
                parent: ROOT_NODE,
                name: name.clone(),
                mode: 0o644,
                umask: 0,
                flags: libc::O_RDWR,
            },
            VolumeOp::Mknod {
                parent: ROOT_NODE,
                name: name.clone(),
                mode: libc::S_IFREG | 0o644,
                umask: 0,
            },
            VolumeOp::Symlink {
                parent: ROOT_NODE,
                name: name.clone(),
                target: b"t".to_vec(),
            },
            VolumeOp::Unlink {
                parent: ROOT_NODE,
                name: name.clone(),
            },
            VolumeOp::Rmdir {
                parent: ROOT_NODE,
                name: name.clone(),
            },
            VolumeOp::Rename {
                parent: ROOT_NODE,
                name: b"missing".to_vec(),
                new_parent: ROOT_NODE,
                new_name: name.clone(),
                flags: 0,
            },
            VolumeOp::Link {
                node: ROOT_NODE,
                new_parent: ROOT_NODE,
                new_name: name.clone(),
            },
        ];
        for op in ops {
            assert_eq!(err(&mut server, op), expected, "{name:?}");
        }
    }
    let longest = "x".repeat(MAX_NAME_LEN);
    create(&mut server, ROOT_NODE, &longest, 0o644);
    assert_eq!(tree(&fx.vol).len(), 1);
    fx.assert_outside_untouched();
}

#[test]
fn set_id_bits_are_stripped() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let mode_of = |name: &str| fs::symlink_metadata(fx.vol.join(name)).unwrap().mode() & 0o7777;

    let (f, _) = create(&mut server, ROOT_NODE, "f", 0o6755);
    assert_eq!(mode_of("f"), 0o755);
    assert_eq!(f.attr.mode & 0o7777, 0o755);
    let d = mkdir(&mut server, ROOT_NODE, "d", 0o6755);
    assert_eq!(mode_of("d"), 0o755);
    assert_eq!(d.attr.mode & 0o7777, 0o755);
    mkdir(&mut server, ROOT_NODE, "sticky", 0o1777);
    assert_eq!(mode_of("sticky"), 0o1777);
    entry(ok(
        &mut server,
        VolumeOp::Mknod {
            parent: ROOT_NODE,
            name: b"n".to_vec(),
            mode: libc::S_IFREG | 0o4755,
            umask: 0o022,
        },
    ));
    assert_eq!(mode_of("n"), 0o755);

    // Exact modes, not the server's umask: 0o666 stays 0o666.
    create(&mut server, ROOT_NODE, "g", 0o666);
    assert_eq!(mode_of("g"), 0o666);
    let VolumeReply::Attr(attr) = ok(&mut server, set_mode(f.node, 0o4755)) else {
        panic!("expected Attr");
    };
    assert_eq!(attr.mode & 0o7777, 0o755);
    ok(&mut server, set_mode(f.node, 0o2711));
    assert_eq!(mode_of("f"), 0o711);
    ok(&mut server, set_mode(d.node, 0o2755));
    assert_eq!(mode_of("d"), 0o755);
    // A call that cannot do all it asks does nothing.
    assert_eq!(
        err(
            &mut server,
            VolumeOp::SetAttr {
                node: d.node,
                handle: None,
                mode: Some(0o700),
                size: Some(0),
                atime: None,
                mtime: None,
            }
        ),
        libc::EISDIR
    );
    assert_eq!(mode_of("d"), 0o755);
    // A setgid parent would hand its bit down to new directories; it must not stick.
    fs::set_permissions(fx.vol.join("d"), fs::Permissions::from_mode(0o2777)).unwrap();
    mkdir(&mut server, d.node, "inner", 0o755);
    assert_eq!(mode_of("d/inner"), 0o755);
}

#[test]
fn only_regular_files_can_be_made_by_mknod() {
    let fx = Fixture::new();
    let mut server = fx.server();
    for kind in [
        libc::S_IFCHR,
        libc::S_IFBLK,
        libc::S_IFIFO,
        libc::S_IFSOCK,
        libc::S_IFDIR,
    ] {
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Mknod {
                    parent: ROOT_NODE,
                    name: b"dev".to_vec(),
                    mode: kind | 0o666,
                    umask: 0,
                }
            ),
            libc::EPERM
        );
        assert!(fs::symlink_metadata(fx.vol.join("dev")).is_err());
    }
    let made = entry(ok(
        &mut server,
        VolumeOp::Mknod {
            parent: ROOT_NODE,
            name: b"plain".to_vec(),
            mode: 0o644,
            umask: 0,
        },
    ));
    assert_eq!(made.attr.mode & libc::S_IFMT, libc::S_IFREG);
    let meta = fs::symlink_metadata(fx.vol.join("plain")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 0);
    // Creating over an existing name fails rather than opening what is there.
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Mknod {
                parent: ROOT_NODE,
                name: b"plain".to_vec(),
                mode: 0o644,
                umask: 0,
            }
        ),
        libc::EEXIST
    );
}

#[test]
fn special_files_are_never_opened() {
    let fx = Fixture::new();
    nix::unistd::mkfifo(
        &fx.vol.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(fx.vol.join("sock")).unwrap();
    let mut server = fx.server();
    for name in ["fifo", "sock"] {
        let node = lookup(&mut server, ROOT_NODE, name);
        ok(&mut server, VolumeOp::GetAttr { node: node.node });
        for flags in [
            libc::O_RDONLY,
            libc::O_WRONLY,
            libc::O_RDWR | libc::O_NONBLOCK,
        ] {
            assert_eq!(
                err(
                    &mut server,
                    VolumeOp::Open {
                        node: node.node,
                        flags,
                    }
                ),
                libc::EPERM
            );
        }
        assert_eq!(
            err(&mut server, VolumeOp::OpenDir { node: node.node }),
            libc::ENOTDIR
        );
        assert_eq!(err(&mut server, truncate(node.node, 0)), libc::EINVAL);
        // Creating over it must not open it either.
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Create {
                    parent: ROOT_NODE,
                    name: name.into(),
                    mode: 0o644,
                    umask: 0,
                    flags: libc::O_WRONLY,
                }
            ),
            libc::EEXIST
        );
    }
    let dir = mkdir(&mut server, ROOT_NODE, "d", 0o755);
    assert_eq!(
        err(
            &mut server,
            VolumeOp::Open {
                node: dir.node,
                flags: libc::O_RDONLY,
            }
        ),
        libc::EISDIR
    );
}

#[test]
fn read_only_refuses_every_mutation() {
    let fx = Fixture::new();
    fs::write(fx.vol.join("f"), b"content").unwrap();
    fs::create_dir(fx.vol.join("d")).unwrap();
    fs::write(fx.vol.join("d/inner"), b"x").unwrap();
    std::os::unix::fs::symlink("f", fx.vol.join("l")).unwrap();
    let before = tree(&fx.vol);
    let mut server = VolumeServer::open(&fx.vol, true).unwrap();
    let f = lookup(&mut server, ROOT_NODE, "f");
    let d = lookup(&mut server, ROOT_NODE, "d");
    let handle = open(&mut server, f.node, libc::O_RDONLY);
    assert_eq!(read(&mut server, handle, 0, 100), b"content");

    let name = || b"new".to_vec();
    let ops = [
        VolumeOp::Mkdir {
            parent: ROOT_NODE,
            name: name(),
            mode: 0o755,
            umask: 0,
        },
        VolumeOp::Mknod {
            parent: ROOT_NODE,
            name: name(),
            mode: libc::S_IFCHR | 0o666,
            umask: 0,
        },
        VolumeOp::Unlink {
            parent: ROOT_NODE,
            name: b"f".to_vec(),
        },
        VolumeOp::Rmdir {
            parent: d.node,
            name: b"inner".to_vec(),
        },
        VolumeOp::Symlink {
            parent: ROOT_NODE,
            name: name(),
            target: b"/".to_vec(),
        },
        VolumeOp::Rename {
            parent: ROOT_NODE,
            name: b"f".to_vec(),
            new_parent: d.node,
            new_name: name(),
            flags: 0,
        },
        VolumeOp::Link {
            node: f.node,
            new_parent: ROOT_NODE,
            new_name: name(),
        },
        VolumeOp::Create {
            parent: ROOT_NODE,
            name: name(),
            mode: 0o644,
            umask: 0,
            flags: libc::O_RDONLY,
        },
        VolumeOp::Write {
            handle,
            offset: 0,
            data: b"x".to_vec(),
        },
        set_mode(f.node, 0o777),
        VolumeOp::SetAttr {
            node: f.node,
            handle: Some(handle),
            mode: None,
            size: Some(0),
            atime: None,
            mtime: None,
        },
        VolumeOp::SetAttr {
            node: d.node,
            handle: None,
            mode: None,
            size: None,
            atime: Some(SetTime::Now),
            mtime: None,
        },
        VolumeOp::Open {
            node: f.node,
            flags: libc::O_WRONLY,
        },
        VolumeOp::Open {
            node: f.node,
            flags: libc::O_RDWR,
        },
        VolumeOp::Open {
            node: f.node,
            flags: libc::O_RDONLY | libc::O_TRUNC,
        },
    ];
    for op in ops {
        assert_eq!(err(&mut server, op), libc::EROFS);
    }
    assert_eq!(tree(&fx.vol), before);
    assert_eq!(fs::read(fx.vol.join("f")).unwrap(), b"content");
}

#[test]
fn new_files_belong_to_the_directory_owner() {
    let fx = Fixture::new();
    nix::unistd::chown(
        &fx.vol,
        Some(nix::unistd::Uid::from_raw(1234)),
        Some(nix::unistd::Gid::from_raw(5678)),
    )
    .unwrap();
    let mut server = fx.server();
    let (f, _) = create(&mut server, ROOT_NODE, "f", 0o644);
    assert_eq!((f.attr.uid, f.attr.gid), (1234, 5678));
    let d = mkdir(&mut server, ROOT_NODE, "d", 0o755);
    assert_eq!((d.attr.uid, d.attr.gid), (1234, 5678));
    create(&mut server, d.node, "inner", 0o644);
    ok(
        &mut server,
        VolumeOp::Symlink {
            parent: ROOT_NODE,
            name: b"l".to_vec(),
            target: b"f".to_vec(),
        },
    );
    ok(
        &mut server,
        VolumeOp::Mknod {
            parent: ROOT_NODE,
            name: b"n".to_vec(),
            mode: 0o644,
            umask: 0,
        },
    );
    for name in ["f", "d", "d/inner", "l", "n"] {
        let meta = fs::symlink_metadata(fx.vol.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "{name}");
    }
}

#[test]
fn forget_removes_nodes() {
    let fx = Fixture::new();
    fs::write(fx.vol.join("f"), b"").unwrap();
    let mut server = fx.server();
    let node = lookup(&mut server, ROOT_NODE, "f").node;
    assert_eq!(lookup(&mut server, ROOT_NODE, "f").node, node);
    assert_eq!(server.call(VolumeOp::Forget { node, count: 1 }), None);
    ok(&mut server, VolumeOp::GetAttr { node });
    server.call(VolumeOp::Forget { node, count: 1 });
    assert_eq!(getattr_err(&mut server, node), libc::ESTALE);
    // A fresh lookup hands out a new node.
    assert_ne!(lookup(&mut server, ROOT_NODE, "f").node, node);

    server.call(VolumeOp::Forget {
        node: ROOT_NODE,
        count: u64::MAX,
    });
    ok(&mut server, VolumeOp::GetAttr { node: ROOT_NODE });
    for unknown in [0, 999, u64::MAX] {
        assert_eq!(getattr_err(&mut server, unknown), libc::ESTALE);
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Lookup {
                    parent: unknown,
                    name: b"f".to_vec(),
                }
            ),
            libc::ESTALE
        );
        assert_eq!(
            server.call(VolumeOp::Forget {
                node: unknown,
                count: 1
            }),
            None
        );
    }

    // A child whose parent was forgotten first is stale, not misplaced.
    let d = mkdir(&mut server, ROOT_NODE, "d", 0o755);
    let (child, _) = create(&mut server, d.node, "c", 0o644);
    server.call(VolumeOp::Forget {
        node: d.node,
        count: 1,
    });
    assert_eq!(getattr_err(&mut server, child.node), libc::ESTALE);
}

#[test]
fn unknown_handles_are_ebadf() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let (_, handle) = create(&mut server, ROOT_NODE, "f", 0o644);
    assert_eq!(server.call(VolumeOp::Release { handle }), None);
    for handle in [handle, 0, 12345, u64::MAX] {
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Read {
                    handle,
                    offset: 0,
                    size: 1,
                }
            ),
            libc::EBADF
        );
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Write {
                    handle,
                    offset: 0,
                    data: b"x".to_vec(),
                }
            ),
            libc::EBADF
        );
        assert_eq!(
            err(
                &mut server,
                VolumeOp::Fsync {
                    handle,
                    datasync: false,
                }
            ),
            libc::EBADF
        );
        assert_eq!(
            err(&mut server, VolumeOp::ReadDir { handle, offset: 0 }),
            libc::EBADF
        );
        assert_eq!(server.call(VolumeOp::Release { handle }), None);
    }
}

#[test]
fn handles_are_bounded() {
    let fx = Fixture::new();
    fs::write(fx.vol.join("f"), b"").unwrap();
    let mut server = fx.server();
    let node = lookup(&mut server, ROOT_NODE, "f").node;
    let mut opened = Vec::new();
    let errno = loop {
        match server.call(VolumeOp::Open {
            node,
            flags: libc::O_RDONLY,
        }) {
            Some(Ok(VolumeReply::Opened(handle))) => opened.push(handle),
            Some(Err(errno)) => break errno,
            other => panic!("{other:?}"),
        }
        assert!(opened.len() <= 4096);
    };
    // Either the server's cap or the process's descriptor limit, both EMFILE.
    assert_eq!(errno, libc::EMFILE);
    for handle in opened {
        server.call(VolumeOp::Release { handle });
    }
    open(&mut server, node, libc::O_RDONLY);
}

#[test]
fn a_directory_swapped_for_a_symlink_leads_nowhere() {
    let fx = Fixture::new();
    fs::create_dir(fx.vol.join("sub")).unwrap();
    fs::write(fx.vol.join("sub/file"), b"inside").unwrap();
    let mut server = fx.server();
    let sub = lookup(&mut server, ROOT_NODE, "sub");
    let file = lookup(&mut server, sub.node, "file");
    let handle = open(&mut server, file.node, libc::O_RDONLY);

    for target in [fx.outside.clone(), PathBuf::from("../outside")] {
        let _ = fs::remove_file(fx.vol.join("sub"));
        if fx.vol.join("sub").is_dir() {
            fs::rename(fx.vol.join("sub"), fx.vol.join("sub.old")).unwrap();
        }
        std::os::unix::fs::symlink(&target, fx.vol.join("sub")).unwrap();
        // Name `secret` and `file` exist outside / inside the swapped-away dir.
        fs::write(fx.outside.join("file"), b"outside").unwrap();
        let before = tree(&fx.outside);

        let through = [
            VolumeOp::Lookup {
                parent: sub.node,
                name: b"secret".to_vec(),
            },
            VolumeOp::GetAttr { node: file.node },
            VolumeOp::Open {
                node: file.node,
                flags: libc::O_RDWR | libc::O_TRUNC,
            },
            VolumeOp::Create {
                parent: sub.node,
                name: b"pwned".to_vec(),
                mode: 0o644,
                umask: 0,
                flags: libc::O_RDWR,
            },
            VolumeOp::Mkdir {
                parent: sub.node,
                name: b"pwned".to_vec(),
                mode: 0o755,
                umask: 0,
            },
            VolumeOp::Unlink {
                parent: sub.node,
                name: b"secret".to_vec(),
            },
            VolumeOp::Rename {
                parent: sub.node,
                name: b"secret".to_vec(),
                new_parent: ROOT_NODE,
                new_name: b"stolen".to_vec(),
                flags: 0,
            },
            VolumeOp::Rename {
                parent: ROOT_NODE,
                name: b"sub.old".to_vec(),
                new_parent: sub.node,
                new_name: b"planted".to_vec(),
                flags: 0,
            },
            set_mode(file.node, 0o777),
            VolumeOp::Link {
                node: file.node,
                new_parent: ROOT_NODE,
                new_name: b"stolen".to_vec(),
            },
            VolumeOp::OpenDir { node: sub.node },
            VolumeOp::Symlink {
                parent: sub.node,
                name: b"pwned".to_vec(),
                target: b"x".to_vec(),
            },
        ];
        for op in through {
            let errno = err(&mut server, op.clone());
            assert!(
                [libc::ELOOP, libc::ENOTDIR, libc::EXDEV, libc::ENOENT].contains(&errno),
                "{op:?} -> {errno}"
            );
        }
        assert_eq!(tree(&fx.outside), before);
        assert!(!fx.vol.join("stolen").exists());
        // The handle opened before the swap still reads the inode it opened.
        assert_eq!(read(&mut server, handle, 0, 100), b"inside");
        fs::remove_file(fx.outside.join("file")).unwrap();
    }
    fx.assert_outside_untouched();
}

#[test]
fn serve_answers_frames() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let (mut guest, host) = UnixStream::pair().unwrap();
    let worker = std::thread::spawn(move || {
        let mut reader = host.try_clone().unwrap();
        let mut writer = host;
        serve(&mut server, &mut reader, &mut writer)
    });
    let mut call = |id, op| {
        write_frame(&mut guest, &GuestMessage::VolumeCall { id, op }).unwrap();
    };
    call(
        1,
        VolumeOp::Lookup {
            parent: ROOT_NODE,
            name: b"missing".to_vec(),
        },
    );
    call(
        2,
        VolumeOp::Create {
            parent: ROOT_NODE,
            name: b"f".to_vec(),
            mode: 0o644,
            umask: 0,
            flags: libc::O_RDWR,
        },
    );
    let reply = |guest: &mut UnixStream| match read_frame::<HostMessage, _>(guest).unwrap() {
        Some(HostMessage::VolumeReply { id, result }) => (id, result),
        other => panic!("expected a volume reply, got {other:?}"),
    };
    assert_eq!(reply(&mut guest), (1, Err(libc::ENOENT)));
    let (id, result) = reply(&mut guest);
    assert_eq!(id, 2);
    let Ok(VolumeReply::Created { entry, handle }) = result else {
        panic!("expected Created, got {result:?}");
    };
    let mut call = |id, op| {
        write_frame(&mut guest, &GuestMessage::VolumeCall { id, op }).unwrap();
    };
    call(
        3,
        VolumeOp::Write {
            handle,
            offset: 0,
            data: b"over the wire".to_vec(),
        },
    );
    // Unanswered: the next reply must be the read's.
    call(
        4,
        VolumeOp::Forget {
            node: entry.node,
            count: 1,
        },
    );
    call(
        5,
        VolumeOp::Read {
            handle,
            offset: 5,
            size: 100,
        },
    );
    call(6, VolumeOp::Release { handle });
    assert_eq!(reply(&mut guest), (3, Ok(VolumeReply::Written(13))));
    assert_eq!(
        reply(&mut guest),
        (5, Ok(VolumeReply::Data(b"the wire".to_vec())))
    );
    guest.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(worker.join().unwrap().is_ok());
    assert_eq!(read_frame::<HostMessage, _>(&mut guest).unwrap(), None);
    assert_eq!(fs::read(fx.vol.join("f")).unwrap(), b"over the wire");
}

#[test]
fn serve_rejects_other_messages() {
    let fx = Fixture::new();
    let mut server = fx.server();
    let (mut guest, host) = UnixStream::pair().unwrap();
    let worker = std::thread::spawn(move || {
        let mut reader = host.try_clone().unwrap();
        let mut writer = host;
        serve(&mut server, &mut reader, &mut writer)
    });
    write_frame(&mut guest, &GuestMessage::Data(vec![0; 1000])).unwrap();
    let error = worker.join().unwrap().unwrap_err();
    assert!(
        matches!(&error, ServeError::Unexpected { kind } if kind == "Data"),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "expected a volume call from the guest, got a `Data` message"
    );

    // A frame cut short is an error too, not a clean end.
    let mut server = fx.server();
    let (mut guest, host) = UnixStream::pair().unwrap();
    let worker = std::thread::spawn(move || {
        let mut reader = host.try_clone().unwrap();
        let mut writer = host;
        serve(&mut server, &mut reader, &mut writer)
    });
    std::io::Write::write_all(&mut guest, &[10, 0, 0, 0, 1]).unwrap();
    drop(guest);
    assert!(matches!(worker.join().unwrap(), Err(ServeError::Read(_))));
}
