//! `hearth pull`: fetch an image into the local store.

use hearth_engine::{Engine, RegistryOptions, RegistryTimeouts};

use crate::cli::args::{PullArgs, RegistryArgs};
use crate::cli::progress;

pub async fn pull(engine: &Engine, args: &PullArgs) -> anyhow::Result<i32> {
    let reporter = progress::pull_reporter(args.quiet);
    let registry = registry_options(&args.registry);
    let record = engine
        .pull(&args.reference, &registry, reporter.as_ref())
        .await;
    // The bars end before the digest or the error is printed.
    drop(reporter);
    println!("{}", record?.digest);
    Ok(0)
}

/// The registry flags as the engine takes them (`pull`, `run`, `login`).
pub fn registry_options(args: &RegistryArgs) -> RegistryOptions {
    RegistryOptions {
        insecure_registries: args.insecure_registry.clone(),
        max_image_bytes: args.max_image_size,
        timeouts: RegistryTimeouts {
            connect: args.registry_connect_timeout,
            read: args.registry_read_timeout,
            retry_window: args.registry_retry_window,
        },
    }
}
