//! What the route-quality writer costs as the inventory grows: the real
//! server in process (demo databases, loopback, ephemeral ports), POPS
//! generated POPs, GROUPS client groups, 20 reporters sending RATE reports/s
//! in all for SECONDS. Each report carries the state of a window of up to 100
//! POPs (so it stays under the 8,192-byte `max_datagram`) and 10 routes to
//! random (POP, group) pairs. `stale_after` is STALE_S seconds, shorter than
//! the run, so data expires all along and the sweeps run as they do in steady
//! state. Prints the writer thread's CPU (schedstat) per report and as a share
//! of a core, the publishes, and RSS before and after. Run one size per
//! process (RSS is then its own):
//!   cargo run --release --example feed_scale -- POPS GROUPS [SECONDS [RATE [STALE_S]]]
//! Not a test: figures go in the README.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use popdns::quality::feed;

#[path = "shipped.rs"]
mod shipped;

const REPORTERS: usize = 20;
/// POP states per report: 100 of them are about 4 KB of JSON.
const WINDOW: usize = 100;
const ROUTES: usize = 10;
const COUNTRIES: &[(&str, &str, f64, f64)] = &[
    ("CN", "ZJ", 30.27, 120.15),
    ("CN", "GD", 23.13, 113.26),
    ("CN", "BJ", 39.90, 116.40),
    ("JP", "13", 35.68, 139.69),
    ("DE", "HE", 50.11, 8.68),
    ("US", "VA", 39.04, -77.49),
    ("US", "CA", 37.34, -121.89),
    ("BR", "SP", -23.55, -46.63),
];

fn arg(i: usize, default: f64) -> f64 {
    std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let (pops, groups) = (arg(1, 100.0) as usize, arg(2, 50.0) as usize);
    let (seconds, rate, stale_s) = (arg(3, 15.0), arg(4, 1000.0), arg(5, 5.0) as u64);
    let dir = std::env::temp_dir().join(format!("popdns-feed-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pop_ids = write_config(&dir, pops, stale_s);
    let snap = popdns::config::load(&dir.join("popdns.yaml")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = rt.block_on(popdns::server::start(snap)).unwrap();
    let to: SocketAddr = h.feed.unwrap();
    let names = group_names(groups);
    let n = (seconds * rate) as usize;
    let mut rng = xorshift(7);
    let start_ms = feed::now_ms();
    let datagrams: Vec<Vec<u8>> = (0..n)
        .map(|k| {
            let i = k % REPORTERS;
            // ts rises by one per report of a reporter, from now: under max_skew.
            report(i, start_ms + (k / REPORTERS) as u64 + 1, k / REPORTERS, &pop_ids, &names, &mut rng)
        })
        .collect();
    let biggest = datagrams.iter().map(Vec::len).max().unwrap_or(0);
    let stats = &h.shared.feed_stats;
    let rss0 = rss_kib();
    let cpu0 = writer_ns();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    // Sent in 5 ms ticks, as bench/tools' feed generator does.
    let mut sent = 0;
    while sent < n {
        let due = ((t.elapsed().as_secs_f64() * rate) as usize).min(n);
        for d in &datagrams[sent..due] {
            sock.send_to(d, to).unwrap();
        }
        sent = due;
        std::thread::sleep(Duration::from_millis(5));
    }
    let want = n as u64;
    while stats.accepted.load(Ordering::Acquire) + stats.dropped_total() < want
        && t.elapsed().as_secs_f64() < seconds + 10.0
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let el = t.elapsed().as_secs_f64();
    let cpu = (writer_ns() - cpu0) as f64;
    let acc = stats.accepted.load(Ordering::Acquire);
    println!(
        "{pops} POPs, {groups} groups: {acc} of {n} reports accepted ({} dropped) in {el:.1} s, {} publishes, \
         largest datagram {biggest} B; writer {:.1} us a report, {:.2}% of a core; RSS {} -> {} MiB",
        stats.dropped_total(),
        stats.published.load(Ordering::Acquire),
        cpu / 1e3 / acc.max(1) as f64,
        cpu / 1e9 / el * 100.0,
        rss0 / 1024,
        rss_kib() / 1024
    );
    rt.block_on(h.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped config on ephemeral ports, with `pops` generated POPs (their
/// ids are returned), 20 reporter keys and no rate limit per reporter.
fn write_config(dir: &std::path::Path, pops: usize, stale_s: u64) -> Vec<String> {
    let keys: String = (0..REPORTERS).map(|i| format!("probe-{i}: \"{}\"\n", hex_key(i))).collect();
    std::fs::write(dir.join("keys.yaml"), keys).unwrap();
    let mut ids = Vec::with_capacity(pops);
    let mut y = String::new();
    for i in 0..pops {
        let (cc, region, lat, lon) = COUNTRIES[i % COUNTRIES.len()];
        let id = format!("p{i:04}-{}", cc.to_lowercase());
        y.push_str(&format!(
            "- {{id: {id}, country: {cc}, region: \"{region}\", coords: [{lat}, {lon}], ipv4: [198.18.{}.{}], capacity: 100, tier: edge}}\n",
            i / 256,
            i % 256
        ));
        ids.push(id);
    }
    let pops_yaml = dir.join("pops.yaml");
    std::fs::write(&pops_yaml, y).unwrap();
    let edits = [("stale_after: 30s", format!("stale_after: {stale_s}s")), ("workers: auto", "workers: 1".into())];
    shipped::write(dir, Some(&pops_yaml), &edits);
    ids
}

fn hex_key(i: usize) -> String {
    format!("{:032x}", 0x5ca1e_u128 << 64 | i as u128)
}

/// `n` distinct group names of every level: `*`, continents, then per
/// synthetic country code the country, a subdivision, the country with an
/// ISP and the subdivision with an ISP.
fn group_names(n: usize) -> Vec<String> {
    let mut g: Vec<String> = ["*", "continent:AS", "continent:EU", "continent:NA", "continent:SA", "continent:AF"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut k = 0;
    while g.len() < n {
        let cc: String =
            [b'A' + (k / 4 / 26 % 26) as u8, b'A' + (k / 4 % 26) as u8].iter().map(|&b| b as char).collect();
        g.push(match k % 4 {
            0 => cc,
            1 => format!("{cc}-R1"),
            2 => format!("{cc}/chinatelecom"),
            _ => format!("{cc}-R1/chinaunicom"),
        });
        k += 1;
    }
    g.truncate(n);
    g
}

/// Reporter `i`'s `k`th report: a window of POP states (the next one each
/// time) and random routes.
fn report(
    i: usize,
    ts: u64,
    k: usize,
    pops: &[String],
    groups: &[String],
    rng: &mut impl FnMut(u64) -> u64,
) -> Vec<u8> {
    let w = WINDOW.min(pops.len());
    let first = (k * w + i * 7) % pops.len();
    let states: Vec<String> = (0..w)
        .map(|j| {
            let p = &pops[(first + j) % pops.len()];
            format!(r#"{{"id":"{p}","up":true,"load":0.{}}}"#, 1 + rng(8))
        })
        .collect();
    let routes: Vec<String> = (0..ROUTES)
        .map(|_| {
            let p = &pops[rng(pops.len() as u64) as usize];
            let g = &groups[rng(groups.len() as u64) as usize];
            format!(r#"{{"pop":"{p}","group":"{g}","rtt_ms":{}.5,"loss":0.00{}}}"#, 5 + rng(150), rng(9))
        })
        .collect();
    let body = format!(r#"{{"ts":{ts},"pops":[{}],"routes":[{}]}}"#, states.join(","), routes.join(","));
    let key = feed::decode_hex(&hex_key(i)).unwrap();
    feed::encode(&format!("probe-{i}"), &key, body.as_bytes())
}

/// A seeded xorshift64: `next(m)` is below `m`.
fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
    move |m| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    }
}

/// CPU time of the writer thread so far (`popdns-feed`), in ns.
fn writer_ns() -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "popdns-feed" {
            let s = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
            total += s.split_whitespace().next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
