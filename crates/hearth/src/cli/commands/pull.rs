//! `hearth pull`: fetch an image into the local store.

use hearth_engine::{Engine, RegistryOptions};

use crate::cli::args::PullArgs;
use crate::cli::progress;

pub async fn pull(engine: &Engine, args: &PullArgs) -> anyhow::Result<i32> {
    let reporter = progress::pull_reporter(args.quiet);
    let registry = RegistryOptions {
        insecure_registries: args.registry.insecure_registry.clone(),
    };
    let record = engine
        .pull(&args.reference, &registry, reporter.as_ref())
        .await;
    // The bars end before the digest or the error is printed.
    drop(reporter);
    println!("{}", record?.digest);
    Ok(0)
}
