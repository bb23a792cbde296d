//! Layers stored once however many images use them: `<store>/layers/<key>.erofs`, one erofs
//! per layer in overlayfs's form ([`Form::Overlay`], stacked in the guest), or one for a run of
//! bottom layers merged. An image's dir holds hard links to its layers, so the filesystem
//! counts the users: a layer whose only name is the pool's is used by no image.
//!
//! Keys are uncompressed digests (diff_ids), so the same layer shipped in docker and OCI form
//! (compressed differently) is stored once too.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::layer::Form;
use crate::owner_lock::{self, OwnerLock};

/// The most layers one image's VM gets as disks. QEMU's `microvm` machine has 24 virtio-mmio
/// slots, and the agent's channel and the network take some; an image with more layers has
/// its bottom ones merged into one erofs so that this many remain.
pub const MAX_LAYER_DISKS: usize = 16;

const SUFFIX: &str = ".erofs";
/// Names of layers being built (or abandoned by a pull that died).
pub(crate) const BUILDING_PREFIX: &str = ".building-";

/// Layers built into one erofs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit<'a> {
    pub layers: &'a [Digest],
    pub diff_ids: &'a [Digest],
    /// Applied onto each other (whiteouts delete), rather than one layer in overlayfs's form.
    pub merged: bool,
}

impl Unit<'_> {
    pub fn form(&self) -> Form {
        if self.merged {
            Form::Merged
        } else {
            Form::Overlay
        }
    }

    /// The pool's name for it. A layer's two forms differ in content, so they differ in name.
    fn key(&self) -> String {
        if self.merged {
            let ids: Vec<&str> = self.diff_ids.iter().map(Digest::hex).collect();
            format!("merged-{}", Digest::of(ids.join("\n").as_bytes()).hex())
        } else {
            self.diff_ids
                .first()
                .map_or_else(String::new, |d| d.hex().to_owned())
        }
    }
}

/// The erofs units of an image, bottom first: the lowest `merged_below` layers merged into one
/// (more if the image has more than [`MAX_LAYER_DISKS`] layers), then one per layer.
pub(crate) fn plan<'a>(
    layers: &'a [Digest],
    diff_ids: &'a [Digest],
    merged_below: usize,
) -> Vec<Unit<'a>> {
    let count = layers.len().min(diff_ids.len());
    let merged = merged_below
        .max((count + 1).saturating_sub(MAX_LAYER_DISKS))
        .min(count);
    let mut units = Vec::new();
    if merged > 0 {
        units.push(Unit {
            layers: &layers[..merged],
            diff_ids: &diff_ids[..merged],
            merged: true,
        });
    }
    for i in merged..count {
        units.push(Unit {
            layers: &layers[i..=i],
            diff_ids: &diff_ids[i..=i],
            merged: false,
        });
    }
    units
}

#[derive(Debug, Clone)]
pub(crate) struct LayerPool {
    dir: PathBuf,
}

impl LayerPool {
    pub fn new(dir: PathBuf) -> Self {
        LayerPool { dir }
    }

    fn path(&self, unit: &Unit<'_>) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", unit.key()))
    }

    /// Links the pooled erofs of `unit` to `dest`; false when the pool has none.
    pub fn link_into(&self, unit: &Unit<'_>, dest: &Path) -> io::Result<bool> {
        match fs::hard_link(self.path(unit), dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts `built`, the freshly made erofs of `unit`, in the pool. One another pull put there
    /// first is as good (the same layers give the same tree) and stays.
    pub fn add(&self, unit: &Unit<'_>, built: &Path) -> io::Result<()> {
        match fs::hard_link(built, self.path(unit)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A scratch dir to build a layer in, owner-locked so cleanup leaves it to a live pull.
    pub fn staging(&self) -> io::Result<(tempfile::TempDir, OwnerLock)> {
        fs::create_dir_all(&self.dir)?;
        let staging = tempfile::Builder::new()
            .prefix(BUILDING_PREFIX)
            .tempdir_in(&self.dir)?;
        let lock = owner_lock::hold(staging.path())?;
        Ok((staging, lock))
    }

    /// Removes the layers no image links to; returns the bytes freed. A layer a pull links
    /// at the same moment keeps its data under the image's name (only the pool forgets it, and
    /// a later pull builds it again), so this never breaks an image.
    pub fn sweep(&self) -> io::Result<u64> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut freed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(BUILDING_PREFIX) || !name.ends_with(SUFFIX) {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.nlink() == 1 {
                match fs::remove_file(entry.path()) {
                    Ok(()) => freed += meta.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(freed)
    }

    /// Removes the scratch dirs of builds that died.
    pub fn remove_abandoned(&self) -> io::Result<Vec<PathBuf>> {
        owner_lock::remove_abandoned(&self.dir, BUILDING_PREFIX)
    }
}

/// The filesystem images a base is made of, bottom first: an image dir's `layers/NN.erofs`, or
/// the one file of the built-in image and of images stored before layers were.
pub fn base_files(base: &Path) -> io::Result<Vec<PathBuf>> {
    if !base.is_dir() {
        return Ok(vec![base.to_owned()]);
    }
    let mut files: Vec<PathBuf> = fs::read_dir(base)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "erofs"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{}` holds no layers", base.display()),
        ));
    }
    Ok(files)
}

/// An image dir's name for its `index`th layer: zero-padded so names sort bottom first.
pub(crate) fn layer_file_name(index: usize) -> String {
    format!("{index:02}{SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(n: usize) -> Vec<Digest> {
        (0..n).map(|i| Digest::of(&[i as u8])).collect()
    }

    #[test]
    fn test_plan_gives_one_unit_per_layer_and_merges_the_bottom_past_the_disk_limit() {
        let ids = digests(3);
        let units = plan(&ids, &ids, 0);
        assert_eq!(units.len(), 3);
        assert!(units.iter().all(|u| !u.merged && u.layers.len() == 1));
        let ids = digests(MAX_LAYER_DISKS + 4);
        let units = plan(&ids, &ids, 0);
        assert_eq!(units.len(), MAX_LAYER_DISKS);
        assert!(units[0].merged && units[0].layers.len() == 5);
        let units = plan(&ids[..3], &ids[..3], 2);
        assert_eq!(units.len(), 2);
        assert_eq!((units[0].merged, units[0].layers.len()), (true, 2));
    }

    #[test]
    fn test_a_layer_merged_and_alone_has_different_names() {
        let ids = digests(1);
        let alone = plan(&ids, &ids, 0)[0];
        let merged = plan(&ids, &ids, 1)[0];
        assert_eq!(alone.key(), ids[0].hex());
        assert_ne!(alone.key(), merged.key());
    }

    #[test]
    fn test_sweep_removes_only_layers_no_image_links() {
        let dir = tempfile::tempdir().unwrap();
        let pool = LayerPool::new(dir.path().join("layers"));
        let ids = digests(2);
        let units = plan(&ids, &ids, 0);
        let image = dir.path().join("image");
        fs::create_dir(&image).unwrap();
        for unit in &units {
            let (staging, _lock) = pool.staging().unwrap();
            let built = staging.path().join("layer.erofs");
            fs::write(&built, unit.key()).unwrap();
            pool.add(unit, &built).unwrap();
        }
        assert!(pool.link_into(&units[0], &image.join("00.erofs")).unwrap());
        assert_eq!(pool.sweep().unwrap(), units[1].key().len() as u64);
        assert!(pool.path(&units[0]).is_file() && !pool.path(&units[1]).exists());
        assert!(!pool.link_into(&units[1], &image.join("01.erofs")).unwrap());
        fs::remove_file(image.join("00.erofs")).unwrap();
        pool.sweep().unwrap();
        assert!(!pool.path(&units[0]).exists());
    }

    #[test]
    fn test_base_files_of_a_layer_dir_are_bottom_first() {
        let dir = tempfile::tempdir().unwrap();
        for i in [10, 2, 0] {
            fs::write(dir.path().join(layer_file_name(i)), "").unwrap();
        }
        let names: Vec<_> = base_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["00.erofs", "02.erofs", "10.erofs"]);
        let file = dir.path().join("rootfs.ext4");
        assert_eq!(base_files(&file).unwrap(), vec![file]);
        let empty = tempfile::tempdir().unwrap();
        assert!(base_files(empty.path()).is_err());
    }
}
