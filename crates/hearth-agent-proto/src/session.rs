//! One long-lived byte stream per VM carrying many channels, each an independent byte stream.
//!
//! Why our own framing rather than a multiplexing crate such as `yamux`: yamux is built on
//! `futures` I/O and needs an executor, while the guest agent is a static, thread-based PID 1
//! without one, and yamux's receive buffers are not bounded by the window the way we need
//! against a hostile guest (the host must never buffer more than it granted). The few things we
//! need (open, data under per-channel credit, half-close, reset, a session hello) are a handful
//! of variants on top of the length-prefixed postcard frames this crate already has, so both
//! sides share one small, property-tested codec and the same stream can later run over one
//! Firecracker vsock connection unchanged.
//!
//! Rules of a session:
//! - The host starts a session with [`SessionFrame::Hello`] carrying a fresh random `session`
//!   id; the agent drops every channel of an earlier session and answers
//!   [`SessionFrame::Ready`] with the same id. That answer is the guest's ready signal.
//! - Hello and Ready are preceded by [`SYNC`], so a side that lost its place in the stream (a
//!   host that reconnected mid-frame, bytes left over from an earlier session) discards bytes
//!   until the next sync mark instead of misreading them.
//! - Only the host opens channels, with ids it never reuses within a session.
//! - Each side may have at most [`CHANNEL_WINDOW`] bytes of a channel's data in flight towards
//!   the other: it starts with that much credit and regains it from [`SessionFrame::Credit`]
//!   as the receiver's consumer takes the data. A receiver therefore buffers at most one
//!   window per channel, and a slow reader stalls only its own channel.
//! - [`SessionFrame::Close`] ends one direction (half-close); [`SessionFrame::Reset`] aborts
//!   both. A channel is gone once each side has closed or reset it; frames for unknown
//!   channels are dropped (they may cross a reset).

use serde::{Deserialize, Serialize};

use crate::frame::{decode_frame, encode_frame, FrameError};
use crate::message::RemoteError;

/// Marks the start of a Hello or Ready. Read as a frame header its first four bytes give a
/// length over [`crate::MAX_FRAME_LEN`], so no valid frame starts with it.
pub const SYNC: [u8; 8] = *b"\xffHEARTH\xfe";

/// Bytes of one channel's data a sender may have unacknowledged in flight.
pub const CHANNEL_WINDOW: u32 = 256 * 1024;

/// Channels one session may have open at once; an `Open` beyond this is reset.
pub const MAX_CHANNELS: usize = 1024;

/// A receiver returns credit once this much was consumed (or once it has nothing buffered), so
/// a steady stream does not cost one Credit frame per chunk.
const CREDIT_BATCH: u32 = CHANNEL_WINDOW / 4;

/// A channel's id, chosen by the host.
pub type ChannelId = u32;

/// One frame of a session stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionFrame {
    /// Host: start a fresh session (always after [`SYNC`]).
    Hello { version: u32, session: u64 },
    /// Agent: ready to serve `session` (always after [`SYNC`]).
    Ready {
        version: u32,
        session: u64,
        agent_version: String,
    },
    /// Host: a new channel; the host may send data on it at once.
    Open { channel: ChannelId },
    /// Bytes of a channel, within the sender's credit.
    Data {
        channel: ChannelId,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The receiver consumed `bytes` more of the channel's data; the sender may send that much
    /// more.
    Credit { channel: ChannelId, bytes: u32 },
    /// The sender will send no more data on the channel.
    Close { channel: ChannelId },
    /// The channel is aborted in both directions.
    Reset {
        channel: ChannelId,
        error: RemoteError,
    },
}

impl SessionFrame {
    fn needs_sync(&self) -> bool {
        matches!(
            self,
            SessionFrame::Hello { .. } | SessionFrame::Ready { .. }
        )
    }
}

/// A session stream that broke its rules.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("malformed session frame")]
    Frame(#[source] FrameError),
    #[error("{0} frame without the sync mark in front of it")]
    Unsynced(&'static str),
    #[error("a sync mark followed by a {0} frame instead of Hello or Ready")]
    NotAHello(&'static str),
    #[error("channel {channel} received {got} bytes with only {credit} bytes of credit left")]
    OverWindow {
        channel: ChannelId,
        got: usize,
        credit: u32,
    },
    #[error("channel {channel} was granted {bytes} bytes of credit beyond its window")]
    OverCredit { channel: ChannelId, bytes: u32 },
}

/// Appends `frame` (with its sync mark, for Hello and Ready) to `out`.
pub fn encode_session_frame(frame: &SessionFrame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    if frame.needs_sync() {
        out.extend_from_slice(&SYNC);
    }
    encode_frame(frame, out).inspect_err(|_| out.truncate(start))
}

/// Splits an incoming session stream into frames. Bytes go in with [`SessionDecoder::extend`];
/// [`SessionDecoder::next_frame`] takes frames out. Unsynced (at first, and after an error) it skips
/// everything up to the next sync mark.
#[derive(Debug, Default)]
pub struct SessionDecoder {
    buf: Vec<u8>,
    synced: bool,
}

impl SessionDecoder {
    pub fn new() -> Self {
        SessionDecoder::default()
    }

    /// Bytes held that do not yet form a frame; never more than one frame and a read.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Forgets everything received so far and waits for the next sync mark.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.synced = false;
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed. After an error the decoder
    /// is unsynced and skips to the next sync mark, so the caller may go on calling it.
    pub fn next_frame(&mut self) -> Result<Option<SessionFrame>, SessionError> {
        loop {
            if !self.synced && !self.skip_to_sync() {
                return Ok(None);
            }
            if self.buf.starts_with(&SYNC) {
                match decode_frame::<SessionFrame>(&self.buf[SYNC.len()..]) {
                    Ok(Some((frame, used))) if frame.needs_sync() => {
                        self.buf.drain(..SYNC.len() + used);
                        self.synced = true;
                        return Ok(Some(frame));
                    }
                    Ok(Some((frame, _))) => {
                        return Err(self.lose_sync(SessionError::NotAHello(kind(&frame))))
                    }
                    Ok(None) => return Ok(None),
                    // A damaged hello: look for the next mark.
                    Err(_) => {
                        self.buf.drain(..1);
                        self.synced = false;
                        continue;
                    }
                }
            }
            if SYNC.starts_with(&self.buf) {
                // Possibly the start of a sync mark; a frame header needs as many bytes anyway.
                return Ok(None);
            }
            return match decode_frame::<SessionFrame>(&self.buf) {
                Ok(Some((frame, _))) if frame.needs_sync() => {
                    Err(self.lose_sync(SessionError::Unsynced(kind(&frame))))
                }
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    Ok(Some(frame))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(self.lose_sync(SessionError::Frame(e))),
            };
        }
    }

    /// Drops bytes before the next sync mark (keeping a tail that may begin one); true once the
    /// buffer starts with a whole mark.
    fn skip_to_sync(&mut self) -> bool {
        if let Some(at) = self.buf.windows(SYNC.len()).position(|w| w == SYNC) {
            self.buf.drain(..at);
            return true;
        }
        let keep = (1..SYNC.len())
            .rev()
            .find(|&n| self.buf.len() >= n && self.buf.ends_with(&SYNC[..n]))
            .unwrap_or(0);
        let drop = self.buf.len() - keep;
        self.buf.drain(..drop);
        false
    }

    /// After a bad frame nothing that follows can be trusted to start on a frame boundary: skip
    /// one byte and look for the next sync mark from there.
    fn lose_sync(&mut self, error: SessionError) -> SessionError {
        self.synced = false;
        if !self.buf.is_empty() {
            self.buf.drain(..1);
        }
        error
    }
}

/// A frame's name for errors and logs.
pub fn kind(frame: &SessionFrame) -> &'static str {
    match frame {
        SessionFrame::Hello { .. } => "Hello",
        SessionFrame::Ready { .. } => "Ready",
        SessionFrame::Open { .. } => "Open",
        SessionFrame::Data { .. } => "Data",
        SessionFrame::Credit { .. } => "Credit",
        SessionFrame::Close { .. } => "Close",
        SessionFrame::Reset { .. } => "Reset",
    }
}

/// The sending side of one channel's flow control: how much it may still send.
#[derive(Debug)]
pub struct SendWindow {
    credit: u32,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow {
            credit: CHANNEL_WINDOW,
        }
    }
}

impl SendWindow {
    pub fn credit(&self) -> u32 {
        self.credit
    }

    /// Takes up to `want` bytes of credit; returns how much was taken (0 when none is left).
    pub fn take(&mut self, want: usize) -> usize {
        let taken = self.credit.min(u32::try_from(want).unwrap_or(u32::MAX));
        self.credit -= taken;
        taken as usize
    }

    /// Gives back credit that was taken but not used.
    pub fn untake(&mut self, bytes: usize) {
        self.credit = self
            .credit
            .saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX))
            .min(CHANNEL_WINDOW);
    }

    /// Applies the peer's Credit frame; a peer granting more than was ever sent is broken.
    pub fn grant(&mut self, channel: ChannelId, bytes: u32) -> Result<(), SessionError> {
        match self.credit.checked_add(bytes) {
            Some(credit) if credit <= CHANNEL_WINDOW => {
                self.credit = credit;
                Ok(())
            }
            _ => Err(SessionError::OverCredit { channel, bytes }),
        }
    }
}

/// The receiving side of one channel's flow control: data held for the consumer and credit
/// not yet returned.
#[derive(Debug)]
pub struct RecvWindow {
    /// Credit the sender still has, as far as we know.
    sender_credit: u32,
    /// Consumed bytes whose credit has not been returned yet.
    consumed: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow {
            sender_credit: CHANNEL_WINDOW,
            consumed: 0,
        }
    }
}

impl RecvWindow {
    /// Accounts for `len` bytes arriving; more than the sender's credit is a broken peer.
    pub fn receive(&mut self, channel: ChannelId, len: usize) -> Result<(), SessionError> {
        let over = || SessionError::OverWindow {
            channel,
            got: len,
            credit: self.sender_credit,
        };
        let len = u32::try_from(len).map_err(|_| over())?;
        self.sender_credit = self.sender_credit.checked_sub(len).ok_or_else(over)?;
        Ok(())
    }

    /// Accounts for `len` bytes taken by the consumer. Returns the credit to send back now, if
    /// any: in batches, or all of it once `idle` (nothing of the channel is left buffered).
    pub fn consume(&mut self, len: usize, idle: bool) -> Option<u32> {
        self.consumed = self
            .consumed
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        if self.consumed == 0 || (self.consumed < CREDIT_BATCH && !idle) {
            return None;
        }
        let grant = self.consumed.min(CHANNEL_WINDOW - self.sender_credit);
        self.consumed = 0;
        self.sender_credit += grant;
        (grant > 0).then_some(grant)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::ErrorCode;

    fn frame() -> impl Strategy<Value = SessionFrame> {
        prop_oneof![
            (any::<u32>(), any::<u64>())
                .prop_map(|(version, session)| SessionFrame::Hello { version, session }),
            (any::<u32>(), any::<u64>(), ".{0,16}").prop_map(
                |(version, session, agent_version)| SessionFrame::Ready {
                    version,
                    session,
                    agent_version
                }
            ),
            any::<u32>().prop_map(|channel| SessionFrame::Open { channel }),
            (
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..2048)
            )
                .prop_map(|(channel, data)| SessionFrame::Data { channel, data }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(channel, bytes)| SessionFrame::Credit { channel, bytes }),
            any::<u32>().prop_map(|channel| SessionFrame::Close { channel }),
            (any::<u32>(), ".{0,32}").prop_map(|(channel, message)| SessionFrame::Reset {
                channel,
                error: RemoteError::new(ErrorCode::Internal, message)
            }),
        ]
    }

    /// A session as it appears on the wire: a Hello first, then anything.
    fn session() -> impl Strategy<Value = Vec<SessionFrame>> {
        proptest::collection::vec(frame(), 0..12).prop_map(|mut frames| {
            frames.insert(
                0,
                SessionFrame::Hello {
                    version: 1,
                    session: 7,
                },
            );
            frames
        })
    }

    fn encode_all(frames: &[SessionFrame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            encode_session_frame(frame, &mut out).unwrap();
        }
        out
    }

    /// Feeds `bytes` in pieces of `step` and collects frames and errors.
    fn decode_all(
        bytes: &[u8],
        step: usize,
    ) -> (Vec<SessionFrame>, Vec<SessionError>, SessionDecoder) {
        let mut decoder = SessionDecoder::new();
        let (mut frames, mut errors) = (Vec::new(), Vec::new());
        for piece in bytes.chunks(step.max(1)) {
            decoder.extend(piece);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => errors.push(e),
                }
            }
        }
        (frames, errors, decoder)
    }

    proptest! {
        #[test]
        fn test_session_round_trip_in_any_pieces(frames in session(), step in 1usize..300) {
            let (got, errors, _) = decode_all(&encode_all(&frames), step);
            prop_assert!(errors.is_empty(), "{errors:?}");
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn test_garbage_before_a_hello_is_skipped(
            garbage in proptest::collection::vec(any::<u8>(), 0..512),
            frames in session(),
            step in 1usize..64,
        ) {
            let mut bytes = garbage;
            bytes.extend(encode_all(&frames));
            let (got, _, _) = decode_all(&bytes, step);
            // Garbage may itself hold a sync mark and a hello; what follows the real one is
            // always decoded whole.
            prop_assert!(got.ends_with(&frames), "{got:?}");
        }

        #[test]
        fn test_random_bytes_never_panic_and_stay_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            step in 1usize..512,
        ) {
            let (_, _, decoder) = decode_all(&bytes, step);
            prop_assert!(decoder.buffered() <= bytes.len());
        }

        #[test]
        fn test_corrupted_session_then_reset_decodes_the_next_session(
            frames in session(),
            flip in any::<prop::sample::Index>(),
            next in session(),
        ) {
            // A damaged length may swallow what follows, so recovery comes from the transport
            // ending the session (the decoder is reset), never from guessing inside frames.
            let mut bytes = encode_all(&frames);
            let at = flip.index(bytes.len());
            bytes[at] ^= 0x55;
            let (_, _, mut decoder) = decode_all(&bytes, 4096);
            decoder.reset();
            decoder.extend(&encode_all(&next));
            let mut got = Vec::new();
            while let Some(frame) = decoder.next_frame().unwrap() {
                got.push(frame);
            }
            prop_assert_eq!(got, next);
        }
    }

    #[test]
    fn test_sync_mark_is_never_a_valid_frame_header() {
        let header = u32::from_le_bytes([SYNC[0], SYNC[1], SYNC[2], SYNC[3]]);
        assert!(header as usize > crate::MAX_FRAME_LEN);
    }

    #[test]
    fn test_hello_without_sync_mark_is_an_error() {
        let mut bytes = encode_all(&[SessionFrame::Hello {
            version: 1,
            session: 1,
        }]);
        let mut unsynced = Vec::new();
        encode_frame(
            &SessionFrame::Hello {
                version: 1,
                session: 2,
            },
            &mut unsynced,
        )
        .unwrap();
        bytes.extend(unsynced);
        let (frames, errors, _) = decode_all(&bytes, 4096);
        assert_eq!(frames.len(), 1);
        assert!(matches!(errors[..], [SessionError::Unsynced("Hello")]));
    }

    #[test]
    fn test_oversized_length_in_session_is_an_error_not_an_allocation() {
        let mut bytes = encode_all(&[SessionFrame::Hello {
            version: 1,
            session: 1,
        }]);
        bytes.extend(u32::MAX.to_le_bytes());
        let (_, errors, decoder) = decode_all(&bytes, 4096);
        assert!(matches!(
            errors[..],
            [SessionError::Frame(FrameError::TooLarge { .. })]
        ));
        assert!(decoder.buffered() < 8);
    }

    #[test]
    fn test_receiving_beyond_the_window_is_an_error() {
        let mut window = RecvWindow::default();
        window.receive(1, CHANNEL_WINDOW as usize).unwrap();
        assert!(matches!(
            window.receive(1, 1),
            Err(SessionError::OverWindow { channel: 1, .. })
        ));
    }

    #[test]
    fn test_credit_returns_in_batches_or_when_idle() {
        let mut window = RecvWindow::default();
        window.receive(1, 1000).unwrap();
        assert_eq!(window.consume(10, false), None);
        assert_eq!(window.consume(990, true), Some(1000));
        window.receive(1, CHANNEL_WINDOW as usize).unwrap();
        assert_eq!(
            window.consume(CREDIT_BATCH as usize, false),
            Some(CREDIT_BATCH)
        );
    }

    #[test]
    fn test_granting_beyond_the_window_is_an_error() {
        let mut window = SendWindow::default();
        assert_eq!(window.take(100), 100);
        window.grant(3, 100).unwrap();
        assert!(matches!(
            window.grant(3, 1),
            Err(SessionError::OverCredit {
                channel: 3,
                bytes: 1
            })
        ));
    }

    #[test]
    fn test_send_window_stops_at_zero_credit() {
        let mut window = SendWindow::default();
        assert_eq!(window.take(usize::MAX), CHANNEL_WINDOW as usize);
        assert_eq!(window.take(1), 0);
        window.untake(5);
        assert_eq!(window.credit(), 5);
    }
}
