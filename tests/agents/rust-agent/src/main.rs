//! Burns CPU in named functions under the real `pyroscope` agent, then flushes and exits.
//!
//! Usage: pyrite-rust-agent <server url> <application name> <tenant> <seconds>

use std::hint::black_box;
use std::time::{Duration, Instant};

use pyroscope::backend::{pprof_backend, BackendConfig, PprofConfig};
use pyroscope::pyroscope::PyroscopeAgentBuilder;

#[inline(never)]
fn pyrite_probe_fibonacci(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        pyrite_probe_fibonacci(n - 1) + pyrite_probe_fibonacci(n - 2)
    }
}

#[inline(never)]
fn pyrite_probe_busy_loop(rounds: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(black_box(i));
    }
    x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, app, tenant, seconds] = args.as_slice() else {
        return Err("usage: pyrite-rust-agent <url> <app> <tenant> <seconds>".into());
    };
    let seconds: u64 = seconds.parse()?;
    let agent = PyroscopeAgentBuilder::new(
        url,
        app,
        100,
        "pyroscope-rs",
        env!("CARGO_PKG_VERSION"),
        pprof_backend(PprofConfig { sample_rate: 100 }, BackendConfig::default()),
    )
    .tenant_id(tenant.clone())
    .tags(vec![("agent", "rust")])
    .upload_interval(Duration::from_secs(2))
    .build()?;
    let running = agent.start()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut sink = 0u64;
    while Instant::now() < deadline {
        sink = sink.wrapping_add(pyrite_probe_fibonacci(black_box(27)));
        sink = sink.wrapping_add(pyrite_probe_busy_loop(black_box(3_000_000)));
    }
    black_box(sink);
    // stop() sends the last report; shutdown() waits for the session thread to upload it.
    let ready = running.stop()?;
    ready.shutdown();
    println!("done");
    Ok(())
}
