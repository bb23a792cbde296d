//! hearth-agent: `/init` inside a hearth guest, and the server the host drives over vsock.
//!
//! Boot inputs so far: the `hearth.*` kernel parameters ([`cmdline`]) and the initramfs's
//! kernel modules ([`modules`]). The [`server`] serves one operation per vsock connection
//! ([`vsock`]): ping, shutdown and exec (processes on pipes or a PTY, their output pumped back
//! by `output`). Every child is reaped by one [`reaper`] thread that hands each exec its own
//! child's status. The few unsafe calls live in `sys`.

#[macro_use]
pub mod log;

pub mod cmdline;
mod env;
mod exec;
pub mod modules;
mod output;
mod pty;
pub mod reaper;
pub mod server;
mod spawn;
mod sys;
pub mod vsock;
