//! Test images built here, byte by byte: layers as tar streams (gzip or zstd) with exactly the
//! entries a test wants — whiteouts, opaque dirs, hard links, hostile paths — written as an OCI
//! image layout that `skopeo` can push to a [`crate::registry::LocalRegistry`].

use std::path::Path;

use anyhow::Context;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// One entry of a layer. Paths are written as given, without cleanup.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir(String, u32),
    /// Path, content, mode, uid, gid.
    File(String, Vec<u8>, u32, u64, u64),
    Symlink(String, String),
    HardLink(String, String),
}

impl Entry {
    pub fn dir(path: &str) -> Entry {
        Entry::Dir(path.to_owned(), 0o755)
    }

    pub fn file(path: &str, data: &str) -> Entry {
        Entry::File(path.to_owned(), data.as_bytes().to_vec(), 0o644, 0, 0)
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink(path.to_owned(), target.to_owned())
    }

    pub fn hard_link(path: &str, target: &str) -> Entry {
        Entry::HardLink(path.to_owned(), target.to_owned())
    }

    /// `.wh.NAME` beside `path`, hiding `path` from lower layers.
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        Entry::file(&format!("{prefix}.wh.{name}"), "")
    }

    /// Marks `dir` opaque: lower layers' contents of it are hidden.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(&format!("{dir}/.wh..wh..opq"), "")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

/// The image config fields a test sets.
#[derive(Debug, Clone, Default)]
pub struct TestConfig {
    pub architecture: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Layers and a config, written out as an OCI layout.
#[derive(Debug, Default)]
pub struct TestImage {
    layers: Vec<(Vec<u8>, &'static str, String)>,
    config: TestConfig,
}

impl TestImage {
    pub fn new(config: TestConfig) -> Self {
        TestImage {
            layers: Vec::new(),
            config,
        }
    }

    /// Adds a layer made of `entries`.
    pub fn layer(self, entries: &[Entry], compression: Compression) -> anyhow::Result<Self> {
        self.tar_layer(&tar_of(entries)?, compression)
    }

    /// Adds a layer from a tar stream written elsewhere (another tar writer).
    pub fn tar_layer(mut self, tar: &[u8], compression: Compression) -> anyhow::Result<Self> {
        let diff_id = sha256(tar);
        let (blob, media_type) = match compression {
            Compression::Gzip => {
                use std::io::Write;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(tar)?;
                (
                    encoder.finish()?,
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(tar, 1)?,
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        self.layers.push((blob, media_type, diff_id));
        Ok(self)
    }

    /// Lists a wrong uncompressed digest for the last layer in the config's `rootfs.diff_ids`,
    /// as a tampered or mis-built image would.
    pub fn wrong_last_diff_id(mut self) -> Self {
        if let Some(last) = self.layers.last_mut() {
            last.2 = sha256(b"not this layer");
        }
        self
    }

    /// Writes the layout into `dir` with `tag`; returns the manifest digest.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> anyhow::Result<String> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).context("creating the layout")?;
        let put = |data: &[u8]| put_blob(dir, data);
        let c = &self.config;
        let config = serde_json::to_vec(&json!({
            "architecture": c.architecture.as_deref().unwrap_or("amd64"),
            "os": "linux",
            "config": {
                "Entrypoint": c.entrypoint, "Cmd": c.cmd, "Env": c.env,
                "WorkingDir": c.working_dir.as_deref().unwrap_or(""),
                "User": c.user.as_deref().unwrap_or(""),
            },
            "rootfs": {"type": "layers", "diff_ids": self.layers.iter().map(|l| &l.2).collect::<Vec<_>>()},
        }))?;
        let config_digest = put(&config)?;
        let mut layers = Vec::new();
        for (blob, media_type, _) in &self.layers {
            layers.push(json!({"mediaType": media_type, "digest": put(blob)?, "size": blob.len()}));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": layers,
        }))?;
        let manifest_digest = put(&manifest)?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        write_tag(
            dir,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest_digest,
            manifest.len(),
        )?;
        Ok(manifest_digest)
    }

    /// Writes the layout with `tag` naming an image index whose only entry is this image,
    /// listed as platform `os`/`architecture` (push with [`crate::registry::LocalRegistry`],
    /// which copies every entry). Returns the index digest.
    pub fn write_index_layout(
        &self,
        dir: &Path,
        tag: &str,
        os: &str,
        architecture: &str,
    ) -> anyhow::Result<String> {
        let manifest_digest = self.write_layout(dir, tag)?;
        let manifest_path = dir
            .join("blobs/sha256")
            .join(manifest_digest.trim_start_matches("sha256:"));
        let manifest_len = std::fs::metadata(manifest_path)?.len();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_len,
                "platform": {"os": os, "architecture": architecture},
            }],
        }))?;
        let index_digest = put_blob(dir, &index)?;
        write_tag(
            dir,
            tag,
            "application/vnd.oci.image.index.v1+json",
            &index_digest,
            index.len(),
        )?;
        Ok(index_digest)
    }
}

/// Stores `data` in the layout at `dir`; its digest.
fn put_blob(dir: &Path, data: &[u8]) -> anyhow::Result<String> {
    let digest = sha256(data);
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(digest)
}

/// Points the layout's `index.json` at one descriptor named `tag`.
fn write_tag(
    dir: &Path,
    tag: &str,
    media_type: &str,
    digest: &str,
    size: usize,
) -> anyhow::Result<()> {
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type, "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
        .context("writing index.json")
}

/// `len` bytes gzip cannot shrink (xorshift), for layers whose size must survive compression.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Long enough to need a PAX or GNU long-name record (ustar holds 100 + 155 bytes).
const LONG_DIR: &str = "usr/share/a-directory-name-that-goes-on-and-on-past-what-ustar-holds/\
    and-a-second-level-that-is-just-as-long-as-the-first-one-to-pass-two-hundred-and-fifty-five";

/// A tar stream written by Python's `tarfile` in `format` (`PAX_FORMAT`, `GNU_FORMAT`), which
/// fills fields an entry does not use its own way (NUL device numbers on FIFOs): a directory, a
/// file and a hard link under a long path, a FIFO, a character and a block device, a symlink.
/// Returns the tar and the long directory's path.
pub fn python_tar(format: &str) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let script = format!(
        r#"
import io, sys, tarfile
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w", format=tarfile.{format}) as tar:
    def add(name, kind, data=b"", **fields):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = fields.pop("mode", 0o644)
        info.mtime = 1_600_000_000
        info.size = len(data)
        for key, value in fields.items():
            setattr(info, key, value)
        tar.addfile(info, io.BytesIO(data) if data else None)
    long = "{LONG_DIR}"
    add("usr", tarfile.DIRTYPE, mode=0o755)
    add(long, tarfile.DIRTYPE, mode=0o755)
    add(long + "/file-with-a-long-name", tarfile.REGTYPE, b"long\n")
    add("usr/linked", tarfile.LNKTYPE, linkname=long + "/file-with-a-long-name")
    add("usr/to-long", tarfile.SYMTYPE, linkname=long + "/file-with-a-long-name", mode=0o777)
    add("run", tarfile.DIRTYPE, mode=0o755)
    add("run/fifo", tarfile.FIFOTYPE, mode=0o620)
    add("dev", tarfile.DIRTYPE, mode=0o755)
    add("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
    add("dev/loop0", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=0)
sys.stdout.buffer.write(out.getvalue())
"#
    );
    crate::registry::require("python3", "python3")?;
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .context("running python3")?;
    anyhow::ensure!(
        output.status.success(),
        "python3 tarfile failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.stdout, LONG_DIR))
}

/// A layer with static busybox as `/bin/busybox` and the applets tests use as hard links.
pub fn busybox_entries() -> anyhow::Result<Vec<Entry>> {
    let busybox = std::fs::read("/bin/busybox")
        .context("reading /bin/busybox: install it with `apt-get install busybox-static`")?;
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::File("bin/busybox".into(), busybox, 0o755, 0, 0),
    ];
    for applet in [
        "sh", "cat", "ls", "id", "env", "pwd", "stat", "echo", "test", "true", "find", "sort",
        "stty", "sleep",
    ] {
        entries.push(Entry::hard_link(&format!("bin/{applet}"), "bin/busybox"));
    }
    Ok(entries)
}

fn tar_of(entries: &[Entry]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        let (path, data): (&str, &[u8]) = match entry {
            Entry::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                (path, b"")
            }
            Entry::File(path, data, mode, uid, gid) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*gid);
                (path, data)
            }
            Entry::Symlink(path, target) | Entry::HardLink(path, target) => {
                let kind = if matches!(entry, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_mode(0o777);
                set_raw(&mut header.as_old_mut().linkname, target)?;
                (path, b"")
            }
        };
        header.set_size(data.len() as u64);
        set_raw(&mut header.as_old_mut().name, path)?;
        header.set_cksum();
        builder.append(&header, data)?;
    }
    Ok(builder.into_inner()?)
}

/// Writes a name into a header field as is: the tar crate's setters refuse `..`, which hostile
/// test layers need.
fn set_raw(field: &mut [u8], value: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        value.len() < field.len(),
        "`{value}` is too long for a tar header"
    );
    field[..value.len()].copy_from_slice(value.as_bytes());
    Ok(())
}

fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}
