//! Command-line arguments. Doc comments here are the help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hearth_engine::setup::FirecrackerMemory;
use hearth_engine::{parse_label, LabelSelector};

/// Run untrusted code in microVMs with the ease of containers.
#[derive(Debug, Parser)]
#[command(name = "hearth", version, propagate_version = true)]
pub struct Cli {
    /// Where hearth keeps boot assets, images and VM run dirs.
    #[arg(long, global = true, env = "HEARTH_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// VM backend: `auto` (Firecracker on hardware KVM when it is installed, else QEMU),
    /// `firecracker` or `qemu`. Default: what `hearth setup --backend` recorded, else `auto`.
    #[arg(
        long,
        global = true,
        env = "HEARTH_BACKEND",
        value_name = "BACKEND",
        value_parser = ["auto", "firecracker", "qemu"]
    )]
    pub backend: Option<String>,

    /// Print debug logs to stderr (repeat for more). `-v` is `--volume`, as in docker.
    #[arg(short = 'D', long, global = true, action = clap::ArgAction::Count)]
    pub debug: u8,

    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// The exit status when hearth itself fails: docker's 125 for the commands that run a guest
    /// process (whose own status passes through), 1 for the others, as docker's image commands.
    pub fn failure_code(&self) -> i32 {
        match self {
            Command::Run(_) | Command::Create(_) | Command::Exec(_) | Command::Shell(_) => 125,
            _ => 1,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a microVM, run a command in it, and tear it down when the command ends.
    Run(Box<RunArgs>),
    /// Record a sandbox like `run -d` without starting it; `hearth start` boots it.
    Create(Box<RunArgs>),
    /// Start created (or ended) sandboxes in the background.
    Start(SandboxesArgs),
    /// Build hearth's boot assets: the initramfs with the guest agent, and the default image.
    Setup(SetupArgs),
    /// Report what hearth found on this host and what is missing.
    Doctor(DoctorArgs),
    /// Download an image from a registry and build its base image.
    Pull(PullArgs),
    /// Manage local images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Log in to a registry: check the credentials with it, then save them in docker's
    /// config.json ($DOCKER_CONFIG, else ~/.docker), where `pull` and `run` find them.
    Login(LoginArgs),
    /// Remove a registry's credentials from docker's config.json.
    Logout(LogoutArgs),
    /// Run a command in a running sandbox.
    Exec(ExecArgs),
    /// List sandboxes (running ones; -a for all).
    #[command(visible_alias = "ps")]
    Ls(LsArgs),
    /// Show a sandbox's record as JSON.
    Inspect(SandboxesArgs),
    /// Stop sandboxes cleanly (agent power-off), killing them after a grace period.
    Stop(StopArgs),
    /// Kill sandboxes at once.
    Kill(SandboxesArgs),
    /// Remove ended sandboxes (-f: running ones too).
    Rm(RmArgs),
    /// Print a sandbox's main process output (--console: its guest console).
    Logs(LogsArgs),
    /// Open an interactive shell in a running sandbox (`exec -it SANDBOX -- sh`).
    Shell(SandboxArgs),
    /// Copy files or directories between the host and a running sandbox (SANDBOX:PATH).
    Cp(CpArgs),
    /// Work on single files of a running sandbox through the agent (no tools needed in the
    /// image): stat, ls, mkdir, rm, cat, write.
    #[command(subcommand)]
    Fs(FsCommand),
    /// Wait until sandboxes end and print their exit codes.
    Wait(SandboxesArgs),
    /// Remove what crashed sandboxes left behind: processes, run dirs, stale records.
    Gc,
    /// Serve the HTTP API (REST + JSON under /v1) until SIGINT or SIGTERM. Sandboxes it
    /// makes are the same as the CLI's and outlive it.
    Serve(ServeArgs),
    /// Serve sandboxes as Model Context Protocol tools on stdin/stdout, for an AI agent that
    /// starts hearth itself (`hearth serve` offers the same at /mcp over HTTP).
    Mcp(McpArgs),
    /// Save running sandboxes and manage the saved states.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Warm-start templates: one saved machine per image, resources and network mode.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Named volumes: host dirs under the state dir that outlive sandboxes (`-v NAME:PATH`).
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Internal: the supervisor of a detached sandbox (started by `run -d`).
    #[command(hide = true)]
    Supervise(SandboxArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP address to listen on [default: 127.0.0.1:4327, unless only --unix is given].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// Listen on this Unix socket too (or only, without --listen).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,

    /// File of accepted API keys, one a line. Without it a key is made at the first start,
    /// printed once, and only its SHA-256 hash kept in the state dir.
    #[arg(long, value_name = "PATH", conflicts_with = "no_auth")]
    pub api_key_file: Option<PathBuf>,

    /// Serve without API keys: only on loopback or a Unix socket.
    #[arg(long)]
    pub no_auth: bool,

    /// DNS server the forwarders of sandboxes made through the API ask, IP[:PORT] (default:
    /// the first nameserver in the host's /etc/resolv.conf).
    #[arg(long, value_name = "ADDR", env = "HEARTH_DNS_UPSTREAM", value_parser = parse_dns_upstream)]
    pub dns_upstream: Option<std::net::SocketAddr>,

    /// Sandboxes booting at once; more create and start requests wait their turn, so a burst
    /// does not starve every boot of CPU [default: twice the CPUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_starts: Option<u32>,

    /// Also serve E2B's protocols (control plane, envd, code interpreter) on this TCP
    /// address, for the E2B SDKs with E2B_API_URL and E2B_SANDBOX_URL set to it.
    #[arg(long, value_name = "ADDR")]
    pub e2b_listen: Option<std::net::SocketAddr>,

    /// Map an E2B template id to an image, NAME=IMAGE (repeatable). `base` and
    /// `code-interpreter-v1` default to python:3.12-slim; other ids are taken as image
    /// references.
    #[arg(long, value_name = "NAME=IMAGE", requires = "e2b_listen", value_parser = parse_template)]
    pub e2b_template: Vec<(String, String)>,

    /// Let API clients mount host dirs at or below DIR (repeatable). Without it they may mount
    /// named volumes only: a host path in a request would give every key holder that part of
    /// the host's files, as root.
    #[arg(long, value_name = "DIR")]
    pub allow_host_dir: Vec<PathBuf>,

    /// Also serve ComputeSDK's gateway protocol on this TCP address, for `computesdk` with
    /// COMPUTESDK_PROVIDER=computesdk and COMPUTESDK_TRIBUTARY_URL set to it.
    #[arg(long, value_name = "ADDR")]
    pub computesdk_listen: Option<std::net::SocketAddr>,
}

fn parse_template(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, image)) if !name.is_empty() && !image.is_empty() => {
            Ok((name.to_owned(), image.to_owned()))
        }
        _ => Err(format!("`{text}` is not NAME=IMAGE")),
    }
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// DNS server the forwarders of sandboxes made through MCP ask, IP[:PORT] (default: the
    /// first nameserver in the host's /etc/resolv.conf).
    #[arg(long, value_name = "ADDR", env = "HEARTH_DNS_UPSTREAM", value_parser = parse_dns_upstream)]
    pub dns_upstream: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub process: ProcessArgs,

    /// Sandbox name, id or unique id prefix.
    pub sandbox: String,

    /// Command and arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Show ended sandboxes too.
    #[arg(short, long)]
    pub all: bool,

    /// Print JSON (an array of records).
    #[arg(long)]
    pub json: bool,

    /// Only sandboxes with this label (KEY), or with it set to VALUE (KEY=VALUE); repeat to
    /// require several.
    #[arg(short, long = "label", value_name = "KEY[=VALUE]")]
    pub labels: Vec<LabelSelector>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a host path, or SANDBOX:PATH.
    pub src: String,
    /// Destination: a host path, or SANDBOX:PATH; into it if it is a directory, else as it.
    pub dest: String,
}

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// Show a path's metadata (symlinks are not followed).
    Stat(FsPathArgs),
    /// List a directory.
    Ls(FsPathArgs),
    /// Create a directory.
    Mkdir(FsMkdirArgs),
    /// Remove a file, symlink or empty directory (-r: any directory tree).
    Rm(FsRmArgs),
    /// Print a file to stdout.
    Cat(FsPathArgs),
    /// Replace a file with what stdin holds; the file appears only once complete.
    Write(FsWriteArgs),
}

#[derive(Debug, Args)]
pub struct FsTarget {
    /// Sandbox name, id or unique id prefix.
    pub sandbox: String,
    /// Absolute path in the guest.
    pub path: String,
}

#[derive(Debug, Args)]
pub struct FsPathArgs {
    /// Print JSON (stat and ls).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub target: FsTarget,
}

#[derive(Debug, Args)]
pub struct FsMkdirArgs {
    /// Create missing parents; an existing directory is not an error.
    #[arg(short, long)]
    pub parents: bool,

    /// Permission bits, in octal.
    #[arg(short, long, value_parser = parse_octal_mode, default_value = "755")]
    pub mode: u32,

    #[command(flatten)]
    pub target: FsTarget,
}

#[derive(Debug, Args)]
pub struct FsRmArgs {
    /// Remove directories and everything in them.
    #[arg(short, long)]
    pub recursive: bool,

    #[command(flatten)]
    pub target: FsTarget,
}

#[derive(Debug, Args)]
pub struct FsWriteArgs {
    /// Permission bits of the file, in octal.
    #[arg(short, long, value_parser = parse_octal_mode, default_value = "644")]
    pub mode: u32,

    #[command(flatten)]
    pub target: FsTarget,
}

fn parse_octal_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("`{value}` is not an octal mode such as 755"))
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the sandbox ends.
    #[arg(short, long)]
    pub follow: bool,

    /// Print the guest's console (kernel and agent messages) instead of the main process's
    /// output. Kept after the sandbox ends; capped at 2 MiB (the newest part).
    #[arg(long)]
    pub console: bool,

    /// Sandbox name, id or unique id prefix.
    pub sandbox: String,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Sandbox name, id or unique id prefix.
    pub sandbox: String,
}

#[derive(Debug, Args)]
pub struct SandboxesArgs {
    /// Sandbox names, ids or unique id prefixes.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for a clean power-off before killing (0: kill at once; at most a day).
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(..=86_400))]
    pub time: u64,

    #[command(flatten)]
    pub targets: SandboxesArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running sandboxes first instead of refusing.
    #[arg(short, long)]
    pub force: bool,

    #[command(flatten)]
    pub targets: SandboxesArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The exit status is the guest command's: 125 when hearth itself fails, \
126 when the command cannot be executed, 127 when it is not found, 128+N when it is killed \
by signal N.\n\nExamples:\n  hearth run -- uname -a\n  hearth run -it -- sh\n  \
echo hi | hearth run -i -- cat"
)]
pub struct RunArgs {
    #[command(flatten)]
    pub process: ProcessArgs,

    /// Run in the background: print the sandbox id and leave it running.
    #[arg(short, long)]
    pub detach: bool,

    /// Name for a detached sandbox (default: generated).
    #[arg(long)]
    pub name: Option<String>,

    /// Remove a detached sandbox's record when it ends.
    #[arg(long)]
    pub rm: bool,

    /// Stop a detached sandbox after this long, e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Metadata for a detached sandbox, to find it by (`hearth ls --label`); repeatable.
    #[arg(short, long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Command (run with `sh -c` in the guest) whose exit 0 means the sandbox is healthy.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,

    /// Time between health checks.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub health_interval: Duration,

    /// Consecutive failed checks before the sandbox is unhealthy.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub health_retries: u32,

    /// Set by `hearth create`: record the sandbox, do not start it.
    #[arg(skip)]
    pub create_only: bool,

    /// With --health-cmd: return only once the sandbox is healthy.
    #[arg(long, requires = "health_cmd")]
    pub wait_healthy: bool,

    /// Mount a host dir or a named volume in the guest, HOST_DIR:GUEST_PATH[:ro] or
    /// NAME:GUEST_PATH[:ro] (repeatable). Writes on either side show on the other while the
    /// sandbox runs; `:ro` is enforced by the host. New files on the host belong to the owner of
    /// the mapped dir; setuid bits and device files are never created.
    #[arg(short = 'v', long = "volume", value_name = "SOURCE:TARGET[:ro]")]
    pub volumes: Vec<hearth_engine::MountSpec>,

    /// Number of virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = hearth_engine::DEFAULT_VCPUS,
          value_parser = clap::value_parser!(u8).range(1..=64))]
    pub cpus: u8,

    /// Guest memory: a number of bytes, or with a suffix k, m, g (e.g. 512M, 2G).
    #[arg(short, long, value_name = "SIZE", value_parser = parse_memory_mib, default_value = "512M")]
    pub memory: u32,

    /// Guest kernel to boot instead of the one `hearth setup` installed.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Initramfs to boot instead of the one `hearth setup` built.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// How long to wait for the guest agent, e.g. 30s or 2m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub boot_timeout: Duration,

    /// Boxed: the network flags would make `RunArgs` dwarf every other command.
    #[command(flatten)]
    pub network: Box<NetworkArgs>,

    /// Override the image's default entrypoint.
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Resume this snapshot (`hearth snapshot create`) instead of booting: its files and
    /// running processes are there; its image and resources are the snapshot's.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["image", "kernel", "initramfs"])]
    pub from_snapshot: Option<String>,

    /// Boot the kernel even when a template of this machine (image, resources, network mode)
    /// could be resumed, and make none. Without it, the first start of a machine is saved as
    /// its template once ready, and later starts resume that (`hearth template ls`).
    #[arg(long, conflicts_with = "from_snapshot")]
    pub cold: bool,

    /// Image to boot: a registry reference (pulled when not present locally), a local image id,
    /// or `default`, the built-in busybox image (also used when IMAGE is omitted).
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,

    /// Command and arguments to run in the guest (after `--`); default: `sh`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The sandbox's network. Every sandbox gets its own network namespace with NAT out, and a DNS
/// forwarder on its gateway (the guest's /etc/resolv.conf names it). Whatever the egress policy,
/// these stay blocked: ICMP and UDP (unless --allow-icmp/--allow-udp), DNS to any server but
/// hearth's forwarder, 169.254.0.0/16 and fe80::/10 (metadata), the host's own addresses, and
/// other sandboxes.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// `none`: the guest gets no network interface at all (only loopback).
    #[arg(long = "network", value_name = "MODE", value_parser = ["default", "none"],
          default_value = "default")]
    pub mode: String,

    /// Egress policy: allow-all (the default) or deny-all; --allow makes an allowlist. Under
    /// every policy these stay blocked: ICMP and UDP (unless --allow-icmp/--allow-udp), DNS to
    /// anything but hearth's forwarder on the gateway, 169.254.0.0/16 and fe80::/10 (metadata),
    /// the host's own addresses, other sandboxes. deny-all and CIDR-only allowlists resolve no
    /// names.
    #[arg(long, value_name = "POLICY", value_parser = parse_egress_mode,
          conflicts_with = "allow")]
    pub egress: Option<hearth_engine::EgressMode>,

    /// Allow connections only to this address or CIDR (v4 or v6), or to the addresses a domain
    /// resolves to: `example.com` (that name) or `*.example.com` (names below it). Repeat for
    /// more. With an allowlist the guest's DNS resolves only the listed domains.
    #[arg(long, value_name = "CIDR|DOMAIN", value_parser = parse_allow)]
    pub allow: Vec<hearth_engine::AllowEntry>,

    /// Let UDP out (blocked by default).
    #[arg(long)]
    pub allow_udp: bool,

    /// Let ICMP out, e.g. ping (blocked by default).
    #[arg(long)]
    pub allow_icmp: bool,

    /// Forward a host port to the guest: [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]; the host IP
    /// defaults to 127.0.0.1. Repeat for more.
    #[arg(short = 'p', long, value_name = "SPEC", value_parser = parse_publish)]
    pub publish: Vec<hearth_engine::PortSpec>,

    /// DNS server the sandbox's forwarder asks, IP[:PORT] (default: the first nameserver in
    /// the host's /etc/resolv.conf).
    #[arg(long, value_name = "ADDR", env = "HEARTH_DNS_UPSTREAM", value_parser = parse_dns_upstream)]
    pub dns_upstream: Option<std::net::SocketAddr>,
}

fn parse_dns_upstream(value: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = value.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    value
        .parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, hearth_engine::DNS_PORT))
        .map_err(|_| format!("`{value}` is not IP or IP:PORT (like 10.0.0.53 or [::1]:5353)"))
}

fn parse_egress_mode(value: &str) -> Result<hearth_engine::EgressMode, String> {
    value
        .parse()
        .map_err(|e: hearth_engine::PolicyError| e.to_string())
}

fn parse_publish(value: &str) -> Result<hearth_engine::PortSpec, String> {
    value
        .parse()
        .map_err(|e: hearth_engine::PublishError| e.to_string())
}

fn parse_allow(value: &str) -> Result<hearth_engine::AllowEntry, String> {
    hearth_engine::parse_allow(value).map_err(|e| e.to_string())
}

/// How a guest process is attached to this terminal: shared by `run` and `exec`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    pub interactive: bool,

    /// Run the command on a pseudo-terminal (use with -i for a shell).
    #[arg(short, long)]
    pub tty: bool,

    /// Set an environment variable in the guest (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Working directory of the command inside the guest.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as in the guest: a name or uid[:gid] from the guest's /etc/passwd.
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP to this registry (host or host:port); repeatable, or a comma-separated
    /// list in $HEARTH_INSECURE_REGISTRIES. Loopback registries (localhost, 127.0.0.1, ::1)
    /// always use plain HTTP.
    #[arg(
        long,
        value_name = "HOST",
        env = "HEARTH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,

    /// Refuse an image whose layers unpack to more than SIZE in all (a decompression bomb
    /// stops there, its partial files removed). Default 16G.
    #[arg(
        long,
        value_name = "SIZE",
        env = "HEARTH_MAX_IMAGE_SIZE",
        value_parser = parse_bytes,
        default_value = "16G"
    )]
    pub max_image_size: u64,

    /// Give up on a registry connection that does not open within DURATION.
    #[arg(
        long,
        value_name = "DURATION",
        env = "HEARTH_REGISTRY_CONNECT_TIMEOUT",
        value_parser = parse_duration,
        default_value = "10s"
    )]
    pub registry_connect_timeout: Duration,

    /// Fail a registry request (or a download mid-blob) that sends nothing for DURATION.
    #[arg(
        long,
        value_name = "DURATION",
        env = "HEARTH_REGISTRY_READ_TIMEOUT",
        value_parser = parse_duration,
        default_value = "30s"
    )]
    pub registry_read_timeout: Duration,

    /// Retry transient registry failures (refused, reset, timeout, 5xx, 429) with backoff for
    /// up to DURATION before failing.
    #[arg(
        long,
        value_name = "DURATION",
        env = "HEARTH_REGISTRY_RETRY_WINDOW",
        value_parser = parse_duration,
        default_value = "60s"
    )]
    pub registry_retry_window: Duration,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  hearth login ghcr.io\n  \
    echo \"$TOKEN\" | hearth login -u me --password-stdin registry.example:5000")]
pub struct LoginArgs {
    /// Registry host[:port]; Docker Hub when omitted.
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,

    /// User name (asked on the terminal when omitted).
    #[arg(short, long, value_name = "USER")]
    pub username: Option<String>,

    /// Read the password (or token) from stdin instead of asking on the terminal.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    #[command(flatten)]
    pub insecure: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host[:port]; Docker Hub when omitted.
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Credentials for the registry come from docker's config.json \
    ($DOCKER_CONFIG, else ~/.docker), as `hearth login` or `docker login` saved them.\n\n\
    Progress: a bar per layer on a terminal, a line per step otherwise.\n\n\
    Examples:\n  hearth pull alpine\n  hearth pull 127.0.0.1:5000/app:1"
)]
pub struct PullArgs {
    /// Image reference, e.g. alpine, node:22-alpine, registry:5000/repo@sha256:…
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Print only the image digest.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Make an empty volume (`-v NAME:PATH` also makes a missing one).
    Create {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List volumes with their size and the sandboxes that mount them.
    #[command(alias = "list")]
    Ls {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Remove volumes and their files; refused while a sandbox (running or not) mounts one.
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List templates.
    #[command(alias = "list")]
    Ls {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove templates; the next start of their machine boots cold and makes a new one.
    Rm {
        #[arg(required = true, value_name = "TEMPLATE")]
        templates: Vec<String>,
    },
    /// Remove templates that can no longer be resumed here (another QEMU, kernel, initramfs or
    /// agent, or their image is gone).
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a running detached sandbox (memory, devices, running processes) as a snapshot.
    Create {
        /// Sandbox name, id or unique id prefix.
        sandbox: String,
        /// Name of the snapshot (default: the sandbox's name and the time).
        name: Option<String>,
        /// End the sandbox after saving it instead of resuming it.
        #[arg(long)]
        stop: bool,
    },
    /// List snapshots.
    #[command(alias = "list")]
    Ls {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a snapshot's record as JSON.
    Inspect {
        #[arg(value_name = "SNAPSHOT", required = true)]
        snapshots: Vec<String>,
    },
    /// Remove snapshots.
    #[command(alias = "remove")]
    Rm {
        #[arg(value_name = "SNAPSHOT", required = true)]
        snapshots: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List local images.
    #[command(alias = "list")]
    Ls {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove images by name or id; an image goes when its last name does.
    #[command(alias = "remove")]
    Rm {
        #[arg(value_name = "IMAGE", required = true)]
        images: Vec<String>,
    },
    /// Import an image from an OCI layout (directory or tar) or a `docker save` archive.
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Name for the image (default: the name the file carries, if any).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Remove images without a name and blobs no image uses.
    Prune {
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Guest kernel to use (default: the newest /boot/vmlinuz-* with modules installed).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Static guest agent binary (default: `hearth-agent` beside this binary, then
    /// /usr/local/lib/hearth/hearth-agent).
    #[arg(long, value_name = "PATH", env = "HEARTH_AGENT")]
    pub agent: Option<PathBuf>,

    /// Rebuild everything even when it is up to date.
    #[arg(long)]
    pub force: bool,

    /// The Firecracker binary to record for this host (checked: 1.10 or later). With
    /// `--backend firecracker`, Firecracker becomes the host's default backend.
    #[arg(long, value_name = "PATH")]
    pub firecracker_bin: Option<PathBuf>,

    /// The jailer binary of the same release, which runs Firecracker when hearth is root.
    #[arg(long, value_name = "PATH")]
    pub jailer_bin: Option<PathBuf>,

    /// Download a guest kernel for Firecracker (an uncompressed `vmlinux`, such as those
    /// Firecracker's CI builds from its recommended configs) and use it as the guest kernel;
    /// refused unless its SHA-256 is `--firecracker-kernel-sha256`.
    #[arg(
        long,
        value_name = "URL",
        requires = "firecracker_kernel_sha256",
        conflicts_with = "kernel"
    )]
    pub fetch_firecracker_kernel: Option<String>,

    /// The SHA-256 the kernel `--fetch-firecracker-kernel` downloads must have.
    #[arg(long, value_name = "HEX", requires = "fetch_firecracker_kernel")]
    pub firecracker_kernel_sha256: Option<String>,

    /// How Firecracker restores get guest memory: `file` (mapped; clones share its pages) or
    /// `uffd` (hearth's page server copies each page in on its first touch). Recorded.
    #[arg(long, value_name = "file|uffd")]
    pub firecracker_memory: Option<FirecrackerMemory>,

    /// Download the official Firecracker release (firecracker and jailer) for this host's
    /// architecture into the state dir, verify its SHA-256 and record it.
    #[arg(long, conflicts_with_all = ["firecracker_bin", "jailer_bin"])]
    pub fetch_firecracker: bool,

    /// The release `--fetch-firecracker` downloads (default: the newest hearth was tested with).
    #[arg(long, value_name = "VERSION", requires = "fetch_firecracker")]
    pub firecracker_version: Option<String>,

    /// The SHA-256 the release archive must have; without it, the one published beside the
    /// archive is checked, which catches a corrupt download but not a tampered release.
    #[arg(long, value_name = "HEX", requires = "fetch_firecracker")]
    pub firecracker_sha256: Option<String>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Splits `512M` into 512 and `M`; `example` names the expected form in the error.
fn split_number<'a>(value: &'a str, example: &str) -> Result<(u64, &'a str), String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, suffix) = value.split_at(split);
    let number = digits
        .parse()
        .map_err(|_| format!("`{value}` is not {example}"))?;
    Ok((number, suffix))
}

/// Parses `512M`, `2G`, `1T`, `1048576` (binary units) into bytes.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (number, suffix) = split_number(value, "a size like 512M or 2G")?;
    match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => Some(number),
        "k" | "kb" | "kib" => number.checked_mul(1 << 10),
        "m" | "mb" | "mib" => number.checked_mul(1 << 20),
        "g" | "gb" | "gib" => number.checked_mul(1 << 30),
        "t" | "tb" | "tib" => number.checked_mul(1 << 40),
        _ => {
            return Err(format!(
                "unknown size suffix `{suffix}` in `{value}`; use k, m, g or t"
            ))
        }
    }
    .ok_or_else(|| format!("`{value}` is too large"))
}

/// Parses `512M`, `2G`, `1048576` into MiB.
pub fn parse_memory_mib(value: &str) -> Result<u32, String> {
    let value = value.trim();
    let bytes = parse_bytes(value)?;
    let mib = bytes / (1 << 20);
    if mib < 64 {
        return Err(format!(
            "`{value}` is too little memory; a guest needs at least 64M"
        ));
    }
    u32::try_from(mib).map_err(|_| format!("`{value}` is too large"))
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, unit) = split_number(value, "a duration like 30s or 2m")?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(number.saturating_mul(3600))),
        _ => Err(format!(
            "unknown unit `{unit}` in `{value}`; use ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_memory_units() {
        assert_eq!(parse_memory_mib("512M"), Ok(512));
        assert_eq!(parse_memory_mib("2g"), Ok(2048));
        assert_eq!(parse_memory_mib("1073741824"), Ok(1024));
    }

    #[test]
    fn test_parse_memory_rejects_bad_values() {
        assert!(parse_memory_mib("lots").is_err());
        assert!(parse_memory_mib("12X").is_err());
        assert!(parse_memory_mib("1M").is_err());
        assert!(parse_memory_mib("99999999999999999999G").is_err());
    }

    #[test]
    fn test_parse_duration_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn test_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
