//! The session relay over a Unix socket pair standing in for the virtio-serial port, driven by a
//! blocking fake host that speaks the session protocol.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{process_exists, request};
use hearth_agent::server::Context;
use hearth_agent::session::{self, SessionLoopError};
use hearth_agent_proto::session::{
    encode_session_frame, ChannelId, SessionDecoder, SessionFrame, CHANNEL_WINDOW,
};
use hearth_agent_proto::{decode_frame, encode_frame, GuestMessage, HostMessage, PROTOCOL_VERSION};

struct Host {
    stream: UnixStream,
    decoder: SessionDecoder,
    relay: JoinHandle<Result<(), SessionLoopError>>,
}

fn start() -> Host {
    let (host, guest) = UnixStream::pair().unwrap();
    guest.set_nonblocking(true).unwrap();
    let relay = std::thread::spawn(move || session::run(guest.as_fd(), &Context::new(|| {})));
    host.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    Host {
        stream: host,
        decoder: SessionDecoder::new(),
        relay,
    }
}

/// The per-operation frames that open an exec or ping on a channel.
fn operation(request: &HostMessage) -> Vec<u8> {
    let mut bytes = Vec::new();
    let hello = HostMessage::Hello {
        version: PROTOCOL_VERSION,
    };
    encode_frame(&hello, &mut bytes).unwrap();
    encode_frame(request, &mut bytes).unwrap();
    bytes
}

impl Host {
    fn send(&mut self, frame: &SessionFrame) {
        let mut bytes = Vec::new();
        encode_session_frame(frame, &mut bytes).unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    fn recv(&mut self) -> SessionFrame {
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return frame;
            }
            let mut buf = [0u8; 65536];
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "the relay closed the stream");
            self.decoder.extend(&buf[..n]);
        }
    }

    fn hello(&mut self, session: u64) {
        self.send(&SessionFrame::Hello {
            version: PROTOCOL_VERSION,
            session,
        });
        match self.recv() {
            SessionFrame::Ready {
                version,
                session: s,
                ..
            } => {
                assert_eq!((version, s), (PROTOCOL_VERSION, session));
            }
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn open(&mut self, channel: ChannelId, request: &HostMessage) {
        self.send(&SessionFrame::Open { channel });
        self.send(&SessionFrame::Data {
            channel,
            data: operation(request),
        });
    }

    /// Collects `channel`'s bytes until it closes, skipping other channels' frames and
    /// granting credit as it goes.
    fn read_until_close(&mut self, channel: ChannelId) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            match self.recv() {
                SessionFrame::Data {
                    channel: c,
                    data: d,
                } if c == channel => {
                    let bytes = d.len() as u32;
                    data.extend(d);
                    self.send(&SessionFrame::Credit { channel, bytes });
                }
                SessionFrame::Close { channel: c } if c == channel => return data,
                SessionFrame::Reset { channel: c, error } if c == channel => {
                    panic!("channel reset: {error}")
                }
                _ => {}
            }
        }
    }
}

fn messages(mut bytes: &[u8]) -> Vec<GuestMessage> {
    let mut out = Vec::new();
    while let Some((message, used)) = decode_frame::<GuestMessage>(bytes).unwrap() {
        out.push(message);
        bytes = &bytes[used..];
    }
    out
}

#[test]
fn test_ping_on_a_channel_gets_hello_and_pong() {
    let mut host = start();
    host.hello(1);
    host.open(5, &HostMessage::Ping);
    let replies = messages(&host.read_until_close(5));
    assert!(
        matches!(replies[0], GuestMessage::Hello { .. }),
        "{replies:?}"
    );
    assert_eq!(replies[1], GuestMessage::Pong);
}

#[test]
fn test_stalled_channel_does_not_stop_the_others() {
    let mut host = start();
    host.hello(2);
    // Channel 1 floods and its reader never grants credit.
    host.open(1, &HostMessage::Exec(request(&["sh", "-c", "yes"])));
    let mut flooded = 0usize;
    for channel in 2..12 {
        host.open(channel, &HostMessage::Exec(request(&["echo", "ok"])));
    }
    let mut exited = 0;
    let mut outputs = vec![Vec::new(); 12];
    while exited < 10 {
        match host.recv() {
            SessionFrame::Data { channel: 1, data } => flooded += data.len(),
            SessionFrame::Data { channel, data } => {
                let bytes = data.len() as u32;
                outputs[channel as usize].extend(data);
                host.send(&SessionFrame::Credit { channel, bytes });
            }
            SessionFrame::Close { channel } if channel != 1 => exited += 1,
            _ => {}
        }
    }
    for output in &outputs[2..12] {
        let replies = messages(output);
        assert!(
            replies.contains(&GuestMessage::Stdout(b"ok\n".to_vec())),
            "{replies:?}"
        );
    }
    assert!(
        flooded <= CHANNEL_WINDOW as usize,
        "the stalled channel sent {flooded} bytes without credit"
    );
    host.send(&SessionFrame::Reset {
        channel: 1,
        error: hearth_agent_proto::RemoteError::new(hearth_agent_proto::ErrorCode::Internal, "x"),
    });
}

#[test]
fn test_host_going_away_ends_the_session_and_its_processes() {
    let mut host = start();
    host.hello(3);
    host.open(1, &HostMessage::Exec(request(&["sleep", "100"])));
    let pid = loop {
        if let SessionFrame::Data { data, .. } = host.recv() {
            if let Some(GuestMessage::Started { pid }) = messages(&data).last() {
                break *pid;
            }
        }
    };
    let Host { stream, relay, .. } = host;
    drop(stream);
    relay.join().unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_exists(pid), "the exec outlived its session");
}

#[test]
fn test_second_hello_starts_a_fresh_session() {
    let mut host = start();
    host.hello(4);
    host.open(1, &HostMessage::Exec(request(&["sleep", "100"])));
    host.hello(5);
    host.open(1, &HostMessage::Ping);
    let replies = messages(&host.read_until_close(1));
    assert!(replies.contains(&GuestMessage::Pong), "{replies:?}");
}

#[test]
fn test_garbage_gets_no_panic_and_a_later_hello_is_served() {
    let mut host = start();
    host.hello(6);
    host.stream
        .write_all(&[0x10, 0, 0, 0, 0xff, 0xff, 0xff])
        .unwrap();
    host.stream.write_all(&[0xab; 64]).unwrap();
    host.hello(7);
    host.open(9, &HostMessage::Ping);
    let replies = messages(&host.read_until_close(9));
    assert!(replies.contains(&GuestMessage::Pong), "{replies:?}");
}

#[test]
fn test_data_beyond_the_window_resets_only_that_channel() {
    let mut host = start();
    host.hello(8);
    host.open(1, &HostMessage::Exec(request(&["sleep", "100"])));
    // One frame bigger than the whole window: more than any credit the host could hold.
    host.send(&SessionFrame::Data {
        channel: 1,
        data: vec![0; CHANNEL_WINDOW as usize + 1],
    });
    loop {
        match host.recv() {
            SessionFrame::Reset { channel: 1, .. } => break,
            SessionFrame::Credit { .. } | SessionFrame::Data { .. } => {}
            other => panic!("expected a reset, got {other:?}"),
        }
    }
    host.open(2, &HostMessage::Ping);
    let replies = messages(&host.read_until_close(2));
    assert!(replies.contains(&GuestMessage::Pong), "{replies:?}");
}
