//! Image operations: pull, look up (pulling what is missing), list, remove, prune, import, and
//! the registry credentials pulls use.

use std::path::{Path, PathBuf};

use hearth_image::{
    Credentials, CredentialsError, Digest, DockerConfig, ImageRecord, ImageRef, ImageSummary,
    Imported, PruneReport, PullConfig, PullReporter,
};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::images;
use crate::ops::templates;
use crate::ops::RegistryOptions;
use crate::snapshots::{SnapshotError, SnapshotStore};

impl Engine {
    /// Downloads `reference` (layers cached by digest), builds its read-only base and names it.
    pub async fn pull(
        &self,
        reference: &str,
        registry: &RegistryOptions,
        reporter: &dyn PullReporter,
    ) -> Result<ImageRecord, EngineError> {
        let reference: ImageRef = reference.parse()?;
        let config = PullConfig {
            insecure_registries: registry.insecure_registries.clone(),
            credentials: saved_credentials(reference.registry())?,
            timeouts: registry.timeouts,
        };
        let store = images::store(self.state()).with_max_unpacked_bytes(registry.max_image_bytes);
        hearth_image::pull(&store, &reference, &config, reporter)
            .await
            .map_err(|source| EngineError::Pull {
                reference: reference.to_string(),
                source: Box::new(source),
            })
    }

    /// The stored image `name` names (a local name, id or unique id prefix), else pulled first,
    /// as `docker run` does.
    pub async fn ensure_image(
        &self,
        name: &str,
        registry: &RegistryOptions,
        reporter: &dyn PullReporter,
    ) -> Result<ImageRecord, EngineError> {
        let store = images::store(self.state());
        // The full reference first (`alpine` is `docker.io/library/alpine:latest`), then the
        // name as typed, which also matches an image id or a unique prefix of one.
        let full = name.parse::<ImageRef>().ok().map(|r| r.to_string());
        for candidate in full.iter().map(String::as_str).chain([name]) {
            if let Ok(digest) = store.resolve(candidate) {
                if let Some(record) = store.record(&digest)? {
                    return Ok(record);
                }
            }
        }
        self.pull(name, registry, reporter).await
    }

    /// Every stored image with its names.
    pub fn images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        Ok(images::store(self.state()).list()?)
    }

    /// Removes the name `name`; the image goes with its last name. Returns its digest.
    /// Refused while a snapshot uses the image as its base: a restore needs the same base.
    /// Its templates go with the image (they are a cache).
    pub fn remove_image(&self, name: &str) -> Result<Digest, EngineError> {
        let store = images::store(self.state());
        let rootfs = store.rootfs(&store.resolve(name)?);
        let snapshots = SnapshotStore::new(self.state()).users_of(&rootfs)?;
        if !snapshots.is_empty() {
            return Err(SnapshotError::BaseInUse {
                image: name.to_owned(),
                snapshots,
            }
            .into());
        }
        let digest = store.remove(name)?;
        if !rootfs.exists() {
            let templates = templates::store(self.state());
            for template in templates.users_of(&rootfs)? {
                templates.remove(&template)?;
            }
        }
        Ok(digest)
    }

    /// Removes unnamed images and blobs no image uses, then the templates that can no longer
    /// be resumed (their image among them).
    pub fn prune_images(&self) -> Result<PruneReport, EngineError> {
        let report = images::store(self.state()).prune()?;
        // Templates are a cache: one that cannot be checked now is left for `template prune`.
        if let Err(e) = self.template_prune() {
            tracing::warn!(error = %crate::chain::error_chain(&e), "templates not pruned");
        }
        Ok(report)
    }

    /// Loads an OCI layout (directory or tar) or a `docker save` archive.
    pub fn import_image(&self, path: &Path, name: Option<&str>) -> Result<Imported, EngineError> {
        hearth_image::import(&images::store(self.state()), path, name).map_err(|source| {
            EngineError::Import {
                path: path.to_owned(),
                source: Box::new(source),
            }
        })
    }

    /// Checks `credentials` with `registry` and saves them in docker's config (or its
    /// credential helper). Returns the config file's path.
    pub async fn login(
        &self,
        registry: &str,
        credentials: &Credentials,
        options: &RegistryOptions,
    ) -> Result<PathBuf, EngineError> {
        let config = PullConfig {
            insecure_registries: options.insecure_registries.clone(),
            credentials: None,
            timeouts: options.timeouts,
        };
        hearth_image::verify_login(registry, credentials, &config)
            .await
            .map_err(|source| EngineError::Login {
                registry: registry.to_owned(),
                source,
            })?;
        let credentials_error = |source| EngineError::Credentials {
            registry: registry.to_owned(),
            source,
        };
        let mut docker = DockerConfig::load_default().map_err(credentials_error)?;
        docker
            .set_credentials(registry, credentials)
            .and_then(|()| docker.save())
            .map_err(credentials_error)?;
        Ok(docker.path().to_owned())
    }

    /// Forgets the credentials for `registry`; false when there were none.
    pub fn logout(&self, registry: &str) -> Result<bool, EngineError> {
        let credentials_error = |source| EngineError::Credentials {
            registry: registry.to_owned(),
            source,
        };
        let mut docker = DockerConfig::load_default().map_err(credentials_error)?;
        if !docker
            .remove_credentials(registry)
            .map_err(credentials_error)?
        {
            return Ok(false);
        }
        docker.save().map_err(credentials_error)?;
        Ok(true)
    }
}

/// The saved credentials for `registry`, if any. No config dir at all (no $HOME) means an
/// anonymous pull, not a failure.
fn saved_credentials(registry: &str) -> Result<Option<Credentials>, EngineError> {
    let credentials_error = |source| EngineError::Credentials {
        registry: registry.to_owned(),
        source,
    };
    let docker = match DockerConfig::load_default() {
        Err(CredentialsError::NoConfigDir) => return Ok(None),
        other => other.map_err(credentials_error)?,
    };
    docker.credentials(registry).map_err(credentials_error)
}
