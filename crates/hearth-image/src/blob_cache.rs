//! Blobs by digest under `blobs/sha256/<hex>`, written through a temporary file and renamed into
//! place only once their size and digest check out, so concurrent pulls of the same blob each
//! write their own temporary file and the last rename wins with identical content.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::owner_lock;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {expected} does not match its digest: got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("failed to access the blob cache at `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Names of downloads in progress (or abandoned) in the cache dir.
const PARTIAL_PREFIX: &str = ".partial-";

/// A download in progress: a temporary file in the cache dir and its owner lock.
#[derive(Debug)]
pub struct PartialBlob {
    file: tempfile::NamedTempFile,
    _lock: owner_lock::OwnerLock,
}

impl PartialBlob {
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Another handle on the file, for writing.
    pub fn reopen(&self) -> io::Result<fs::File> {
        self.file.reopen()
    }
}

#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BlobCache { dir: dir.into() }
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// A temporary file in the cache dir, to be filled and then [`BlobCache::commit`]ted;
    /// owner-locked, so [`BlobCache::remove_abandoned`] leaves it alone while this process lives.
    pub fn temp_file(&self) -> Result<PartialBlob, BlobError> {
        let dir = self.dir.join("sha256");
        let io_err = |source| BlobError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_err)?;
        let file = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(&dir)
            .map_err(io_err)?;
        let lock = owner_lock::hold(file.path()).map_err(io_err)?;
        Ok(PartialBlob { file, _lock: lock })
    }

    /// Removes the partial downloads of pulls that died; returns their paths.
    pub fn remove_abandoned(&self) -> Result<Vec<PathBuf>, BlobError> {
        let dir = self.dir.join("sha256");
        owner_lock::remove_abandoned(&dir, PARTIAL_PREFIX)
            .map_err(|source| BlobError::Io { path: dir, source })
    }

    /// The cache dir, made if missing: scratch space on the same filesystem as the blobs.
    pub fn temp_dir_parent(&self) -> Result<&Path, BlobError> {
        fs::create_dir_all(&self.dir).map_err(|source| BlobError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(&self.dir)
    }

    /// Checks `temp` against `digest` and `size` and moves it into place.
    pub fn commit(
        &self,
        temp: PartialBlob,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<PathBuf, BlobError> {
        verify(temp.path(), digest, size)?;
        let dest = self.path(digest);
        temp.file.persist(&dest).map_err(|e| BlobError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(dest)
    }

    /// Stores bytes already in memory (manifests, configs).
    pub fn put(&self, data: &[u8]) -> Result<Digest, BlobError> {
        let digest = Digest::of(data);
        let temp = self.temp_file()?;
        fs::write(temp.path(), data).map_err(|source| BlobError::Io {
            path: temp.path().to_owned(),
            source,
        })?;
        self.commit(temp, &digest, None)?;
        Ok(digest)
    }

    /// Every cached blob.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let dir = self.dir.join("sha256");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(BlobError::Io { path: dir, source }),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| format!("sha256:{}", e.file_name().to_str()?).parse().ok())
            .collect())
    }

    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(BlobError::Io { path, source: e }),
            _ => Ok(()),
        }
    }
}

/// Checks a file's size and sha256.
pub fn verify(path: &Path, digest: &Digest, size: Option<u64>) -> Result<(), BlobError> {
    let io_err = |source| BlobError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let actual_size = io::copy(&mut file, &mut hasher).map_err(io_err)?;
    if let Some(expected) = size.filter(|s| *s != actual_size) {
        return Err(BlobError::SizeMismatch {
            digest: digest.clone(),
            expected,
            actual: actual_size,
        });
    }
    let actual = Digest::from_hasher(hasher);
    if actual != *digest {
        return Err(BlobError::DigestMismatch {
            expected: digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// A reader that hashes what passes through, to check a cached blob while it is being used.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Drains what the consumer left unread and returns the digest of everything.
    pub fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self.inner, &mut self.hasher)?;
        Ok(Digest::from_hasher(self.hasher))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn test_commit_refuses_a_blob_whose_digest_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let temp = cache.temp_file().unwrap();
        temp.reopen().unwrap().write_all(b"tampered").unwrap();
        let claimed = Digest::of(b"original");
        let err = cache.commit(temp, &claimed, None).unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert!(!cache.contains(&claimed));
        assert!(cache.list().unwrap().is_empty());
    }

    #[test]
    fn test_commit_refuses_a_truncated_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let temp = cache.temp_file().unwrap();
        temp.reopen().unwrap().write_all(b"abc").unwrap();
        let err = cache
            .commit(temp, &Digest::of(b"abc"), Some(4))
            .unwrap_err();
        assert!(matches!(err, BlobError::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn test_put_then_list() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let digest = cache.put(b"hello").unwrap();
        assert_eq!(cache.list().unwrap(), vec![digest.clone()]);
        assert_eq!(fs::read(cache.path(&digest)).unwrap(), b"hello");
    }
}
