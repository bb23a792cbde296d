//! hearth-image: OCI images for sandboxes. Pulls images from registries ([`pull`], through
//! `oci-client`), keeps blobs by digest ([`BlobCache`]), applies layers safely with whiteouts
//! ([`layer`]), and builds one read-only erofs base per manifest digest ([`ImageStore`], through
//! `rootfs`). [`make_ext4`] makes the ext4 built-in default image that `hearth setup` installs.
//!
//! - [`ImageRef`]: references with docker's rules.
//! - [`ImageConfig`]: Entrypoint, Cmd, Env, WorkingDir, User of an image.
//! - [`ImageStore`]: built images, their names, `ls`/`rm`/`prune`.
//! - [`DockerConfig`], [`verify_login`]: registry credentials shared with docker, `hearth login`.
//! - [`import()`]: images from an OCI layout or a `docker save` archive.

mod blob_cache;
mod config;
mod digest;
mod docker_config;
mod import;
pub mod layer;
mod layer_pool;
mod login;
mod owner_lock;
mod pull;
mod reference;
mod refusal;
mod registry;
mod retry;
mod rootfs;
mod space;
mod store;
mod sys;
mod unpack_limit;

pub use blob_cache::{BlobCache, BlobError, PartialBlob};
pub use config::{ConfigError, ImageConfig};
pub use digest::{Digest, DigestError};
pub use docker_config::{registry_key, Credentials, CredentialsError, DockerConfig};
pub use import::{import, ImportError, Imported};
pub use layer_pool::{base_files, MAX_LAYER_DISKS};
pub use login::{verify as verify_login, LoginError};
pub use pull::{build, pull, BlobFetchError, NoReporter, PullError, PullReporter};
pub use reference::{is_loopback_host, ImageRef, ReferenceError};
pub use registry::{PullConfig, RegistryTimeouts};
pub use retry::Attempts;
pub use rootfs::{make_ext4, Ext4Size, RootfsError};
pub use store::{ImageRecord, ImageStore, ImageSummary, PruneReport, StoreError};
pub use unpack_limit::DEFAULT_MAX_UNPACKED_BYTES;
