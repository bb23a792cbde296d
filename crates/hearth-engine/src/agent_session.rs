//! The host's end of the agent's session stream (`hearth_agent_proto::session`): the hello and
//! the guest's Ready, then one channel per local client, each a byte relay under the session's
//! per-channel credit.
//!
//! A dead or hostile guest cannot hang or bloat the host: the handshake has a deadline (the
//! caller's), frames are bounded by the codec, a channel holds at most one window of guest data
//! (more is a reset), and a broken stream ends the session, which ends every channel.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hearth_agent_proto::session::{
    encode_session_frame, ChannelId, RecvWindow, SendWindow, SessionDecoder, SessionError,
    SessionFrame,
};
use hearth_agent_proto::{
    check_version, ErrorCode, FrameError, RemoteError, MAX_CHUNK_LEN, PROTOCOL_VERSION,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::agent::AgentError;

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What the reader hands a channel's relay.
#[derive(Debug)]
enum Inbound {
    Data(Vec<u8>),
    Close,
    /// The channel is aborted: the client sees its connection close.
    Reset,
}

/// One channel as the session's reader sees it.
#[derive(Debug)]
struct ChannelState {
    inbound: mpsc::UnboundedSender<Inbound>,
    recv: Mutex<RecvWindow>,
    send: Mutex<SendWindow>,
    credit: Notify,
}

#[derive(Debug, Default)]
struct Shared {
    /// `None` once the session has ended: no channel opens after that.
    channels: Mutex<Option<HashMap<ChannelId, Arc<ChannelState>>>>,
    next_id: AtomicU32,
}

impl Shared {
    fn channels(&self) -> MutexGuard<'_, Option<HashMap<ChannelId, Arc<ChannelState>>>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn channel(&self, id: ChannelId) -> Option<Arc<ChannelState>> {
        self.channels().as_ref()?.get(&id).cloned()
    }

    fn remove(&self, id: ChannelId) -> Option<Arc<ChannelState>> {
        self.channels().as_mut()?.remove(&id)
    }

    /// Resets every channel and refuses new ones.
    fn end(&self) {
        let Some(channels) = self.channels().take() else {
            return;
        };
        for state in channels.values() {
            let _ = state.inbound.send(Inbound::Reset);
        }
    }
}

/// A running session with the agent.
#[derive(Debug)]
pub(crate) struct AgentSession {
    agent_version: String,
    shared: Arc<Shared>,
    frames: mpsc::UnboundedSender<SessionFrame>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl AgentSession {
    /// Says hello on `stream` and waits for the agent's Ready (forever: the caller bounds it,
    /// with the boot timeout or a reconnect deadline). Anything the stream held before the Ready
    /// (left from an earlier session) is skipped.
    pub(crate) async fn start(mut stream: UnixStream) -> Result<AgentSession, AgentError> {
        let session = rand::random::<u64>();
        let mut hello = Vec::new();
        let frame = SessionFrame::Hello {
            version: PROTOCOL_VERSION,
            session,
        };
        encode_session_frame(&frame, &mut hello)?;
        stream.write_all(&hello).await.map_err(io_error)?;
        let mut decoder = SessionDecoder::new();
        let agent_version = loop {
            match next_frame(&mut stream, &mut decoder).await {
                Ok(SessionFrame::Ready {
                    version,
                    session: s,
                    agent_version,
                }) if s == session => {
                    check_version(version).map_err(AgentError::Remote)?;
                    break agent_version;
                }
                // Another session's frames, or a damaged leftover: wait for our Ready.
                Ok(_) | Err(AgentError::Session(_)) => {}
                Err(e) => return Err(e),
            }
        };
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            channels: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU32::new(1),
        });
        let (frames, queue) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_frames(write, queue, Arc::clone(&shared)));
        let reader = tokio::spawn(read_frames(
            read,
            decoder,
            Arc::clone(&shared),
            frames.clone(),
        ));
        Ok(AgentSession {
            agent_version,
            shared,
            frames,
            reader,
            writer,
        })
    }

    pub(crate) fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// Ends the session: every channel is reset and the stream is let go.
    pub(crate) fn end(&self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.end();
    }

    /// Relays `client` as one channel until both sides are done with it.
    pub(crate) async fn relay(&self, client: UnixStream) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let state = Arc::new(ChannelState {
            inbound: inbound_tx,
            recv: Mutex::new(RecvWindow::default()),
            send: Mutex::new(SendWindow::default()),
            credit: Notify::new(),
        });
        match self.shared.channels().as_mut() {
            Some(channels) => channels.insert(id, Arc::clone(&state)),
            // The session is over: dropping the client tells it so.
            None => return,
        };
        let _ = self.frames.send(SessionFrame::Open { channel: id });
        let (client_read, client_write) = client.into_split();
        let to_guest = self.client_to_guest(id, &state, client_read);
        let to_client = self.guest_to_client(id, &state, inbound, client_write);
        tokio::pin!(to_guest, to_client);
        let mut sent_all = false;
        loop {
            tokio::select! {
                end = &mut to_client => {
                    // After the guest's Close, the client may still be sending (or about to
                    // leave, which is a reset); after a reset nothing is copied any more.
                    if end == ChannelEnd::Closed && !sent_all {
                        (&mut to_guest).await;
                    }
                    break;
                }
                () = &mut to_guest, if !sent_all => sent_all = true,
            }
        }
        self.shared.remove(id);
    }

    /// Copies the client's bytes to the guest within the channel's credit.
    async fn client_to_guest(
        &self,
        id: ChannelId,
        state: &ChannelState,
        mut client: tokio::net::unix::OwnedReadHalf,
    ) {
        let mut buf = vec![0; MAX_CHUNK_LEN];
        loop {
            let want = loop {
                let notified = state.credit.notified();
                let taken = lock(&state.send).take(MAX_CHUNK_LEN);
                if taken > 0 {
                    break taken;
                }
                notified.await;
            };
            match client.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => {
                    lock(&state.send).untake(want);
                    let frame = if hung_up(client.as_ref()) {
                        SessionFrame::Reset {
                            channel: id,
                            error: RemoteError::new(ErrorCode::Internal, "the host client left"),
                        }
                    } else {
                        SessionFrame::Close { channel: id }
                    };
                    if let SessionFrame::Reset { .. } = &frame {
                        // Ends the copy towards the client as well.
                        let _ = state.inbound.send(Inbound::Reset);
                    }
                    let _ = self.frames.send(frame);
                    return;
                }
                Ok(n) => {
                    lock(&state.send).untake(want - n);
                    let data = buf[..n].to_vec();
                    let _ = self.frames.send(SessionFrame::Data { channel: id, data });
                }
            }
        }
    }

    /// Copies the guest's bytes to the client and returns credit as the client takes them,
    /// until the guest closes the channel or it is reset (by either side, or by the end of the
    /// session).
    async fn guest_to_client(
        &self,
        id: ChannelId,
        state: &ChannelState,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        mut client: OwnedWriteHalf,
    ) -> ChannelEnd {
        while let Some(message) = inbound.recv().await {
            match message {
                Inbound::Data(data) => {
                    if client.write_all(&data).await.is_err() {
                        let error = RemoteError::new(ErrorCode::Internal, "the host client left");
                        let _ = self.frames.send(SessionFrame::Reset { channel: id, error });
                        return ChannelEnd::Reset;
                    }
                    let idle = inbound.is_empty();
                    if let Some(bytes) = lock(&state.recv).consume(data.len(), idle) {
                        let _ = self
                            .frames
                            .send(SessionFrame::Credit { channel: id, bytes });
                    }
                }
                Inbound::Close => {
                    let _ = client.shutdown().await;
                    return ChannelEnd::Closed;
                }
                Inbound::Reset => return ChannelEnd::Reset,
            }
        }
        ChannelEnd::Reset
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.end();
    }
}

/// How the guest's side of a channel ended.
#[derive(Debug, PartialEq, Eq)]
enum ChannelEnd {
    Closed,
    Reset,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the client closed its socket entirely (not just its write side): the guest's
/// operation then has nobody to answer and is aborted, as a vanished vsock peer once was.
fn hung_up(client: &UnixStream) -> bool {
    let mut fds = [PollFd::new(client.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1..))
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

async fn next_frame(
    stream: &mut (impl AsyncRead + Unpin),
    decoder: &mut SessionDecoder,
) -> Result<SessionFrame, AgentError> {
    let mut buf = vec![0; READ_CHUNK];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        match stream.read(&mut buf).await {
            Ok(0) => return Err(AgentError::Closed),
            Ok(n) => decoder.extend(&buf[..n]),
            Err(e) => return Err(io_error(e)),
        }
    }
}

fn io_error(e: std::io::Error) -> AgentError {
    AgentError::Frame(FrameError::Io(e))
}

/// Dispatches the guest's frames to the channels until the stream ends or breaks its rules.
async fn read_frames(
    mut stream: tokio::net::unix::OwnedReadHalf,
    mut decoder: SessionDecoder,
    shared: Arc<Shared>,
    frames: mpsc::UnboundedSender<SessionFrame>,
) {
    loop {
        let frame = match next_frame(&mut stream, &mut decoder).await {
            Ok(frame) => frame,
            Err(e) => {
                if !matches!(e, AgentError::Closed) {
                    tracing::warn!(error = &e as &dyn std::error::Error, "agent session ended");
                }
                break;
            }
        };
        if let Err(e) = dispatch(&shared, &frames, frame) {
            tracing::warn!(error = %e, "agent broke the session protocol");
            break;
        }
    }
    shared.end();
}

fn dispatch(
    shared: &Shared,
    frames: &mpsc::UnboundedSender<SessionFrame>,
    frame: SessionFrame,
) -> Result<(), String> {
    let reset = |channel: ChannelId, error: &SessionError| {
        if let Some(state) = shared.remove(channel) {
            let _ = state.inbound.send(Inbound::Reset);
            let _ = frames.send(SessionFrame::Reset {
                channel,
                error: RemoteError::new(ErrorCode::BadRequest, error.to_string()),
            });
        }
    };
    match frame {
        SessionFrame::Data { channel, data } => {
            // Frames for a channel we already dropped may cross our reset; they are ignored.
            let Some(state) = shared.channel(channel) else {
                return Ok(());
            };
            let received = lock(&state.recv).receive(channel, data.len());
            match received {
                Ok(()) => {
                    let _ = state.inbound.send(Inbound::Data(data));
                }
                Err(e) => reset(channel, &e),
            }
        }
        SessionFrame::Credit { channel, bytes } => {
            if let Some(state) = shared.channel(channel) {
                let granted = lock(&state.send).grant(channel, bytes);
                match granted {
                    Ok(()) => state.credit.notify_one(),
                    Err(e) => reset(channel, &e),
                }
            }
        }
        SessionFrame::Close { channel } => {
            if let Some(state) = shared.channel(channel) {
                let _ = state.inbound.send(Inbound::Close);
            }
        }
        SessionFrame::Reset { channel, error } => {
            if let Some(state) = shared.remove(channel) {
                tracing::debug!(channel, %error, "the agent reset a channel");
                let _ = state.inbound.send(Inbound::Reset);
            }
        }
        other => {
            return Err(format!(
                "the agent sent {} during a session",
                hearth_agent_proto::session::kind(&other)
            ))
        }
    }
    Ok(())
}

/// Writes queued frames to the stream, a batch per write.
async fn write_frames(
    mut stream: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<SessionFrame>,
    shared: Arc<Shared>,
) {
    let mut buf = Vec::new();
    while let Some(frame) = queue.recv().await {
        buf.clear();
        let mut next = Some(frame);
        while let Some(frame) = next {
            if let Err(e) = encode_session_frame(&frame, &mut buf) {
                tracing::warn!(error = %e, "dropping a session frame that does not encode");
            }
            next = if buf.len() < READ_CHUNK {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(e) = stream.write_all(&buf).await {
            tracing::warn!(error = %e, "cannot write to the agent's stream");
            break;
        }
    }
    shared.end();
}
