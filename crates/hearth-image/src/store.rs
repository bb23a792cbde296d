//! Images on disk: one directory per manifest digest under `images/oci/<hex>/` holding its
//! read-only base and its record (`image.json`), plus `refs.json` naming them. The base is
//! `layers/NN.erofs`, hard links to the shared layers in `images/oci/layers/` (see
//! [`crate::layer_pool`]) that the guest stacks with overlayfs; images stored by older versions
//! have one merged `rootfs.erofs` (or `rootfs.ext4`) instead, and still run.
//! An image is built in a staging dir and renamed into place whole, so a reader sees a complete
//! image or none; `refs.json` changes under a file lock.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::blob_cache::{BlobCache, BlobError, HashingReader};
use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::layer::{self, Form, LayerError};
use crate::layer_pool::{self, LayerPool, Unit};
use crate::owner_lock;
use crate::rootfs::{self, RootfsError};
use crate::space;
use crate::unpack_limit::{UnpackBudget, DEFAULT_MAX_UNPACKED_BYTES};

const RECORD: &str = "image.json";
/// An image's layers, in its dir; also the shared layers, in the store's.
const IMAGE_LAYERS: &str = "layers";
/// What a base was before layers were stored once (and what a layer is built as).
const ROOTFS: &str = "rootfs.erofs";
/// What bases were before they were erofs; such images still run.
const EXT4_ROOTFS: &str = "rootfs.ext4";
const REFS: &str = "refs.json";
/// Names of base images being built (or abandoned by a pull that died).
const BUILDING_PREFIX: &str = ".building-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to access the image store at `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` is corrupt", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no image `{name}`; see `hearth image ls`")]
    NotFound { name: String },
    #[error("layer {digest} is not in the blob cache")]
    MissingLayer { digest: Digest },
    #[error("cached layer {expected} is corrupt (its content hashes to {actual}); pull again")]
    CorruptLayer { expected: Digest, actual: Digest },
    #[error("failed to apply layer {digest}")]
    Layer {
        digest: Digest,
        #[source]
        source: LayerError,
    },
    #[error("failed to build the base image for {digest}")]
    Rootfs {
        digest: Digest,
        #[source]
        source: RootfsError,
    },
    #[error(
        "layer {layer} unpacks to {actual}, but the image config's rootfs.diff_ids says {expected}"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("the image has {layers} layers but its config lists {diff_ids} rootfs.diff_ids")]
    DiffIdCount { layers: usize, diff_ids: usize },
    #[error("image {digest} unpacks to more than {limit} bytes, the limit (HEARTH_MAX_IMAGE_SIZE, --max-image-size); stopped at layer {layer}")]
    TooBig {
        digest: Digest,
        layer: Digest,
        limit: u64,
    },
    #[error("blob cache")]
    Blob(#[from] BlobError),
    #[error("no space left in `{}` to build the base image for {digest}", dir.display())]
    NoSpace {
        dir: PathBuf,
        digest: Digest,
        #[source]
        source: Box<StoreError>,
    },
}

/// What hearth keeps about one image (one manifest digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Digest>,
    /// Size of the base image file in bytes.
    pub size_bytes: u64,
    /// When the base was built, in seconds since the Unix epoch.
    pub created_unix: u64,
}

/// An image with the names that point at it, as `hearth image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    pub names: Vec<String>,
    #[serde(flatten)]
    pub record: ImageRecord,
}

/// Why an image's layers were not all linked.
enum LinkFailure {
    /// The image's `layer`th layer hard-links into a lower one.
    LinkBelow {
        layer: usize,
    },
    Failed(StoreError),
}
use LinkFailure::{Failed, LinkBelow};

impl From<StoreError> for LinkFailure {
    fn from(e: StoreError) -> Self {
        Failed(e)
    }
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub images: Vec<Digest>,
    pub blobs: Vec<Digest>,
    pub bytes_freed: u64,
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    pool: LayerPool,
    blobs: BlobCache,
    mkfs: PathBuf,
    max_unpacked_bytes: u64,
}

impl ImageStore {
    /// `dir` holds the images, `blobs_dir` the blob cache; `mkfs` is `mkfs.erofs`.
    pub fn new(dir: impl Into<PathBuf>, blobs_dir: impl Into<PathBuf>, mkfs: PathBuf) -> Self {
        let dir = dir.into();
        ImageStore {
            pool: LayerPool::new(dir.join(IMAGE_LAYERS)),
            dir,
            blobs: BlobCache::new(blobs_dir),
            mkfs,
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
        }
    }

    /// Bounds what one image may unpack to (uncompressed layer bytes, all layers together);
    /// [`DEFAULT_MAX_UNPACKED_BYTES`] unless set.
    pub fn with_max_unpacked_bytes(mut self, bytes: u64) -> Self {
        self.max_unpacked_bytes = bytes;
        self
    }

    pub fn blobs(&self) -> &BlobCache {
        &self.blobs
    }

    fn image_dir(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The base of a stored image: its dir of layers (see [`layer_pool::base_files`]), or the
    /// one erofs (or ext4) of an image stored before layers were.
    pub fn rootfs(&self, digest: &Digest) -> PathBuf {
        let dir = self.image_dir(digest);
        [EXT4_ROOTFS, ROOTFS]
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .unwrap_or_else(|| dir.join(IMAGE_LAYERS))
    }

    fn io_err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The record of an image that is fully built, if any.
    pub fn record(&self, digest: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.image_dir(digest).join(RECORD);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Builds the base image of `digest` from cached layers, unless it is already there; each
    /// layer's uncompressed digest must be its entry in `diff_ids`. The staging dir goes on any
    /// failure, so a full disk is left as it was found.
    pub fn build(
        &self,
        digest: &Digest,
        config: &ImageConfig,
        layers: &[Digest],
        diff_ids: &[Digest],
    ) -> Result<ImageRecord, StoreError> {
        self.build_staged(digest, config, layers, diff_ids)
            .inspect_err(|_| {
                // Layers built before the failure, which no image uses now.
                if let Err(e) = self.pool.sweep() {
                    tracing::warn!(error = %e, "could not remove the layers of a failed build");
                }
            })
            .map_err(|e| {
                if space::is_no_space(&e) {
                    StoreError::NoSpace {
                        dir: self.dir.clone(),
                        digest: digest.clone(),
                        source: Box::new(e),
                    }
                } else {
                    e
                }
            })
    }

    fn build_staged(
        &self,
        digest: &Digest,
        config: &ImageConfig,
        layers: &[Digest],
        diff_ids: &[Digest],
    ) -> Result<ImageRecord, StoreError> {
        if let Some(record) = self.record(digest)? {
            return Ok(record);
        }
        if layers.len() != diff_ids.len() {
            return Err(StoreError::DiffIdCount {
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        fs::create_dir_all(&self.dir).map_err(Self::io_err(&self.dir))?;
        let staging = tempfile::Builder::new()
            .prefix(BUILDING_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(Self::io_err(&self.dir))?;
        // Held until the staging dir is renamed into place or removed.
        let _owner = owner_lock::hold(staging.path()).map_err(Self::io_err(staging.path()))?;
        let layer_dir = staging.path().join(IMAGE_LAYERS);
        let mut merged_below = 0;
        let size_bytes = loop {
            match self.link_layers(digest, layers, diff_ids, merged_below, &layer_dir) {
                Ok(size) => break size,
                // A hard link into a lower layer: that layer and those below it are built as
                // one merged tree instead.
                Err(LinkBelow { layer }) => merged_below = layer + 1,
                Err(Failed(e)) => return Err(e),
            }
        };
        let record = ImageRecord {
            digest: digest.clone(),
            config: config.clone(),
            layers: layers.to_vec(),
            size_bytes,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let record_path = staging.path().join(RECORD);
        let json = serde_json::to_vec_pretty(&record).map_err(|source| StoreError::Corrupt {
            path: record_path.clone(),
            source,
        })?;
        fs::write(&record_path, json).map_err(Self::io_err(&record_path))?;
        let dest = self.image_dir(digest);
        let staged = staging.keep();
        if let Err(e) = fs::rename(&staged, &dest) {
            let _ = fs::remove_dir_all(&staged);
            // Another pull of the same image finished first: theirs is identical.
            if dest.join(RECORD).is_file() {
                return Ok(record);
            }
            return Err(StoreError::Io {
                path: dest,
                source: e,
            });
        }
        tracing::info!(image = %digest, size_bytes, "base image built");
        Ok(record)
    }

    /// Fills `layer_dir` (made afresh) with hard links to the pooled erofs of each unit of the
    /// image, building those the pool lacks; returns their total size.
    fn link_layers(
        &self,
        digest: &Digest,
        layers: &[Digest],
        diff_ids: &[Digest],
        merged_below: usize,
        layer_dir: &Path,
    ) -> Result<u64, LinkFailure> {
        if layer_dir.exists() {
            fs::remove_dir_all(layer_dir).map_err(Self::io_err(layer_dir))?;
        }
        fs::create_dir(layer_dir).map_err(Self::io_err(layer_dir))?;
        let mut budget = UnpackBudget::new(self.max_unpacked_bytes);
        let mut size = 0;
        let mut first_layer = 0;
        for (index, unit) in layer_pool::plan(layers, diff_ids, merged_below)
            .iter()
            .enumerate()
        {
            let dest = layer_dir.join(layer_pool::layer_file_name(index));
            if !self
                .pool
                .link_into(unit, &dest)
                .map_err(Self::io_err(&dest))?
            {
                self.build_unit(digest, unit, first_layer, &mut budget, &dest)?;
            }
            size += fs::metadata(&dest).map_err(Self::io_err(&dest))?.len();
            first_layer += unit.layers.len();
        }
        Ok(size)
    }

    /// Builds the erofs of `unit` (its bottom layer is the image's `first_layer`th), puts it in
    /// the pool and links it to `dest`.
    fn build_unit(
        &self,
        digest: &Digest,
        unit: &Unit<'_>,
        first_layer: usize,
        budget: &mut UnpackBudget,
        dest: &Path,
    ) -> Result<(), LinkFailure> {
        let (staging, _owner) = self.pool.staging().map_err(Self::io_err(&self.dir))?;
        let tree = staging.path().join("tree");
        fs::create_dir(&tree).map_err(Self::io_err(&tree))?;
        // The guest's `/` is this directory (or lies on it): world-searchable like any root.
        fs::set_permissions(&tree, fs::Permissions::from_mode(0o755))
            .map_err(Self::io_err(&tree))?;
        for (i, (layer, diff_id)) in unit.layers.iter().zip(unit.diff_ids).enumerate() {
            match self.apply_cached(layer, diff_id, &tree, budget, unit.form()) {
                Ok(()) => {}
                Err(StoreError::Layer {
                    source: LayerError::LinkBelow { .. },
                    ..
                }) => {
                    return Err(LinkBelow {
                        layer: first_layer + i,
                    })
                }
                Err(_) if budget.exceeded() => {
                    return Err(Failed(StoreError::TooBig {
                        digest: digest.clone(),
                        layer: layer.clone(),
                        limit: budget.limit(),
                    }))
                }
                Err(e) => return Err(Failed(e)),
            }
        }
        let image = staging.path().join(ROOTFS);
        rootfs::build(&self.mkfs, &tree, &image).map_err(|source| StoreError::Rootfs {
            digest: digest.clone(),
            source,
        })?;
        fs::hard_link(&image, dest).map_err(Self::io_err(dest))?;
        self.pool.add(unit, &image).map_err(Self::io_err(&image))?;
        Ok(())
    }

    /// Applies one cached layer (gzip, zstd or plain tar) in `form`, checking the blob's digest
    /// and its uncompressed digest (`diff_id`) as it goes and counting what it unpacks to in
    /// `budget`.
    fn apply_cached(
        &self,
        digest: &Digest,
        diff_id: &Digest,
        tree: &Path,
        budget: &mut UnpackBudget,
        form: Form,
    ) -> Result<(), StoreError> {
        let path = self.blobs.path(digest);
        let file = fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingLayer {
                digest: digest.clone(),
            },
            _ => StoreError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let mut reader = HashingReader::new(io::BufReader::new(file));
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut reader, &mut magic).map_err(Self::io_err(&path))?;
        let head = io::Cursor::new(magic[..n].to_vec()).chain(&mut reader);
        let layer_err = |source| StoreError::Layer {
            digest: digest.clone(),
            source,
        };
        let decompressed: Box<dyn Read + '_> = match magic {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(head)),
            [0x28, 0xb5, 0x2f, 0xfd] => {
                Box::new(zstd::Decoder::new(head).map_err(|e| layer_err(LayerError::Read(e)))?)
            }
            _ => Box::new(head),
        };
        let mut tar = HashingReader::new(budget.reader(decompressed));
        layer::apply(&mut tar, tree, form).map_err(layer_err)?;
        // The rest of the stream (tar padding) counts too: diff_ids hash all of it.
        let unpacked = tar.finish().map_err(|e| layer_err(LayerError::Read(e)))?;
        let actual = reader.finish().map_err(Self::io_err(&path))?;
        if actual != *digest {
            return Err(StoreError::CorruptLayer {
                expected: digest.clone(),
                actual,
            });
        }
        if unpacked != *diff_id {
            return Err(StoreError::DiffIdMismatch {
                layer: digest.clone(),
                expected: diff_id.clone(),
                actual: unpacked,
            });
        }
        Ok(())
    }

    /// Points `name` at `digest`.
    pub fn tag(&self, name: &str, digest: &Digest) -> Result<(), StoreError> {
        self.update_refs(|refs| {
            refs.insert(name.to_owned(), digest.clone());
        })
    }

    /// The digest `name` points at: a name from `refs.json`, a full digest or a unique prefix of
    /// one (as `docker image rm` accepts ids).
    pub fn resolve(&self, name: &str) -> Result<Digest, StoreError> {
        let refs = self.refs()?;
        if let Some(digest) = refs.get(name) {
            return Ok(digest.clone());
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let matches: Vec<Digest> = self
            .digests()?
            .into_iter()
            .filter(|d| hex.len() >= 4 && d.hex().starts_with(hex))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(StoreError::NotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// Every built image with its names, newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let refs = self.refs()?;
        let mut out = Vec::new();
        for digest in self.digests()? {
            if let Some(record) = self.record(&digest)? {
                let names = refs
                    .iter()
                    .filter(|(_, d)| **d == digest)
                    .map(|(n, _)| n.clone())
                    .collect();
                out.push(ImageSummary { names, record });
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.record.created_unix));
        Ok(out)
    }

    /// Removes a name; when it was the image's last name (or `name` is a digest), the image too.
    pub fn remove(&self, name: &str) -> Result<Digest, StoreError> {
        let digest = self.resolve(name)?;
        let by_name = self.refs()?.contains_key(name);
        let mut last = true;
        self.update_refs(|refs| {
            if by_name {
                refs.remove(name);
            } else {
                refs.retain(|_, d| *d != digest);
            }
            last = !refs.values().any(|d| *d == digest);
        })?;
        if last {
            let dir = self.image_dir(&digest);
            fs::remove_dir_all(&dir).map_err(Self::io_err(&dir))?;
            self.pool.sweep().map_err(Self::io_err(&self.dir))?;
        }
        Ok(digest)
    }

    /// Removes what pulls that died left: staging dirs and partial downloads whose owner lock
    /// is free. A live pull's are kept. Returns the paths removed.
    pub fn remove_abandoned(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut removed = owner_lock::remove_abandoned(&self.dir, BUILDING_PREFIX)
            .map_err(Self::io_err(&self.dir))?;
        removed.extend(
            self.pool
                .remove_abandoned()
                .map_err(Self::io_err(&self.dir))?,
        );
        removed.extend(self.blobs.remove_abandoned()?);
        // Layers only those staging dirs linked to.
        self.pool.sweep().map_err(Self::io_err(&self.dir))?;
        for path in &removed {
            tracing::info!(path = %path.display(), "removed what an interrupted pull left");
        }
        Ok(removed)
    }

    /// Removes images no name points at, blobs no image uses, and leftovers of interrupted work.
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        self.remove_abandoned()?;
        let mut report = PruneReport::default();
        let refs = self.refs()?;
        let mut kept_layers = Vec::new();
        for digest in self.digests()? {
            let record = self.record(&digest)?;
            match record {
                Some(record) if refs.values().any(|d| *d == digest) => {
                    kept_layers.extend(record.layers);
                }
                _ => {
                    let dir = self.image_dir(&digest);
                    report.bytes_freed += dir_size(&dir);
                    fs::remove_dir_all(&dir).map_err(Self::io_err(&dir))?;
                    report.images.push(digest);
                }
            }
        }
        report.bytes_freed += self.pool.sweep().map_err(Self::io_err(&self.dir))?;
        for blob in self.blobs.list()? {
            if !kept_layers.contains(&blob) {
                report.bytes_freed += fs::metadata(self.blobs.path(&blob)).map_or(0, |m| m.len());
                self.blobs.remove(&blob)?;
                report.blobs.push(blob);
            }
        }
        Ok(report)
    }

    /// Digests of the image dirs present (built or not).
    fn digests(&self) -> Result<Vec<Digest>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        Ok(entries
            .flatten()
            .filter_map(|e| format!("sha256:{}", e.file_name().to_str()?).parse().ok())
            .collect())
    }

    fn refs(&self) -> Result<BTreeMap<String, Digest>, StoreError> {
        let path = self.dir.join(REFS);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Changes `refs.json` under an exclusive lock, writing it atomically.
    fn update_refs(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Digest>),
    ) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(Self::io_err(&self.dir))?;
        let lock_path = self.dir.join(".refs.lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Self::io_err(&lock_path))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            StoreError::Io {
                path: lock_path.clone(),
                source: errno.into(),
            }
        })?;
        let mut refs = self.refs()?;
        change(&mut refs);
        let path = self.dir.join(REFS);
        let json = serde_json::to_vec_pretty(&refs).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let temp = tempfile::NamedTempFile::new_in(&self.dir).map_err(Self::io_err(&self.dir))?;
        fs::write(temp.path(), json).map_err(Self::io_err(temp.path()))?;
        temp.persist(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(())
    }
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rootfs_is_the_layer_dir_unless_an_older_single_base_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path(), dir.path().join("blobs"), "mkfs.erofs".into());
        let digest = Digest::of(b"image");
        assert_eq!(store.rootfs(&digest).file_name().unwrap(), IMAGE_LAYERS);
        fs::create_dir_all(store.image_dir(&digest)).unwrap();
        fs::write(store.image_dir(&digest).join(ROOTFS), b"").unwrap();
        assert_eq!(store.rootfs(&digest).file_name().unwrap(), ROOTFS);
        fs::write(store.image_dir(&digest).join(EXT4_ROOTFS), b"").unwrap();
        assert_eq!(store.rootfs(&digest).file_name().unwrap(), EXT4_ROOTFS);
    }
}
