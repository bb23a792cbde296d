//! The DNS forwarder out of file descriptors. A test binary of its own: it lowers the whole
//! process's descriptor limit.

use std::fs::File;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use hearth_net::pool::GATEWAY_ADDR;
use hearth_net::{netns, NetworkConfig, SandboxNetwork};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};

/// CPU time (user + system) this process has used, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start at `state`; utime and stime
    // are the 14th and 15th fields overall, in clock ticks.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn test_forwarder_out_of_descriptors_waits_instead_of_spinning() {
    let id = format!("t{:07x}acc", std::process::id());
    let config = NetworkConfig {
        // No query is made here; never the host's real resolver in tests.
        dns_upstream: Some("127.0.0.1:9".parse().unwrap()),
        ..NetworkConfig::default()
    };
    let mut network = SandboxNetwork::create(&id, &config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let entered = runtime.enter();
    network.start_services().unwrap();
    // Made now, inside the namespace: connecting it later takes no new descriptor.
    let client: OwnedFd = netns::run_in(network.netns_path(), || {
        socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
    })
    .unwrap()
    .unwrap();

    // Use up every descriptor below a lowered limit, so the forwarder's accept gets EMFILE.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let before = cpu_time();
    setrlimit(Resource::RLIMIT_NOFILE, highest + 16, hard).unwrap();
    let mut filler = Vec::new();
    while let Ok(file) = File::open("/dev/null") {
        filler.push(file);
    }
    let forwarder = SockaddrIn::from(SocketAddrV4::new(GATEWAY_ADDR, 53));
    let connected = socket::connect(client.as_raw_fd(), &forwarder);
    // The connection waits in the backlog; every accept of it fails while the window lasts.
    let window = Duration::from_secs(1);
    let start = Instant::now();
    while start.elapsed() < window {
        std::thread::sleep(window - start.elapsed());
    }
    drop(filler);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let used = cpu_time() - before;

    connected.unwrap();
    // A spinning accept loop burns most of a core for the whole window.
    assert!(
        used < window / 5,
        "the process used {used:?} of CPU in a {window:?} window of failing accepts"
    );
    drop(entered);
    drop(runtime);
    network.remove().unwrap();
}
