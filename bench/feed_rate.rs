//! Feed ingestion rate and report-to-answer latency, against the real server
//! (in process, loopback, ephemeral ports). Run:
//!   cargo run --release --example feed_rate [-- REPORTS]
//! Not a test: figures go in the README.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use popdns::quality::feed;

#[path = "shipped.rs"]
mod shipped;

const REPORTERS: usize = 20;

fn key(i: usize) -> Vec<u8> {
    feed::decode_hex(&format!("{:032x}", 0x5eed_u128 << 64 | i as u128)).unwrap()
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("popdns-feed-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys: String =
        (0..REPORTERS).map(|i| format!("probe-{i}: \"{:032x}\"\n", 0x5eed_u128 << 64 | i as u128)).collect();
    std::fs::write(dir.join("keys.yaml"), keys).unwrap();
    let snap = popdns::config::load(&shipped::write(&dir, None, &[])).unwrap();
    let pop_ids: Vec<String> = snap.pops.list.iter().map(|p| p.id.clone()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = rt.block_on(popdns::server::start(snap)).unwrap();
    let to: SocketAddr = h.feed.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ts = [feed::now_ms(); REPORTERS];
    // Reports like a probe's: every POP's state and ten routes.
    let report = |i: usize, ts: u64, k: usize| {
        let pops: Vec<String> =
            pop_ids.iter().map(|p| format!(r#"{{"id":"{p}","up":true,"load":0.{}}}"#, (k + p.len()) % 9)).collect();
        let routes: Vec<String> = (0..10)
            .map(|j| {
                let p = &pop_ids[(k + j) % pop_ids.len()];
                format!(r#"{{"pop":"{p}","group":"CN-ZJ/chinatelecom","rtt_ms":{}.5,"loss":0.001}}"#, 10 + (k + j) % 50)
            })
            .collect();
        let body = format!(r#"{{"ts":{ts},"pops":[{}],"routes":[{}]}}"#, pops.join(","), routes.join(","));
        feed::encode(&format!("probe-{i}"), &key(i), body.as_bytes())
    };
    let datagrams: Vec<Vec<u8>> = (0..n)
        .map(|k| {
            let i = k % REPORTERS;
            ts[i] += 1;
            report(i, ts[i], k)
        })
        .collect();
    let stats = &h.shared.feed_stats;
    let t = Instant::now();
    for (sent, d) in datagrams.iter().enumerate() {
        // Keep under the socket buffer: wait while more than 200 are queued.
        while sent as u64 - stats.accepted.load(Ordering::Acquire) - stats.dropped_total() > 200 {
            std::thread::yield_now();
        }
        sock.send_to(d, to).unwrap();
    }
    while stats.accepted.load(Ordering::Acquire) + stats.dropped_total() < n as u64
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::yield_now();
    }
    let el = t.elapsed();
    let acc = stats.accepted.load(Ordering::Acquire);
    println!(
        "ingestion: {acc} of {n} reports accepted in {:.2} s = {:.0} reports/s ({} bytes each, {} publishes)",
        el.as_secs_f64(),
        acc as f64 / el.as_secs_f64(),
        datagrams[0].len(),
        stats.published.load(Ordering::Acquire)
    );
    // Latency: report sent -> visible in the table the next query reads,
    // after a quiet spell (published at once) and back to back (the writer
    // publishes at most every 5 ms, so a report may wait out the gap).
    for (what, quiet) in [("after a quiet spell", Duration::from_millis(20)), ("back to back", Duration::ZERO)] {
        let mut lat = Vec::new();
        for k in 0..200 {
            std::thread::sleep(quiet);
            let i = k % REPORTERS;
            ts[i] = ts[i].max(feed::now_ms()) + 1;
            let before = h.shared.quality.load().generation;
            let d = report(i, ts[i], k);
            let t = Instant::now();
            sock.send_to(&d, to).unwrap();
            // Polled every 20 us, not spun: on two cores a spinning reader
            // took the writer's CPU and made a 0.4 ms path read 3.7 ms.
            while h.shared.quality.load().generation == before {
                std::thread::sleep(Duration::from_micros(20));
            }
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "report -> table the next query reads, {what}: median {:?}, p99 {:?}, max {:?}",
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            lat[lat.len() - 1]
        );
    }
    rt.block_on(h.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}
