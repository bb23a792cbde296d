//! Fetching an official Firecracker release for `hearth setup --backend firecracker
//! --fetch-firecracker`: the archive for this host's architecture, verified against a SHA-256
//! before anything is unpacked, then the `firecracker` and `jailer` binaries from it installed
//! under the state dir.
//!
//! A release is `<base>/v<V>/firecracker-v<V>-<arch>.tgz` holding
//! `release-v<V>-<arch>/firecracker-v<V>-<arch>` and `.../jailer-v<V>-<arch>` (the layout of
//! Firecracker's `tools/release.sh` and its getting-started guide). The checksum is the one
//! the caller pins, else the one published beside the archive (`<archive>.sha256.txt`): the
//! latter guards against a corrupt or truncated download, and only a pinned one against a
//! tampered release.
//!
//! `--fetch-firecracker-kernel URL` fetches a guest kernel the same way: an uncompressed
//! `vmlinux`, such as those Firecracker's CI builds from its recommended configs. Nothing is
//! published beside those, so the caller must pin its SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use hearth_vmm::firecracker::version::Version;

/// Where official releases are downloaded from.
pub const OFFICIAL_RELEASES: &str =
    "https://github.com/firecracker-microvm/firecracker/releases/download";

/// Overrides [`OFFICIAL_RELEASES`]: a mirror, or a local server in tests.
pub const RELEASES_URL_ENV: &str = "HEARTH_FIRECRACKER_RELEASES_URL";

/// The release fetched when none is named: the newest hearth was tested against.
pub const DEFAULT_RELEASE: Version = Version {
    major: 1,
    minor: 16,
    patch: 1,
};

/// An archive is two static binaries and some text; far more than this is not a release.
const MAX_ARCHIVE_BYTES: u64 = 256 << 20;

/// A checksum file is one line.
const MAX_CHECKSUM_BYTES: u64 = 4096;

/// An uncompressed guest kernel is tens of MiB; far more than this is not one.
const MAX_KERNEL_BYTES: u64 = 512 << 20;

/// Which release to fetch, from where, into where.
#[derive(Debug, Clone)]
pub struct ReleaseFetch {
    /// The URL the `v<V>/` directories are under ([`OFFICIAL_RELEASES`]).
    pub base_url: String,
    pub version: Version,
    /// `x86_64` or `aarch64`, as release file names spell it.
    pub arch: String,
    /// The archive's SHA-256 in hex, when the caller pins it.
    pub sha256: Option<String>,
    /// The binaries land in `<dest>/firecracker-v<V>/`.
    pub dest: PathBuf,
}

/// The binaries a fetch installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRelease {
    pub firecracker: PathBuf,
    pub jailer: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("failed to download `{url}`")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("`{url}` answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("`{url}` is larger than {limit} bytes, which no release archive or kernel is")]
    TooLarge { url: String, limit: u64 },
    #[error("`{url}` holds no SHA-256 (64 hex digits) at its start; pin one with `--firecracker-sha256`")]
    BadChecksumFile { url: String },
    #[error("`{0}` is not a SHA-256 (64 hex digits)")]
    BadChecksum(String),
    #[error(
        "`{url}` has SHA-256 {actual}, not the expected {expected}: refused, nothing was \
         installed; download again, or check the checksum you pinned"
    )]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("the archive `{url}` does not hold `{member}`; is `{version}` a Firecracker release for {arch}?")]
    MissingMember {
        url: String,
        member: String,
        version: Version,
        arch: String,
    },
    #[error("`{url}` is not an uncompressed ELF kernel (`vmlinux`), which Firecracker boots")]
    NotElf { url: String },
    #[error("failed to unpack `{url}`")]
    Unpack {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to install `{}`", path.display())]
    Install {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ReleaseFetch {
    /// The official release `version` for this host's architecture, into `dest`.
    pub fn official(version: Version, dest: PathBuf) -> Self {
        ReleaseFetch {
            base_url: std::env::var(RELEASES_URL_ENV)
                .ok()
                .filter(|url| !url.trim().is_empty())
                .unwrap_or_else(|| OFFICIAL_RELEASES.to_owned()),
            version,
            arch: std::env::consts::ARCH.to_owned(),
            sha256: None,
            dest,
        }
    }

    fn suffix(&self) -> String {
        format!("v{}-{}", self.version, self.arch)
    }

    fn archive_url(&self) -> String {
        format!(
            "{}/v{}/firecracker-{}.tgz",
            self.base_url.trim_end_matches('/'),
            self.version,
            self.suffix()
        )
    }
}

/// Downloads, verifies and installs the release `fetch` names. Nothing is written unless the
/// archive's checksum matches.
pub async fn fetch_release(fetch: &ReleaseFetch) -> Result<FetchedRelease, FetchError> {
    let archive_url = fetch.archive_url();
    let client = client_for(&archive_url).map_err(|source| FetchError::Download {
        url: archive_url.clone(),
        source,
    })?;
    let expected = match &fetch.sha256 {
        Some(pinned) => {
            parse_sha256(pinned).ok_or_else(|| FetchError::BadChecksum(pinned.clone()))?
        }
        None => {
            let url = format!("{archive_url}.sha256.txt");
            let text = download(&client, &url, MAX_CHECKSUM_BYTES).await?;
            let text = String::from_utf8_lossy(&text);
            let first = text.split_whitespace().next().unwrap_or_default();
            parse_sha256(first).ok_or(FetchError::BadChecksumFile { url })?
        }
    };
    let archive = download(&client, &archive_url, MAX_ARCHIVE_BYTES).await?;
    let actual = format!("{:x}", Sha256::digest(&archive));
    if actual != expected {
        return Err(FetchError::ChecksumMismatch {
            url: archive_url,
            expected,
            actual,
        });
    }
    install(fetch, &archive_url, &archive)
}

/// Downloads the guest kernel at `url`, refuses it unless its SHA-256 is `sha256` and it is an
/// ELF image, and installs it as `<dest>/vmlinux-<sha256>` (read-only for others), which is
/// returned. Nothing is written for a refused kernel.
pub async fn fetch_kernel(url: &str, sha256: &str, dest: &Path) -> Result<PathBuf, FetchError> {
    let expected =
        parse_sha256(sha256).ok_or_else(|| FetchError::BadChecksum(sha256.to_owned()))?;
    let client = client_for(url).map_err(|source| FetchError::Download {
        url: url.to_owned(),
        source,
    })?;
    let kernel = download(&client, url, MAX_KERNEL_BYTES).await?;
    let actual = format!("{:x}", Sha256::digest(&kernel));
    if actual != expected {
        return Err(FetchError::ChecksumMismatch {
            url: url.to_owned(),
            expected,
            actual,
        });
    }
    if !kernel.starts_with(b"\x7fELF") {
        return Err(FetchError::NotElf {
            url: url.to_owned(),
        });
    }
    let path = dest.join(format!("vmlinux-{actual}"));
    let install = |source| FetchError::Install {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dest).map_err(install)?;
    write_file(&path, &kernel, 0o644).map_err(install)?;
    Ok(path)
}

/// An HTTP client for `url`: the environment's proxy settings apply, except to a loopback
/// host (a local mirror or test server), which no proxy could reach.
fn client_for(url: &str) -> Result<reqwest::Client, reqwest::Error> {
    let loopback = reqwest::Url::parse(url).ok().is_some_and(|url| {
        let host = url.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    let builder = reqwest::Client::builder();
    if loopback {
        builder.no_proxy().build()
    } else {
        builder.build()
    }
}

/// A SHA-256 in lowercase hex, if `text` is one.
fn parse_sha256(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
}

/// The body of `url`, refused past `limit` bytes.
async fn download(client: &reqwest::Client, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let failed = |source| FetchError::Download {
        url: url.to_owned(),
        source,
    };
    let mut response = client.get(url).send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Takes the two binaries out of the verified `archive` (nothing else of it is written) and
/// installs them executable, each through a temporary file.
fn install(fetch: &ReleaseFetch, url: &str, archive: &[u8]) -> Result<FetchedRelease, FetchError> {
    let suffix = fetch.suffix();
    let dir = format!("release-{suffix}");
    let wanted = [
        (format!("{dir}/firecracker-{suffix}"), "firecracker"),
        (format!("{dir}/jailer-{suffix}"), "jailer"),
    ];
    let unpack = |source| FetchError::Unpack {
        url: url.to_owned(),
        source,
    };
    let mut found: [Option<Vec<u8>>; 2] = [None, None];
    let mut entries = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in entries.entries().map_err(unpack)? {
        let mut entry = entry.map_err(unpack)?;
        let path = entry.path().map_err(unpack)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./");
        if let Some(index) = wanted.iter().position(|(member, _)| member == path) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(unpack)?;
            found[index] = Some(bytes);
        }
    }
    let install_dir = fetch.dest.join(format!("firecracker-v{}", fetch.version));
    std::fs::create_dir_all(&install_dir).map_err(|source| FetchError::Install {
        path: install_dir.clone(),
        source,
    })?;
    let mut installed = Vec::new();
    for ((member, name), bytes) in wanted.iter().zip(found) {
        let bytes = bytes.ok_or_else(|| FetchError::MissingMember {
            url: url.to_owned(),
            member: member.clone(),
            version: fetch.version,
            arch: fetch.arch.clone(),
        })?;
        let path = install_dir.join(name);
        write_file(&path, &bytes, 0o755).map_err(|source| FetchError::Install {
            path: path.clone(),
            source,
        })?;
        installed.push(path);
    }
    let [firecracker, jailer]: [PathBuf; 2] =
        installed.try_into().map_err(|_| FetchError::Install {
            path: install_dir,
            source: std::io::Error::other("not both binaries were installed"),
        })?;
    Ok(FetchedRelease {
        firecracker,
        jailer,
    })
}

/// Writes `bytes` to `path` with `mode` through a temporary file beside it.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)?;
    std::fs::set_permissions(&partial, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A stand-in release archive: the layout of an official one, with scripts for binaries.
    fn archive(version: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, line) in [
            ("firecracker", format!("Firecracker v{version}")),
            ("jailer", format!("Jailer v{version}")),
        ] {
            let body = format!("#!/bin/sh\necho '{line}'\n");
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            let path = format!("release-v{version}-x86_64/{name}-v{version}-x86_64");
            builder
                .append_data(&mut header, path, body.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    /// Serves `files` (path → body) over HTTP/1.1 on 127.0.0.1 until dropped; 404 otherwise.
    async fn serve(files: Vec<(String, Vec<u8>)>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut request = vec![0u8; 4096];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).into_owned();
                let path = request.split(' ').nth(1).unwrap_or_default().to_owned();
                let (status, body) = match files.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", Vec::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            }
        });
        (base, task)
    }

    fn fetch(base: String, dest: &Path) -> ReleaseFetch {
        ReleaseFetch {
            base_url: base,
            version: Version::from_version_line("Firecracker v1.12.0").unwrap(),
            arch: "x86_64".to_owned(),
            sha256: None,
            dest: dest.to_owned(),
        }
    }

    const ARCHIVE_PATH: &str = "/v1.12.0/firecracker-v1.12.0-x86_64.tgz";

    #[tokio::test]
    async fn test_a_release_whose_checksum_matches_is_installed() {
        let archive = archive("1.12.0");
        let sum = format!(
            "{:x}  firecracker-v1.12.0-x86_64.tgz\n",
            Sha256::digest(&archive)
        );
        let (base, server) = serve(vec![
            (ARCHIVE_PATH.to_owned(), archive),
            (format!("{ARCHIVE_PATH}.sha256.txt"), sum.into_bytes()),
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let fetched = fetch_release(&fetch(base, dir.path())).await.unwrap();
        server.abort();
        assert_eq!(
            fetched.firecracker,
            dir.path().join("firecracker-v1.12.0/firecracker")
        );
        let found = crate::backend::probe(fetched.firecracker, Version::from_version_line);
        assert_eq!(found.version.unwrap().to_string(), "1.12.0");
        let jailer = crate::backend::probe(fetched.jailer, Version::from_jailer_line);
        assert_eq!(jailer.version.unwrap().to_string(), "1.12.0");
    }

    #[tokio::test]
    async fn test_a_wrong_checksum_is_refused_and_nothing_is_installed() {
        let archive = archive("1.12.0");
        let wrong = format!("{:x}\n", Sha256::digest(b"another archive"));
        let (base, server) = serve(vec![
            (ARCHIVE_PATH.to_owned(), archive),
            (format!("{ARCHIVE_PATH}.sha256.txt"), wrong.into_bytes()),
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let error = fetch_release(&fetch(base, dir.path())).await.unwrap_err();
        server.abort();
        assert!(
            matches!(error, FetchError::ChecksumMismatch { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("nothing was installed"),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn test_a_pinned_checksum_wins_over_the_published_one() {
        let archive = archive("1.12.0");
        let published = format!("{:x}\n", Sha256::digest(&archive));
        let (base, server) = serve(vec![
            (ARCHIVE_PATH.to_owned(), archive),
            (format!("{ARCHIVE_PATH}.sha256.txt"), published.into_bytes()),
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut pinned = fetch(base, dir.path());
        pinned.sha256 = Some(format!("{:x}", Sha256::digest(b"what the user expects")));
        let error = fetch_release(&pinned).await.unwrap_err();
        server.abort();
        assert!(
            matches!(error, FetchError::ChecksumMismatch { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn test_a_kernel_is_installed_only_with_its_pinned_checksum_and_as_an_elf() {
        let kernel = b"\x7fELF stand-in kernel".to_vec();
        let sum = format!("{:x}", Sha256::digest(&kernel));
        let (base, server) = serve(vec![
            ("/vmlinux-6.1".to_owned(), kernel.clone()),
            ("/bzImage".to_owned(), b"MZ not an ELF".to_vec()),
        ])
        .await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kernels");
        let url = format!("{base}/vmlinux-6.1");
        let wrong = "0".repeat(64);
        let err = fetch_kernel(&url, &wrong, &dest).await.unwrap_err();
        assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{err}");
        assert!(!dest.exists(), "nothing is written for a refused kernel");
        let bz_sum = format!("{:x}", Sha256::digest(b"MZ not an ELF"));
        let err = fetch_kernel(&format!("{base}/bzImage"), &bz_sum, &dest)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not an uncompressed ELF kernel"),
            "{err}"
        );
        assert!(matches!(
            fetch_kernel(&url, "beef", &dest).await.unwrap_err(),
            FetchError::BadChecksum(_)
        ));
        let path = fetch_kernel(&url, &sum.to_uppercase(), &dest)
            .await
            .unwrap();
        server.abort();
        assert_eq!(path, dest.join(format!("vmlinux-{sum}")));
        assert_eq!(std::fs::read(&path).unwrap(), kernel);
    }

    #[tokio::test]
    async fn test_a_missing_release_names_the_url_and_status() {
        let (base, server) = serve(Vec::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let error = fetch_release(&fetch(base, dir.path())).await.unwrap_err();
        server.abort();
        assert!(matches!(error, FetchError::Status { .. }), "{error:?}");
        assert!(error.to_string().contains("404"), "{error}");
    }
}
