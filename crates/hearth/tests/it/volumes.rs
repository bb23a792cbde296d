//! Host dirs and named volumes in sandboxes (`-v`), tried as a user and as a hostile guest:
//! round trips of many sizes both ways, git in a mounted dir, `:ro` held by the host even after
//! the guest remounts it read-write, every escape a root guest can try, concurrent writers, a
//! full host disk, two sandboxes on one volume, and `kill -9` mid-write.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hearth_test_support::host_files::bash_python_and_git_entries;
use hearth_test_support::oci_layout::{busybox_entries, Compression, TestConfig, TestImage};
use hearth_test_support::registry::LocalRegistry;
use hearth_test_support::wait_until;
use sha2::{Digest, Sha256};

use crate::jail::{inspect, vmm_of};
use crate::{code, hearth, host, ok, stderr, stdout};

/// Owner of the mapped dir: what every file the guest makes on the host must get.
const OWNER: (u32, u32) = (1234, 5678);

/// Everything the guest tries, one `KEY=status` line each, as root.
const GUEST_SCRIPT: &str = r#"
/bin/busybox mkdir -p /opt/bb && /bin/busybox --install -s /opt/bb && export PATH=$PATH:/opt/bb
cd /work || exit 99
for n in 0 1 4095 4096 131079 3145728; do head -c $n /dev/urandom > g$n; done
sha256sum g0 g1 g4095 g4096 g131079 g3145728 > g.sums
(cd /work && sha256sum -c h.sums >/dev/null); echo HOSTFILES=$?
# The dir is another uid's, as a user's checkout is: git wants that said.
HOME=/tmp; git config --global safe.directory '*'
mkdir repo && cd repo && git init -q && echo hello > README && git add README \
  && git -c user.name=t -c user.email=t@example.com commit -qm first; echo GIT=$?
cd /work
ln -s / rootlink; echo pwned > rootlink/tmp/pwned-via-link
ln -s ../outside out; echo pwned > out/canary 2>/dev/null
mknod node c 1 3 2>/dev/null; echo MKNOD=$?
mkfifo fifo 2>/dev/null; echo MKFIFO=$?
cp /bin/busybox suid && chmod 4755 suid; echo CHMOD=$?
python3 -c "import os; os.close(os.open('/work/suid2', os.O_CREAT|os.O_WRONLY, 0o6755))"; echo OPEN_SUID=$?
mkdir -m 2775 sgid; echo MKDIR_SGID=$?
ln g1 g1-link; echo HARDLINK=$?
ln /etc/passwd passwd-link 2>/dev/null; echo CROSSLINK=$?
mv g1-link repo/moved; echo RENAME=$?
chown 0:0 g1; echo CHOWN=$?
touch /ro/new 2>/dev/null; echo RO_TOUCH=$?
mount -o remount,rw /ro; echo REMOUNT=$?
awk '$2 == "/ro" { split($4, o, ","); print "RO_MOUNTED=" o[1] }' /proc/mounts
echo x > /ro/new2 2>/dev/null; echo RO_CREATE=$?
echo x >> /ro/existing 2>/dev/null; echo RO_APPEND=$?
rm /ro/existing 2>/dev/null; echo RO_RM=$?
mkdir /ro/d 2>/dev/null; echo RO_MKDIR=$?
chmod 777 /ro/existing 2>/dev/null; echo RO_CHMOD=$?
mv /ro/existing /ro/renamed 2>/dev/null; echo RO_RENAME=$?
head -c 1048576 /dev/urandom > /full/keep && sha256sum /full/keep > /tmp/keep.sum
dd if=/dev/zero of=/full/big bs=65536 count=200 2>/tmp/dd.err; echo FULL_DD=$?
grep -q 'No space' /tmp/dd.err; echo FULL_ENOSPC=$?
sha256sum -c /tmp/keep.sum >/dev/null; echo FULL_KEEP=$?
for i in 1 2 3 4; do
  (for j in $(seq 1 200); do echo "writer$i line$j" >> concurrent; done) &
  head -c 300000 /dev/urandom > par$i &
done
wait
sha256sum par1 par2 par3 par4 > par.sums
echo DONE=0
"#;

fn sha256_hex(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `sha256sum` output checked against the files beside it on the host.
fn assert_sums_match(dir: &Path, sums: &str) {
    let text = std::fs::read_to_string(dir.join(sums)).expect("the guest wrote its sums");
    let mut checked = 0;
    for line in text.lines() {
        let (hash, name) = line.split_once("  ").expect("sha256sum line");
        assert_eq!(
            sha256_hex(&dir.join(name)),
            hash,
            "{name} differs on the host"
        );
        checked += 1;
    }
    assert!(checked > 0, "no sums in {sums}");
}

fn statuses(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A small tmpfs, unmounted on drop: the "full host disk".
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&path)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a 4 MiB tmpfs needs root");
        SmallDisk(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Lists a tree as (relative path, mode, size) so two listings can be compared.
fn snapshot_tree(dir: &Path) -> Vec<(String, u32, u64)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            let rel = entry
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string();
            out.push((rel, meta.mode(), meta.len()));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn test_host_dirs_round_trip_hold_ro_and_every_escape_fails() {
    let host = host();
    let registry = LocalRegistry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    TestImage::new(TestConfig::default())
        .layer(&busybox_entries().unwrap(), Compression::Gzip)
        .unwrap()
        .layer(&bash_python_and_git_entries().unwrap(), Compression::Zstd)
        .unwrap()
        .write_layout(layout.path(), "1")
        .unwrap();
    registry.push_layout(layout.path(), "1", "git").unwrap();
    let image = format!("{}/git:1", registry.host());

    let top = tempfile::tempdir().unwrap();
    let shared = top.path().join("shared");
    let outside = top.path().join("outside");
    let ro = top.path().join("ro");
    for dir in [&shared, &outside, &ro] {
        std::fs::create_dir(dir).unwrap();
    }
    std::os::unix::fs::chown(&shared, Some(OWNER.0), Some(OWNER.1)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(outside.join("canary"), "untouched").unwrap();
    std::fs::write(ro.join("existing"), "read only").unwrap();
    let mut sums = String::new();
    for n in [0usize, 1, 4095, 4096, 65537, 2 * 1024 * 1024 + 3] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let name = format!("h{n}");
        std::fs::write(shared.join(&name), &data).unwrap();
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&shared.join(&name))));
    }
    std::fs::write(shared.join("h.sums"), sums).unwrap();
    let full = SmallDisk::mount(top.path().join("full"));
    let ro_before = snapshot_tree(&ro);
    let outside_before = snapshot_tree(&outside);

    let shared_arg = format!("{}:/work", shared.display());
    let ro_arg = format!("{}:/ro:ro", ro.display());
    let full_arg = format!("{}:/full", full.0.display());
    let output = hearth(
        &host,
        &[
            "run",
            "--network",
            "none",
            "-v",
            &shared_arg,
            "-v",
            &ro_arg,
            "--volume",
            &full_arg,
            &image,
            "--",
            "bash",
            "-c",
            GUEST_SCRIPT,
        ],
    );
    let text = stdout(&output);
    assert_eq!(
        code(&output),
        0,
        "stdout:\n{text}\nstderr:\n{}",
        stderr(&output)
    );
    let status = statuses(&text);
    let expect = |key: &str, want: &str| {
        assert_eq!(
            status.get(key).map(String::as_str),
            Some(want),
            "{key} in the guest's output:\n{text}\nstderr:\n{}",
            stderr(&output)
        );
    };
    expect("DONE", "0");

    // Both directions, many sizes.
    expect("HOSTFILES", "0");
    assert_sums_match(&shared, "g.sums");
    // git works in the mount, and the host's git reads what the guest committed.
    expect("GIT", "0");
    let log = Command::new("git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(shared.join("repo"))
        .args(["log", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(stdout(&log).trim(), "first", "{}", stderr(&log));

    // Escapes: symlinks are the guest's to follow, inside the guest.
    assert!(!Path::new("/tmp/pwned-via-link").exists());
    assert_eq!(snapshot_tree(&outside), outside_before);
    assert_eq!(
        std::fs::read_to_string(outside.join("canary")).unwrap(),
        "untouched"
    );
    assert_eq!(
        std::fs::read_link(shared.join("rootlink")).unwrap(),
        Path::new("/")
    );
    // No device files or FIFOs, no setuid or setgid bits on the host.
    assert_ne!(status["MKNOD"], "0");
    assert_ne!(status["MKFIFO"], "0");
    assert!(!shared.join("node").exists() && !shared.join("fifo").exists());
    expect("CHMOD", "0");
    expect("OPEN_SUID", "0");
    expect("MKDIR_SGID", "0");
    for name in ["suid", "suid2", "sgid"] {
        let mode = std::fs::metadata(shared.join(name)).unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "{name} has mode {mode:o} on the host");
    }
    // Links and renames stay inside; a link to a file outside the mount is refused.
    expect("HARDLINK", "0");
    assert_ne!(status["CROSSLINK"], "0");
    expect("RENAME", "0");
    assert_eq!(
        std::fs::metadata(shared.join("repo/moved")).unwrap().ino(),
        std::fs::metadata(shared.join("g1")).unwrap().ino()
    );
    // chown "works" in the guest and changes nothing: the host decides who owns its files.
    expect("CHOWN", "0");
    for name in [
        "g4096",
        "repo/README",
        "suid",
        "sgid",
        "rootlink",
        "repo/.git/HEAD",
    ] {
        let meta = shared.join(name).symlink_metadata().unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            OWNER,
            "owner of {name} on the host"
        );
    }

    // :ro holds even once the guest remounts it read-write: the host refuses.
    expect("RO_TOUCH", "1");
    expect("REMOUNT", "0");
    expect("RO_MOUNTED", "rw");
    for key in [
        "RO_CREATE",
        "RO_APPEND",
        "RO_RM",
        "RO_MKDIR",
        "RO_CHMOD",
        "RO_RENAME",
    ] {
        assert_ne!(status[key], "0", "{key} succeeded on a read-only mount");
    }
    assert_eq!(snapshot_tree(&ro), ro_before);
    assert_eq!(
        std::fs::read_to_string(ro.join("existing")).unwrap(),
        "read only"
    );

    // A full host disk is ENOSPC in the guest and loses nothing written before.
    assert_ne!(status["FULL_DD"], "0");
    expect("FULL_ENOSPC", "0");
    expect("FULL_KEEP", "0");
    assert_eq!(
        std::fs::metadata(full.0.join("keep")).unwrap().len(),
        1024 * 1024
    );

    // Concurrent writers: every appended line arrives whole, every parallel file intact.
    let lines = std::fs::read_to_string(shared.join("concurrent")).unwrap();
    assert_eq!(lines.lines().count(), 800, "{lines}");
    for i in 1..=4 {
        for j in 1..=200 {
            assert!(lines.contains(&format!("writer{i} line{j}\n")));
        }
    }
    assert_sums_match(&shared, "par.sums");
    drop(full);
    host.assert_clean();
}

#[test]
fn test_named_volumes_are_shared_refuse_removal_in_use_and_survive_kill() {
    let host = host();
    // Bad mounts are refused before anything boots.
    for (arg, says) in [
        ("/nonexistent/dir:/x", "cannot mount host dir"),
        ("/etc/hostname:/x", "not a directory"),
        ("/tmp:relative", "absolute"),
        ("/tmp:/", "root"),
        ("bad/../name:/x", "cannot mount host dir"),
        ("../x:/x:rx", "unknown option"),
    ] {
        let output = hearth(&host, &["run", "-v", arg, "--", "true"]);
        // 2 for what the flag's parser refuses, 125 for what resolving the mount does.
        assert!(
            [2, 125].contains(&code(&output)),
            "{arg}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains(says), "{arg}: {}", stderr(&output));
    }
    assert!(stderr(&hearth(&host, &["volume", "create", "../up"])).contains("invalid volume name"));

    ok(&host, &["volume", "create", "shared"]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&host, &["volume", "inspect", "shared"])).unwrap();
    let data = PathBuf::from(info[0]["path"].as_str().unwrap());
    assert!(data.is_dir());

    ok(
        &host,
        &["run", "-d", "--name", "writer", "-v", "shared:/data"],
    );
    // Made by the first sandbox of this machine if there was none: the second resumes it and
    // still gets its mount.
    ok(
        &host,
        &["run", "-d", "--name", "reader", "-v", "shared:/data:ro"],
    );
    ok(
        &host,
        &[
            "exec",
            "writer",
            "--",
            "sh",
            "-c",
            "echo from-writer > /data/one",
        ],
    );
    assert_eq!(
        ok(&host, &["exec", "reader", "--", "cat", "/data/one"]),
        "from-writer\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("one")).unwrap(),
        "from-writer\n"
    );
    std::fs::write(data.join("two"), "from-host\n").unwrap();
    assert_eq!(
        ok(&host, &["exec", "reader", "--", "cat", "/data/two"]),
        "from-host\n"
    );
    assert_ne!(
        code(&hearth(
            &host,
            &["exec", "reader", "--", "sh", "-c", "echo x > /data/three"]
        )),
        0
    );
    assert!(!data.join("three").exists());

    // In use: listed with its users, and not removable.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&host, &["volume", "ls", "--json"])).unwrap();
    let users = list[0]["used_by"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{list}");
    let refused = hearth(&host, &["volume", "rm", "shared"]);
    assert_ne!(code(&refused), 0);
    assert!(
        stderr(&refused).contains("in use by"),
        "{}",
        stderr(&refused)
    );
    assert!(data.join("one").exists());
    // A snapshot cannot hold a mount: refused with the reason.
    let snapshot = hearth(&host, &["snapshot", "create", "writer", "with-mounts"]);
    assert_ne!(code(&snapshot), 0);
    assert!(
        stderr(&snapshot).contains("mounted"),
        "{}",
        stderr(&snapshot)
    );

    // kill -9 of the VMM mid-write: the host dir keeps whole lines, nothing is left running.
    let mut writing = host
        .hearth()
        .args(["exec", "writer", "--", "sh", "-c"])
        .arg("i=0; while :; do i=$((i+1)); echo line-$i >> /data/log; done")
        .spawn()
        .unwrap();
    let grown = wait_until(Duration::from_secs(60), || {
        std::fs::metadata(data.join("log"))
            .ok()
            .filter(|m| m.len() > 10_000)
    });
    assert!(grown.is_some(), "the guest never wrote to /data/log");
    let supervisor = inspect(&host, "writer")["supervisor_pid"].as_u64().unwrap();
    let vmm = vmm_of(supervisor);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vmm as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = writing.wait();
    // It ended without a main process's exit code, which `wait` reports as a failure.
    hearth(&host, &["wait", "writer"]);
    assert_eq!(inspect(&host, "writer")["state"], "exited");
    let log = std::fs::read_to_string(data.join("log")).unwrap();
    for (n, line) in log.lines().enumerate() {
        assert_eq!(line, format!("line-{}", n + 1), "line {} of the log", n + 1);
    }
    assert!(log.ends_with('\n'));

    ok(&host, &["rm", "-f", "writer", "reader"]);
    ok(&host, &["volume", "rm", "shared"]);
    assert!(!data.exists());
    assert!(ok(&host, &["volume", "ls"]).lines().count() == 1);
    host.assert_clean();
}
