//! Which POP answers a client: pure functions over the config snapshot and the
//! route-quality table. No I/O, no clock, no DNS types.
//!
//! 1. filter (`filter.rs`): tier edge, coverage, address family, health, drain, load;
//! 2. score (`score.rs`): measured route quality from the client's most specific
//!    group with fresh data, else distance and ISP match; plus the load penalty;
//! 3. rank (`ranking.rs`): at the first level of the fail-open ladder where
//!    anything passes (relax load, health, drain, then coverage), the POPs
//!    within `spread_ms` of the best and the next ones by score; the same for
//!    every client of a cell, so query workers cache it (`cache.rs`, the one
//!    piece of state here: per worker, keyed by the snapshots' generations);
//! 4. choose: among the near-equal POPs, a stable capacity-weighted choice by a
//!    hash of the client's cell block (`Client::spread_hash`), so every
//!    address inside the scope the answer returns gets the same answer (`pick.rs` holds the draw,
//!    and the direct pick for rankings too large to keep).

mod cache;
mod filter;
mod pick;
mod ranking;
mod score;

use std::net::IpAddr;

use crate::config::Snapshot;
use crate::geo::ClientInfo;
use crate::pops::{Family, Health, PopId};
use crate::quality::{GroupKey, Quality};
use crate::zones::ScheduledName;

pub use cache::RankCache;
pub use filter::Removal;
use ranking::Ranking;

use ranking::Ranked;
use score::{Detail, Rows};

/// Most addresses one answer carries.
pub const MAX_ANSWERS: usize = 8;

/// Where the client address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Ecs,
    Resolver,
    Http,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ecs => "ecs",
            Source::Resolver => "resolver",
            Source::Http => "http",
        }
    }
}

/// The client as the scheduler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    /// The address looked up (the ECS address truncated to the used source prefix).
    pub ip: IpAddr,
    pub source: Source,
    /// Source prefix used (after the `ecs.max_source_*` cap); full length otherwise.
    pub source_prefix: u8,
    pub info: ClientInfo,
    /// The ECS scope the answer returns: the client cell, capped at the used
    /// source prefix when a longer one was truncated.
    pub scope: u8,
}

impl Client {
    /// The hash the near-equal POPs are drawn by: the looked-up address at
    /// its cell's prefix. Not at `scope`: a source truncated to
    /// `ecs.max_source_*` narrows what the scope vouches for, not which POP
    /// the cell draws, so a /32 and a /24 source that look up the same
    /// address get the same answer, and every address inside either scope
    /// gets that answer too.
    pub fn spread_hash(&self) -> u64 {
        pick::client_hash(self.ip, self.info.prefix)
    }
}

/// How a client's location and ISP are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GeoPath {
    /// One lookup in the compiled cell table (the query path).
    #[default]
    Cells,
    /// The two databases record by record (the reference the cell table is
    /// tested against; the scope still comes from the cell table).
    Records,
}

impl GeoPath {
    fn client(self, snap: &Snapshot, ip: IpAddr) -> ClientInfo {
        let mut info = snap.geo.client(ip);
        if self == GeoPath::Records {
            let r = snap.geo.records(ip, &snap.isps);
            info.location = r.location;
            info.isp = r.isp;
        }
        info
    }
}

impl Client {
    /// The client of a query with ECS (non-zero source prefix): the address
    /// truncated to `ecs.max_source_*`.
    pub fn from_ecs(snap: &Snapshot, addr: IpAddr, source: u8) -> Client {
        Self::from_ecs_via(snap, addr, source, GeoPath::Cells)
    }

    pub fn from_ecs_via(snap: &Snapshot, addr: IpAddr, source: u8, path: GeoPath) -> Client {
        let max = if addr.is_ipv4() { snap.ecs.max_source_v4 } else { snap.ecs.max_source_v6 };
        let used = source.min(max);
        let ip = crate::dns::ecs::truncate(addr, used);
        let info = path.client(snap, ip);
        // Addresses past a truncated source were not looked at: the answer can
        // only be vouched for down to the prefix that was.
        let scope = if source > used { info.prefix.min(used) } else { info.prefix };
        Client { ip, source: Source::Ecs, source_prefix: used, info, scope }
    }

    /// The client of a query without ECS (or with source prefix 0): the resolver.
    pub fn from_resolver(snap: &Snapshot, peer: IpAddr) -> Client {
        Self::from_resolver_via(snap, peer, GeoPath::Cells)
    }

    pub fn from_resolver_via(snap: &Snapshot, peer: IpAddr, path: GeoPath) -> Client {
        let ip = crate::geo::canonical(peer);
        let info = path.client(snap, ip);
        let full = if ip.is_ipv4() { 32 } else { 128 };
        Client { ip, source: Source::Resolver, source_prefix: full, info, scope: info.prefix }
    }
}

/// Why the filters were relaxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    Load,
    Health,
    Drain,
    Coverage,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Load => "load",
            Fallback::Health => "health",
            Fallback::Drain => "drain",
            Fallback::Coverage => "coverage",
        }
    }
}

/// One POP considered for an answer, with every input of its score.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub pop: PopId,
    pub distance_km: Option<f64>,
    pub isp_match: bool,
    /// Measured, or estimated from distance and ISP match.
    pub rtt_ms: f64,
    pub loss: Option<f64>,
    /// The group whose measurement was used.
    pub group: Option<GroupKey>,
    pub estimated: bool,
    pub load: f64,
    /// As the table reports it (unknown: no fresh report).
    pub health: Health,
    /// Health as scheduled: unknown counts as the POP's `default_health`.
    pub up: bool,
    pub drained: bool,
    /// Load at or above `scoring.overload`.
    pub overloaded: bool,
    pub score: f64,
    pub removed_by: Option<Removal>,
}

/// The answer: which POPs, in order, and why.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pops: [PopId; MAX_ANSWERS],
    len: u8,
    pub fallback: Option<Fallback>,
}

impl Decision {
    pub fn pops(&self) -> &[PopId] {
        &self.pops[..self.len as usize]
    }
}

/// Decide the POPs that answer `client` for `name` and `family`. `cands` is a
/// caller-owned buffer (reused across queries); afterwards it holds every
/// candidate with its score and the filter that removed it, for `explain`.
pub fn decide(
    snap: &Snapshot,
    quality: &Quality,
    client: &Client,
    name: &ScheduledName,
    family: Family,
    cands: &mut Vec<Candidate>,
) -> Decision {
    decide_with(snap, quality, client, name, family, cands, Cache::Off)
}

/// `decide` for the query path: the ranking of the client's cell comes from
/// the worker's cache when it holds one for these snapshots. Only for
/// clients located through the cell table (the cache is keyed by cell).
/// On a hit `cands` is left as it was: explain calls `decide`.
pub fn decide_cached(
    snap: &Snapshot,
    quality: &Quality,
    client: &Client,
    name: &ScheduledName,
    family: Family,
    cands: &mut Vec<Candidate>,
    cache: &mut RankCache,
) -> Decision {
    decide_with(snap, quality, client, name, family, cands, Cache::On(cache))
}

/// The query path's cache, or none (explain, the general path): then every
/// candidate is filled in for explain.
enum Cache<'a> {
    Off,
    On(&'a mut RankCache),
}

fn decide_with(
    snap: &Snapshot,
    quality: &Quality,
    client: &Client,
    name: &ScheduledName,
    family: Family,
    cands: &mut Vec<Candidate>,
    mut cache: Cache<'_>,
) -> Decision {
    let hash = client.spread_hash();
    let want = name.answers as usize;
    let (cell, class) = (client.info.cell, name.ranking);
    if let Cache::On(c) = &mut cache
        && let Some(r) = c.get(snap, quality, cell, class, family)
    {
        return r.choose(snap, want, hash, c.arena());
    }
    let rows = Rows::of(snap, quality, &client.info);
    let key = rows.key();
    let mode = match &mut cache {
        Cache::Off => Mode::Explain,
        Cache::On(c) => match c.get_by_rows(&key, class, family) {
            Some(r) => {
                c.put(cell, class, family, r);
                return r.choose(snap, want, hash, c.arena());
            }
            // Room for any ranking: at most every POP is near-equal.
            None => Mode::Query(c.arena_with_room(snap.pops.len())),
        },
    };
    let (ranked, stage, measured) = rank(snap, quality, &client.info, &rows, name, family, cands, mode);
    let ranking = match ranked {
        Ranked::Fits(r) => r,
        Ranked::Empty => Ranking::empty(stage.fallback()),
        Ranked::TooMany => return pick::pick(snap, cands, want, hash, |c| stage.admits(c), stage.fallback()),
    };
    match cache {
        Cache::On(c) => {
            c.put(cell, class, family, ranking);
            if measured {
                c.put_by_rows(key, class, family, ranking);
            }
            ranking.choose(snap, want, hash, c.arena())
        }
        Cache::Off => ranking.choose(snap, want, hash, &[]),
    }
}

/// Where on the fail-open ladder a ranking was made.
#[derive(Clone, Copy)]
enum Stage {
    /// The name's POPs inside its coverage, at this level of `filter::LEVELS`.
    Level(usize),
    /// Any edge POP of the family, wherever it is, at this level: outside
    /// coverage the ladder is walked again, so a POP reported down is never
    /// answered while one that is up would do.
    AnyEdge(usize),
}

impl Stage {
    fn fallback(self) -> Option<Fallback> {
        match self {
            Stage::Level(i) => filter::LEVELS[i].1,
            Stage::AnyEdge(_) => Some(Fallback::Coverage),
        }
    }

    fn admits(self, c: &Candidate) -> bool {
        match self {
            Stage::Level(i) | Stage::AnyEdge(i) => filter::passes(c, filter::LEVELS[i].0),
        }
    }
}

/// What a ranking is made for.
enum Mode<'a> {
    /// Explain and the general path: every candidate filled in; no arena.
    Explain,
    /// A query worker: only what scores need; many near-equal POPs go to the
    /// cache's arena.
    Query(&'a mut Vec<PopId>),
}

/// Score the name's POPs for a client of this cell and rank those that pass
/// at the first level of the fail-open ladder where any does. The flag says
/// whether every POP whose score can matter was measured (`all_measured`):
/// then the cell entered the ranking only through the route rows its groups
/// select.
#[allow(clippy::too_many_arguments)]
fn rank(
    snap: &Snapshot,
    quality: &Quality,
    info: &ClientInfo,
    rows: &Rows<'_>,
    name: &ScheduledName,
    family: Family,
    cands: &mut Vec<Candidate>,
    mode: Mode<'_>,
) -> (Ranked, Stage, bool) {
    let (detail, mut arena) = match mode {
        Mode::Explain => (Detail::Full, None),
        Mode::Query(a) => (Detail::Score, Some(a)),
    };
    let pops = name.pops.iter().copied();
    score::evaluate(snap, quality, info, rows, name.coverage, pops, family, detail, cands);
    let mut measured = all_measured(cands);
    for i in 0..filter::LEVELS.len() {
        let stage = Stage::Level(i);
        match Ranking::of(snap, cands, |c| stage.admits(c), stage.fallback(), arena.as_deref_mut()) {
            Ranked::Empty => continue,
            r => return (r, stage, measured),
        }
    }
    // Nothing in coverage: any edge POP of the family, wherever it is, the
    // healthiest first.
    let all = (0..snap.pops.len()).map(|i| PopId(i as u16));
    score::evaluate(snap, quality, info, rows, crate::pops::Coverage::Global, all, family, detail, cands);
    measured &= all_measured(cands);
    let mut stage = Stage::AnyEdge(0);
    for i in 0..filter::LEVELS.len() {
        stage = Stage::AnyEdge(i);
        match Ranking::of(snap, cands, |c| stage.admits(c), stage.fallback(), arena.as_deref_mut()) {
            Ranked::Empty => continue,
            r => return (r, stage, measured),
        }
    }
    (Ranked::Empty, stage, measured)
}

/// Whether every candidate whose score can enter a ranking was measured.
/// A POP of another tier, outside the coverage or without an address of
/// the family never passes a level of the ladder (and the last resort scores
/// every POP again, coverage aside), so its estimate cannot matter: a name
/// on `pops: all` with regional POPs the probes do not measure still shares.
fn all_measured(cands: &[Candidate]) -> bool {
    cands
        .iter()
        .all(|c| !c.estimated || matches!(c.removed_by, Some(Removal::Tier | Removal::Coverage | Removal::Family)))
}

/// Which of a POP's addresses a client gets: the same stable hash as the
/// POP choice, so the scope stays truthful.
pub fn address_index(client: &Client) -> usize {
    (client.spread_hash() >> 17) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Snapshot;
    use crate::pops::Health;
    use crate::testing::demo;

    /// The algorithm before rankings: score, then `pick` at the first level
    /// of the ladder where anything passes, then any edge POP of the family.
    fn decide_reference(
        snap: &Snapshot,
        quality: &Quality,
        client: &Client,
        name: &ScheduledName,
        family: Family,
    ) -> Decision {
        let mut cands = Vec::new();
        let pops = name.pops.iter().copied();
        let rows = Rows::of(snap, quality, &client.info);
        score::evaluate(snap, quality, &client.info, &rows, name.coverage, pops, family, Detail::Full, &mut cands);
        let hash = client.spread_hash();
        let want = name.answers as usize;
        for (level, fallback) in filter::LEVELS {
            let d = pick::pick(snap, &cands, want, hash, |c| filter::passes(c, level), fallback);
            if d.len > 0 {
                return d;
            }
        }
        let all = (0..snap.pops.len()).map(|i| PopId(i as u16));
        score::evaluate(
            snap,
            quality,
            &client.info,
            &rows,
            crate::pops::Coverage::Global,
            all,
            family,
            Detail::Full,
            &mut cands,
        );
        for (level, _) in filter::LEVELS {
            let d = pick::pick(snap, &cands, want, hash, |c| filter::passes(c, level), Some(Fallback::Coverage));
            if d.len > 0 {
                return d;
            }
        }
        Decision { pops: [PopId(0); MAX_ANSWERS], len: 0, fallback: Some(Fallback::Coverage) }
    }

    /// A random table: health, load and drain per POP, routes for some
    /// groups. Every other one is harsh (most POPs down, drained or
    /// overloaded), so the fail-open ladder is walked too.
    fn random_quality(snap: &Snapshot, next: &mut impl FnMut(u64) -> u64, generation: u64) -> Quality {
        use crate::quality::{GroupKey, PopState, Route};
        let harsh = generation.is_multiple_of(2);
        let pops = (0..snap.pops.len())
            .map(|_| PopState {
                health: match (harsh, next(16)) {
                    (true, 0) | (false, 1..) => Health::Up,
                    (true, _) => Health::Down,
                    (false, 0) => Health::Unknown,
                },
                load: (next(3) > 0)
                    .then(|| if harsh { 0.9 + next(10) as f64 / 100.0 } else { next(90) as f64 / 100.0 }),
                drained: next(if harsh { 2 } else { 16 }) == 0,
                last_report_ms: None,
            })
            .collect();
        // Every third table measures every POP for everyone (`*`): then
        // rankings no longer depend on the cell, only on the rows chosen.
        // Every other one of those leaves the regional POPs unmeasured, as
        // probes that measure only the edge do.
        let full = generation % 3 == 1;
        let edge_only = generation.is_multiple_of(2);
        let mut routes = crate::quality::table::RouteRows::default();
        for g in ["*", "continent:AS", "CN", "CN-ZJ/chinatelecom", "US"] {
            let all = full && g == "*";
            if all || next(2) == 0 {
                let row: Vec<Option<Route>> = (0..snap.pops.len())
                    .map(|i| {
                        let edge = snap.pops.get(PopId(i as u16)).tier == crate::pops::Tier::Edge;
                        let measured = if all { edge || !edge_only } else { next(3) == 0 };
                        measured.then(|| Route { rtt_ms: next(200) as f64, loss: next(10) as f64 / 100.0 })
                    })
                    .collect();
                routes.insert(GroupKey::parse(g, &snap.isps).unwrap(), row.into());
            }
        }
        Quality { generation, config_generation: snap.generation, pops, routes }
    }

    /// Probes measure the edge only: a name on `pops: all` (regional POPs
    /// too) still gets rankings shared by route rows, and they are right.
    #[test]
    fn unmeasured_regional_pops_do_not_stop_sharing() {
        use crate::quality::{PopState, Route};
        let snap = demo();
        let pops = snap.pops.len();
        let row: Vec<Option<Route>> = (0..pops)
            .map(|i| {
                let edge = snap.pops.get(PopId(i as u16)).tier == crate::pops::Tier::Edge;
                edge.then_some(Route { rtt_ms: 10.0 + i as f64 * 7.0, loss: 0.0 })
            })
            .collect();
        assert!(row.iter().any(Option::is_none), "the demo inventory has regional POPs");
        let mut routes = crate::quality::table::RouteRows::default();
        routes.insert(GroupKey::Any, row.into());
        let quality = Quality {
            generation: 1,
            config_generation: snap.generation,
            pops: vec![PopState::default(); pops],
            routes,
        };
        let name = snap.zones.scheduled.iter().find(|n| n.pops.len() == pops).expect("a name on every POP");
        let mut cache = RankCache::with_sizes(64, pops);
        let mut cands = Vec::new();
        // Two US cells (Virginia, California) whose groups select the same row: `*`.
        for ip in ["3.0.1.0", "8.8.8.0"] {
            let client = Client::from_ecs(&snap, ip.parse().unwrap(), 24);
            let want = decide(&snap, &quality, &client, name, Family::V4, &mut cands);
            let got = decide_cached(&snap, &quality, &client, name, Family::V4, &mut cands, &mut cache);
            assert_eq!(got, want, "{ip}");
        }
        assert_eq!((cache.misses, cache.row_hits), (2, 1), "the second cell took the first one's ranking");
    }

    /// /16s in the demo location database: China's regions and carriers,
    /// Japan, Hong Kong, Europe, the US.
    const KNOWN: [[u8; 2]; 12] = [
        [115, 236],
        [118, 113],
        [123, 114],
        [58, 246],
        [120, 205],
        [221, 130],
        [36, 134],
        [203, 198],
        [126, 1],
        [2, 16],
        [3, 0],
        [8, 8],
    ];

    /// `decide` and `decide_cached` against the reference, through random
    /// tables, a wide spread (many near-equal POPs), an arena that holds two
    /// such rankings and a table of 8 slots: spills, arena flushes, evictions
    /// and rankings shared by route rows must never change an answer.
    #[test]
    fn decisions_match_the_reference_through_spills_flushes_and_evictions() {
        // Two configs (two generations): every POP near-equal, and the usual spread.
        let (mut wide, narrow) = (demo(), demo());
        wide.scoring.spread_ms = 300.0;
        let mut cache = RankCache::with_sizes(8, wide.pops.len() + 5);
        let mut cands = Vec::new();
        let mut next = crate::testing::xorshift(0x2545_F491);
        let mut quality = random_quality(&wide, &mut next, 1);
        let (mut fallbacks, mut spilled, mut seconds) = (0, 0, 0);
        for i in 0..8000u64 {
            let table = i / 500;
            let snap = if table % 4 < 2 { &wide } else { &narrow };
            if i % 500 == 0 {
                quality = random_quality(snap, &mut next, table + 1);
            }
            // Half inside the demo database's networks (groups, rows), half anywhere.
            let ip = match next(2) {
                0 => std::net::Ipv4Addr::from(next(1 << 32) as u32 & 0xFFFF_FF00),
                _ => {
                    let [a, b] = KNOWN[next(KNOWN.len() as u64) as usize];
                    std::net::Ipv4Addr::new(a, b, next(256) as u8, 0)
                }
            };
            let ip = std::net::IpAddr::from(ip);
            let client = Client::from_ecs(snap, ip, 24);
            let id = next(snap.zones.scheduled.len() as u64) as u32;
            let name = snap.zones.sched(crate::zones::SchedId(id));
            let family = if next(3) == 0 { Family::V6 } else { Family::V4 };
            let want = decide_reference(snap, &quality, &client, name, family);
            assert_eq!(decide(snap, &quality, &client, name, family, &mut cands), want, "{ip} scheduled name {id}");
            let got = decide_cached(snap, &quality, &client, name, family, &mut cands, &mut cache);
            assert_eq!(got, want, "cached: {ip} scheduled name {id} {family:?}");
            fallbacks += usize::from(want.fallback.is_some());
            spilled += usize::from(!cache.arena().is_empty());
            seconds += usize::from(want.pops().len() > 1);
        }
        // More epochs than the 16 tables: full arenas started the others.
        assert!(cache.epochs > 24, "epochs {}", cache.epochs);
        let (hits, row_hits) = (cache.hits, cache.row_hits);
        assert!(
            hits > 100 && row_hits > 100 && spilled > 100 && fallbacks > 100 && seconds > 100,
            "{hits} {row_hits} {spilled} {fallbacks} {seconds}"
        );
    }
}
