//! `hearth pull`: fetch an image into the local store; also what `run` uses for images it lacks.

use anyhow::Context;
use hearth_engine::image::{self, ImageRecord, ImageRef, PullConfig, PullReporter};
use hearth_engine::images;
use hearth_engine::paths::StateDir;

use crate::cli::args::{PullArgs, RegistryArgs};
use crate::cli::progress;

pub async fn pull(state: &StateDir, args: &PullArgs) -> anyhow::Result<i32> {
    let reporter = progress::pull_reporter(args.quiet);
    let record = pull_ref(state, &args.reference, &args.registry, reporter.as_ref()).await?;
    drop(reporter);
    println!("{}", record.digest);
    Ok(0)
}

/// The stored image `name` names: a local name or id as is, else pulled first (as docker run).
pub async fn ensure(
    state: &StateDir,
    name: &str,
    registry: &RegistryArgs,
) -> anyhow::Result<ImageRecord> {
    let store = images::store(state);
    // The full reference first (`alpine` is `docker.io/library/alpine:latest`), then the name as
    // typed, which also matches an image id or a unique prefix of one.
    let full = name.parse::<ImageRef>().ok().map(|r| r.to_string());
    for candidate in full.iter().map(String::as_str).chain([name]) {
        if let Ok(digest) = store.resolve(candidate) {
            if let Some(record) = store.record(&digest)? {
                return Ok(record);
            }
        }
    }
    pull_ref(
        state,
        name,
        registry,
        progress::pull_reporter(false).as_ref(),
    )
    .await
}

async fn pull_ref(
    state: &StateDir,
    name: &str,
    registry: &RegistryArgs,
    reporter: &dyn PullReporter,
) -> anyhow::Result<ImageRecord> {
    let reference: ImageRef = name.parse()?;
    let config = PullConfig {
        insecure_registries: registry.insecure_registry.clone(),
        credentials: super::login::saved_credentials(reference.registry())?,
    };
    image::pull(&images::store(state), &reference, &config, reporter)
        .await
        .with_context(|| format!("failed to pull `{reference}`"))
}
