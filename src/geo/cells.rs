//! The client-cell table: the location database, the ASN database and the
//! ISP map compiled into one partition of the address space, so a client
//! costs one lookup that yields its location, its ISP and the network around
//! it inside which every address has the same decision inputs (the ECS scope).
//!
//! The walk is gdnsd's (`gdgeoip2.c` walks the MaxMind tree into an `nlist`),
//! the merge is not: gdnsd merges neighbouring networks with the same answer,
//! which is fixed per datacenter list at load; popdns's answers move with
//! the feed, so it merges neighbouring networks with the same decision
//! inputs, (location, ISP). Both trees are walked once at load, such
//! networks become one range, and equal locations are stored once. A cell
//! is therefore often narrower than the network that gets the same answer
//! at a given moment; its scope is never wider than what holds. IPv4 and IPv6 are separate sorted range
//! tables; IPv4 has a /20 index in front of its binary search.
//!
//! Invariant: the ranges of each family partition the whole space, in order;
//! range `i` covers `starts[i] ..= starts[i + 1] - 1` (the last one to the end).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;

use maxminddb::{Reader, WithinOptions};

use super::raw::{Family, Tree};
use super::{CountryCode, IspMap, Location, RegionCode};
use crate::hash::Fast;
use crate::pages::HugeSlice;
use crate::pops::IspId;

/// Index of a cell in `Cells::cells`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CellId(pub u32);

/// What a cell knows: everything the scheduler reads about a client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    pub location: Location,
    pub isp: IspId,
}

/// A cell and the largest network around the address inside its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub cell: CellId,
    pub prefix: u8,
}

pub struct Cells {
    /// (first address, cell id) of each IPv4 range.
    v4: HugeSlice<(u32, u32)>,
    /// For each /20, the index of the range that holds its first address.
    v4_index: HugeSlice<u32>,
    /// The IPv6 ranges, by /64 number: IPv6 is tabled at /64 granularity
    /// (ECS sources stop at /56 by default; a database network longer than
    /// /64 counts as the one that holds its /64's first address).
    v6: V6Ranges,
    /// Which of `ALIASES` both databases alias: looked up as IPv4.
    aliases: [bool; ALIASES.len()],
    cells: HugeSlice<Cell>,
    /// Distinct locations (for reports).
    locations: usize,
    /// Every country, and every (country, subdivision), that some location
    /// of the database names: the places a client can be in, so the only
    /// route-quality groups worth keeping data for.
    places: HashSet<(CountryCode, Option<RegionCode>), Fast>,
}

impl std::fmt::Debug for Cells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cells")
            .field("v4_ranges", &self.v4.len())
            .field("v6_ranges", &self.v6.low.len())
            .field("cells", &self.cells.len())
            .field("locations", &self.locations)
            .finish()
    }
}

/// No data: a partition value for gaps.
const NONE: u32 = u32::MAX;

impl Cells {
    /// Does some location of the database lie in this country (and
    /// subdivision, when given)?
    pub fn has_place(&self, country: CountryCode, region: Option<RegionCode>) -> bool {
        self.places.contains(&(country, region))
    }

    /// Walk both databases (`Walked::cells` then builds the table, once the
    /// caller has let go of the files). Cell 0 is "unknown location, ISP other".
    ///
    /// The two families are walked side by side, each with location and cell
    /// ids of its own, then joined: start-up and reload take the longer
    /// walk's time rather than the sum (`popdns check` with the real City
    /// database: 2.3-2.7 s -> 1.4-1.8 s on two cores). The join numbers the IPv6 walk's new
    /// locations and cells after the IPv4 walk's, in the order that walk met
    /// them, so the table is the one a single walk over both would build.
    pub fn walk(location: &Tree<'_>, asn: &Tree<'_>, isps: &IspMap) -> Walked {
        let (mut all, v6) = std::thread::scope(|s| {
            let v6 = std::thread::Builder::new()
                .name("popdns-geo-v6".into())
                .spawn_scoped(s, || Walk::new(location, asn, isps, Family::V6));
            let v4 = Walk::new(location, asn, isps, Family::V4);
            let v6 = match v6 {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                // No second thread to be had: one walk after the other.
                Err(_) => Walk::new(location, asn, isps, Family::V6),
            };
            (v4, v6)
        });
        let v6_runs = all.absorb(v6);
        let aliases = ALIASES.map(|a| aliased_in_both(a, &location.reader, &asn.reader));
        Walked { all, v6_runs, aliases }
    }

    pub fn cell(&self, id: CellId) -> Cell {
        self.cells[id.0 as usize]
    }

    /// Prefetching for a batch of IPv4 clients, in three passes over the
    /// batch so the cache misses of all its clients overlap instead of
    /// queueing one after another: `prefetch_index` for every client, then
    /// `prefetch_ranges`, then `prefetch_cell`. Hints only: nothing is read
    /// that `lookup` would not read, and nothing changes.
    pub fn prefetch_index(&self, x: u32) {
        prefetch(&self.v4_index[(x >> 12) as usize]);
    }

    pub fn prefetch_ranges(&self, x: u32) {
        let lo = self.v4_index[(x >> 12) as usize] as usize;
        if let Some(r) = self.v4.get(lo) {
            prefetch(r);
        }
    }

    /// The last pass runs the lookup itself (index and ranges are in cache
    /// by now; the query repeats it, cheaply) to prefetch the cell's record,
    /// and returns the cell so the caller can prefetch what it keys by cell.
    pub fn prefetch_cell(&self, x: u32) -> CellId {
        let hit = self.lookup(IpAddr::V4(x.into()));
        prefetch(&self.cells[hit.cell.0 as usize]);
        hit.cell
    }

    pub fn lookup(&self, ip: IpAddr) -> Hit {
        match ip {
            IpAddr::V4(a) => {
                let x = u32::from(a);
                let hi = (x >> 12) as usize;
                let lo = self.v4_index[hi] as usize;
                let hi_end = self.v4_index.get(hi + 1).map_or(self.v4.len(), |&i| i as usize + 1);
                let i = lo + self.v4[lo..hi_end].partition_point(|r| r.0 <= x) - 1;
                let end = self.v4.get(i + 1).map_or(u32::MAX as u64, |r| r.0 as u64 - 1);
                let prefix = largest_block(x as u64, self.v4[i].0 as u64, end, 32);
                Hit { cell: CellId(self.v4[i].1), prefix }
            }
            IpAddr::V6(a) => {
                let full = u128::from(a);
                for (alias, on) in ALIASES.iter().zip(self.aliases) {
                    if let Some(v4) = alias.v4(full).filter(|_| on) {
                        let hit = self.lookup(IpAddr::V4(v4.into()));
                        return Hit { cell: hit.cell, prefix: hit.prefix + alias.len as u8 };
                    }
                }
                let x = (full >> 64) as u64;
                let (cell, start, end) = self.v6.find(x);
                Hit { cell: CellId(cell), prefix: largest_block(x, start, end, 64) }
            }
        }
    }
}

/// Both walks joined: the ranges and cells, before they are tabled.
pub struct Walked {
    all: Walk,
    v6_runs: Runs,
    aliases: [bool; ALIASES.len()],
}

impl Walked {
    /// The table. Each part is written straight into its final place and
    /// what it was made from is freed before the next: with the database
    /// files released first (see `Databases::open`), the load's peak is the
    /// walk's, not the walk's and the tables' together.
    pub fn cells(self) -> Cells {
        let Walked { all, v6_runs, aliases } = self;
        let Walk { runs, locs, cells, .. } = all;
        drop(locs.ids);
        let v4 = HugeSlice::from_exact(runs.starts.iter().zip(&runs.cells).map(|(&s, &c)| (s as u32, c)));
        drop(runs);
        let v4_index =
            HugeSlice::from_exact((0..1u32 << 20).map(|hi| (v4.partition_point(|r| r.0 <= hi << 12) - 1) as u32));
        let v6 = V6Ranges::new(&v6_runs.starts, &v6_runs.cells);
        drop(v6_runs);
        let loc_values = locs.values;
        let places = loc_values
            .iter()
            .filter_map(|l| Some((l.country?, l.region)))
            .flat_map(|(c, r)| [(c, None), (c, r)])
            .collect();
        let cells = HugeSlice::from_exact(cells.pairs.into_iter().map(|(loc, isp)| Cell {
            location: loc_values.get(loc as usize).copied().unwrap_or_default(),
            isp: if isp == NONE { IspId::OTHER } else { IspId(isp as u8) },
        }));
        Cells { v4, v4_index, v6, aliases, cells, locations: loc_values.len(), places }
    }
}

/// An IPv6 prefix where MaxMind databases keep, or point at, their IPv4
/// data: an address in it is looked up as the IPv4 address it carries. The
/// walk skips these prefixes (as a lookup does not), and tabling them in IPv6
/// would repeat the whole IPv4 table once per prefix, so a lookup does what
/// the reader does: it takes the IPv4 address out and looks that up.
#[derive(Clone, Copy, Debug)]
struct Alias {
    /// The prefix, to probe the databases with.
    net: &'static str,
    /// Its bits, and how many: the IPv4 address follows them.
    bits: u128,
    len: u32,
    /// The IPv4 subtree itself (`::/96`), not a pointer to it: there in
    /// every IPv6 database, so no probe of the tree can tell it apart.
    subtree: bool,
}

/// IPv4-mapped (`::ffff:0:0/96`), Teredo (2001::/32: the server's address)
/// and 6to4 (2002::/16), which MaxMind's writer aliases; and the deprecated
/// IPv4-compatible `::/96` (RFC 4291), where an IPv6 database keeps its
/// IPv4 tree. No client has such an address, but an ECS option can carry one.
const ALIASES: [Alias; 4] = [
    Alias { net: "::ffff:0:0/96", bits: 0xffff, len: 96, subtree: false },
    Alias { net: "2001::/32", bits: 0x2001_0000, len: 32, subtree: false },
    Alias { net: "2002::/16", bits: 0x2002, len: 16, subtree: false },
    Alias { net: "::/96", bits: 0, len: 96, subtree: true },
];

impl Alias {
    /// The IPv4 address `a` carries, if it is in the prefix.
    fn v4(&self, a: u128) -> Option<u32> {
        (a >> (128 - self.len) == self.bits).then_some((a >> (96 - self.len)) as u32)
    }
}

/// Whether both databases point `alias` at their IPv4 data (their walk
/// skips it unless asked for aliased networks). If only one does, the
/// prefix stays in the IPv6 table: the other database's IPv6 data there
/// cannot be had from the IPv4 cells, and a warning says so.
fn aliased_in_both(alias: Alias, location: &Reader<&[u8]>, asn: &Reader<&[u8]>) -> bool {
    let Ok(net) = alias.net.parse::<ipnetwork::IpNetwork>() else { return false };
    let first = |r: &Reader<&[u8]>, opts| r.within(net, opts).ok().and_then(|mut it| it.next()).is_some();
    let aliased = |r: &Reader<&[u8]>| match alias.subtree {
        // An IPv4-only database answers no IPv6 lookup at all.
        true => r.metadata().ip_version == 6,
        false => first(r, WithinOptions::default().include_aliased_networks()) && !first(r, WithinOptions::default()),
    };
    match (aliased(location), aliased(asn)) {
        (true, true) => true,
        (false, false) => false,
        (l, _) => {
            let (yes, no) = if l { ("location", "ASN") } else { ("ASN", "location") };
            tracing::warn!(
                "{}: the {yes} database looks these addresses up as IPv4, the {no} database does not; \
                 popdns keeps them in its IPv6 table, so their {yes} data is missing",
                alias.net
            );
            false
        }
    }
}

/// The IPv6 partition, its /64 numbers cut in 32-bit halves: each range's
/// low half, and each distinct high half (a /32) once, with the index of
/// its first range. 8 bytes a range instead of 12 (a u64 start and a u32
/// cell): the 4.4M ranges of the real City database took 53 MB, half of
/// the server's memory; its RSS fell by 16 MB.
struct V6Ranges {
    /// (high half, index of the first range starting in it), ascending;
    /// the first is (0, 0): the partition starts at 0.
    groups: HugeSlice<(u32, u32)>,
    /// Low half of each range's first /64 number.
    low: HugeSlice<u32>,
    cells: HugeSlice<u32>,
}

impl V6Ranges {
    /// From a partition's runs (first /64 numbers, in order from 0, and cells).
    fn new(starts: &[u64], cells: &[u32]) -> V6Ranges {
        let mut groups: Vec<(u32, u32)> = Vec::new();
        for (i, &start) in starts.iter().enumerate() {
            let high = (start >> 32) as u32;
            if groups.last().is_none_or(|g| g.0 != high) {
                groups.push((high, i as u32));
            }
        }
        V6Ranges {
            groups: HugeSlice::from_exact(groups.into_iter()),
            low: HugeSlice::from_exact(starts.iter().map(|&s| s as u32)),
            cells: HugeSlice::from_exact(cells.iter().copied()),
        }
    }

    /// The range that holds /64 number `x`: (cell, first, last /64 number).
    fn find(&self, x: u64) -> (u32, u64, u64) {
        let high = (x >> 32) as u32;
        let join = |h: u32, i: usize| (u64::from(h) << 32) | u64::from(self.low[i]);
        // The last /32 that has a range starting at or below x's.
        let g = self.groups.partition_point(|r| r.0 <= high).saturating_sub(1);
        let (h, first) = (self.groups[g].0, self.groups[g].1 as usize);
        let next = self.groups.get(g + 1).copied();
        let group_end = next.map_or(self.low.len(), |n| n.1 as usize);
        let below =
            if h == high { self.low[first..group_end].partition_point(|&l| l <= x as u32) } else { group_end - first };
        // None below x in its own /32: the last range of the /32 before holds it.
        let (i, start) = match (below, g.checked_sub(1)) {
            (0, Some(prev)) => (first - 1, join(self.groups[prev].0, first - 1)),
            (0, None) => (0, 0), // not reached: the first range starts at 0
            (n, _) => (first + n - 1, join(h, first + n - 1)),
        };
        let end = if i + 1 < group_end { join(h, i + 1) - 1 } else { next.map_or(u64::MAX, |n| join(n.0, i + 1) - 1) };
        (self.cells[i], start, end)
    }
}

/// Ask the CPU to start loading the cache line that holds `r`.
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults; the address comes from a reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch((r as *const T).cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Where the runs of a partition go, in address order: (start, value),
/// neighbours with equal values merged by the sink.
trait Sink {
    fn run(&mut self, start: u64, v: u32);
}

impl Sink for Vec<(u64, u32)> {
    fn run(&mut self, start: u64, v: u32) {
        if self.last().is_none_or(|l| l.1 != v) {
            self.push((start, v));
        }
    }
}

/// A walk's runs in two columns: 12 bytes a run where a `(u64, u32)` takes
/// 16 with its padding. The two walks' runs (8.1M for the City database)
/// are the largest thing they hold at the load's peak: 31 MB saved there.
#[derive(Default)]
struct Runs {
    /// First address or /64 number of each range, in order.
    starts: Vec<u64>,
    /// The cell of each range.
    cells: Vec<u32>,
}

impl Runs {
    fn with_capacity(n: usize) -> Runs {
        Runs { starts: Vec::with_capacity(n), cells: Vec::with_capacity(n) }
    }

    #[cfg(test)]
    fn pairs(&self) -> Vec<(u64, u32)> {
        self.starts.iter().copied().zip(self.cells.iter().copied()).collect()
    }
}

impl Sink for Runs {
    fn run(&mut self, start: u64, v: u32) {
        if self.cells.last() != Some(&v) {
            self.starts.push(start);
            self.cells.push(v);
        }
    }
}

/// A partition of one family's space as (start, value) runs, built in
/// address order. IPv4 starts are addresses; IPv6 starts are /64 numbers
/// (see `Cells::v6`): a /64 takes the value of the range that holds its
/// first address. 16 bytes a run (a u128 start took 32).
struct Partition<S> {
    family: Family,
    /// The last run: a later range may still start inside its /64.
    held: Option<(u64, u32)>,
    sink: S,
}

impl<S: Sink> Partition<S> {
    fn new(family: Family, sink: S) -> Partition<S> {
        Partition { family, held: None, sink }
    }

    /// A range that starts at `start` (after every range pushed so far).
    fn push(&mut self, start: u128, v: u32) {
        let key = match self.family {
            Family::V4 => start as u64,
            // A range starting inside a /64 holds the next /64's first address, if any.
            Family::V6 => match ((start >> 64) as u64).checked_add(u64::from(start as u64 != 0)) {
                Some(k) => k,
                None => return,
            },
        };
        match &mut self.held {
            // Several ranges start inside one /64: the last one holds the next boundary.
            Some(h) if h.0 == key => h.1 = v,
            held => {
                if let Some((s, hv)) = held.replace((key, v)) {
                    self.sink.run(s, hv);
                }
            }
        }
    }

    fn finish(mut self) -> S {
        if let Some((s, v)) = self.held.take() {
            self.sink.run(s, v);
        }
        self.sink
    }
}

/// Overlays the runs of one partition, as they come, onto another held in
/// memory: the output's runs are cell ids of (value here, value there).
struct Overlay<'b, F, O = Vec<(u64, u32)>> {
    held: &'b [(u64, u32)],
    /// The held run that covers the last output start.
    j: usize,
    /// The last incoming run: its end is the next run's start.
    pending: Option<(u64, u32)>,
    cell_of: F,
    out: O,
}

#[cfg(test)]
impl<'b, F: FnMut(u32, u32) -> u32> Overlay<'b, F> {
    fn new(held: &'b [(u64, u32)], cell_of: F) -> Self {
        Overlay::into(held, cell_of, Vec::new())
    }
}

impl<'b, F: FnMut(u32, u32) -> u32, O: Sink> Overlay<'b, F, O> {
    /// Overlaid runs go to `out`.
    fn into(held: &'b [(u64, u32)], cell_of: F, out: O) -> Self {
        Overlay { held, j: 0, pending: None, cell_of, out }
    }

    /// The incoming run [start, end) of value `v` (end None: to the end of the space).
    fn emit(&mut self, start: u64, end: Option<u64>, v: u32) {
        let h = self.held;
        while self.j + 1 < h.len() && h[self.j + 1].0 <= start {
            self.j += 1;
        }
        let mut at = start;
        loop {
            let c = (self.cell_of)(v, h.get(self.j).map_or(NONE, |r| r.1));
            self.out.run(at, c);
            match h.get(self.j + 1) {
                Some(next) if end.is_none_or(|e| next.0 < e) => {
                    self.j += 1;
                    at = next.0;
                }
                _ => break,
            }
        }
    }
}

impl<F: FnMut(u32, u32) -> u32, O: Sink> Sink for Overlay<'_, F, O> {
    fn run(&mut self, start: u64, v: u32) {
        if let Some((s, pv)) = self.pending.replace((start, v)) {
            self.emit(s, Some(start), pv);
        }
    }
}

impl<F: FnMut(u32, u32) -> u32, O: Sink> Overlay<'_, F, O> {
    fn finish(mut self) -> O {
        if let Some((s, v)) = self.pending.take() {
            self.emit(s, None, v);
        }
        self.out
    }
}

/// The prefix length of the largest aligned block that holds `x` and lies in
/// `[start, end]` (addresses of `bits` bits, `bits` <= 64).
fn largest_block(x: u64, start: u64, end: u64, bits: u32) -> u8 {
    // Blocks that differ from x only below the highest bit where x differs
    // from start (or from end) cannot all lie inside: start from there.
    let all = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let diff = (x ^ start) | (x ^ end);
    let first = if diff == 0 { bits } else { bits - (64 - diff.leading_zeros()).min(bits) };
    for p in first.saturating_sub(1)..=bits {
        let host = if p >= bits { 0 } else { all >> p };
        let base = x & !host;
        if base >= start && base | host <= end {
            return p as u8;
        }
    }
    bits as u8
}

/// Walk the database in address order into `sink` as a partition of one
/// family's space: (start, value) runs, gaps and networks without data as NONE.
fn partition<S: Sink>(tree: &Tree<'_>, family: Family, value: &mut impl FnMut(u32) -> u32, sink: S) -> S {
    let max = u128::MAX >> (128 - family.bits());
    let mut out = Partition::new(family, sink);
    let mut next = 0u128; // first address not yet covered
    let mut done = false;
    // The tree is walked left to right, so networks come in address order.
    let whole = tree.walk(family, |s, len, off| {
        let e = s + max.checked_shr(len).unwrap_or(0);
        if done || e < next {
            return;
        }
        let v = value(off);
        let s = s.max(next);
        if s > next {
            out.push(next, NONE);
        }
        out.push(s, v);
        if e == max {
            done = true;
        } else {
            next = e + 1;
        }
    });
    if !whole {
        tracing::warn!(
            "{}: the search tree loops back on itself; the {family:?} walk stopped, and addresses \
             after the last network read (from {next:#x}) have no data",
            tree.reader.metadata().database_type
        );
    }
    if !done {
        out.push(next, NONE);
    }
    out.finish()
}

/// Cell ids by (location id, ISP id), each NONE or not: a dense table, a row
/// of ISP columns per location. ISPs are a handful and location ids come in
/// the order the walk first meets them, so neighbouring networks read
/// neighbouring rows; a hash map of the pairs (half a million) put a cache
/// miss on every network of the walk, a sixth of the build's time.
struct CellIds {
    /// Columns per row: NONE, then each ISP id.
    width: usize,
    /// Row 0 is location NONE, row `l + 1` location `l`; u32::MAX: no cell yet.
    ids: Vec<u32>,
    /// (location, ISP) of each cell id.
    pairs: Vec<(u32, u32)>,
}

impl CellIds {
    fn new(isps: usize) -> CellIds {
        CellIds { width: isps.max(1) + 1, ids: Vec::new(), pairs: Vec::new() }
    }

    /// The id of (loc, isp), made when first asked. ISP ids index the
    /// `IspMap`'s names; one past them (which `IspMap::of_asn` never gives)
    /// would read as `other`.
    fn of(&mut self, loc: u32, isp: u32) -> u32 {
        let isp = if isp != NONE && isp as usize + 1 >= self.width { IspId::OTHER.0 as u32 } else { isp };
        let row = if loc == NONE { 0 } else { loc as usize + 1 };
        let col = if isp == NONE { 0 } else { isp as usize + 1 };
        let i = row * self.width + col;
        if i >= self.ids.len() {
            self.ids.resize((i + 1).next_power_of_two().max(self.width * 1024), u32::MAX);
        }
        if self.ids[i] == u32::MAX {
            self.ids[i] = self.pairs.len() as u32;
            self.pairs.push((loc, isp));
        }
        self.ids[i]
    }
}

/// Hashable identity of a location (coordinates by their bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct LocKey([u8; 2], Option<[u8; 3]>, [u8; 2], u64, u64);

impl LocKey {
    fn of(l: &Location) -> LocKey {
        LocKey(
            l.country.map_or([0; 2], |c| c.0),
            l.region.map(|r| {
                let mut b = [0u8; 3];
                b[..r.as_str().len()].copy_from_slice(r.as_str().as_bytes());
                b
            }),
            l.continent.map_or([0; 2], |c| c.0),
            l.coords.map_or(u64::MAX, |c| c.lat().to_bits()),
            l.coords.map_or(u64::MAX, |c| c.lon().to_bits()),
        )
    }
}

/// One family's walk of both databases: its partition into ranges, with
/// location and cell ids of its own (`Cells::walk` joins the two).
struct Walk {
    runs: Runs,
    locs: Locations,
    cells: CellIds,
}

/// Distinct locations, numbered in the order they are first met. The table
/// holds ids only and hashes the stored value: a map keyed by a copy of each
/// location (a 32-byte bucket) took 32 MB at the load's peak for the City
/// database's 565k locations, and as much again in the other walk. (Keeping
/// each location's hash beside it, so that probes and growth need not read
/// the location again, cost 6.5 MB and saved no time.)
#[derive(Default)]
struct Locations {
    ids: hashbrown::HashTable<u32>,
    /// By location id.
    values: Vec<Location>,
}

impl Locations {
    /// The id of `loc`, made when first met.
    fn id(&mut self, loc: Location) -> u32 {
        let hash = |k: &LocKey| Fast::default().hash_one(k);
        let key = LocKey::of(&loc);
        let Locations { ids, values } = self;
        if let Some(&id) = ids.find(hash(&key), |&i| LocKey::of(&values[i as usize]) == key) {
            return id;
        }
        let id = values.len() as u32;
        values.push(loc);
        ids.insert_unique(hash(&key), id, |&i| hash(&LocKey::of(&values[i as usize])));
        id
    }
}

impl Walk {
    fn new(location: &Tree<'_>, asn: &Tree<'_>, isps: &IspMap, family: Family) -> Walk {
        let mut locs = Locations::default();
        // Cell 0 is (no location, no ASN data): unknown, ISP other.
        let mut cells = CellIds::new(isps.names.len());
        cells.of(NONE, NONE);
        let runs = {
            // By data offset: a record is decoded once however many networks share it.
            let mut loc_of_offset: HashMap<u32, u32, Fast> = HashMap::default();
            // Neighbouring networks often share their record (45% of the City
            // database's 14.7M networks repeat the one before): a one-entry memo
            // in front of the map, which outgrows the cache.
            let mut last_loc: Option<(u32, u32)> = None;
            let mut loc_value = |off: u32| -> u32 {
                if let Some((_, id)) = last_loc.filter(|l| l.0 == off) {
                    return id;
                }
                let id = *loc_of_offset
                    .entry(off)
                    .or_insert_with(|| locs.id(super::mmdb::location_at(&location.data, off as usize)));
                last_loc = Some((off, id));
                id
            };
            let mut isp_of_offset: HashMap<u32, u32, Fast> = HashMap::default();
            let mut isp_value = |off: u32| -> u32 {
                *isp_of_offset
                    .entry(off)
                    .or_insert_with(|| isps.of_asn(super::mmdb::asn_at(&asn.data, off as usize)).0 as u32)
            };
            let mut cell_of = |loc: u32, isp: u32| cells.of(loc, isp);
            // The ASN partition is held; the location database (the large
            // one) is overlaid onto it as it is walked.
            let isp = partition(asn, family, &mut isp_value, Vec::new());
            let out = Runs::with_capacity(isp.len());
            partition(location, family, &mut loc_value, Overlay::into(&isp, &mut cell_of, out)).finish()
        };
        Walk { runs, locs, cells }
    }

    /// Take in `other`'s locations and cells, numbering the new ones after
    /// this walk's in the order `other` met them; `other`'s ranges with
    /// their cells in this walk's ids.
    fn absorb(&mut self, other: Walk) -> Runs {
        let loc_ids: Vec<u32> = other.locs.values.iter().map(|&l| self.locs.id(l)).collect();
        let cell_ids: Vec<u32> = other
            .cells
            .pairs
            .iter()
            .map(|&(loc, isp)| self.cells.of(loc_ids.get(loc as usize).copied().unwrap_or(NONE), isp))
            .collect();
        let mut runs = other.runs;
        for c in &mut runs.cells {
            *c = cell_ids.get(*c as usize).copied().unwrap_or(0);
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_block_inside_a_range() {
        // 115.236.0.0 - 115.236.255.255 is a /16.
        let s = u32::from(std::net::Ipv4Addr::new(115, 236, 0, 0)) as u64;
        assert_eq!(largest_block(s + 300, s, s + 0xFFFF, 32), 16);
        // A range that is not a CIDR block: 10.0.0.0 - 10.0.2.255.
        let t = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) as u64;
        assert_eq!(largest_block(t + 5, t, t + 0x2FF, 32), 23);
        assert_eq!(largest_block(t + 0x205, t, t + 0x2FF, 32), 24);
        assert_eq!(largest_block(7, 7, 7, 32), 32);
        assert_eq!(largest_block(0, 0, u32::MAX as u64, 32), 0);
        assert_eq!(largest_block(5, 0, u64::MAX, 64), 0);
        assert_eq!(largest_block(1 << 40, 1 << 40, (1 << 41) - 1, 64), 24);
    }

    #[test]
    fn split_ipv6_ranges_find_what_a_sorted_search_finds() {
        // Runs across /32 boundaries: several in one /32, one alone, a /32
        // whose first range starts past its base, the last one to the end.
        let mut starts: Vec<u64> = vec![0, 5, 1 << 32, (1 << 32) + 9, (3 << 32) + 7, (3 << 32) + 8, 9 << 32];
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            starts.push((r % (1 << 40)) << 20 | (r >> 50));
        }
        starts.push(u64::MAX - 3);
        starts.sort_unstable();
        starts.dedup();
        let cells: Vec<u32> = (0..starts.len() as u32).collect();
        let t = V6Ranges::new(&starts, &cells);
        let reference = |x: u64| {
            let i = starts.partition_point(|&s| s <= x) - 1;
            (i as u32, starts[i], starts.get(i + 1).map_or(u64::MAX, |&s| s - 1))
        };
        let mut probes: Vec<u64> = vec![0, 4, 6, (1 << 32) - 1, 2 << 32, (3 << 32) + 6, u64::MAX];
        for &s in &starts {
            probes.extend([s, s.wrapping_sub(1), s.saturating_add(1), s | 0xFFFF_FFFF, s & !0xFFFF_FFFF]);
        }
        for x in probes {
            assert_eq!(t.find(x), reference(x), "{x:#x}");
        }
    }

    #[test]
    fn cell_ids_are_dense_in_first_seen_order() {
        // Three ISP names (other and two more): ids 0..=2.
        let mut c = CellIds::new(3);
        assert_eq!(c.of(NONE, NONE), 0);
        assert_eq!(c.of(5, 2), 1);
        assert_eq!(c.of(5, NONE), 2);
        assert_eq!(c.of(0, 0), 3);
        assert_eq!((c.of(5, 2), c.of(NONE, NONE), c.of(0, 0)), (1, 0, 3), "asked again: the same ids");
        // Neighbouring rows and columns stay apart.
        assert_eq!((c.of(4, 2), c.of(6, 0), c.of(5, 1)), (4, 5, 6));
        // An ISP id past the names reads as other.
        assert_eq!(c.of(5, 3), c.of(5, IspId::OTHER.0 as u32));
        assert_eq!(c.pairs, vec![(NONE, NONE), (5, 2), (5, NONE), (0, 0), (4, 2), (6, 0), (5, 1), (5, 0)]);
        // No ISP names at all: every id is other, and rows still do not overlap.
        let mut c = CellIds::new(0);
        assert_eq!((c.of(0, 0), c.of(1, NONE), c.of(0, 7), c.of(1, 0)), (0, 1, 0, 2));
    }

    /// The IPv6 walk joined to the IPv4 one keeps every range's location and
    /// ISP, stores a location met by both walks once, and leaves the IPv4
    /// walk's ids alone.
    #[test]
    fn joined_walks_keep_each_walks_cells() {
        let snap = crate::testing::demo();
        let read = |f: &str| std::fs::read(format!("{}/geo/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let (loc, asn) = (read("demo-city.mmdb"), read("demo-asn.mmdb"));
        let (loc, asn) = (Tree::new(&loc).unwrap(), Tree::new(&asn).unwrap());
        let cells = |w: &Walk, runs: &[(u64, u32)]| -> Vec<(u64, Option<Location>, u32)> {
            runs.iter()
                .map(|&(s, c)| {
                    let (l, isp) = w.cells.pairs[c as usize];
                    (s, w.locs.values.get(l as usize).copied(), isp)
                })
                .collect()
        };
        let mut all = Walk::new(&loc, &asn, &snap.isps, Family::V4);
        let v6 = Walk::new(&loc, &asn, &snap.isps, Family::V6);
        let (own4, own6) = (cells(&all, &all.runs.pairs()), cells(&v6, &v6.runs.pairs()));
        let (n4, n6) = (all.locs.values.len(), v6.locs.values.len());
        let joined = all.absorb(v6);
        assert_eq!(cells(&all, &joined.pairs()), own6);
        assert_eq!(cells(&all, &all.runs.pairs()), own4);
        // The demo's IPv6 locations are all IPv4 ones too: stored once.
        assert!(n6 > 1 && all.locs.values.len() == n4, "{n4} + {n6} -> {}", all.locs.values.len());

        // New locations and cells are numbered after the first walk's, in the
        // order the second walk met them.
        let at = |c: &str| Location { country: crate::geo::CountryCode::parse(c), ..Location::default() };
        let walk = |locs: &[&str], pairs: &[(u32, u32)], runs: &[(u64, u32)]| {
            let runs = Runs { starts: runs.iter().map(|r| r.0).collect(), cells: runs.iter().map(|r| r.1).collect() };
            let mut w = Walk { runs, locs: Locations::default(), cells: CellIds::new(2) };
            for (i, c) in locs.iter().enumerate() {
                assert_eq!(w.locs.id(at(c)) as usize, i, "{c} is new");
            }
            for &(l, i) in pairs {
                w.cells.of(l, i);
            }
            w
        };
        let mut first = walk(&["CN", "DE"], &[(NONE, NONE), (0, 0), (1, NONE)], &[(0, 1), (7, 2)]);
        let second =
            walk(&["JP", "CN"], &[(NONE, NONE), (0, 1), (1, 0), (0, NONE)], &[(0, 0), (5, 1), (9, 2), (12, 3)]);
        assert_eq!(first.absorb(second).pairs(), vec![(0, 0), (5, 3), (9, 1), (12, 4)]);
        assert_eq!(first.locs.values, vec![at("CN"), at("DE"), at("JP")]);
        assert_eq!(first.cells.pairs, vec![(NONE, NONE), (0, 0), (1, NONE), (2, 1), (2, NONE)]);
    }

    /// An IPv4-compatible address (`::a.b.c.d`) is where an IPv6 database
    /// keeps `a.b.c.d`: the cell is that address's, as the records say, and
    /// its prefix counts the 96 bits in front.
    #[test]
    fn ipv4_compatible_addresses_read_the_ipv4_cells() {
        let snap = crate::testing::demo();
        for v4 in ["115.236.1.1", "8.8.8.8", "10.1.2.3", "0.0.0.0"] {
            let v4: std::net::Ipv4Addr = v4.parse().unwrap();
            let compat = IpAddr::V6(std::net::Ipv6Addr::from(u32::from(v4) as u128));
            let (a, b) = (snap.geo.client(IpAddr::V4(v4)), snap.geo.client(compat));
            assert_eq!((b.cell, b.prefix), (a.cell, a.prefix + 96), "{compat}");
            let rec = snap.geo.records(compat, &snap.isps);
            assert_eq!((b.location, b.isp), (rec.location, rec.isp), "{compat}");
        }
        assert_ne!(snap.geo.client("::115.236.1.1".parse().unwrap()).cell, CellId(0), "the demo data knows it");
    }

    #[test]
    fn slash64_granularity() {
        let mut p = Partition::new(Family::V6, Vec::new());
        for (s, v) in [(0u128, 1u32), (5u128 << 64, 2), ((5u128 << 64) + 9, 3), ((6u128 << 64) + 1, 4)] {
            p.push(s, v);
        }
        // /64 number 5 starts in range 2; range 3 starts inside it and holds /64 number 6's
        // first address; range 4 holds /64 number 7 onwards.
        assert_eq!(p.finish(), vec![(0, 1), (5, 2), (6, 3), (7, 4)]);
        // Ranges inside one /64 whose last one has the value before them: one run.
        let mut p = Partition::new(Family::V6, Vec::new());
        for (s, v) in [(0u128, 1u32), ((3u128 << 64) + 1, 2), ((3u128 << 64) + 7, 1), (9u128 << 64, 5)] {
            p.push(s, v);
        }
        assert_eq!(p.finish(), vec![(0, 1), (9, 5)]);
        // The last /64's inner ranges have no next /64.
        let mut p = Partition::new(Family::V6, Vec::new());
        p.push(0, 1);
        p.push(u128::MAX - 3, 2);
        assert_eq!(p.finish(), vec![(0, 1)]);
    }

    /// The reference overlay: two partitions held in memory, merged.
    fn merge(a: &[(u64, u32)], b: &[(u64, u32)], cell_of: &mut impl FnMut(u32, u32) -> u32) -> Vec<(u64, u32)> {
        let mut out: Vec<(u64, u32)> = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let start = a[i].0.max(b[j].0);
            let c = cell_of(a[i].1, b[j].1);
            if out.last().is_none_or(|l| l.1 != c) {
                out.push((start, c));
            }
            let a_end = a.get(i + 1).map(|n| n.0);
            let b_end = b.get(j + 1).map(|n| n.0);
            match (a_end, b_end) {
                (Some(x), Some(y)) if x == y => {
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x < y => i += 1,
                (Some(_), Some(_)) => j += 1,
                (Some(_), None) => i += 1,
                (None, Some(_)) => j += 1,
                (None, None) => break,
            }
        }
        out
    }

    #[test]
    fn merging_two_partitions() {
        let a = [(0u64, 1u32), (100, 2), (200, NONE)];
        let b = [(0u64, 7u32), (150, 8)];
        let mut seen = Vec::new();
        let out = merge(&a, &b, &mut |x, y| {
            seen.push((x, y));
            (x.wrapping_mul(10).wrapping_add(y)) & 0xFFFF
        });
        let starts: Vec<u64> = out.iter().map(|o| o.0).collect();
        assert_eq!(starts, vec![0, 100, 150, 200]);
        assert_eq!(seen, vec![(1, 7), (2, 7), (2, 8), (NONE, 8)]);
    }

    /// IPv6: each partition cut to /64 as it is walked, then overlaid, gives
    /// every /64 the cell of the two values at its first address, checked
    /// /64 by /64 against a brute-force reading of random ranges that start
    /// on and inside /64 boundaries.
    #[test]
    fn slash64_partitions_overlay_to_the_values_at_each_first_address() {
        let mut next = crate::testing::xorshift(0x1234_5678);
        for _ in 0..300 {
            let mut ranges = || {
                let mut r: Vec<(u128, u32)> = vec![(0, next(3) as u32)];
                for _ in 0..next(12) {
                    let last = r.last().unwrap().0;
                    let at = if next(2) == 0 {
                        ((last >> 64) + 1 + next(3) as u128) << 64
                    } else {
                        last + 1 + next(5) as u128
                    };
                    r.push((at, next(3) as u32));
                }
                r
            };
            let (loc, asn) = (ranges(), ranges());
            let value_at = |r: &[(u128, u32)], a: u128| r.iter().rev().find(|x| x.0 <= a).unwrap().1;
            let cell = |l: u32, i: u32| l * 10 + i;
            let isp = {
                let mut p = Partition::new(Family::V6, Vec::new());
                asn.iter().for_each(|&(s, v)| p.push(s, v));
                p.finish()
            };
            let mut p = Partition::new(Family::V6, Overlay::new(&isp, cell));
            loc.iter().for_each(|&(s, v)| p.push(s, v));
            let got = p.finish().finish();
            for k in 0..40u64 {
                let a = (k as u128) << 64;
                let want = cell(value_at(&loc, a), value_at(&asn, a));
                let have = got.iter().rev().find(|r| r.0 <= k).unwrap().1;
                assert_eq!(have, want, "/64 number {k}: {loc:?} {asn:?} -> {got:?}");
            }
        }
    }

    /// The streaming overlay the build uses gives what merging the two
    /// partitions held in memory gives, on random partitions.
    #[test]
    fn streaming_overlay_equals_merge() {
        let mut next = crate::testing::xorshift(0x9E37_79B9);
        for _ in 0..500 {
            let mut random_partition = || {
                let mut p: Vec<(u64, u32)> = vec![(0, next(4) as u32)];
                for _ in 0..next(30) {
                    let s = p.last().unwrap().0 + 1 + next(50);
                    p.run(s, next(4) as u32);
                }
                p
            };
            let (a, b) = (random_partition(), random_partition());
            let cell = |x: u32, y: u32| x * 10 + y % 10;
            let want = merge(&a, &b, &mut |x, y| cell(x, y));
            let mut o = Overlay::new(&b, cell);
            for &(s, v) in &a {
                o.run(s, v);
            }
            assert_eq!(o.finish(), want, "{a:?} over {b:?}");
            // The same into the two-column runs the walks use.
            let mut o = Overlay::into(&b, cell, Runs::default());
            for &(s, v) in &a {
                o.run(s, v);
            }
            assert_eq!(o.finish().pairs(), want, "{a:?} over {b:?}, in columns");
        }
    }
}
