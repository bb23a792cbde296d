//! hearth-agent: `/init` inside a hearth guest, and the server the host drives over vsock.
//!
//! Boot inputs so far: the `hearth.*` kernel parameters ([`cmdline`]) and the initramfs's
//! kernel modules ([`modules`]); everything logs to the console through [`log`].

#[macro_use]
pub mod log;

pub mod cmdline;
pub mod modules;
