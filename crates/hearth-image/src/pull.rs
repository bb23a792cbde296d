//! Pulling an image from a registry with `oci-client`: manifest (an index narrowed to
//! linux/amd64), config, then each layer into the blob cache unless it is there already, then
//! the base image.

use std::time::Duration;

use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::blob_cache::BlobError;
use crate::config::{ConfigError, ImageConfig};
use crate::digest::{Digest, DigestError};
use crate::reference::{is_loopback_host, ImageRef};
use crate::store::{ImageRecord, ImageStore, StoreError};

/// Attempts per blob: a dropped connection or a short read is retried, a bad digest too (the
/// next attempt may come from a healthy mirror), then the pull fails.
const BLOB_ATTEMPTS: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Progress of a pull, for bars or log lines. Implementations must be cheap.
pub trait PullReporter: Send + Sync {
    /// A layer download starts (`size` from the manifest).
    fn on_layer_start(&self, digest: &Digest, size: u64);
    /// A layer is already cached.
    fn on_layer_cached(&self, digest: &Digest, size: u64);
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
    fn on_layer_done(&self, _: &Digest) {}
    fn on_build(&self, _: &Digest) {}
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullConfig {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// Credentials for the image's registry; anonymous (with bearer tokens as the registry asks)
    /// when `None`.
    pub basic_auth: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("`{reference}` was not found in its registry")]
    NotFound {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("the registry refused access to `{reference}`")]
    Denied {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("`{reference}` has no linux/amd64 image")]
    NoPlatform { reference: String, found: String },
    #[error("failed to fetch the manifest of `{reference}`")]
    Manifest {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("the registry sent a malformed digest")]
    Digest(#[from] DigestError),
    #[error("failed to read the image config of `{reference}`")]
    Config {
        reference: String,
        #[source]
        source: ConfigError,
    },
    #[error("failed to download blob {digest} after {attempts} attempts")]
    Blob {
        digest: Digest,
        attempts: u32,
        #[source]
        source: BlobFetchError,
    },
    #[error("failed to store the image")]
    Store(#[from] StoreError),
    #[error("the base image build was cancelled")]
    Cancelled(#[source] tokio::task::JoinError),
}

/// Why one download attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobFetchError {
    #[error("registry request failed")]
    Registry(#[from] OciDistributionError),
    #[error("downloaded blob is invalid")]
    Verify(#[from] BlobError),
    #[error("failed to write the download to `{}`", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    /// Sorts a registry error by what the user can do about it.
    fn from_registry(reference: &ImageRef, source: OciDistributionError) -> Self {
        let reference = reference.to_string();
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
            Some(404) => PullError::NotFound { reference, source },
            Some(401 | 403) => PullError::Denied { reference, source },
            _ => PullError::Manifest { reference, source },
        }
    }
}

/// Pulls `reference` into `store` and names it; returns the stored image.
pub async fn pull(
    store: &ImageStore,
    reference: &ImageRef,
    config: &PullConfig,
    reporter: &dyn PullReporter,
) -> Result<ImageRecord, PullError> {
    let client = client(reference, config);
    let auth = match &config.basic_auth {
        Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let (manifest, digest) = client
        .pull_image_manifest(reference.oci(), &auth)
        .await
        .map_err(|e| match e {
            OciDistributionError::ImageManifestNotFoundError(found) => PullError::NoPlatform {
                reference: reference.to_string(),
                found,
            },
            e => PullError::from_registry(reference, e),
        })?;
    let digest: Digest = digest.parse()?;
    if let Some(record) = store.record(&digest)? {
        store.tag(&reference.to_string(), &digest)?;
        return Ok(record);
    }
    let config_digest: Digest = manifest.config.digest.parse()?;
    fetch_blob(&client, store, reference, &manifest.config, &config_digest).await?;
    let config_path = store.blobs().path(&config_digest);
    let config_json = std::fs::read(&config_path).map_err(|source| {
        PullError::Store(StoreError::Io {
            path: config_path,
            source,
        })
    })?;
    let image_config = ImageConfig::parse(&config_json).map_err(|source| PullError::Config {
        reference: reference.to_string(),
        source,
    })?;
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
            fetch_blob(&client, store, reference, layer, &layer_digest).await?;
            reporter.on_layer_done(&layer_digest);
        }
        layers.push(layer_digest);
    }
    reporter.on_build(&digest);
    let record = build(store, &digest, &image_config, &layers).await?;
    store.tag(&reference.to_string(), &digest)?;
    Ok(record)
}

/// Builds the base image on a blocking thread: layer application and mkfs are file work.
pub async fn build(
    store: &ImageStore,
    digest: &Digest,
    config: &ImageConfig,
    layers: &[Digest],
) -> Result<ImageRecord, PullError> {
    let (store, digest, config, layers) = (
        store.clone(),
        digest.clone(),
        config.clone(),
        layers.to_vec(),
    );
    tokio::task::spawn_blocking(move || store.build(&digest, &config, &layers))
        .await
        .map_err(PullError::Cancelled)?
        .map_err(PullError::Store)
}

fn client(reference: &ImageRef, config: &PullConfig) -> Client {
    let mut plain_http = config.insecure_registries.clone();
    if is_loopback_host(reference.registry()) {
        plain_http.push(reference.registry().to_owned());
    }
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http),
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        ..ClientConfig::default()
    })
}

/// Downloads a blob into the cache, verified; retried a few times.
async fn fetch_blob(
    client: &Client,
    store: &ImageStore,
    reference: &ImageRef,
    descriptor: &OciDescriptor,
    digest: &Digest,
) -> Result<(), PullError> {
    if store.blobs().contains(digest) {
        return Ok(());
    }
    let size = u64::try_from(descriptor.size).ok();
    let mut attempt = 1;
    loop {
        match fetch_once(client, store, reference, descriptor, digest, size).await {
            Ok(()) => return Ok(()),
            Err(source) if attempt >= BLOB_ATTEMPTS => {
                return Err(PullError::Blob {
                    digest: digest.clone(),
                    attempts: attempt,
                    source,
                })
            }
            Err(e) => {
                tracing::warn!(blob = %digest, attempt, error = %e, "blob download failed; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
                attempt += 1;
            }
        }
    }
}

async fn fetch_once(
    client: &Client,
    store: &ImageStore,
    reference: &ImageRef,
    descriptor: &OciDescriptor,
    digest: &Digest,
    size: Option<u64>,
) -> Result<(), BlobFetchError> {
    let temp = store.blobs().temp_file()?;
    let write_err = |source| BlobFetchError::Write {
        path: temp.path().to_owned(),
        source,
    };
    let file = tokio::fs::File::from_std(temp.reopen().map_err(write_err)?);
    let mut writer = tokio::io::BufWriter::new(file);
    client
        .pull_blob(reference.oci(), descriptor, &mut writer)
        .await?;
    tokio::io::AsyncWriteExt::flush(&mut writer)
        .await
        .map_err(write_err)?;
    // Size and digest are checked again on the file itself: what is cached is what was checked.
    store.blobs().commit(temp, digest, size)?;
    Ok(())
}
