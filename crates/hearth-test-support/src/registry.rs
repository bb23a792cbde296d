//! A real OCI registry for tests: Debian's `docker-registry` (distribution) on 127.0.0.1 with its
//! own config and storage in a temp dir, stopped and removed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::token_server::{self, TokenServer};

const PROGRAM: &str = "docker-registry";
const SKOPEO: &str = "skopeo";
const HTPASSWD: &str = "htpasswd";

#[derive(Debug)]
pub struct LocalRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// The one account of a registry started with [`LocalRegistry::start_with_auth`].
    account: Option<(String, String)>,
}

impl LocalRegistry {
    /// Starts an open registry and waits until it answers `GET /v2/`.
    pub fn start() -> anyhow::Result<Self> {
        Self::launch(None, |_| Ok(String::new()))
    }

    /// Starts a registry that asks for HTTP Basic auth with one account (bcrypt htpasswd, as
    /// distribution requires).
    pub fn start_with_auth(user: &str, password: &str) -> anyhow::Result<Self> {
        let account = (user.to_owned(), password.to_owned());
        Self::launch(Some(account), |dir| htpasswd_auth(dir, user, password))
    }

    /// Starts a registry that sends clients to `tokens` for Bearer tokens; `user`/`password`
    /// is the account `tokens` knows, used to push.
    pub fn start_with_token_auth(
        tokens: &TokenServer,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        let account = (user.to_owned(), password.to_owned());
        Self::launch(Some(account), |_| {
            Ok(format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                tokens.realm(),
                token_server::SERVICE,
                token_server::ISSUER,
                tokens.cert().display()
            ))
        })
    }

    /// Starts the registry; `auth` writes what it needs into the registry's dir and returns
    /// the config's `auth:` section.
    fn launch(
        account: Option<(String, String)>,
        auth: impl FnOnce(&Path) -> anyhow::Result<String>,
    ) -> anyhow::Result<Self> {
        require(PROGRAM, "docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("hearth-registry-")
            .tempdir()
            .context("creating the registry dir")?;
        // The registry cannot report a port it picked, so take a free one from the kernel; the
        // moment between closing and its bind is too short to matter for a test.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?;
        let auth = auth(dir.path())?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                 delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .context("writing the registry config")?;
        let child = spawn(dir.path())?;
        let mut registry = LocalRegistry {
            child,
            addr,
            dir,
            account,
        };
        registry.wait_up()?;
        Ok(registry)
    }

    /// Stops the registry process (SIGSTOP): connections stay open and the kernel still
    /// accepts new ones, but nothing is sent, as with a hung server.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a paused registry go on (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, signal)
            .with_context(|| format!("sending {signal} to {PROGRAM}"))
    }

    /// Kills the registry: its port refuses connections until [`LocalRegistry::start_again`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing the registry")?;
        self.child.wait().context("reaping the registry")?;
        Ok(())
    }

    /// Starts a stopped registry again on the same port with the same storage.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = spawn(self.dir.path())?;
        self.wait_up()
    }

    fn wait_up(&mut self) -> anyhow::Result<()> {
        let addr = self.addr;
        let registry = self;
        let up = crate::wait_until(Duration::from_secs(15), || registry.answers().then_some(()));
        if up.is_none() {
            let log = std::fs::read_to_string(registry.dir.path().join("registry.log"))
                .unwrap_or_default();
            if let Ok(Some(status)) = registry.child.try_wait() {
                bail!("{PROGRAM} exited ({status}): {log}");
            }
            bail!("{PROGRAM} did not answer on {addr} within 15 s: {log}");
        }
        Ok(())
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// True when `GET /v2/` gets an HTTP answer.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        let mut reply = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply.starts_with("HTTP/1.")
    }

    /// Pushes the OCI layout at `layout` (tag `tag` inside it) as `repo:tag` with skopeo.
    pub fn push_layout(&self, layout: &Path, tag: &str, repo: &str) -> anyhow::Result<()> {
        require(SKOPEO, "skopeo")?;
        let mut skopeo = Command::new(SKOPEO);
        // `--all`: an index goes over whole, whatever platforms it lists.
        skopeo.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.account {
            skopeo.arg(format!("--dest-creds={user}:{password}"));
        }
        let output = skopeo
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()))
            .output()
            .context("running skopeo copy")?;
        if !output.status.success() {
            bail!(
                "skopeo copy to {repo}:{tag} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Where the registry keeps blobs, for tests that corrupt one on purpose.
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("failed to stop {PROGRAM}: {e}");
        }
        let _ = self.child.wait();
    }
}

/// Runs `docker-registry serve` on the config in `dir`, logging to `dir/registry.log`.
fn spawn(dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))
        .context("opening the registry log")?;
    Command::new(PROGRAM)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing the registry log")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {PROGRAM}"))
}

/// Writes a bcrypt htpasswd file for one account into `dir`; the config's `auth:` section.
fn htpasswd_auth(dir: &Path, user: &str, password: &str) -> anyhow::Result<String> {
    require(HTPASSWD, "apache2-utils")?;
    let output = Command::new(HTPASSWD)
        .args(["-Bbn", user, password])
        .output()
        .context("running htpasswd")?;
    if !output.status.success() {
        bail!(
            "htpasswd failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = dir.join("htpasswd");
    std::fs::write(&path, &output.stdout).context("writing the htpasswd file")?;
    Ok(format!(
        "auth:\n  htpasswd:\n    realm: hearth-test\n    path: {}\n",
        path.display()
    ))
}

/// Fails, naming the package to install, when `program` is not in PATH.
pub fn require(program: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    if !found {
        bail!(
            "`{program}` not found: install it with `apt-get install {package}` (or ./install.sh)"
        );
    }
    Ok(())
}
