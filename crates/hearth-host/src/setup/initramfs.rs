//! hearth's initramfs: an uncompressed cpio newc archive holding the agent as `/init`, the
//! kernel modules at their usual paths, `/hearth/modules` (their load order) and
//! `/dev/console`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use cpio::newc::{Builder, ModeFileType};

use super::fingerprint::{AtomicFile, Fingerprint};
use super::modules::{read_module, GuestModule, KernelModules, ModulesError};

/// Where the agent expects the module list: one absolute path a line, in load order.
pub const MODULE_LIST: &str = "/hearth/modules";

/// Directories every hearth initramfs has, for the agent to mount on.
const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("hearth", 0o755),
    ("lib/modules", 0o755),
];

/// `/dev/console` is character device 5:1. The kernel opens it for init's stdio before
/// anything mounts devtmpfs, so it must exist in the archive.
const CONSOLE: (u32, u32) = (5, 1);

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(
        "guest agent `{}` does not exist; build it with \
         `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p hearth-agent \
         --target x86_64-unknown-linux-gnu` (or run install.sh) and pass `--agent PATH`",
        path.display()
    )]
    AgentMissing { path: PathBuf },
    #[error("failed to read the guest agent `{}`", path.display())]
    ReadAgent {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` is {size} bytes, too large for a cpio newc entry (4 GiB at most)", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("failed to read a kernel module for the initramfs")]
    Module(#[from] ModulesError),
    #[error("failed to write the initramfs `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the initramfs depends on.
pub(crate) fn fingerprint(
    agent: &Path,
    kernel_version: Option<&str>,
    modules: &KernelModules,
) -> Result<Fingerprint, InitramfsError> {
    let mut fingerprint = Fingerprint::new("initramfs");
    if !agent.is_file() {
        return Err(InitramfsError::AgentMissing {
            path: agent.to_owned(),
        });
    }
    fingerprint
        .file("agent", agent)
        .map_err(|source| InitramfsError::ReadAgent {
            path: agent.to_owned(),
            source,
        })?;
    fingerprint.field("kernel-version", kernel_version.unwrap_or("unknown"));
    modules.add_to(&mut fingerprint)?;
    Ok(fingerprint)
}

/// Writes the initramfs for `agent` and `modules` (in load order) to `dest`, atomically.
pub(crate) fn build(
    dest: &Path,
    agent: &Path,
    modules: &[GuestModule],
) -> Result<(), InitramfsError> {
    let read_agent = |source| InitramfsError::ReadAgent {
        path: agent.to_owned(),
        source,
    };
    let agent_file = File::open(agent).map_err(read_agent)?;
    let agent_size = agent_file.metadata().map_err(read_agent)?.len();
    let agent_size = u32::try_from(agent_size).map_err(|_| InitramfsError::TooLarge {
        path: agent.to_owned(),
        size: agent_size,
    })?;
    let mut module_files = Vec::with_capacity(modules.len());
    for module in modules {
        let data = read_module(&module.host_path)?;
        module_files.push((guest_name(&module.guest_path), data));
    }

    let write_err = |source| InitramfsError::Write {
        path: dest.to_owned(),
        source,
    };
    let mut out = AtomicFile::create(dest).map_err(write_err)?;
    let mut archive = Archive::new(BufWriter::new(out.file()));
    let written = write_contents(
        &mut archive,
        (agent_file, agent_size),
        &module_files,
        &module_list(modules),
    );
    // Tell a failing read of the agent from a failing write of the archive.
    written.map_err(|e| match e {
        ContentError::Agent(source) => read_agent(source),
        ContentError::Write(source) => write_err(source),
    })?;
    archive
        .finish()
        .and_then(|mut w| w.flush())
        .map_err(write_err)?;
    out.commit(0o644).map_err(write_err)
}

enum ContentError {
    Agent(io::Error),
    Write(io::Error),
}

fn write_contents<W: Write>(
    archive: &mut Archive<W>,
    (agent, agent_size): (File, u32),
    modules: &[(String, Vec<u8>)],
    module_list: &str,
) -> Result<(), ContentError> {
    for (dir, mode) in DIRS {
        archive.dir(dir, *mode).map_err(ContentError::Write)?;
    }
    archive
        .char_device("dev/console", 0o600, CONSOLE)
        .map_err(ContentError::Write)?;
    archive
        .file("init", 0o755, agent_size, agent)
        .map_err(|e| match e {
            EntryError::Source(e) => ContentError::Agent(e),
            EntryError::Write(e) => ContentError::Write(e),
        })?;
    for (name, data) in modules {
        archive
            .bytes(name, 0o644, data)
            .map_err(ContentError::Write)?;
    }
    archive
        .bytes(
            MODULE_LIST.trim_start_matches('/'),
            0o644,
            module_list.as_bytes(),
        )
        .map_err(ContentError::Write)
}

/// `/hearth/modules`: the guest paths in load order, one a line.
pub fn module_list(modules: &[GuestModule]) -> String {
    modules
        .iter()
        .map(|module| format!("{}\n", module.guest_path.display()))
        .collect()
}

/// The archive name of a guest path: relative, as the kernel unpacks into `/`.
fn guest_name(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_owned()
}

enum EntryError {
    Source(io::Error),
    Write(io::Error),
}

/// A cpio newc archive under construction. Every entry's parent directories are written before
/// it (the kernel does not make them), each once; inode numbers are unique; times are zero so
/// the same inputs give the same bytes.
struct Archive<W: Write> {
    out: W,
    dirs: BTreeSet<String>,
    next_ino: u32,
}

impl<W: Write> Archive<W> {
    fn new(out: W) -> Self {
        Archive {
            out,
            dirs: BTreeSet::new(),
            next_ino: 1,
        }
    }

    fn entry(&mut self, name: &str, file_type: ModeFileType, mode: u32) -> Builder {
        let ino = self.next_ino;
        self.next_ino += 1;
        Builder::new(name)
            .ino(ino)
            .mode(mode)
            .set_mode_file_type(file_type)
            .nlink(1)
    }

    fn parents(&mut self, name: &str) -> io::Result<()> {
        match name.rsplit_once('/') {
            Some((parent, _)) => self.dir(parent, 0o755),
            None => Ok(()),
        }
    }

    /// Adds directory `name` and any missing parents; a directory already added is left as is.
    fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        if self.dirs.contains(name) {
            return Ok(());
        }
        self.parents(name)?;
        let builder = self.entry(name, ModeFileType::Directory, mode).nlink(2);
        builder.write(&mut self.out, 0).finish()?;
        self.dirs.insert(name.to_owned());
        Ok(())
    }

    fn char_device(&mut self, name: &str, mode: u32, (major, minor): (u32, u32)) -> io::Result<()> {
        self.parents(name)?;
        let builder = self
            .entry(name, ModeFileType::Char, mode)
            .rdev_major(major)
            .rdev_minor(minor);
        builder.write(&mut self.out, 0).finish()?;
        Ok(())
    }

    fn bytes(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is too large"),
            )
        })?;
        self.file(name, mode, size, data).map_err(|e| match e {
            EntryError::Source(e) | EntryError::Write(e) => e,
        })
    }

    /// Adds regular file `name` with `size` bytes read from `source`.
    fn file(
        &mut self,
        name: &str,
        mode: u32,
        size: u32,
        source: impl Read,
    ) -> Result<(), EntryError> {
        self.parents(name).map_err(EntryError::Write)?;
        let builder = self.entry(name, ModeFileType::Regular, mode);
        let mut writer = builder.write(&mut self.out, size);
        let mut source = source.take(u64::from(size));
        let mut buf = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EntryError::Source(e)),
            };
            writer.write_all(&buf[..n]).map_err(EntryError::Write)?;
            copied += n as u64;
        }
        if copied != u64::from(size) {
            return Err(EntryError::Source(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("`{name}` shrank from {size} to {copied} bytes while being archived"),
            )));
        }
        writer.finish().map_err(EntryError::Write)?;
        Ok(())
    }

    /// Writes the trailer and returns the output.
    fn finish(self) -> io::Result<W> {
        cpio::newc::trailer(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(name, mode, rdev, data)` of one archive entry.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Every entry in a newc archive, trailer excluded.
    fn entries(mut archive: &[u8]) -> Vec<Entry> {
        let mut found = Vec::new();
        loop {
            let mut reader = cpio::NewcReader::new(archive).unwrap();
            if reader.entry().is_trailer() {
                return found;
            }
            let entry = reader.entry();
            let (name, mode, rdev) = (
                entry.name().to_owned(),
                entry.mode(),
                (entry.rdev_major(), entry.rdev_minor()),
            );
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            found.push((name, mode, rdev, data));
            archive = reader.finish().unwrap();
        }
    }

    fn sample_archive() -> Vec<u8> {
        let modules = vec![(
            "lib/modules/6.1/kernel/fs/overlayfs/overlay.ko".to_owned(),
            b"module".to_vec(),
        )];
        let agent = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(agent.path(), b"agent!").unwrap();
        let mut archive = Archive::new(Vec::new());
        let file = File::open(agent.path()).unwrap();
        assert!(write_contents(&mut archive, (file, 6), &modules, "/lib/x.ko\n").is_ok());
        archive.finish().unwrap()
    }

    #[test]
    fn test_archive_has_init_executable() {
        let entries = entries(&sample_archive());
        let init = entries.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.3, b"agent!");
    }

    #[test]
    fn test_archive_has_console_char_device() {
        let entries = entries(&sample_archive());
        let console = entries.iter().find(|e| e.0 == "dev/console").unwrap();
        assert_eq!(console.1, 0o020600);
        assert_eq!(console.2, (5, 1));
    }

    #[test]
    fn test_archive_writes_each_parent_dir_once_before_children() {
        let names: Vec<String> = entries(&sample_archive())
            .into_iter()
            .map(|e| e.0)
            .collect();
        let position = |name: &str| names.iter().position(|n| n == name).unwrap();
        assert!(position("lib") < position("lib/modules"));
        assert!(
            position("lib/modules/6.1/kernel/fs")
                < position("lib/modules/6.1/kernel/fs/overlayfs/overlay.ko")
        );
        assert_eq!(names.iter().filter(|n| *n == "lib/modules").count(), 1);
    }

    #[test]
    fn test_archive_has_module_list() {
        let entries = entries(&sample_archive());
        let list = entries.iter().find(|e| e.0 == "hearth/modules").unwrap();
        assert_eq!(list.3, b"/lib/x.ko\n");
    }

    #[test]
    fn test_archive_source_shorter_than_size_is_source_error() {
        let mut archive = Archive::new(Vec::new());
        let result = archive.file("init", 0o755, 10, &b"short"[..]);
        assert!(matches!(result, Err(EntryError::Source(_))));
    }

    #[test]
    fn test_module_list_is_one_guest_path_a_line() {
        let module = |name: &str, path: &str| GuestModule {
            name: name.to_owned(),
            host_path: PathBuf::from("/host").join(name),
            guest_path: PathBuf::from(path),
        };
        let list = module_list(&[
            module("virtio_ring", "/lib/modules/v/virtio_ring.ko"),
            module("virtio", "/lib/modules/v/virtio.ko"),
        ]);
        assert_eq!(
            list,
            "/lib/modules/v/virtio_ring.ko\n/lib/modules/v/virtio.ko\n"
        );
    }
}
