//! Named network namespaces (`/run/netns/<name>`, the layout `ip netns` uses) and running code
//! inside one. Code that enters a namespace always runs on its own short-lived thread, so the
//! caller's threads never change namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("failed to create `{}`", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create a network namespace (unshare)")]
    Unshare(#[source] nix::Error),
    #[error("failed to bind-mount the new network namespace on `{}`", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to open network namespace `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to enter network namespace `{}`", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to unmount network namespace `{}`", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to remove `{}`", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create tap `{name}` in a new network namespace")]
    Tap {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a thread working in network namespace `{}` panicked", path.display())]
    ThreadPanicked { path: PathBuf },
}

pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates the named namespace `name`; fails if it exists.
pub fn create(name: &str) -> Result<PathBuf, NetnsError> {
    let path = path_of(name);
    let create_err = |source| NetnsError::CreateFile {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(NETNS_DIR).map_err(create_err)?;
    File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(create_err)?;
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| NetnsError::Bind {
                path: path.clone(),
                source,
            })
        })
        .join()
        .unwrap_or_else(|_| Err(NetnsError::ThreadPanicked { path: path.clone() }))
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// A new unnamed namespace holding only loopback and a persistent tap `tap`, for a VM that
/// needs a network device (its saved state has one) but must never send a packet. It lives
/// as long as the returned fd or a process inside it, and its tap goes with it.
pub fn anonymous_with_tap(tap: &str) -> Result<std::os::fd::OwnedFd, NetnsError> {
    let path = PathBuf::from("/proc/thread-self/ns/net");
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
            crate::sys::create_persistent_tap(tap).map_err(|source| NetnsError::Tap {
                name: tap.to_owned(),
                source,
            })?;
            File::open(&path)
                .map(std::os::fd::OwnedFd::from)
                .map_err(|source| NetnsError::Open {
                    path: path.clone(),
                    source,
                })
        })
        .join()
        .unwrap_or_else(|_| Err(NetnsError::ThreadPanicked { path: path.clone() }))
    })
}

/// Removes the named namespace `name`. A namespace that is already gone is not an error.
pub fn remove(name: &str) -> Result<(), NetnsError> {
    let path = path_of(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(source) => return Err(NetnsError::Unmount { path, source }),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove { path, source }),
    }
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let ns = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: path.to_owned(),
                source,
            })?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetnsError::ThreadPanicked {
                path: path.to_owned(),
            })
        })
    })
}
