//! `/init` of a hearth guest. As PID 1 it boots the guest, then serves the host; run as any
//! other process it only serves (handy for trying it inside a VM by hand).

use std::convert::Infallible;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::Context as _;
use hearth_agent::cmdline::{Channel, KernelCmdline};
use hearth_agent::port::Port;
use hearth_agent::server::Context;
use hearth_agent::{boot, log, modules, net, power, session, vsock};
use hearth_agent_proto::{AGENT_PORT_NAME, AGENT_VSOCK_PORT};

fn main() {
    if std::process::id() == 1 {
        run_as_init();
    }
    let context = Context::new(|| {
        log!("shutdown requested; not PID 1, so exiting instead of powering off");
        std::process::exit(0);
    });
    let Err(error) = serve(&context);
    log!("fatal: {}", log::one_line(error.as_ref()));
    std::process::exit(1);
}

fn run_as_init() -> ! {
    if let Err(e) = power::block_shutdown_signals() {
        log!("failed to block shutdown signals: {e}");
    }
    let Err(error) = boot_and_serve();
    log!("fatal: {}", log::one_line(error.as_ref()));
    power::power_off()
}

fn boot_and_serve() -> anyhow::Result<Infallible> {
    boot::mount_pseudo_filesystems()?;
    let cmdline = KernelCmdline::read().context("failed to read /proc/cmdline")?;
    let loaded = modules::load_listed(Path::new(modules::MODULE_LIST))?;
    log!("loaded {loaded} kernel modules");
    boot::switch_to_image_root(&cmdline)?;
    if let Some(hostname) = &cmdline.hostname {
        boot::set_hostname(hostname)?;
    }
    let guest_net = match (&cmdline.ip, &cmdline.gateway) {
        (Some(ip), Some(gateway)) => Some(net::GuestNet::<std::net::Ipv4Addr>::parse(ip, gateway)?),
        _ => None,
    };
    net::configure(guest_net.as_ref()).context("failed to configure the network")?;
    if let (Some(_), Some(ip6), Some(gateway6)) = (&guest_net, &cmdline.ip6, &cmdline.gateway6) {
        net::configure6(&net::GuestNet::<std::net::Ipv6Addr>::parse(ip6, gateway6)?)
            .context("failed to configure IPv6")?;
    }
    if let Some(nameserver) = &cmdline.nameserver {
        net::write_resolv_conf(nameserver).context("failed to configure DNS")?;
    }
    power::watch_shutdown_signals().context("failed to start the signal thread")?;
    let context = Context::new(|| power::shut_down_gracefully());
    match cmdline.channel {
        Channel::Serial => serve(&context),
        Channel::Vsock => serve_vsock(&context),
    }
}

/// Serves one host session after another: a host that goes away (its process ended, or a
/// snapshot was restored under a new one) is followed by the next that connects.
fn serve(context: &Context) -> anyhow::Result<Infallible> {
    let port = Port::open(AGENT_PORT_NAME)?;
    log!("serving on {}", port.path().display());
    loop {
        port.wait_for_host()?;
        session::run(port.as_fd(), context).context("the session stream failed")?;
        log!("host disconnected; waiting for the next");
    }
}

/// [`serve`] over vsock: each connection is one host's stream.
fn serve_vsock(context: &Context) -> anyhow::Result<Infallible> {
    let listener = vsock::Listener::bind(AGENT_VSOCK_PORT)?;
    log!("serving on vsock port {}", listener.port());
    loop {
        let connection = listener.accept()?;
        session::run(connection.as_fd(), context).context("the session stream failed")?;
        log!("host disconnected; waiting for the next");
    }
}
