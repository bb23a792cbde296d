//! One file per group of routes; each handler parses, calls one engine operation and maps the
//! result.

pub mod exec;
pub mod files;
pub mod images;
pub mod sandboxes;
pub mod snapshots;
pub mod system;
pub mod terminal;
