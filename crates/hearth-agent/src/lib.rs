//! hearth-agent: `/init` inside a hearth guest, and the server the host drives over one
//! virtio-serial port (QEMU) or one vsock connection at a time (Firecracker, [`vsock`]).
//!
//! As PID 1 it mounts the pseudo filesystems ([`boot`]), loads the initramfs's kernel modules
//! ([`modules`]), switches to the image's overlay root ([`boot`], configured by [`cmdline`]),
//! opens the agent's port ([`port`]) and runs the host's sessions on it ([`session`]: the
//! answer to the host's hello is the ready signal), serving one operation per channel
//! ([`server`]): ping, shutdown ([`power`]), file operations ([`fs`]), exec ([`exec`]:
//! processes on pipes or a PTY, their output pumped back by [`output`]) and host directories
//! mounted over FUSE ([`volume`]: each kernel request forwarded to the host as a call); what
//! these handlers share about the stream is in [`connection`]. [`net`] brings up the guest's network from the
//! command line. Every child is reaped by one [`reaper`] thread that hands each exec its own
//! child's status. The few unsafe calls live in `sys`.

#[macro_use]
pub mod log;

pub mod boot;
pub mod cmdline;
pub mod connection;
mod env;
mod exec;
mod fs;
mod identity;
pub mod modules;
pub mod net;
mod output;
pub mod port;
pub mod power;
mod pty;
pub mod reaper;
pub mod server;
pub mod session;
mod spawn;
mod sys;
mod user;
mod volume;
pub mod vsock;
