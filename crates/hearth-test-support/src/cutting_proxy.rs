//! An HTTP proxy in front of a registry that cuts the body of one blob short, to test what a
//! pull does with a download that breaks off. Each request goes upstream on its own connection
//! (`Connection: close`), so the proxy only has to find the ends of heads, not parse HTTP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub struct CuttingProxy {
    addr: SocketAddr,
    cuts_made: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the proxy cuts.
#[derive(Debug, Clone)]
struct Cut {
    /// `/blobs/<digest>` requests get half their body, then the connection closes.
    path_suffix: String,
    /// How many times; later requests pass whole.
    times: usize,
}

impl CuttingProxy {
    /// Proxies to the registry at `upstream` (`127.0.0.1:PORT`), cutting blob `digest`
    /// (`sha256:…`) short the first `times` times it is fetched (`usize::MAX`: always).
    pub fn start(upstream: &str, digest: &str, times: usize) -> anyhow::Result<Self> {
        let upstream: SocketAddr = upstream.parse().context("parsing the upstream address")?;
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        std_listener
            .set_nonblocking(true)
            .context("making the proxy socket non-blocking")?;
        let addr = std_listener
            .local_addr()
            .context("reading the proxy address")?;
        let cut = Cut {
            path_suffix: format!("/blobs/{digest}"),
            times,
        };
        let cuts_made = Arc::new(AtomicUsize::new(0));
        let counter = cuts_made.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("building the proxy runtime")?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    return;
                };
                tokio::select! {
                    _ = serve(listener, upstream, cut, counter) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(CuttingProxy {
            addr,
            cuts_made,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`, the registry part of image references through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// How many responses were cut so far.
    pub fn cuts_made(&self) -> usize {
        self.cuts_made.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("the cutting proxy thread panicked");
            }
        }
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, cut: Cut, cuts_made: Arc<AtomicUsize>) {
    while let Ok((client, _)) = listener.accept().await {
        let (cut, cuts_made) = (cut.clone(), cuts_made.clone());
        tokio::spawn(async move {
            if let Err(e) = relay(client, upstream, &cut, &cuts_made).await {
                eprintln!("cutting proxy: {e:#}");
            }
        });
    }
}

/// Relays the one request of a client connection; the upstream's answer says `Connection:
/// close`, so the client opens a new connection for its next request.
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    cut: &Cut,
    cuts_made: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut request = Vec::new();
    let Some(head_len) = read_head(&mut client, &mut request).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&request[..head_len]).into_owned();
    let body_len = content_length(&head);
    while request.len() < head_len + body_len {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "client closed mid-request");
        request.extend_from_slice(&chunk[..n]);
    }

    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(close_connection(&head).as_bytes()).await?;
    server
        .write_all(&request[head_len..head_len + body_len])
        .await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;

    let path = head.split_whitespace().nth(1).unwrap_or("");
    let is_target = head.starts_with("GET ") && path.ends_with(&cut.path_suffix);
    let cut_this = is_target
        && cuts_made
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cut.times).then_some(n + 1)
            })
            .is_ok();
    if cut_this {
        // Half the body, then the connection closes: the client is short of the
        // Content-Length it was promised.
        let head_end = find_head_end(&response).unwrap_or(response.len());
        let keep = head_end + (response.len() - head_end) / 2;
        client.write_all(&response[..keep]).await?;
    } else {
        client.write_all(&response).await?;
    }
    Ok(())
}

/// Reads until `buf` holds a whole request head; its length, or `None` at a clean EOF.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Option<usize>> {
    loop {
        if let Some(end) = find_head_end(buf) {
            return Ok(Some(end));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn close_connection(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|line| {
            !line
                .split_once(':')
                .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("connection"))
        })
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}
