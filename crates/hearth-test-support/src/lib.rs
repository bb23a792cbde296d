//! hearth-test-support: fixtures for tests that boot real VMs.
//!
//! - [`assets`]: builds the static guest agent and runs `hearth setup` once into a shared dir.
//! - [`host::TestHost`]: a fresh state dir per test with the shared boot assets, a `hearth`
//!   command bound to it, and a check that nothing of the test's VMs is left on the host.
//! - [`initramfs::busybox_initramfs`]: guests that misbehave on purpose.
//! - [`netns::TestInternet`]: a test host in its own namespace, routed from the host, with
//!   HTTP and UDP echo servers: the only place network tests send traffic.
//! - [`registry::LocalRegistry`]: a real `docker-registry` on 127.0.0.1, and
//!   [`oci_layout::TestImage`]: images built entry by entry to push to it.
//! - [`cutting_proxy::CuttingProxy`]: a proxy before the registry that breaks off a blob download.
//! - [`token_server::TokenServer`]: Bearer tokens for a registry in `auth: token` mode.
//! - [`tmpfs::SmallTmpfs`]: a tiny filesystem to run out of space on.
//! - [`pty::PtySession`]: runs `hearth` on a pseudo-terminal for interactive tests.
//! - [`wait_until`]: polling instead of sleeps.

pub mod assets;
pub mod cutting_proxy;
pub mod host;
pub mod host_files;
pub mod initramfs;
pub mod netns;
pub mod node;
pub mod oci_layout;
pub mod pty;
pub mod python;
pub mod registry;
pub mod tmpfs;
pub mod token_server;

use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
