//! Importing images from files: an OCI image layout (a directory, or a tar of one) and
//! `docker save` archives. Blobs go through the same verified cache as pulls, so an import and a
//! pull of the same image share everything.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use crate::blob_cache::BlobError;
use crate::config::{ConfigError, ImageConfig};
use crate::digest::{Digest, DigestError};
use crate::reference::ImageRef;
use crate::store::{ImageRecord, ImageStore, StoreError};

const OCI_INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("`{}` is neither an OCI image layout (index.json) nor a `docker save` archive (manifest.json)", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("failed to read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` is not valid JSON of the expected shape", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{}` names no image", path.display())]
    Empty { path: PathBuf },
    #[error("`{}` has no linux/amd64 image", path.display())]
    NoPlatform { path: PathBuf },
    #[error("`{}` names a blob path that leaves the archive: `{name}`", path.display())]
    Escapes { path: PathBuf, name: String },
    #[error("the image config is not usable")]
    Config(#[from] ConfigError),
    #[error("a digest in the image is malformed")]
    Digest(#[from] DigestError),
    #[error("a blob of the image is invalid")]
    Blob(#[from] BlobError),
    #[error("failed to store the image")]
    Store(#[from] StoreError),
}

/// The image imported, and the name it got (if the file carried one).
#[derive(Debug, Clone)]
pub struct Imported {
    pub record: ImageRecord,
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports the image in `path` into `store`, naming it `name` when given, else by the name the
/// file carries (a docker archive's first tag; an OCI layout's full reference annotation).
pub fn import(
    store: &ImageStore,
    path: &Path,
    name: Option<&str>,
) -> Result<Imported, ImportError> {
    let meta = fs::metadata(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    // An archive is unpacked next to the store (same filesystem), and removed afterwards.
    let unpacked;
    let dir = if meta.is_dir() {
        path.to_owned()
    } else {
        unpacked = unpack(store, path)?;
        unpacked.path().to_owned()
    };
    let (record, carried) = if dir.join("oci-layout").is_file() || dir.join("index.json").is_file()
    {
        import_layout(store, &dir)?
    } else if dir.join("manifest.json").is_file() {
        import_docker(store, &dir)?
    } else {
        return Err(ImportError::UnknownFormat {
            path: path.to_owned(),
        });
    };
    // Names are stored in full form (`docker.io/library/x:latest`), as `run` looks them up.
    let name = match name {
        Some(name) => Some(
            name.parse::<ImageRef>()
                .map_or_else(|_| name.to_owned(), |r| r.to_string()),
        ),
        None => carried
            .and_then(|n| n.parse::<ImageRef>().ok())
            .map(|r| r.to_string()),
    };
    if let Some(name) = &name {
        store.tag(name, &record.digest)?;
    }
    Ok(Imported { record, name })
}

fn unpack(store: &ImageStore, archive: &Path) -> Result<tempfile::TempDir, ImportError> {
    let read_err = |source| ImportError::Read {
        path: archive.to_owned(),
        source,
    };
    let parent = store.blobs().temp_dir_parent().map_err(ImportError::Blob)?;
    let dir = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(parent)
        .map_err(read_err)?;
    let file = fs::File::open(archive).map_err(read_err)?;
    // `unpack` refuses entries that would land outside `dir`.
    tar::Archive::new(io::BufReader::new(file))
        .unpack(dir.path())
        .map_err(read_err)?;
    Ok(dir)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ImportError> {
    let bytes = fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ImportError::Json {
        path: path.to_owned(),
        source,
    })
}

fn import_layout(
    store: &ImageStore,
    dir: &Path,
) -> Result<(ImageRecord, Option<String>), ImportError> {
    let index_path = dir.join("index.json");
    let index: Index = read_json(&index_path)?;
    let first = index.manifests.first().ok_or(ImportError::Empty {
        path: index_path.clone(),
    })?;
    let carried = first
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| first.annotations.get("org.opencontainers.image.ref.name"))
        .cloned();
    let blob = |digest: &Digest| dir.join("blobs/sha256").join(digest.hex());
    let mut manifest_digest: Digest = first.digest.parse()?;
    // A nested index (multi-platform): take its linux/amd64 manifest.
    while OCI_INDEX_TYPES.contains(&descriptor_type(&blob(&manifest_digest))?.as_str()) {
        let nested: Index = read_json(&blob(&manifest_digest))?;
        let amd64 = nested
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.architecture == "amd64" && p.os == "linux")
            })
            .ok_or(ImportError::NoPlatform {
                path: dir.to_owned(),
            })?;
        manifest_digest = amd64.digest.parse()?;
    }
    let manifest: Manifest = read_json(&blob(&manifest_digest))?;
    let copy =
        |digest: &Digest| -> Result<(), ImportError> { copy_blob(store, &blob(digest), digest) };
    copy(&manifest_digest)?;
    let config_digest: Digest = manifest.config.digest.parse()?;
    copy(&config_digest)?;
    let mut layers = Vec::new();
    for layer in &manifest.layers {
        let digest: Digest = layer.digest.parse()?;
        copy(&digest)?;
        layers.push(digest);
    }
    let record = build(store, &manifest_digest, &config_digest, &layers, dir)?;
    Ok((record, carried))
}

/// The `mediaType` of a manifest or index file.
fn descriptor_type(path: &Path) -> Result<String, ImportError> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let typed: Typed = read_json(path)?;
    // OCI allows an index without mediaType; it is the one with `manifests`.
    if typed.media_type.is_empty() && typed.manifests.is_some() {
        return Ok(OCI_INDEX_TYPES[0].to_owned());
    }
    Ok(typed.media_type)
}

fn import_docker(
    store: &ImageStore,
    dir: &Path,
) -> Result<(ImageRecord, Option<String>), ImportError> {
    let manifest_path = dir.join("manifest.json");
    let entries: Vec<DockerManifest> = read_json(&manifest_path)?;
    let entry = entries.first().ok_or(ImportError::Empty {
        path: manifest_path.clone(),
    })?;
    let inside = |name: &str| -> Result<PathBuf, ImportError> {
        let relative = Path::new(name);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(ImportError::Escapes {
                path: manifest_path.clone(),
                name: name.to_owned(),
            });
        }
        Ok(dir.join(relative))
    };
    let config_path = inside(&entry.config)?;
    let config_digest = put_file(store, &config_path)?;
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    for layer in &entry.layers {
        let path = inside(layer)?;
        let digest = put_file(store, &path)?;
        let size = fs::metadata(&path).map_or(0, |m| m.len());
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": size}));
        layers.push(digest);
    }
    // A docker archive has no manifest; this one is what a registry push would make, so the
    // image is keyed by a manifest digest like every other.
    let config_size = fs::metadata(&config_path).map_or(0, |m| m.len());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_size},
        "layers": descriptors,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| ImportError::Json {
        path: manifest_path.clone(),
        source,
    })?;
    let manifest_digest = store.blobs().put(&manifest_bytes)?;
    let record = build(store, &manifest_digest, &config_digest, &layers, dir)?;
    let carried = entry
        .repo_tags
        .as_ref()
        .and_then(|tags| tags.first().cloned());
    Ok((record, carried))
}

fn build(
    store: &ImageStore,
    manifest: &Digest,
    config: &Digest,
    layers: &[Digest],
    dir: &Path,
) -> Result<ImageRecord, ImportError> {
    let config_path = store.blobs().path(config);
    let json = fs::read(&config_path).map_err(|source| ImportError::Read {
        path: config_path,
        source,
    })?;
    let config = ImageConfig::parse(&json)?;
    if config.architecture != "amd64" || config.os != "linux" {
        return Err(ImportError::NoPlatform {
            path: dir.to_owned(),
        });
    }
    let diff_ids = ImageConfig::diff_ids(&json)?;
    Ok(store.build(manifest, &config, layers, &diff_ids)?)
}

/// Copies a layout blob into the cache, checking it against the digest it is filed under.
fn copy_blob(store: &ImageStore, source: &Path, digest: &Digest) -> Result<(), ImportError> {
    if store.blobs().contains(digest) {
        return Ok(());
    }
    let temp = store.blobs().temp_file()?;
    fs::copy(source, temp.path()).map_err(|e| ImportError::Read {
        path: source.to_owned(),
        source: e,
    })?;
    store.blobs().commit(temp, digest, None)?;
    Ok(())
}

/// Stores a file under the digest of its content.
fn put_file(store: &ImageStore, path: &Path) -> Result<Digest, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let mut hashing = crate::blob_cache::HashingReader::new(&mut file);
    io::copy(&mut hashing, &mut io::sink()).map_err(read_err)?;
    let digest = hashing.finish().map_err(read_err)?;
    copy_blob(store, path, &digest)?;
    Ok(digest)
}
