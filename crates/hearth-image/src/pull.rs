//! Pulling an image from a registry with `oci-client`: manifest (an index narrowed to
//! linux/amd64), config, then each layer into the blob cache unless it is there already, then
//! the base image.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::blob_cache::BlobError;
use crate::config::{ConfigError, ImageConfig};
use crate::digest::{Digest, DigestError};
use crate::reference::ImageRef;
use crate::refusal::{message_of, refusal_message};
use crate::registry::{PullConfig, RegistryTimeouts};
use crate::retry::{self, retrying, Attempts};
use crate::space;
use crate::store::{ImageRecord, ImageStore, StoreError};

/// Progress of a pull, for bars or log lines. Implementations must be cheap.
pub trait PullReporter: Send + Sync {
    /// A layer download starts (`size` from the manifest).
    fn on_layer_start(&self, digest: &Digest, size: u64);
    /// A layer is already cached.
    fn on_layer_cached(&self, digest: &Digest, size: u64);
    /// `bytes` of a layer have arrived so far (back to 0 when a download is retried).
    fn on_layer_progress(&self, digest: &Digest, bytes: u64);
    /// A layer is downloaded and verified.
    fn on_layer_done(&self, digest: &Digest);
    /// The base image is being built from the layers.
    fn on_build(&self, digest: &Digest);
}

/// A reporter that says nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReporter;

impl PullReporter for NoReporter {
    fn on_layer_start(&self, _: &Digest, _: u64) {}
    fn on_layer_cached(&self, _: &Digest, _: u64) {}
    fn on_layer_progress(&self, _: &Digest, _: u64) {}
    fn on_layer_done(&self, _: &Digest) {}
    fn on_build(&self, _: &Digest) {}
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("`{reference}` was not found in its registry: {message}")]
    NotFound {
        reference: String,
        /// The registry's words (`manifest unknown`), not its JSON envelope.
        message: String,
    },
    #[error("the registry refused access to `{reference}`: {message}")]
    Denied {
        reference: String,
        /// The registry's reason.
        message: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("`{reference}` has no linux/amd64 image, only {found}")]
    NoPlatform { reference: String, found: String },
    #[error("failed to fetch the manifest of `{reference}`")]
    Manifest {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("registry {registry} is unavailable: gave up on the manifest of `{reference}` after {} attempts over {:.1} s", attempts.count, attempts.elapsed.as_secs_f64())]
    Unavailable {
        registry: String,
        reference: String,
        attempts: Attempts,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error("the registry sent a malformed digest")]
    Digest(#[from] DigestError),
    #[error("failed to read the image config of `{reference}`")]
    Config {
        reference: String,
        #[source]
        source: ConfigError,
    },
    #[error("failed to download blob {digest} from registry {registry} ({} attempts over {:.1} s)", attempts.count, attempts.elapsed.as_secs_f64())]
    Blob {
        registry: String,
        digest: Digest,
        attempts: Attempts,
        #[source]
        source: Box<BlobFetchError>,
    },
    #[error("no space left in `{}` for blob {digest}: it needs {needed} bytes, {available} are free", dir.display())]
    NoSpaceForBlob {
        dir: std::path::PathBuf,
        digest: Digest,
        needed: u64,
        available: u64,
    },
    #[error("failed to store the image")]
    Store(#[from] StoreError),
    #[error("the base image build was cancelled")]
    Cancelled(#[source] tokio::task::JoinError),
}

/// Why one download attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobFetchError {
    #[error("the registry sent nothing for {} s (read timeout)", timeout.as_secs_f64())]
    Timeout {
        timeout: Duration,
        #[source]
        source: OciDistributionError,
    },
    #[error("could not connect to the registry")]
    Unreachable(#[source] OciDistributionError),
    #[error("the registry's reply failed")]
    Registry(#[source] OciDistributionError),
    #[error("the downloaded blob is invalid")]
    Verify(#[from] BlobError),
    #[error("failed to write the download to `{}`", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the manifest gives the blob a negative size ({0})")]
    NegativeSize(i64),
}

impl BlobFetchError {
    /// Sorts a registry error from a blob download.
    fn from_registry(source: OciDistributionError, timeouts: &RegistryTimeouts) -> Self {
        match &source {
            OciDistributionError::RequestError(e) if e.is_timeout() => BlobFetchError::Timeout {
                timeout: timeouts.read,
                source,
            },
            OciDistributionError::RequestError(e) if e.is_connect() => {
                BlobFetchError::Unreachable(source)
            }
            _ => BlobFetchError::Registry(source),
        }
    }

    /// True when another attempt may succeed; a bad digest or size, a full disk or a 4xx will
    /// not change.
    fn is_transient(&self) -> bool {
        match self {
            BlobFetchError::Timeout { .. } | BlobFetchError::Unreachable(_) => true,
            BlobFetchError::Registry(e) => retry::is_transient(e),
            BlobFetchError::Verify(_)
            | BlobFetchError::Write { .. }
            | BlobFetchError::NegativeSize(_) => false,
        }
    }
}

impl PullError {
    /// Sorts a registry error by what the user can do about it; a refusal gets the registry's
    /// reason.
    async fn from_registry(
        image: &ImageRef,
        config: &PullConfig,
        (source, attempts): (OciDistributionError, Attempts),
    ) -> Self {
        let reference = image.to_string();
        if retry::is_transient(&source) {
            return PullError::Unavailable {
                registry: image.registry().to_owned(),
                reference,
                attempts,
                source: Box::new(source),
            };
        }
        let status = match &source {
            OciDistributionError::ServerError { code, .. } => Some(*code),
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => Some(401),
            OciDistributionError::RegistryError { envelope, .. } => envelope
                .errors
                .iter()
                .map(|e| match e.code {
                    oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
                    | oci_client::errors::OciErrorCode::BlobUnknown => 404,
                    oci_client::errors::OciErrorCode::Unauthorized
                    | oci_client::errors::OciErrorCode::Denied => 401,
                    _ => 0,
                })
                .max(),
            _ => None,
        };
        match status {
            Some(404) => PullError::NotFound {
                reference,
                message: not_found_message(&source),
            },
            Some(401 | 403) => {
                let message = match &source {
                    OciDistributionError::AuthenticationFailure(body) => {
                        message_of(body).unwrap_or_else(|| body.clone())
                    }
                    _ => refusal_message(image, config).await,
                };
                PullError::Denied {
                    reference,
                    message,
                    source,
                }
            }
            _ => PullError::Manifest { reference, source },
        }
    }
}

/// What a registry said when it did not find something: the messages of its error envelope.
fn not_found_message(source: &OciDistributionError) -> String {
    match source {
        OciDistributionError::RegistryError { envelope, .. } => {
            let messages: Vec<&str> = envelope.errors.iter().map(|e| e.message.as_str()).collect();
            messages.join("; ")
        }
        OciDistributionError::ServerError { message, .. } if !message.is_empty() => {
            message_of(message).unwrap_or_else(|| message.clone())
        }
        _ => "not found".to_owned(),
    }
}

/// Pulls `reference` into `store` and names it; returns the stored image.
pub async fn pull(
    store: &ImageStore,
    reference: &ImageRef,
    config: &PullConfig,
    reporter: &dyn PullReporter,
) -> Result<ImageRecord, PullError> {
    store.remove_abandoned()?;
    let client = client(reference, config);
    let auth = match &config.credentials {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let (manifest, digest) = image_manifest(&client, reference, config, &auth).await?;
    let digest: Digest = digest.parse()?;
    if let Some(record) = store.record(&digest)? {
        store.tag(&reference.to_string(), &digest)?;
        return Ok(record);
    }
    let config_digest: Digest = manifest.config.digest.parse()?;
    let fetcher = Fetcher {
        client: &client,
        timeouts: &config.timeouts,
        store,
        reference,
        reporter,
    };
    fetcher
        .blob(&manifest.config, &config_digest, false)
        .await?;
    let config_path = store.blobs().path(&config_digest);
    let config_json = std::fs::read(&config_path).map_err(|source| {
        PullError::Store(StoreError::Io {
            path: config_path,
            source,
        })
    })?;
    let config_err = |source| PullError::Config {
        reference: reference.to_string(),
        source,
    };
    let image_config = ImageConfig::parse(&config_json).map_err(config_err)?;
    let diff_ids = ImageConfig::diff_ids(&config_json).map_err(config_err)?;
    if image_config.architecture != "amd64" || image_config.os != "linux" {
        return Err(PullError::NoPlatform {
            reference: reference.to_string(),
            found: format!("{}/{}", image_config.os, image_config.architecture),
        });
    }
    let mut layers = Vec::new();
    for layer in &manifest.layers {
        let layer_digest: Digest = layer.digest.parse()?;
        let size = u64::try_from(layer.size).unwrap_or(0);
        if store.blobs().contains(&layer_digest) {
            reporter.on_layer_cached(&layer_digest, size);
        } else {
            reporter.on_layer_start(&layer_digest, size);
            fetcher.blob(layer, &layer_digest, true).await?;
            reporter.on_layer_done(&layer_digest);
        }
        layers.push(layer_digest);
    }
    reporter.on_build(&digest);
    let record = build(store, &digest, &image_config, &layers, &diff_ids).await?;
    store.tag(&reference.to_string(), &digest)?;
    Ok(record)
}

/// The image manifest of `reference` and its digest, narrowed to linux/amd64 when the
/// reference names an index (done here rather than by oci-client's resolver so a miss can say
/// which platforms the index has).
async fn image_manifest(
    client: &Client,
    reference: &ImageRef,
    config: &PullConfig,
    auth: &RegistryAuth,
) -> Result<(OciImageManifest, String), PullError> {
    let fetch = |target: oci_client::Reference| {
        retrying(
            config.timeouts.retry_window,
            "fetching a manifest",
            retry::is_transient,
            move || {
                let target = target.clone();
                async move { client.pull_manifest(&target, auth).await }
            },
        )
    };
    let (manifest, digest) = match fetch(reference.oci().clone()).await {
        Ok(found) => found,
        Err(e) => return Err(PullError::from_registry(reference, config, e).await),
    };
    let index = match manifest {
        OciManifest::Image(manifest) => return Ok((manifest, digest)),
        OciManifest::ImageIndex(index) => index,
    };
    let no_platform = |found| PullError::NoPlatform {
        reference: reference.to_string(),
        found,
    };
    let Some(chosen) = linux_amd64_resolver(&index.manifests) else {
        return Err(no_platform(platforms(&index.manifests)));
    };
    let entry = reference.oci().clone_with_digest(chosen.clone());
    match fetch(entry).await {
        Ok((OciManifest::Image(manifest), _)) => Ok((manifest, chosen)),
        Ok((OciManifest::ImageIndex(_), _)) => {
            Err(no_platform(format!("a nested index at {chosen}")))
        }
        Err(e) => Err(PullError::from_registry(reference, config, e).await),
    }
}

/// `linux/arm64, linux/arm/v7`: the platforms an index offers, for an error message.
fn platforms(entries: &[ImageIndexEntry]) -> String {
    let names: Vec<String> = entries
        .iter()
        .map(|e| match &e.platform {
            Some(p) => match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            },
            None => "an entry without a platform".to_owned(),
        })
        .collect();
    if names.is_empty() {
        "an empty index".to_owned()
    } else {
        names.join(", ")
    }
}

/// Builds the base image on a blocking thread: layer application and mkfs are file work.
pub async fn build(
    store: &ImageStore,
    digest: &Digest,
    config: &ImageConfig,
    layers: &[Digest],
    diff_ids: &[Digest],
) -> Result<ImageRecord, PullError> {
    let (store, digest, config, layers, diff_ids) = (
        store.clone(),
        digest.clone(),
        config.clone(),
        layers.to_vec(),
        diff_ids.to_vec(),
    );
    tokio::task::spawn_blocking(move || store.build(&digest, &config, &layers, &diff_ids))
        .await
        .map_err(PullError::Cancelled)?
        .map_err(PullError::Store)
}

fn client(reference: &ImageRef, config: &PullConfig) -> Client {
    let mut plain_http = config.insecure_registries.clone();
    if config.plain_http(reference.registry()) {
        plain_http.push(reference.registry().to_owned());
    }
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http),
        connect_timeout: Some(config.timeouts.connect),
        read_timeout: Some(config.timeouts.read),
        ..ClientConfig::default()
    })
}

/// What downloading blobs of one pull needs.
struct Fetcher<'a> {
    client: &'a Client,
    timeouts: &'a RegistryTimeouts,
    store: &'a ImageStore,
    reference: &'a ImageRef,
    reporter: &'a dyn PullReporter,
}

impl Fetcher<'_> {
    /// Downloads a blob into the cache, verified; retried a few times. Progress is reported
    /// for layers only (`report`), which are what the reporter has been told about.
    async fn blob(
        &self,
        descriptor: &OciDescriptor,
        digest: &Digest,
        report: bool,
    ) -> Result<(), PullError> {
        if self.store.blobs().contains(digest) {
            return Ok(());
        }
        self.check_space(descriptor, digest)?;
        retrying(
            self.timeouts.retry_window,
            &format!("downloading blob {digest}"),
            BlobFetchError::is_transient,
            || self.once(descriptor, digest, report),
        )
        .await
        .map_err(|(source, attempts)| PullError::Blob {
            registry: self.reference.registry().to_owned(),
            digest: digest.clone(),
            attempts,
            source: Box::new(source),
        })
    }

    /// Refuses a download that cannot fit, before a byte of it is written.
    fn check_space(&self, descriptor: &OciDescriptor, digest: &Digest) -> Result<(), PullError> {
        let dir = self
            .store
            .blobs()
            .temp_dir_parent()
            .map_err(StoreError::from)?;
        let needed = u64::try_from(descriptor.size).unwrap_or(0);
        match space::free_bytes(dir) {
            Some(available) if available < needed => Err(PullError::NoSpaceForBlob {
                dir: dir.to_owned(),
                digest: digest.clone(),
                needed,
                available,
            }),
            _ => Ok(()),
        }
    }

    async fn once(
        &self,
        descriptor: &OciDescriptor,
        digest: &Digest,
        report: bool,
    ) -> Result<(), BlobFetchError> {
        // The declared size bounds the download: a registry that keeps sending is cut off
        // instead of filling the disk (the digest would be checked only at the end).
        let limit = u64::try_from(descriptor.size)
            .map_err(|_| BlobFetchError::NegativeSize(descriptor.size))?;
        let temp = self.store.blobs().temp_file()?;
        let write_err = |source| BlobFetchError::Write {
            path: temp.path().to_owned(),
            source,
        };
        let file = tokio::fs::File::from_std(temp.reopen().map_err(write_err)?);
        let mut writer = Counting {
            inner: tokio::io::BufWriter::new(file),
            written: 0,
            limit,
            on_write: |written| {
                if report {
                    self.reporter.on_layer_progress(digest, written);
                }
            },
        };
        self.client
            .pull_blob(self.reference.oci(), descriptor, &mut writer)
            .await
            .map_err(|e| match e {
                // oci-client reports our writer's failures as its own.
                OciDistributionError::IoError(source) => write_err(source),
                e => BlobFetchError::from_registry(e, self.timeouts),
            })?;
        writer.inner.flush().await.map_err(write_err)?;
        // Size and digest are checked again on the file itself: what is cached is what was
        // checked.
        self.store.blobs().commit(temp, digest, Some(limit))?;
        Ok(())
    }
}

/// A writer that reports how many bytes went through it, for progress bars, and refuses
/// more than `limit`.
struct Counting<W, F> {
    inner: W,
    written: u64,
    limit: u64,
    on_write: F,
}

impl<W: AsyncWrite + Unpin, F: Fn(u64) + Unpin> AsyncWrite for Counting<W, F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.written + buf.len() as u64 > this.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes the manifest declares",
                this.limit
            ))));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.written += n as u64;
            (this.on_write)(this.written);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn test_download_past_its_declared_size_is_cut_off() {
        let reported = std::sync::Mutex::new(Vec::new());
        let mut writer = Counting {
            inner: Vec::new(),
            written: 0,
            limit: 10,
            on_write: |n| reported.lock().unwrap().push(n),
        };
        writer.write_all(b"0123456789").await.unwrap();
        let err = writer.write_all(b"x").await.unwrap_err();
        assert!(err.to_string().contains("more than the 10 bytes"), "{err}");
        assert_eq!(writer.inner, b"0123456789");
        assert_eq!(*reported.lock().unwrap(), vec![10]);
    }
}
