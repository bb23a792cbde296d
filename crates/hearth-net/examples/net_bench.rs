//! Network setup + teardown time per sandbox, against a bare namespace + veth pair made and
//! removed the same way (no tap, no addresses, no nftables), measured interleaved in one run.
//! Usage: net_bench [RUNS]  (root; bench/net.sh runs it)

use std::time::{Duration, Instant};

use hearth_net::{link, netns, NetworkConfig, SandboxNetwork};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(50), |a| a.parse())?;
    let config = NetworkConfig::default();
    let (mut full, mut bare) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let id = format!("b{:06x}{i:05x}", std::process::id() & 0xff_ffff);
        let start = Instant::now();
        SandboxNetwork::create(&id, &config)?.remove()?;
        full.push(start.elapsed());

        let (ns, veth, peer) = (
            format!("hearth-{id}"),
            format!("hth{id}"),
            format!("htp{id}"),
        );
        let start = Instant::now();
        let path = netns::create(&ns)?;
        link::run(None, |l| async move {
            l.add_veth(&veth, &peer).await?;
            l.move_to(&peer, &path).await?;
            l.delete(&veth).await
        })?;
        netns::remove(&ns)?;
        bare.push(start.elapsed());
    }
    let (full, bare) = (median(full), median(bare));
    println!("runs: {runs}");
    println!("hearth network create+remove (median): {full:?}");
    println!("bare netns+veth create+remove (median): {bare:?}");
    println!("ratio: {:.2}", full.as_secs_f64() / bare.as_secs_f64());
    Ok(())
}
