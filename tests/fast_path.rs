//! The fast path (client cells, batched UDP workers) against the general path
//! (the two databases read record by record, one `answer` call per query):
//! byte for byte, on thousands of generated queries, including every ECS and
//! EDNS case of the core issue.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use common::*;
use popdns::config::Snapshot;
use popdns::dns::{Scratch, Transport, answer};
use popdns::pops::Health;
use popdns::quality::{GroupKey, PopState, Quality, Route};
use popdns::scheduler::GeoPath;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

const NAMES: [&str; 14] = [
    "www.aliyundoc.com.example.com",
    "WWW.AliyunDoc.com.Example.COM",
    "cn.aliyundoc.com.example.com",
    "intl.aliyundoc.com.example.com",
    "a.b.img.example.com",
    "x.static.example.com",
    "www.example.com",
    "example.com",
    "ns1.example.com",
    "_sip._udp.example.com",
    "_udp.example.com",
    "nope.example.com",
    "outside.example.net",
    "img.example.com",
];
const TYPES: [u16; 10] = [1, 28, 1, 28, 16, 15, 255, 2, 6, 5];

/// A valid ECS option for a random address and source prefix (host bits clear).
fn ecs(r: &mut Rng, v4_nets: &[Ipv4Addr]) -> Vec<u8> {
    if r.next().is_multiple_of(4) {
        let src = (r.next() % 129) as u8;
        let a = u128::from(Ipv6Addr::new(0x240e, (r.next() % 0x1000) as u16, 0, 0, 0, 0, 0, 0))
            ^ ((r.next() as u128) << 64);
        let a = if src == 0 { 0 } else { a & (u128::MAX << (128 - src as u32)) };
        let bytes = a.to_be_bytes();
        return ecs_option(2, src, 0, &bytes[..(src as usize).div_ceil(8)]);
    }
    let base = u32::from(*r.pick(v4_nets));
    let src = *r.pick(&[0u8, 8, 12, 16, 20, 22, 24, 24, 24, 25, 28, 32]);
    let a = (base ^ (r.next() as u32 & 0x0000_FFFF)) & if src == 0 { 0 } else { u32::MAX << (32 - src as u32) };
    ecs_option(1, src, 0, &a.to_be_bytes()[..(src as usize).div_ceil(8)])
}

/// A random query: valid, or one of the EDNS/ECS cases that must be FORMERR/BADVERS.
fn query(r: &mut Rng, id: u16, v4_nets: &[Ipv4Addr]) -> Vec<u8> {
    let name = r.pick(&NAMES);
    let qtype = *r.pick(&TYPES);
    let size = *r.pick(&[512u16, 1232, 4096, 100]);
    match r.next() % 12 {
        0 => raw_query(id, name, qtype, None),
        1 => raw_query(id, name, qtype, Some((size, 1, &[]))), // BADVERS
        2 => raw_query(id, name, qtype, Some((size, 0, &ecs_option(1, 24, 8, &[1, 2, 3])))), // scope set
        3 => raw_query(id, name, qtype, Some((size, 0, &ecs_option(1, 20, 0, &[1, 2, 255])))), // host bits
        4 => raw_query(id, name, qtype, Some((size, 0, &ecs_option(3, 0, 0, &[])))), // family
        5 => {
            let mut two = ecs(r, v4_nets);
            two.extend(ecs(r, v4_nets));
            raw_query(id, name, qtype, Some((size, 0, &two)))
        }
        6 => raw_query(id, name, qtype, Some((size, 0, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]))), // a cookie
        _ => raw_query(id, name, qtype, Some((size, 0, &ecs(r, v4_nets)))),
    }
}

fn compare(snap: &Snapshot, v4_nets: &[Ipv4Addr], n: usize, seed: u64) -> usize {
    let quality = Quality { config_generation: snap.generation, ..Default::default() };
    let (mut fast, mut general) = (Scratch::worker(), Scratch::with_geo(GeoPath::Records));
    compare_on(snap, &quality, (&mut fast, &mut general), v4_nets, n, seed)
}

/// `n` generated queries through the fast scratch (cell table, ranking
/// cache) and the general one (records, no cache); the bytes must agree.
fn compare_on(
    snap: &Snapshot,
    quality: &Quality,
    (fast, general): (&mut Scratch, &mut Scratch),
    v4_nets: &[Ipv4Addr],
    n: usize,
    seed: u64,
) -> usize {
    let (mut a, mut b) = (vec![0u8; 65535], vec![0u8; 65535]);
    let mut r = Rng(seed);
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let mut scheduled = 0;
    for i in 0..n {
        let q = query(&mut r, i as u16, v4_nets);
        for t in [Transport::Udp, Transport::Tcp] {
            let x = answer(snap, quality, fast, &q, peer, t, &mut a).map(|(l, _)| a[..l].to_vec());
            let y = answer(snap, quality, general, &q, peer, t, &mut b).map(|(l, _)| b[..l].to_vec());
            assert_eq!(x, y, "query {i} differs ({t:?}): {q:02x?}");
        }
        scheduled += usize::from(q.windows(9).any(|w| w == b"aliyundoc"));
    }
    scheduled
}

fn demo_nets() -> Vec<Ipv4Addr> {
    let csv = std::fs::read_to_string(repo().join("geo/demo-city.csv")).unwrap();
    let mut v: Vec<Ipv4Addr> =
        csv.lines().filter_map(|l| l.split(',').next()?.split('/').next()?.parse().ok()).collect();
    v.extend(["10.1.2.0", "192.0.2.0", "100.64.0.0"].map(|s| s.parse::<Ipv4Addr>().unwrap()));
    v
}

#[test]
fn cells_and_records_give_the_same_bytes_on_the_demo_databases() {
    let s = TestServer::start();
    let snap = popdns::config::load(&s.config).unwrap();
    let scheduled = compare(&snap, &demo_nets(), 5000, 0x1234_5678);
    assert!(scheduled > 1000, "the mix reached the scheduler: {scheduled}");
}

/// A random route-quality table for `snap`: health, load and drain per POP,
/// route rows for groups of the demo networks.
fn random_quality(snap: &Snapshot, r: &mut Rng, generation: u64) -> Quality {
    let health = [Health::Up, Health::Up, Health::Up, Health::Down, Health::Unknown];
    let pops = (0..snap.pops.len())
        .map(|_| PopState {
            health: *r.pick(&health),
            load: (!r.next().is_multiple_of(3)).then(|| (r.next() % 100) as f64 / 100.0),
            drained: r.next().is_multiple_of(7),
            last_report_ms: None,
        })
        .collect();
    let groups = ["*", "continent:AS", "CN", "CN-ZJ", "CN-ZJ/chinatelecom", "CN/chinaunicom", "US", "DE"];
    // Every third table measures every POP for everyone (`*`), as a busy
    // feed does: then rankings are shared by the cells whose groups select
    // the same rows.
    let full = generation.is_multiple_of(3);
    let mut routes = popdns::quality::table::RouteRows::default();
    for g in groups {
        let all = full && g == "*";
        if !all && r.next().is_multiple_of(2) {
            continue;
        }
        let row: Vec<Option<Route>> = (0..snap.pops.len())
            .map(|_| {
                (all || r.next().is_multiple_of(3))
                    .then(|| Route { rtt_ms: (r.next() % 200) as f64, loss: (r.next() % 10) as f64 / 100.0 })
            })
            .collect();
        routes.insert(GroupKey::parse(g, &snap.isps).unwrap(), row.into());
    }
    Quality { generation, config_generation: snap.generation, pops, routes }
}

/// Every POP measured for `*`, every other one for `CN` and `CN/chinatelecom`.
fn full_table(snap: &Snapshot) -> Quality {
    let mut r = Rng(11);
    let mut routes = popdns::quality::table::RouteRows::default();
    for (g, every) in [("*", 1), ("CN", 2), ("CN/chinatelecom", 2)] {
        let row: Vec<Option<Route>> = (0..snap.pops.len())
            .map(|i| {
                i.is_multiple_of(every)
                    .then(|| Route { rtt_ms: (r.next() % 200) as f64, loss: (r.next() % 10) as f64 / 100.0 })
            })
            .collect();
        routes.insert(GroupKey::parse(g, &snap.isps).unwrap(), row.into());
    }
    Quality {
        generation: 1,
        config_generation: snap.generation,
        pops: vec![PopState::default(); snap.pops.len()],
        routes,
    }
}

/// One worker's cache lives through many route-quality tables and a config
/// change: every answer must still be what the general path computes from
/// the snapshots of the moment, never a ranking left from earlier ones.
#[test]
fn cached_rankings_never_outlive_their_snapshots() {
    let s = TestServer::start();
    let snap_a = popdns::config::load(&s.config).unwrap();
    // A second config: same POPs and zones, another spread and ISP penalty.
    let dir = tempfile::tempdir().unwrap();
    let extra = "scoring:\n  spread_ms: 60\n  cross_isp_ms: 5\n".to_string();
    let snap_b = popdns::config::load(&Setup { extra, ..Setup::default() }.write(dir.path())).unwrap();
    let (mut fast, mut general) = (Scratch::worker(), Scratch::with_geo(GeoPath::Records));
    let nets = demo_nets();
    let mut distinct = std::collections::HashSet::new();
    for round in 0..60u64 {
        // Configs A, B, B, A, A, B, ... against tables 1, 1, 2, 2, 3, 3, ...: every
        // other round only the config generation changes (the same table,
        // remapped by a reload), in between only the table.
        let snap = if round.div_ceil(2) % 2 == 0 { &snap_a } else { &snap_b };
        let quality = random_quality(snap, &mut Rng(round / 2 + 1), round / 2 + 1);
        compare_on(snap, &quality, (&mut fast, &mut general), &nets, 150, round);
        // What this round answers one network: the rounds must differ, or
        // the test would not notice a cache that ignores new tables.
        let q =
            raw_query(1, "www.aliyundoc.com.example.com", 1, Some((1232, 0, &ecs_option(1, 24, 0, &[115, 236, 1]))));
        let mut out = vec![0u8; 65535];
        let (n, _) =
            answer(snap, &quality, &mut fast, &q, "127.0.0.1".parse().unwrap(), Transport::Udp, &mut out).unwrap();
        distinct.insert(out[..n].to_vec());
    }
    let cache = fast.cache.as_ref().unwrap();
    assert!(distinct.len() > 3, "the random tables changed the answer only {} times", distinct.len());
    assert!(cache.hits > 1000 && cache.misses > 500, "hits {} misses {}", cache.hits, cache.misses);
    assert!(cache.row_hits > 100, "rankings shared by route rows: {}", cache.row_hits);
}

#[test]
fn batched_udp_workers_send_what_answer_computes() {
    let s = TestServer::start();
    let snap = popdns::config::load(&s.config).unwrap();
    let quality = Quality { config_generation: snap.generation, ..Default::default() };
    let mut scratch = Scratch::default();
    let mut out = vec![0u8; 65535];
    let mut r = Rng(99);
    let nets = demo_nets();
    for i in 0..500u16 {
        let q = query(&mut r, i, &nets);
        let want = answer(&snap, &quality, &mut scratch, &q, "127.0.0.1".parse().unwrap(), Transport::Udp, &mut out)
            .map(|(l, _)| out[..l].to_vec());
        assert_eq!(udp_raw(s.udp, &q), want, "query {i}: {q:02x?}");
    }
}

/// Bursts of ECS queries queue up at one worker, so its `recvmmsg` returns
/// batches and the prefetch passes run over them: every reply must still be
/// what `answer` computes for its query (and none may go missing).
#[test]
fn bursts_answered_in_batches_match_answer() {
    let s = TestServer::start_with(&Setup { workers: 1, ..Setup::default() });
    let snap = popdns::config::load(&s.config).unwrap();
    let quality = Quality { config_generation: snap.generation, ..Default::default() };
    let mut scratch = Scratch::default();
    let mut out = vec![0u8; 65535];
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let (mut r, nets) = (Rng(0xB0057), demo_nets());
    let mut buf = vec![0u8; 65535];
    for burst in 0..10u16 {
        let queries: Vec<Vec<u8>> = (0..40).map(|i| query(&mut r, burst * 40 + i, &nets)).collect();
        for q in &queries {
            sock.send_to(q, s.udp).unwrap();
        }
        let mut replies = std::collections::HashMap::new();
        for _ in &queries {
            let (n, _) = sock.recv_from(&mut buf).expect("a reply to every query of the burst");
            replies.insert(u16::from_be_bytes([buf[0], buf[1]]), buf[..n].to_vec());
        }
        for (i, q) in queries.iter().enumerate() {
            let want = answer(&snap, &quality, &mut scratch, q, "127.0.0.1".parse().unwrap(), Transport::Udp, &mut out)
                .map(|(l, _)| out[..l].to_vec());
            assert_eq!(replies.get(&(burst * 40 + i as u16)), want.as_ref(), "burst {burst} query {i}: {q:02x?}");
        }
    }
}

#[test]
fn cells_and_records_agree_on_the_real_databases() {
    let Some((city, asn)) = real_geo() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = Setup { city, asn, ..Setup::default() }.write(dir.path());
    let snap = popdns::config::load(Path::new(&config)).unwrap();
    // Real /24s across carriers and countries (../shared/geo/README.md), and
    // a spread of other routed space.
    let mut nets: Vec<Ipv4Addr> = [
        "1.48.0.0",
        "1.24.0.0",
        "1.56.0.0",
        "14.204.0.0",
        "27.0.128.0",
        "27.8.0.0",
        "27.0.160.0",
        "36.128.0.0",
        "36.131.3.0",
        "36.134.0.0",
        "115.236.1.0",
        "123.125.1.0",
        "120.204.1.0",
        "221.130.1.0",
        "58.246.1.0",
        "8.8.8.0",
        "2.16.1.0",
        "200.160.1.0",
        "1.1.1.0",
        "114.114.114.0",
        "1.2.4.0",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut r = Rng(7);
    nets.extend((0..2000).map(|_| Ipv4Addr::from((r.next() as u32 % 0xDF00_0000 + 0x0100_0000) & 0xFFFF_FF00)));
    compare(&snap, &nets, 6000, 0xfeed);
    // And under a table that measures every POP for everyone, some POPs for
    // China and its carriers: rankings shared by route rows.
    let quality = full_table(&snap);
    let (mut fast, mut general) = (Scratch::worker(), Scratch::with_geo(GeoPath::Records));
    compare_on(&snap, &quality, (&mut fast, &mut general), &nets, 6000, 0xbeef);
    let row_hits = fast.cache.as_ref().unwrap().row_hits;
    assert!(row_hits > 100, "rankings shared by route rows: {row_hits}");
    // The cell is the largest block of equal (location, ISP) around the
    // address, so it holds the intersection of the two records' networks:
    // its scope is never narrower than what the records vouch for together.
    // True if the cell is wider.
    let agree = |ip: IpAddr| {
        let cell = snap.geo.client(ip);
        let rec = snap.geo.records(ip, &snap.isps);
        assert_eq!((cell.location, cell.isp), (rec.location, rec.isp), "{ip}");
        let records = rec.location_prefix.max(rec.asn_prefix);
        assert!(cell.prefix <= records, "{ip}: cell /{} narrower than records /{records}", cell.prefix);
        cell.prefix < records
    };
    let wider = nets.iter().filter(|a| agree(IpAddr::V4(**a))).count();
    eprintln!("{wider} of {} cells wider than their records' intersection", nets.len());
    // IPv6 is tabled by /64: at a /64's first address the cell and the
    // records agree. The carriers' blocks, and the rest of 2000::/3.
    let mut v6: Vec<Ipv6Addr> = ["240e:f7::", "2408:8000::", "2409:8000::", "2001:db8::", "2a00:1450::", "::"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for base in [0x240e_u128, 0x2408, 0x2409] {
        v6.extend((0..300).map(|_| Ipv6Addr::from((base << 112) | u128::from(r.next() & 0xFFF_FFFF_FFFF) << 64)));
    }
    v6.extend((0..1500).map(|_| Ipv6Addr::from((0x2000_u128 << 112) | u128::from(r.next() >> 3) << 64)));
    // Teredo, 6to4 and IPv4-compatible addresses carry an IPv4 address,
    // which the databases look up.
    for a in nets.iter().take(300).map(|a| u128::from(u32::from(*a))) {
        v6.push(Ipv6Addr::from((0x2001_0000 << 96) | a << 64));
        v6.push(Ipv6Addr::from((0x2002 << 112) | a << 80 | 0xbeef << 64));
        v6.push(Ipv6Addr::from(a | 0x42));
    }
    let wider = v6.iter().filter(|a| agree(IpAddr::V6(**a))).count();
    eprintln!("{wider} of {} IPv6 cells wider than their records' intersection", v6.len());
}
