//! Every operation a client can ask of the engine, as methods of [`crate::Engine`], one file a
//! group. Each takes typed requests and returns typed results or an [`crate::EngineError`];
//! long work reports progress through a reporter the caller passes in; nothing here prints.
//!
//! - [`run`]: resolve a [`SandboxSpec`] (pull the image, build the boot config and process);
//!   boot a sandbox the caller owns; the one-shot attached run.
//! - [`sandboxes`]: detached sandboxes: create, start, run detached, stop, kill, wait, remove,
//!   list, find, inspect, gc, and the supervisor's own loop.
//! - [`process`]: exec in a running sandbox.
//! - [`files`]: stat, list, mkdir, remove, read and write guest files; copy trees in and out.
//! - [`logs`]: a sandbox's output and console logs.
//! - [`images`]: pull, ensure, list, remove, prune, import; registry login and logout.
//! - [`snapshots`]: save a running sandbox as a snapshot; list, inspect, remove snapshots.
//! - [`host`]: setup (boot assets) and doctor (host checks).
//! - [`volumes`]: named volumes: create, list, inspect, remove (refused while in use).

pub mod files;
pub mod host;
pub mod images;
pub mod logs;
pub mod process;
pub mod run;
pub mod sandboxes;
pub mod snapshots;
mod spec;
pub mod templates;
pub mod volumes;

pub use spec::{
    DetachOptions, ProcessSpec, RegistryOptions, ResolvedSpec, SandboxSpec, DEFAULT_IMAGE,
};
