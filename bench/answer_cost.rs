//! CPU cost of one `dns::answer` call (user space only, no sockets), on the
//! configuration given (default: the shipped one), with ECS queries drawn
//! from random routed IPv4 /24s. Run:
//!   cargo run --release --example answer_cost -- [popdns.yaml] [queries]
//! Reports ns per query. Not a test: figures go in the README.

use std::net::IpAddr;
use std::time::Instant;

fn query(id: u16, name: &str, a: [u8; 3]) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    for l in name.split('.').filter(|l| !l.is_empty()) {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.extend_from_slice(&[0, 0, 1, 0, 1]);
    v.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, a[0], a[1], a[2]]);
    v
}

fn main() {
    let mut args = std::env::args().skip(1);
    let config = args.next().unwrap_or_else(|| "popdns.yaml".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let t = Instant::now();
    let snap = popdns::config::load(std::path::Path::new(&config)).expect("config");
    println!("load: {:?}, {:?}", t.elapsed(), snap.geo);
    let quality = popdns::quality::Quality { config_generation: snap.generation, ..Default::default() };
    let mut scratch = popdns::dns::Scratch::worker();
    let mut out = vec![0u8; 65535];
    // 200k distinct /24s (xorshift), replayed: the cache sees what a busy server sees.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let queries: Vec<Vec<u8>> = (0..200_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = [(x % 223 + 1) as u8, (x >> 8) as u8, (x >> 16) as u8];
            query(i as u16, "www.aliyundoc.com.example.com", a)
        })
        .collect();
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    // FEED=N: a new route-quality table (every POP's load, routes for the
    // groups everyone has) every N queries, as a busy feed publishes.
    let feed: Option<usize> = std::env::var("FEED").ok().and_then(|v| v.parse().ok());
    let tables: Vec<popdns::quality::Quality> = match feed {
        Some(_) => (1..=64).map(|g| feed_table(&snap, g)).collect(),
        None => vec![quality],
    };
    let t = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        let q = &queries[i % queries.len()];
        let quality = &tables[feed.map_or(0, |every| i / every.max(1) % tables.len())];
        let (len, _) =
            popdns::dns::answer(&snap, quality, &mut scratch, q, peer, popdns::dns::Transport::Udp, &mut out)
                .expect("answer");
        bytes += len;
    }
    let el = t.elapsed();
    let quality = &tables[0];
    if let Some(c) = &scratch.cache {
        println!("ranking cache: {} hits, {} misses ({} of them shared by route rows)", c.hits, c.misses, c.row_hits);
    }
    if std::env::var_os("PARTS").is_some() {
        parts(&snap, quality, n / 4);
    }
    println!("{config}: {n} queries, {:.0} ns/query ({bytes} bytes out)", el.as_nanos() as f64 / n as f64);
}

/// A table as bench/tools' feed makes: every POP up with a load, and routes
/// to every POP for the groups every client has (`*`, its continent).
fn feed_table(snap: &popdns::config::Snapshot, generation: u64) -> popdns::quality::Quality {
    use popdns::quality::{GroupKey, PopState, Quality, Route};
    let n = snap.pops.len();
    let pops = (0..n)
        .map(|i| PopState {
            health: popdns::pops::Health::Up,
            load: Some(0.1 + ((i as u64 * 7 + generation) % 60) as f64 / 100.0),
            drained: false,
            last_report_ms: None,
        })
        .collect();
    let mut routes = popdns::quality::table::RouteRows::default();
    for g in ["*", "continent:AS", "continent:EU", "continent:NA", "CN"] {
        let row: Vec<Option<Route>> = (0..n)
            .map(|i| Some(Route { rtt_ms: 5.0 + ((i as u64 * 13 + generation) % 150) as f64, loss: 0.01 }))
            .collect();
        routes.insert(GroupKey::parse(g, &snap.isps).expect("group"), row.into());
    }
    Quality { generation, config_generation: snap.generation, pops, routes }
}

/// Where the time goes: geo lookup alone, and the scheduler alone.
#[allow(dead_code)]
pub fn parts(snap: &popdns::config::Snapshot, quality: &popdns::quality::Quality, n: usize) {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let ips: Vec<IpAddr> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            IpAddr::from([(x % 223 + 1) as u8, (x >> 8) as u8, (x >> 16) as u8, 0])
        })
        .collect();
    let t = Instant::now();
    let mut sink = 0u64;
    for i in 0..n {
        let info = snap.geo.client(ips[i % ips.len()]);
        sink += info.prefix as u64;
    }
    println!("cell lookup: {:.0} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let t = Instant::now();
    for i in 0..n {
        let r = snap.geo.records(ips[i % ips.len()], &snap.isps);
        sink += r.location_prefix as u64;
    }
    println!("mmdb lookups and decode: {:.0} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let info = snap.geo.client("115.236.1.0".parse().unwrap());
    let client = popdns::scheduler::Client {
        ip: "115.236.1.0".parse().unwrap(),
        source: popdns::scheduler::Source::Ecs,
        source_prefix: 24,
        info,
        scope: 24,
    };
    let sched = &snap.zones.scheduled[0];
    let mut cands = Vec::new();
    let t = Instant::now();
    for _ in 0..n {
        let d = popdns::scheduler::decide(snap, quality, &client, sched, popdns::pops::Family::V4, &mut cands);
        sink += d.pops().len() as u64;
    }
    println!("decide: {:.0} ns (sink {sink})", t.elapsed().as_nanos() as f64 / n as f64);
}
