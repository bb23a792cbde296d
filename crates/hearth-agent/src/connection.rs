//! What every request handler shares about its host connection: the stream type, ending it, and
//! naming the messages that arrive on it. A leaf module, so the server and the handlers it
//! dispatches to (exec, output, fs, volume) depend on it rather than on each other.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use hearth_agent_proto::HostMessage;
use nix::sys::socket::Shutdown;

/// A byte stream to the host: one end of a channel's socket pair (see [`crate::session`]). Duplicating the
/// fd gives the output pump its own handle for writing.
pub trait Connection: Read + Write + AsFd + From<OwnedFd> + Send + 'static {}

impl<T: Read + Write + AsFd + From<OwnedFd> + Send + 'static> Connection for T {}

/// Ends both directions of a connection, waking any thread blocked reading it.
pub fn shut_down(conn: &impl AsFd) {
    // Fails only if the peer is gone already, which is what we wanted.
    let _ = nix::sys::socket::shutdown(conn.as_fd().as_raw_fd(), Shutdown::Both);
}

/// A message's name for logs and bad-request replies, without its payload.
pub fn kind(message: &HostMessage) -> &'static str {
    match message {
        HostMessage::Hello { .. } => "Hello",
        HostMessage::Exec(_) => "Exec",
        HostMessage::Stdin(_) => "Stdin",
        HostMessage::StdinEof => "StdinEof",
        HostMessage::Resize(_) => "Resize",
        HostMessage::Signal(_) => "Signal",
        HostMessage::Shutdown => "Shutdown",
        HostMessage::Ping => "Ping",
        HostMessage::Fs(_) => "Fs",
        HostMessage::Data(_) => "Data",
        HostMessage::DataEnd => "DataEnd",
        HostMessage::Refresh(_) => "Refresh",
        HostMessage::Mount(_) => "Mount",
        HostMessage::VolumeReply { .. } => "VolumeReply",
    }
}
