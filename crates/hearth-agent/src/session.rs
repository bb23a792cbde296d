//! The agent's side of a session stream (see `hearth_agent_proto::session`): one thread polls
//! the stream and every channel, and each channel is served by the same per-operation handler
//! that once served a vsock connection, over its own Unix socket pair. The handlers keep their
//! blocking reads and writes, hang-up detection and half-close; only this relay knows that the
//! bytes share one stream.
//!
//! Memory stays bounded whatever the host or a process does: a channel's data from the host is
//! held only up to the window the host was granted, and a channel's output is read only while
//! it has credit and the outgoing buffer is below [`OUT_HIGH`].

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use hearth_agent_proto::session::{
    encode_session_frame, ChannelId, RecvWindow, SendWindow, SessionDecoder, SessionFrame,
    MAX_CHANNELS,
};
use hearth_agent_proto::{ErrorCode, RemoteError, MAX_CHUNK_LEN, PROTOCOL_VERSION};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, shutdown, MsgFlags, Shutdown};

use crate::server::{handle_connection, Context};

/// Channels stop reading their handler's output while this much waits to go to the host.
const OUT_HIGH: usize = 256 * 1024;

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SessionLoopError {
    #[error("failed to poll the session stream and its channels")]
    Poll(#[source] Errno),
    #[error("failed to read the session stream")]
    Read(#[source] Errno),
    #[error("failed to write the session stream")]
    Write(#[source] Errno),
}

/// Serves sessions on `stream` (non-blocking) until the host side goes away (end of file or
/// hang-up), which ends every channel. A host that says hello again mid-stream starts a fresh
/// session and the channels of the old one are dropped.
pub fn run(stream: BorrowedFd<'_>, context: &Context) -> Result<(), SessionLoopError> {
    let mut relay = Relay {
        stream,
        decoder: SessionDecoder::new(),
        out: Vec::new(),
        session: None,
        channels: BTreeMap::new(),
        context: context.clone(),
    };
    relay.run()
}

struct Relay<'a> {
    stream: BorrowedFd<'a>,
    decoder: SessionDecoder,
    /// Encoded frames not yet written to the stream.
    out: Vec<u8>,
    session: Option<u64>,
    channels: BTreeMap<ChannelId, Channel>,
    context: Context,
}

/// One channel: the relay's end of the socket pair its handler serves.
struct Channel {
    socket: UnixStream,
    /// Host data not yet written to the handler; at most one window.
    inbound: VecDeque<u8>,
    recv: RecvWindow,
    send: SendWindow,
    /// The host sent Close: once `inbound` is written, the handler sees end of file.
    host_closed: bool,
    /// The handler sent end of file, and we sent Close.
    handler_closed: bool,
    /// The handler's end is gone: host data is dropped (and credited) from now on.
    handler_gone: bool,
}

impl Channel {
    fn wants_read(&self, out_len: usize) -> bool {
        !self.handler_closed && self.send.credit() > 0 && out_len < OUT_HIGH
    }

    fn wants_write(&self) -> bool {
        !self.inbound.is_empty()
    }

    fn finished(&self) -> bool {
        self.host_closed && self.handler_closed && self.inbound.is_empty()
    }
}

enum Step {
    Continue,
    HostGone,
}

impl Relay<'_> {
    fn run(&mut self) -> Result<(), SessionLoopError> {
        loop {
            let ids: Vec<ChannelId> = self
                .channels
                .iter()
                .filter(|(_, c)| c.wants_read(self.out.len()) || c.wants_write())
                .map(|(id, _)| *id)
                .collect();
            let mut stream_events = PollFlags::POLLIN;
            if !self.out.is_empty() {
                stream_events |= PollFlags::POLLOUT;
            }
            let mut fds = vec![PollFd::new(self.stream, stream_events)];
            for id in &ids {
                let channel = &self.channels[id];
                let mut events = PollFlags::empty();
                if channel.wants_read(self.out.len()) {
                    events |= PollFlags::POLLIN;
                }
                if channel.wants_write() {
                    events |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(channel.socket.as_fd(), events));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(SessionLoopError::Poll(e)),
            }
            let ready: Vec<PollFlags> = fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            if !ready[0].is_empty() {
                if let Step::HostGone = self.read_stream()? {
                    return Ok(());
                }
            }
            for (id, events) in ids.iter().zip(&ready[1..]) {
                if !events.is_empty() {
                    self.service_channel(*id, *events);
                }
            }
            self.write_stream()?;
        }
    }

    fn read_stream(&mut self) -> Result<Step, SessionLoopError> {
        let mut buf = vec![0; READ_CHUNK];
        match nix::unistd::read(self.stream.as_raw_fd(), &mut buf) {
            Ok(0) => return Ok(Step::HostGone),
            Ok(len) => self.decoder.extend(&buf[..len]),
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(Step::Continue),
            // A socket stream (tests, a vsock transport) reports a vanished host this way.
            Err(Errno::ECONNRESET) => return Ok(Step::HostGone),
            Err(e) => return Err(SessionLoopError::Read(e)),
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => self.handle(frame),
                Ok(None) => return Ok(Step::Continue),
                Err(e) => {
                    log!(
                        "session: dropping the session after a bad frame: {}",
                        crate::log::one_line(&e)
                    );
                    self.end_session();
                }
            }
        }
    }

    fn write_stream(&mut self) -> Result<(), SessionLoopError> {
        while !self.out.is_empty() {
            match nix::unistd::write(self.stream, &self.out) {
                Ok(written) => {
                    self.out.drain(..written);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(()),
                // The host is gone; reading the stream says so next.
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    self.out.clear();
                    return Ok(());
                }
                Err(e) => return Err(SessionLoopError::Write(e)),
            }
        }
        Ok(())
    }

    fn push(&mut self, frame: &SessionFrame) {
        // Our frames are far below the frame limit, so encoding cannot fail.
        if let Err(e) = encode_session_frame(frame, &mut self.out) {
            log!(
                "session: failed to encode a frame: {}",
                crate::log::one_line(&e)
            );
        }
    }

    fn end_session(&mut self) {
        // Dropping the relay ends makes each handler see its host hang up.
        self.channels.clear();
        self.session = None;
    }

    fn handle(&mut self, frame: SessionFrame) {
        if let SessionFrame::Hello { version, session } = frame {
            return self.hello(version, session);
        }
        if self.session.is_none() {
            return;
        }
        match frame {
            SessionFrame::Open { channel } => self.open(channel),
            SessionFrame::Data { channel, data } => self.data(channel, data),
            SessionFrame::Credit { channel, bytes } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    if let Err(e) = c.send.grant(channel, bytes) {
                        self.reset(channel, &e);
                    }
                }
            }
            SessionFrame::Close { channel } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    c.host_closed = true;
                    if c.inbound.is_empty() {
                        // Fails only if the handler is gone, which needs no notice.
                        let _ = shutdown(c.socket.as_raw_fd(), Shutdown::Write);
                    }
                    self.remove_if_finished(channel);
                }
            }
            SessionFrame::Reset { channel, .. } => {
                self.channels.remove(&channel);
            }
            other => log!(
                "session: ignoring a {} frame from the host",
                hearth_agent_proto::session::kind(&other)
            ),
        }
    }

    fn hello(&mut self, version: u32, session: u64) {
        self.end_session();
        // What was queued belonged to the old session; the host skips to our Ready anyway.
        self.out.clear();
        self.push(&SessionFrame::Ready {
            version: PROTOCOL_VERSION,
            session,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        if version == PROTOCOL_VERSION {
            self.session = Some(session);
            log!("session {session:016x} started");
        } else {
            // The Ready tells the host our version, and it reports the mismatch.
            log!("host speaks protocol v{version}, this agent v{PROTOCOL_VERSION}");
        }
    }

    fn open(&mut self, channel: ChannelId) {
        let refuse = if self.channels.contains_key(&channel) {
            Some(format!("channel {channel} is already open"))
        } else if self.channels.len() >= MAX_CHANNELS {
            Some(format!("too many channels (at most {MAX_CHANNELS})"))
        } else {
            None
        };
        if let Some(message) = refuse {
            self.channels.remove(&channel);
            return self.push(&SessionFrame::Reset {
                channel,
                error: RemoteError::new(ErrorCode::BadRequest, message),
            });
        }
        match spawn_handler(channel, &self.context) {
            Ok(socket) => {
                self.channels.insert(
                    channel,
                    Channel {
                        socket,
                        inbound: VecDeque::new(),
                        recv: RecvWindow::default(),
                        send: SendWindow::default(),
                        host_closed: false,
                        handler_closed: false,
                        handler_gone: false,
                    },
                );
            }
            Err(e) => {
                log!("session: failed to start a handler for channel {channel}: {e}");
                self.push(&SessionFrame::Reset {
                    channel,
                    error: RemoteError::new(
                        ErrorCode::Internal,
                        format!("the agent failed to start a handler: {e}"),
                    ),
                });
            }
        }
    }

    fn data(&mut self, channel: ChannelId, data: Vec<u8>) {
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        if let Err(e) = c.recv.receive(channel, data.len()) {
            return self.reset(channel, &e);
        }
        if c.host_closed {
            let e = RemoteError::new(ErrorCode::BadRequest, "data after close");
            return self.reset(channel, &e);
        }
        if c.handler_gone {
            let credit = c.recv.consume(data.len(), true);
            return self.credit(channel, credit);
        }
        c.inbound.extend(data);
        self.flush_inbound(channel);
    }

    fn credit(&mut self, channel: ChannelId, credit: Option<u32>) {
        if let Some(bytes) = credit {
            self.push(&SessionFrame::Credit { channel, bytes });
        }
    }

    fn reset(&mut self, channel: ChannelId, error: &dyn std::error::Error) {
        log!(
            "session: resetting channel {channel}: {}",
            crate::log::one_line(error)
        );
        self.channels.remove(&channel);
        self.push(&SessionFrame::Reset {
            channel,
            error: RemoteError {
                code: ErrorCode::BadRequest,
                chain: crate::log::chain(error),
            },
        });
    }

    fn service_channel(&mut self, channel: ChannelId, events: PollFlags) {
        if events.contains(PollFlags::POLLOUT) {
            self.flush_inbound(channel);
        }
        let readable = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
        if events.intersects(readable) {
            self.read_channel(channel);
        }
        self.remove_if_finished(channel);
    }

    /// Writes what the handler can take now and returns credit for it.
    fn flush_inbound(&mut self, channel: ChannelId) {
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        let mut written = 0;
        while !c.inbound.is_empty() {
            let (front, _) = c.inbound.as_slices();
            // MSG_NOSIGNAL: a handler that went away is a state to handle, not a signal.
            match send(c.socket.as_raw_fd(), front, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => {
                    c.inbound.drain(..n);
                    written += n;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    written += c.inbound.len();
                    c.inbound.clear();
                    c.handler_gone = true;
                }
            }
        }
        if c.inbound.is_empty() && c.host_closed {
            let _ = shutdown(c.socket.as_raw_fd(), Shutdown::Write);
        }
        let credit = c.recv.consume(written, c.inbound.is_empty());
        self.credit(channel, credit);
    }

    /// Reads the handler's output within the channel's credit and queues it for the host.
    fn read_channel(&mut self, channel: ChannelId) {
        let out_len = self.out.len();
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        if !c.wants_read(out_len) {
            return;
        }
        let want = c.send.take(MAX_CHUNK_LEN);
        let mut buf = vec![0; want];
        let frame = match recv(c.socket.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(Errno::ECONNRESET) => {
                c.send.untake(want);
                c.handler_closed = true;
                SessionFrame::Close { channel }
            }
            Ok(n) => {
                c.send.untake(want - n);
                buf.truncate(n);
                SessionFrame::Data { channel, data: buf }
            }
            Err(e) => {
                c.send.untake(want);
                if e != Errno::EAGAIN && e != Errno::EINTR {
                    log!("session: reading channel {channel} failed: {e}");
                }
                return;
            }
        };
        self.push(&frame);
    }

    fn remove_if_finished(&mut self, channel: ChannelId) {
        if self.channels.get(&channel).is_some_and(Channel::finished) {
            self.channels.remove(&channel);
        }
    }
}

/// Starts the per-operation handler for one channel on a socket pair; returns the relay's end.
fn spawn_handler(channel: ChannelId, context: &Context) -> io::Result<UnixStream> {
    let (relay, handler) = UnixStream::pair()?;
    relay.set_nonblocking(true)?;
    let context = context.clone();
    std::thread::Builder::new()
        .name(format!("channel-{channel}"))
        .spawn(move || {
            if let Err(e) = handle_connection(handler, &context) {
                log!("channel {channel}: {}", crate::log::one_line(&e));
            }
        })?;
    Ok(relay)
}
