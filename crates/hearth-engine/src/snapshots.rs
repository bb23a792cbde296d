//! Snapshots on disk: `snapshots/<name>/` holds `ram` (guest memory, a sparse file every
//! sandbox started from the snapshot maps copy-on-write, so clones share its pages), `state`
//! (the VMM's device state, saved without the RAM) and `snapshot.json` (what the state needs to load: the exact VMM, kernel,
//! initramfs, agent and base image, and the machine's shape).
//!
//! A snapshot is written into a hidden temporary dir (`.tmp-<name>-<random>`) held by a lock
//! of the creating process, and renamed to its name only once complete, so a save cut short
//! (kill -9, full disk) leaves nothing that `ls` shows or a restore uses; [`collect_stale`]
//! removes such dirs once their creator is gone.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::paths::StateDir;

const META_FILE: &str = "snapshot.json";
const STATE_FILE: &str = "state";
const MEMORY_FILE: &str = "ram";
/// The full stream (device state and RAM) the running sandbox is saved to, split into `ram`
/// and `state` before the snapshot is named.
const STREAM_FILE: &str = "stream";
const TEMP_PREFIX: &str = ".tmp-";
const CREATOR_LOCK: &str = "creator.lock";

/// What a snapshot records about itself and the machine it was taken of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The sandbox it was taken of: id and name.
    pub sandbox_id: String,
    pub sandbox_name: String,
    /// The image as the sandbox's user named it.
    pub image: String,
    /// The read-only base the guest's root is overlaid on, and its digest: the image's digest
    /// for a stored OCI image, the file's sha256 for the built-in image.
    pub rootfs: PathBuf,
    pub rootfs_digest: String,
    pub kernel: PathBuf,
    pub kernel_digest: String,
    pub initramfs: PathBuf,
    pub initramfs_digest: String,
    /// The agent's wire protocol and release, as the running agent reported them.
    pub agent_protocol: u32,
    pub agent_version: String,
    /// The backend (`qemu-tcg`) and the VMM's own version line.
    pub backend: String,
    pub vmm_version: String,
    pub vcpus: u8,
    pub mem_size_mib: u32,
    /// Whether the guest has a network interface: a restore needs the same devices.
    pub network: bool,
    /// Bytes the snapshot takes on disk (its memory file is sparse).
    pub size: u64,
    /// Whether its RAM is in `ram`, shared by the sandboxes started from it; older snapshots
    /// hold it in `state` and every restore loads a copy.
    #[serde(default)]
    pub memory_file: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no snapshot named `{0}`")]
    NotFound(String),
    #[error("failed to split the memory of snapshot `{name}` out of its saved stream")]
    Split {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("a snapshot named `{0}` already exists")]
    Exists(String),
    #[error("image `{image}` is the base of snapshots {}; remove them first (`hearth snapshot rm`)", snapshots.join(", "))]
    BaseInUse {
        image: String,
        snapshots: Vec<String>,
    },
    /// A restore would bring back FUSE mounts whose channels are gone, and the files live on
    /// the host, outside any saved state.
    #[error("sandbox {sandbox} has host dirs or volumes mounted (-v), which a snapshot cannot hold; snapshot a sandbox without mounts, or copy the files in with `hearth cp`")]
    HasMounts { sandbox: String },
    #[error("snapshot `{name}` cannot be restored here: {reason}")]
    Mismatch { name: String, reason: String },
    #[error("snapshot `{name}` has an unreadable record `{}`", path.display())]
    Meta {
        name: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// The snapshots of one state dir.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    pub fn new(state: &StateDir) -> Self {
        SnapshotStore::at(state.snapshots_dir())
    }

    /// A store of snapshots in `dir` (templates have their own).
    pub fn at(dir: PathBuf) -> Self {
        SnapshotStore { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The state file of snapshot `name`, which a restore loads.
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.path(name).join(STATE_FILE)
    }

    /// The memory file of snapshot `name`, which restores map copy-on-write.
    pub fn memory_file(&self, name: &str) -> PathBuf {
        self.path(name).join(MEMORY_FILE)
    }

    /// Starts writing snapshot `name`: a locked temporary dir to save the state into.
    pub fn begin(&self, name: &str) -> Result<PendingSnapshot, SnapshotError> {
        if self.path(name).exists() {
            return Err(SnapshotError::Exists(name.to_owned()));
        }
        std::fs::create_dir_all(&self.dir).map_err(io_error("create", &self.dir))?;
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{name}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir(&temp).map_err(io_error("create", &temp))?;
        // Made before the lock, so a failure below removes the dir again.
        let mut pending = PendingSnapshot {
            temp: temp.clone(),
            target: self.path(name),
            name: name.to_owned(),
            lock: None,
        };
        let lock_path = temp.join(CREATOR_LOCK);
        let file = File::create(&lock_path).map_err(io_error("create", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| io_error("lock", &lock_path)(errno.into()))?;
        pending.lock = Some(lock);
        Ok(pending)
    }

    /// Every complete snapshot, oldest first.
    pub fn list(&self) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read", &self.dir)(e)),
        };
        let mut snapshots = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            snapshots.push(self.get(&name)?);
        }
        snapshots.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(snapshots)
    }

    /// The record of snapshot `name`.
    pub fn get(&self, name: &str) -> Result<SnapshotMeta, SnapshotError> {
        let path = self.path(name).join(META_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotFound(name.to_owned()))
            }
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Meta {
            name: name.to_owned(),
            path,
            source,
        })
    }

    /// The names of the snapshots whose base image is `rootfs`.
    pub fn users_of(&self, rootfs: &Path) -> Result<Vec<String>, SnapshotError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|meta| meta.rootfs == rootfs)
            .map(|meta| meta.name)
            .collect())
    }

    /// Removes snapshot `name`: renamed out of sight first, so a restore never finds half of it.
    pub fn remove(&self, name: &str) -> Result<SnapshotMeta, SnapshotError> {
        let meta = self.get(name)?;
        let doomed = self.dir.join(format!(
            "{TEMP_PREFIX}rm-{name}-{:08x}",
            rand::random::<u32>()
        ));
        let path = self.path(name);
        std::fs::rename(&path, &doomed).map_err(io_error("remove", &path))?;
        std::fs::remove_dir_all(&doomed).map_err(io_error("remove", &doomed))?;
        Ok(meta)
    }

    /// Removes temporary dirs whose creator is gone (a save cut short); returns them.
    pub fn collect_stale(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            if temp && creator_gone(&dir) && std::fs::remove_dir_all(&dir).is_ok() {
                removed.push(dir);
            }
        }
        removed
    }
}

/// Whether the process writing temp dir `dir` is gone. A dir without a lock is a removal cut
/// short, or a creator between making the dir and its lock: only the former is old.
fn creator_gone(dir: &Path) -> bool {
    match File::open(dir.join(CREATOR_LOCK)) {
        // Taken only to test it: the lock is released again at the end of the statement.
        Ok(file) => Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok(),
        Err(_) => crate::gc::is_old(dir),
    }
}

/// A snapshot being written. Dropping it without [`PendingSnapshot::commit`] removes it.
#[derive(Debug)]
pub struct PendingSnapshot {
    temp: PathBuf,
    target: PathBuf,
    name: String,
    lock: Option<Flock<File>>,
}

impl PendingSnapshot {
    /// Where the running sandbox's full stream is saved.
    pub fn stream_file(&self) -> PathBuf {
        self.temp.join(STREAM_FILE)
    }

    /// Where the device state without RAM goes.
    pub fn state_file(&self) -> PathBuf {
        self.temp.join(STATE_FILE)
    }

    /// Where the guest RAM goes.
    pub fn memory_file(&self) -> PathBuf {
        self.temp.join(MEMORY_FILE)
    }

    /// Drops the full stream once it is split into memory and state.
    pub fn drop_stream(&self) -> Result<(), SnapshotError> {
        let stream = self.stream_file();
        std::fs::remove_file(&stream).map_err(io_error("remove", &stream))
    }

    /// Records `meta` (with the snapshot's size) and gives the snapshot its name. State and
    /// memory are flushed to disk first, so a crash after the rename cannot leave a named,
    /// truncated one.
    pub fn commit(mut self, mut meta: SnapshotMeta) -> Result<SnapshotMeta, SnapshotError> {
        use std::os::unix::fs::MetadataExt;
        meta.size = 0;
        for path in [self.state_file(), self.memory_file()] {
            let file = File::open(&path).map_err(io_error("open", &path))?;
            file.sync_all().map_err(io_error("flush", &path))?;
            meta.size += file.metadata().map_err(io_error("stat", &path))?.blocks() * 512;
        }
        meta.memory_file = true;
        let meta_path = self.temp.join(META_FILE);
        let json = serde_json::to_vec_pretty(&meta).map_err(|source| SnapshotError::Meta {
            name: self.name.clone(),
            path: meta_path.clone(),
            source,
        })?;
        std::fs::write(&meta_path, json).map_err(io_error("write", &meta_path))?;
        File::open(&meta_path)
            .and_then(|f| f.sync_all())
            .map_err(io_error("flush", &meta_path))?;
        let lock = self.temp.join(CREATOR_LOCK);
        std::fs::remove_file(&lock).map_err(io_error("remove", &lock))?;
        // rename(2) onto an existing empty dir would succeed; a same-named snapshot made
        // meanwhile must not be replaced.
        if self.target.exists() {
            return Err(SnapshotError::Exists(self.name.clone()));
        }
        std::fs::rename(&self.temp, &self.target).map_err(io_error("rename", &self.temp))?;
        self.lock = None;
        self.temp = PathBuf::new();
        Ok(meta)
    }
}

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

/// What the host would restore a snapshot with, to hold against what it was saved with.
#[derive(Debug, Clone)]
pub struct Host<'a> {
    pub state: &'a StateDir,
    pub backend: String,
    pub vmm_version: String,
    pub agent_protocol: u32,
    pub agent_version: &'a str,
}

/// Refuses a snapshot this host cannot load as saved: another VMM build or accelerator, agent,
/// kernel or initramfs than the ones it was taken with, a base image that is gone or changed,
/// or a missing state file. A VMM fed a stream of another build fails or, worse, runs a guest
/// whose devices disagree with it; this says why before any VM starts.
pub fn check_restorable(meta: &SnapshotMeta, host: &Host<'_>) -> Result<(), SnapshotError> {
    let mismatch = |reason: String| SnapshotError::Mismatch {
        name: meta.name.clone(),
        reason,
    };
    let differs = |what: &str, saved: &dyn std::fmt::Display, now: &dyn std::fmt::Display| {
        mismatch(format!(
            "it was saved with {what} `{saved}`, this host has `{now}`"
        ))
    };
    if meta.vmm_version != host.vmm_version {
        return Err(differs("VMM", &meta.vmm_version, &host.vmm_version));
    }
    if meta.backend != host.backend {
        return Err(differs("backend", &meta.backend, &host.backend));
    }
    if meta.agent_protocol != host.agent_protocol {
        return Err(differs(
            "agent protocol",
            &meta.agent_protocol,
            &host.agent_protocol,
        ));
    }
    if meta.agent_version != host.agent_version {
        return Err(differs("agent", &meta.agent_version, &host.agent_version));
    }
    let assets = [
        ("kernel", &meta.kernel, &meta.kernel_digest),
        ("initramfs", &meta.initramfs, &meta.initramfs_digest),
    ];
    for (what, path, saved) in assets {
        if !path.is_file() {
            return Err(mismatch(format!("its {what} `{}` is gone", path.display())));
        }
        let now = file_digest(host.state, path)?;
        if &now != saved {
            let what = format!("{what} `{}`", path.display());
            return Err(differs(&what, saved, &now));
        }
    }
    if !meta.rootfs.exists() {
        return Err(mismatch(format!(
            "its base image `{}` ({}) is gone; was image `{}` removed?",
            meta.rootfs.display(),
            meta.rootfs_digest,
            meta.image
        )));
    }
    let now = base_digest(host.state, &meta.rootfs)?;
    if now != meta.rootfs_digest {
        let what = format!("base image `{}`", meta.rootfs.display());
        return Err(differs(&what, &meta.rootfs_digest, &now));
    }
    Ok(())
}

/// `sha256:<hex>` of a file's contents.
/// The sha256 of `path`, remembered under `<state>/digests/` by the file's device, inode, size
/// and modification time: a restore checks kernel, initramfs and base each time, and hashing
/// tens of MB would cost a good part of the restore itself.
pub fn file_digest(state: &StateDir, path: &Path) -> Result<String, SnapshotError> {
    remembered(
        state,
        path,
        "",
        |value| value.starts_with("sha256:"),
        || hash_file(path),
    )
}

/// `compute`'s answer about the file at `path`, kept under `<state>/digests/` with the file's
/// device, inode, size and mtime, and reused while those stay the same (and the kept answer
/// passes `valid`). `kind` tells apart what is remembered about one file.
pub(crate) fn remembered<E>(
    state: &StateDir,
    path: &Path,
    kind: &str,
    valid: impl Fn(&str) -> bool,
    compute: impl FnOnce() -> Result<String, E>,
) -> Result<String, E>
where
    E: From<SnapshotError>,
{
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(io_error("stat", path))?;
    let key = format!(
        "{} {} {} {}.{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let dir = state.root().join("digests");
    let mut name = kind.as_bytes().to_vec();
    name.extend_from_slice(path.as_os_str().as_encoded_bytes());
    let entry = dir.join(hex(&Sha256::digest(&name)));
    if let Ok(text) = std::fs::read_to_string(&entry) {
        if let Some((saved, value)) = text.split_once('\n') {
            if saved == key && valid(value) {
                return Ok(value.to_owned());
            }
        }
    }
    let value = compute()?;
    // A cache that cannot be written only costs the next check the work again.
    let temp = dir.join(format!(".tmp-{}", std::process::id()));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&temp, format!("{key}\n{value}")))
        .and_then(|()| std::fs::rename(&temp, &entry));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    Ok(value)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_file(path: &Path) -> Result<String, SnapshotError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_error("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

/// The digest of a base image: a stored OCI image's own digest (its dir is named by it; the
/// base is built from it and never changes), else the file's sha256.
pub fn base_digest(state: &StateDir, rootfs: &Path) -> Result<String, SnapshotError> {
    let oci_dir = rootfs
        .parent()
        .filter(|dir| dir.parent() == Some(state.oci_images_dir().as_path()));
    match oci_dir.and_then(|dir| dir.file_name()) {
        Some(hex) if rootfs.exists() => Ok(format!("sha256:{}", hex.to_string_lossy())),
        _ => file_digest(state, rootfs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> SnapshotMeta {
        SnapshotMeta {
            name: name.into(),
            created_at: 1,
            sandbox_id: "abc".into(),
            sandbox_name: "web".into(),
            image: "default".into(),
            rootfs: "/r".into(),
            rootfs_digest: "sha256:00".into(),
            kernel: "/k".into(),
            kernel_digest: "sha256:01".into(),
            initramfs: "/i".into(),
            initramfs_digest: "sha256:02".into(),
            agent_protocol: 4,
            agent_version: "0.1.0".into(),
            backend: "qemu-tcg".into(),
            vmm_version: "QEMU emulator version 7.2.22".into(),
            vcpus: 1,
            mem_size_mib: 512,
            network: true,
            size: 0,
            memory_file: false,
        }
    }

    #[test]
    fn test_a_snapshot_is_listed_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(&StateDir::new(dir.path()));
        let pending = store.begin("one").unwrap();
        std::fs::write(pending.stream_file(), b"stream").unwrap();
        std::fs::write(pending.state_file(), b"state").unwrap();
        std::fs::write(pending.memory_file(), vec![1u8; 8192]).unwrap();
        pending.drop_stream().unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(store.get("one"), Err(SnapshotError::NotFound(_))));
        let committed = pending.commit(meta("one")).unwrap();
        assert!(committed.memory_file);
        assert!(committed.size >= 8192 + 5, "{}", committed.size);
        assert_eq!(store.list().unwrap(), vec![committed]);
        assert!(matches!(store.begin("one"), Err(SnapshotError::Exists(_))));
        assert_eq!(store.users_of(Path::new("/r")).unwrap(), vec!["one"]);
        assert!(store.users_of(Path::new("/other")).unwrap().is_empty());
        assert_eq!(std::fs::read(store.state_file("one")).unwrap(), b"state");
        store.remove("one").unwrap();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&store.dir).unwrap().count(), 0);
    }

    #[test]
    fn test_an_abandoned_save_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(&StateDir::new(dir.path()));
        let pending = store.begin("two").unwrap();
        std::fs::write(pending.state_file(), b"half").unwrap();
        // A live creator's dir is not stale.
        assert!(store.collect_stale().is_empty());
        // Its process dying drops the lock but not the dir.
        let mut dead = pending;
        dead.lock = None;
        let temp = std::mem::take(&mut dead.temp);
        drop(dead);
        assert!(temp.is_dir());
        assert_eq!(store.collect_stale(), vec![temp]);
        assert!(store.list().unwrap().is_empty());
        assert!(store.collect_stale().is_empty());
    }

    #[test]
    fn test_restore_refuses_what_differs_from_the_save() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            (path.clone(), file_digest(&state, &path).unwrap())
        };
        let (kernel, kernel_digest) = file("vmlinuz", "kernel");
        let (initramfs, initramfs_digest) = file("initramfs", "agent");
        let (rootfs, rootfs_digest) = file("default.ext4", "base");
        let saved = SnapshotMeta {
            kernel,
            kernel_digest,
            initramfs,
            initramfs_digest,
            rootfs,
            rootfs_digest,
            ..meta("s")
        };
        let host = Host {
            state: &state,
            backend: "qemu-tcg".into(),
            vmm_version: "QEMU emulator version 7.2.22".into(),
            agent_protocol: 4,
            agent_version: "0.1.0",
        };
        check_restorable(&saved, &host).unwrap();
        let refused = |meta: SnapshotMeta| check_restorable(&meta, &host).unwrap_err().to_string();
        let vmm = refused(SnapshotMeta {
            vmm_version: "QEMU emulator version 8.0.0".into(),
            ..saved.clone()
        });
        assert_eq!(vmm, "snapshot `s` cannot be restored here: it was saved with VMM `QEMU emulator version 8.0.0`, this host has `QEMU emulator version 7.2.22`");
        let agent = refused(SnapshotMeta {
            agent_version: "0.0.9".into(),
            ..saved.clone()
        });
        assert!(agent.contains("agent `0.0.9`"), "{agent}");
        std::fs::write(&saved.initramfs, "another agent").unwrap();
        assert!(refused(saved.clone()).contains("initramfs"));
        std::fs::write(&saved.initramfs, "agent").unwrap();
        std::fs::remove_file(&saved.rootfs).unwrap();
        assert!(refused(saved).contains("base image"));
    }

    #[test]
    fn test_remembered_digests_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let path = dir.path().join("vmlinuz");
        std::fs::write(&path, "kernel").unwrap();
        let first = file_digest(&state, &path).unwrap();
        assert_eq!(file_digest(&state, &path).unwrap(), first);
        assert_eq!(
            std::fs::read_dir(dir.path().join("digests"))
                .unwrap()
                .count(),
            1
        );
        // The same size, rewritten: its modification time tells.
        std::fs::write(&path, "kernex").unwrap();
        let second = file_digest(&state, &path).unwrap();
        assert_ne!(second, first);
        assert_eq!(second, hash_file(&path).unwrap());
    }

    #[test]
    fn test_a_dropped_pending_snapshot_removes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(&StateDir::new(dir.path()));
        drop(store.begin("three").unwrap());
        assert_eq!(std::fs::read_dir(&store.dir).unwrap().count(), 0);
    }
}
