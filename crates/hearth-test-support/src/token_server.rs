//! A tiny token server for distribution's `auth: token` mode: `GET /token?service=…&scope=…`
//! with Basic credentials returns a JWT granting what the scope asks (nothing to anonymous
//! callers), signed RS256 with a throwaway key whose self-signed certificate the registry
//! trusts. Keys and signatures come from the `openssl` command, so no crypto crate is needed.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;

use crate::registry::require;

/// The `service` and `issuer` the registry is configured with.
pub const SERVICE: &str = "hearth-test-registry";
pub const ISSUER: &str = "hearth-test-issuer";
const OPENSSL: &str = "openssl";

#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the serving thread needs.
#[derive(Debug, Clone)]
struct Issuer {
    key: PathBuf,
    cert_der_base64: String,
    account: (String, String),
    next_id: Arc<AtomicU64>,
}

impl TokenServer {
    /// Starts a server that knows one account, on 127.0.0.1.
    pub fn start(user: &str, password: &str) -> anyhow::Result<Self> {
        require(OPENSSL, "openssl")?;
        let dir = tempfile::Builder::new()
            .prefix("hearth-token-")
            .tempdir()
            .context("creating the token server dir")?;
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let req = [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hearth-test-token",
        ];
        let mut args: Vec<&OsStr> = req.iter().map(OsStr::new).collect();
        args.extend([OsStr::new("-keyout"), key.as_os_str()]);
        args.extend([OsStr::new("-out"), cert.as_os_str()]);
        openssl(&args, None)?;
        let der = openssl(
            &[
                OsStr::new("x509"),
                OsStr::new("-outform"),
                OsStr::new("DER"),
                OsStr::new("-in"),
                cert.as_os_str(),
            ],
            None,
        )?;
        let issuer = Issuer {
            key,
            cert_der_base64: STANDARD.encode(der),
            account: (user.to_owned(), password.to_owned()),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the token server")?;
        let addr = listener
            .local_addr()
            .context("reading the token server address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    if let Err(e) = answer(stream, &issuer) {
                        eprintln!("token server: {e:#}");
                    }
                }
            }
        });
        Ok(TokenServer {
            addr,
            dir,
            stop,
            thread: Some(thread),
        })
    }

    /// Where the registry sends clients for tokens.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry must trust.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("the token server thread panicked");
            }
        }
    }
}

/// Answers one request and closes the connection.
fn answer(stream: TcpStream, issuer: &Issuer) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone().context("cloning the stream")?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let user = match authorization
        .as_deref()
        .map(|a| basic_user(a, &issuer.account))
    {
        None => None,
        Some(Some(user)) => Some(user),
        Some(None) => {
            let body =
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid user name or password"}]}"#;
            return respond(stream, "401 Unauthorized", body);
        }
    };
    let access: Vec<serde_json::Value> = match &user {
        Some(_) => query_values(query, "scope")
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect(),
        None => Vec::new(),
    };
    let token = issuer.sign(user.as_deref().unwrap_or(""), &access)?;
    respond(
        stream,
        "200 OK",
        &json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
    )
}

impl Issuer {
    fn sign(&self, subject: &str, access: &[serde_json::Value]) -> anyhow::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("reading the clock")?
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [self.cert_der_base64]});
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now - 10,
            "jti": self.next_id.fetch_add(1, Ordering::SeqCst).to_string(),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let args = [
            OsStr::new("dgst"),
            OsStr::new("-sha256"),
            OsStr::new("-sign"),
            self.key.as_os_str(),
        ];
        let signature = openssl(&args, Some(&input))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The user of a Basic `authorization` header, when it carries `account`.
fn basic_user(authorization: &str, account: &(String, String)) -> Option<String> {
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (user == account.0 && password == account.1).then(|| user.to_owned())
}

/// Every value of `name` in a query string.
fn query_values(query: &str, name: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn respond(mut stream: TcpStream, status: &str, body: &str) -> anyhow::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// Runs `openssl ARGS…` (with `input` on stdin); its stdout.
fn openssl(args: &[&OsStr], input: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new(OPENSSL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.unwrap_or("").as_bytes())
            .context("writing to openssl")?;
    }
    let output = child.wait_with_output().context("waiting for openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {:?} failed: {}",
            args,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}
