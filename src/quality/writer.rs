//! The single writer of the route-quality table.
//!
//! One thread owns the feed socket and a working copy of everything reported.
//! It verifies each datagram (`feed.rs`), applies the accepted ones, drains
//! whatever else is already queued (a burst is published once), and then
//! publishes a new immutable [`Quality`] with `store`, at most once per
//! `PUBLISH_GAP` (5 ms). Queries only `load`. A publish recomputes only what
//! the applied reports touched.
//! It also wakes when the oldest fresh report expires, so stale data leaves
//! the table on time even when no datagram arrives, and when the config is
//! reloaded (POP ids may have moved).
//!
//! Route data is keyed by the current snapshot's POP index and group; a
//! reload maps it again by the names those had in the snapshot it was keyed
//! by.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::num::NonZeroU64;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

use super::feed::{self, Drop, Report};
use super::table::RouteRows;
use super::{GroupKey, PopState, Quality, Route};
use crate::config::{FeedConfig, Quorum, Snapshot};
use crate::geo::IspMap;
use crate::pops::{Health, PopId};
use crate::server::Shared;

/// Feed counters (exported as `popdns_feed_reports_total` and
/// `popdns_feed_dropped_total{reason}`), and the writer's wake-up for reloads.
#[derive(Default)]
pub struct FeedStats {
    pub accepted: AtomicU64,
    pub dropped: [AtomicU64; 8],
    /// Publishes so far (each a new `Quality` generation).
    pub published: AtomicU64,
    /// The sending end of the writer's wake-up pair (set by `start`).
    wake: OnceLock<UnixDatagram>,
}

impl FeedStats {
    pub fn dropped(&self, d: Drop) -> u64 {
        self.dropped[d as usize].load(Ordering::Relaxed)
    }

    /// Datagrams dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        Drop::ALL.iter().map(|d| self.dropped(*d)).sum()
    }
}

/// Bind the feed socket and start the writer thread.
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    // Room for a burst from many probes while the writer publishes (and for
    // the reports that wait out the publish gap).
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    let sock: UdpSocket = s.into();
    let bound = sock.local_addr()?;
    let (tx, rx) = UnixDatagram::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    if shared.feed_stats.wake.set(tx).is_err() {
        return Err(std::io::Error::other("a feed writer already runs for this server"));
    }
    let thread = std::thread::Builder::new().name("popdns-feed".into()).spawn(move || run(sock, rx, shared))?;
    Ok((bound, thread))
}

/// Tell the writer the config changed (POP ids may have moved): it republishes.
/// Also how shutdown wakes it.
pub fn config_changed(shared: &Shared) {
    if let Some(tx) = shared.feed_stats.wake.get() {
        // A full buffer means a wake-up is already pending: nothing is lost.
        let _ = tx.send(&[1]);
    }
}

/// Least time between two publishes. A report arriving after a quiet spell
/// is published at once; under a steady feed the reports of the last few
/// milliseconds are applied and published together, so the writer wakes (and
/// takes the CPU from the query workers) a few hundred times a second at most,
/// not once per report. Well under the 10 ms a change may take to show.
const PUBLISH_GAP: Duration = Duration::from_millis(5);

/// Longest sleep: a bound, in case a wake-up were ever missed.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The writer: an OS thread, not a task. It sleeps in poll(2) on the feed
/// socket and its wake-up pair; during the publish gap it just sleeps, so the
/// reports arriving meanwhile wait in the socket buffer instead of waking it
/// one by one (as an event loop's edge-triggered readiness did: a wake-up per
/// datagram, each one preempting the query worker that shares the core).
/// poll(2) on the wake-up pair alone in the gap took 10.5% of the writer's
/// time under (e), the sleep 8.6%. Nothing is missed meanwhile: shutdown is
/// seen when the gap ends (under 5 ms), a reload with the next report (which
/// is verified against the new snapshot and remaps the data) or, if none
/// comes, by poll(2) on the wake-up pair once the gap is over.
fn run(sock: UdpSocket, wake: UnixDatagram, shared: Arc<Shared>) {
    let mut work = Work::default();
    let mut buf = vec![0u8; 65536];
    let mut log = DropLog::default();
    let mut last_publish: Option<Instant> = None;
    while !shared.stopping.load(Ordering::Relaxed) {
        let stale = shared.snapshot.load().feed.as_ref().map_or(Duration::from_secs(30), |f| f.stale_after);
        let now = Instant::now();
        let gap_end = last_publish.map(|t| t + PUBLISH_GAP).filter(|t| *t > now);
        let sweep = work.sweep_at(stale);
        let deadline = [gap_end, sweep].into_iter().flatten().min();
        let (woken, readable) = match (gap_end, deadline) {
            (Some(_), Some(d)) => {
                std::thread::sleep(d.saturating_duration_since(now));
                (false, false)
            }
            _ => wait(&wake, &sock, deadline),
        };
        if woken {
            while wake.recv(&mut [0u8; 8]).is_ok() {}
        }
        if shared.stopping.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut accepted = 0u64;
        if readable || gap_end.is_some_and(|g| g <= now) {
            // Everything queued, published once.
            let snap = shared.snapshot.load_full();
            for _ in 0..4096 {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => accepted += work.receive(&buf[..n], from, &snap, &shared, &mut log),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        let sweep_due = work.sweep_at(stale).is_some_and(|t| t <= now);
        if accepted > 0 || woken || sweep_due {
            work.publish(&shared.snapshot.load_full(), &shared);
            if accepted > 0 {
                last_publish = Some(Instant::now());
                // Counted after the store: whoever sees the count sees the data.
                shared.feed_stats.accepted.fetch_add(accepted, Ordering::Release);
            }
        }
    }
}

/// Sleep until the wake-up pair or the socket is readable, or the
/// deadline. Returns (woken, socket readable).
fn wait(wake: &UnixDatagram, sock: &UdpSocket, deadline: Option<Instant>) -> (bool, bool) {
    let mut fds = [
        libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    let sleep = deadline.map_or(MAX_SLEEP, |d| d.saturating_duration_since(Instant::now()).min(MAX_SLEEP));
    let ts = libc::timespec { tv_sec: sleep.as_secs() as libc::time_t, tv_nsec: sleep.subsec_nanos() as libc::c_long };
    // SAFETY: `fds` and `ts` are valid for the call.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    if n <= 0 {
        return (false, false); // the deadline, or EINTR: the loop looks again
    }
    let ready = |f: &libc::pollfd| f.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
    (ready(&fds[0]), ready(&fds[1]))
}

/// A time the writer keeps: nanoseconds since its clock's start, plus one.
/// Half an `Instant`'s 16 bytes, and an `Option` of it costs nothing more,
/// so the per-reporter records below fit more to a cache line: the writer
/// wakes cache-cold, and reading them is most of its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Tick(NonZeroU64);

/// Turns `Instant`s into `Tick`s and back.
struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { start: Instant::now() }
    }
}

impl Clock {
    fn tick(&self, t: Instant) -> Tick {
        let ns = t.saturating_duration_since(self.start).as_nanos();
        Tick(NonZeroU64::MIN.saturating_add(u64::try_from(ns).unwrap_or(u64::MAX - 1)))
    }

    fn instant(&self, t: Tick) -> Instant {
        self.start + Duration::from_nanos(t.0.get() - 1)
    }
}

/// One reporter's view of one POP (32 bytes).
#[derive(Debug, Clone, Copy)]
struct View {
    /// Its current verdict (after hysteresis).
    up: bool,
    /// Consecutive reports disagreeing with `up`.
    pending: u32,
    health_at: Option<Tick>,
    /// The last load reported, valid while `load_at` is set.
    load: f64,
    load_at: Option<Tick>,
}

/// A reporter's replay and rate state.
#[derive(Debug, Default)]
struct Reporter {
    last_ts: u64,
    tokens: f64,
    refilled: Option<Instant>,
}

/// Index of a reporter in `Work::reporters`, given when its first report
/// is accepted; it never moves (reporters are few: the configured keys).
type ReporterIx = u32;

/// One reporter's latest route measurement (24 bytes; 32 with its reporter).
#[derive(Debug, Clone, Copy)]
struct Measured {
    rtt_ms: f64,
    loss: f64,
    at: Tick,
}

/// Everything reported on one POP of the keyed snapshot.
#[derive(Debug, Default)]
struct PopWork {
    /// By reporter index.
    views: Vec<Option<View>>,
    /// Unix ms of its newest accepted report.
    last_report_ms: Option<u64>,
    /// Listed in `Work::dirty_pops`.
    dirty: bool,
}

/// Everything reported on one (POP, group).
#[derive(Debug, Default)]
struct RouteEntry {
    /// The reporters that measured it, in no order. Few per cell (the
    /// probes measuring that group), so a short search; a slot per
    /// configured reporter cost every cell ever reported as many slots as
    /// the highest reporter index, and a sweep read them all.
    by: Vec<(ReporterIx, Measured)>,
    /// Listed in its group's `dirty`.
    dirty: bool,
}

/// A route measurement as it was stored, queued to expire: the sweep takes
/// these from the front of `Work::expiry` while they are stale, so its cost
/// follows the measurements that expire, not the ones that are kept.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    at: Tick,
    group: GroupKey,
    pop: u16,
    reporter: ReporterIx,
}

/// Everything reported on one client group, by POP. A report finds its
/// cell with one lookup of the group (there are a few hundred at most, so
/// that map stays cached) and an index; a publish walks the changed cells
/// group by group and copies each published row once. A map keyed by
/// (POP, group) cost a cache-cold probe per route a report named and again
/// per cell a publish recomputed, and a sort to group the cells by row.
/// A reload maps it again by the names of its key and POPs in the keyed
/// snapshot (`Work::pop_names`, `Work::isps`).
#[derive(Debug)]
struct GroupWork {
    key: GroupKey,
    /// By the keyed snapshot's POP index.
    cells: Vec<RouteEntry>,
    /// POP indices of the cells changed since the last publish; the group
    /// is in `Work::dirty_groups` while this is not empty.
    dirty: Vec<u16>,
    /// Measurements held in `cells`, so an empty group is known without a walk.
    live: u32,
}

impl GroupWork {
    fn new(key: GroupKey, pops: usize) -> Self {
        GroupWork { key, cells: (0..pops).map(|_| RouteEntry::default()).collect(), dirty: Vec::new(), live: 0 }
    }

    /// Mark cell `pop` for the next publish; true if the group was clean.
    fn mark(&mut self, pop: u16) -> bool {
        let was_clean = self.dirty.is_empty();
        if let Some(e) = self.cells.get_mut(pop as usize).filter(|e| !e.dirty) {
            e.dirty = true;
            self.dirty.push(pop);
        }
        was_clean && !self.dirty.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// The writer's maps: keyed by names from authenticated reports only, so the
/// fast unkeyed hash is safe (SipHash was a tenth of the writer's time).
type Map<K, V> = hashbrown::HashMap<K, V, crate::hash::Fast>;

/// The writer's working copy, keyed by the current snapshot's POP indices
/// and by reporter indices: a report costs one name lookup (its reporter)
/// and array reads, not a string-keyed map lookup per POP it names (which,
/// cache-cold after every sleep, were most of the writer's time). A publish
/// rebuilds only the POPs and rows a report touched (`dirty_*`), so its cost
/// follows the reports, not the size of the table.
#[derive(Default)]
struct Work {
    clock: Clock,
    /// Every datagram is parsed into this one (no allocation per report).
    report: Report<PopId, GroupKey>,
    reporter_ids: Map<String, ReporterIx>,
    reporters: Vec<Reporter>,
    /// Indexed by the keyed snapshot's `PopId`.
    pops: Vec<PopWork>,
    /// The keyed snapshot's POP names and ISPs, to map `pops` and `routes`
    /// again after a reload.
    pop_names: Vec<String>,
    isps: IspMap,
    /// Route data, a `GroupWork` per group reported; `group_ix` finds it.
    groups: Vec<GroupWork>,
    group_ix: Map<GroupKey, u32>,
    /// Every route measurement stored, in the order it was (the writer's
    /// clock only moves forward, so oldest first). One entry per
    /// measurement received within `stale_after`, a refreshed one included:
    /// its old entry finds a newer time in the cell and is passed over.
    expiry: VecDeque<Expiry>,
    /// The POP states and rows of the last publish (rows shared with it).
    states: Vec<PopState>,
    rows: RouteRows,
    /// A publish's working vectors, kept from one to the next.
    scratch: Scratch,
    /// What changed since the last publish: only that is recomputed.
    dirty_pops: Vec<u16>,
    dirty_groups: Vec<u32>,
    /// When the oldest fresh datum expires (the next sweep).
    next_expiry: Option<Instant>,
    last_sweep: Option<Instant>,
    /// The config generation the indices above were resolved against.
    config_generation: Option<u64>,
    generation: u64,
}

/// A publish's working vectors (their allocations were a twentieth of the
/// writer's time).
#[derive(Default)]
struct Scratch {
    loads: Vec<f64>,
    rtts: Vec<f64>,
    losses: Vec<f64>,
}

impl Work {
    /// Verify and apply one datagram; 1 if accepted.
    fn receive(&mut self, d: &[u8], from: SocketAddr, snap: &Snapshot, shared: &Shared, log: &mut DropLog) -> u64 {
        match self.verify_and_apply(d, snap, Instant::now(), feed::now_ms()) {
            Ok(()) => 1,
            Err(reason) => {
                shared.feed_stats.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
                log.note(reason, from);
                0
            }
        }
    }

    fn verify_and_apply(&mut self, d: &[u8], snap: &Snapshot, now: Instant, now_ms: u64) -> Result<(), Drop> {
        let mut report = std::mem::take(&mut self.report);
        let result = self.check_and_apply(d, snap, now, now_ms, &mut report);
        self.report = report;
        result
    }

    /// `verify_and_apply`, parsing into `report`.
    fn check_and_apply(
        &mut self,
        d: &[u8],
        snap: &Snapshot,
        now: Instant,
        now_ms: u64,
        report: &mut Report<PopId, GroupKey>,
    ) -> Result<(), Drop> {
        let cfg = snap.feed.as_ref().ok_or(Drop::UnknownReporter)?;
        let env = feed::envelope(d, cfg.max_datagram)?;
        let key = cfg.keys.get(env.reporter).ok_or(Drop::UnknownReporter)?;
        if !feed::mac_ok(key, env.body, &env.mac) {
            return Err(Drop::BadMac);
        }
        let (ts, valid) = feed::parse_into(
            env.body,
            |p| snap.pops.find(p),
            |g| GroupKey::parse_known(g, &snap.isps, &snap.geo.cells),
            report,
        )?;
        // A POP listed twice would count as two consecutive reports and flip
        // its view past `down_after` / `up_after` at once: invalid.
        let twice = |i: usize| report.pops[..i].iter().any(|q| q.pop == report.pops[i].pop);
        let valid = valid.and_then(|()| if (1..report.pops.len()).any(twice) { Err(Drop::Invalid) } else { Ok(()) });
        let known = self.reporter_ids.get(env.reporter).copied();
        let last = known.map_or(0, |i| self.reporters[i as usize].last_ts);
        if ts <= last {
            return Err(Drop::Replay);
        }
        if ts.abs_diff(now_ms) > cfg.max_skew.as_millis() as u64 {
            return Err(Drop::Skew);
        }
        valid?;
        let ix = match known {
            Some(i) => i,
            None => {
                let i = self.reporters.len() as ReporterIx;
                self.reporters.push(Reporter::default());
                self.reporter_ids.insert(env.reporter.to_string(), i);
                i
            }
        };
        let reporter = &mut self.reporters[ix as usize];
        if !take_token(reporter, cfg.max_reports_per_second, now) {
            return Err(Drop::Rate);
        }
        reporter.last_ts = ts;
        self.remap(snap);
        self.apply(ix, report, cfg, now);
        Ok(())
    }

    /// Apply a report resolved against the keyed snapshot (`remap` ran).
    fn apply(&mut self, reporter: ReporterIx, r: &Report<PopId, GroupKey>, cfg: &FeedConfig, now: Instant) {
        if self.next_expiry.is_none() {
            self.next_expiry = Some(now + cfg.stale_after);
        }
        let now = self.clock.tick(now);
        let fresh_at = fresh_since(now, cfg.stale_after);
        let fresh = |at: Option<Tick>| at.is_some_and(fresh_at);
        for p in &r.pops {
            let Some(v) = self.touch_pop(p.pop, r.ts).map(|w| view(w, reporter)) else { continue };
            if let Some(up) = p.up {
                if !fresh(v.health_at) {
                    // A reporter's first (fresh) report on a POP sets its view at once.
                    v.up = up;
                    v.pending = 0;
                } else if up == v.up {
                    v.pending = 0;
                } else {
                    v.pending += 1;
                    let need = if up { cfg.up_after } else { cfg.down_after };
                    if v.pending >= need {
                        v.up = up;
                        v.pending = 0;
                    }
                }
                v.health_at = Some(now);
            }
            if let Some(load) = p.load {
                v.load = load;
                v.load_at = Some(now);
            }
        }
        for rt in &r.routes {
            self.touch_pop(rt.pop, r.ts);
            let pops = self.pops.len();
            let gi = *self.group_ix.entry(rt.group).or_insert_with(|| {
                self.groups.push(GroupWork::new(rt.group, pops));
                (self.groups.len() - 1) as u32
            });
            let g = &mut self.groups[gi as usize];
            let Some(cell) = g.cells.get_mut(rt.pop.0 as usize) else { continue };
            let m = Measured { rtt_ms: rt.rtt_ms, loss: rt.loss, at: now };
            let queued = match cell.by.iter_mut().find(|(r, _)| *r == reporter) {
                Some((_, old)) => std::mem::replace(old, m).at == now, // the cell twice in one report
                None => {
                    cell.by.push((reporter, m));
                    g.live += 1;
                    false
                }
            };
            if !queued {
                self.expiry.push_back(Expiry { at: now, group: rt.group, pop: rt.pop.0, reporter });
            }
            if g.mark(rt.pop.0) {
                self.dirty_groups.push(gi);
            }
        }
    }

    /// A report on POP `id` arrived: note its time, recompute it at the next publish.
    fn touch_pop(&mut self, id: PopId, ts: u64) -> Option<&mut PopWork> {
        let w = self.pops.get_mut(id.0 as usize)?;
        w.last_report_ms = Some(ts);
        if !w.dirty {
            w.dirty = true;
            self.dirty_pops.push(id.0);
        }
        Some(w)
    }

    /// After a reload POP indices and ISP ids may have moved: map everything
    /// again from the names it was reported under, and recompute it all.
    fn remap(&mut self, snap: &Snapshot) {
        if self.config_generation == Some(snap.generation) {
            return;
        }
        self.config_generation = Some(snap.generation);
        // Reporters whose key the new config no longer has: what they said
        // ends now, not `stale_after` later (a revoked key is revoked).
        let keys = snap.feed.as_ref().map(|f| &f.keys);
        let revoked: Vec<ReporterIx> = (self.reporter_ids.iter())
            .filter(|(id, _)| !keys.is_some_and(|k| k.contains_key(id.as_str())))
            .map(|(_, &ix)| ix)
            .collect();
        let mut pops: Vec<PopWork> = (0..snap.pops.len()).map(|_| PopWork::default()).collect();
        for (name, mut w) in self.pop_names.iter().zip(std::mem::take(&mut self.pops)) {
            for &r in &revoked {
                if let Some(v) = w.views.get_mut(r as usize) {
                    *v = None;
                }
            }
            if let Some(slot) = snap.pops.find(name).and_then(|id| pops.get_mut(id.0 as usize)) {
                *slot = w;
            }
        }
        pops.iter_mut().for_each(|w| w.dirty = true);
        self.dirty_pops = (0..pops.len()).map(|i| i as u16).collect();
        self.pops = pops;
        self.group_ix.clear();
        self.dirty_groups.clear();
        for old in std::mem::take(&mut self.groups) {
            let Some(key) = GroupKey::parse_known(&old.key.display(&self.isps), &snap.isps, &snap.geo.cells) else {
                continue;
            };
            let mut g = GroupWork::new(key, snap.pops.len());
            for (name, mut e) in self.pop_names.iter().zip(old.cells) {
                e.by.retain(|(r, _)| !revoked.contains(r));
                if let Some(slot) = snap.pops.find(name).and_then(|id| g.cells.get_mut(id.0 as usize)) {
                    *slot = e;
                    slot.dirty = false;
                }
            }
            for i in 0..g.cells.len() {
                if !g.cells[i].by.is_empty() {
                    g.mark(i as u16);
                }
            }
            g.live = g.cells.iter().map(|e| e.by.len() as u32).sum();
            let gi = *self.group_ix.entry(key).or_insert(self.groups.len() as u32);
            match self.groups.get_mut(gi as usize) {
                Some(slot) => *slot = g, // two old groups now one: the later wins
                None => self.groups.push(g),
            }
        }
        self.dirty_groups =
            (0..self.groups.len() as u32).filter(|&i| !self.groups[i as usize].dirty.is_empty()).collect();
        self.expiry = expiry_of(&self.groups);
        self.pop_names = snap.pops.list.iter().map(|p| p.id.clone()).collect();
        self.isps = snap.isps.clone();
        self.rows.clear();
        self.states = vec![PopState::default(); snap.pops.len()];
    }

    /// Forget what expired. Runs when the oldest datum expires, at most ten
    /// times per `stale_after` (and per 100 ms), so its cost stays off the
    /// per-report path. POP views are walked (POPs x reporters); route
    /// measurements, which grow with POPs x groups, are taken from the
    /// front of the expiry queue, so only the expired ones are read.
    fn sweep(&mut self, stale: Duration, now: Instant) {
        let fresh = fresh_since(self.clock.tick(now), stale);
        let mut oldest: Option<Tick> = None;
        let mut note = |t: Tick| oldest = Some(oldest.map_or(t, |o| o.min(t)));
        for (i, w) in self.pops.iter_mut().enumerate() {
            let mut expired = false;
            for slot in w.views.iter_mut() {
                let Some(v) = slot else { continue };
                expired |= v.health_at.is_some_and(|t| !fresh(t)) || v.load_at.is_some_and(|t| !fresh(t));
                v.health_at = v.health_at.filter(|t| fresh(*t));
                v.load_at = v.load_at.filter(|t| fresh(*t));
                v.health_at.into_iter().chain(v.load_at).for_each(&mut note);
                if v.health_at.is_none() && v.load_at.is_none() {
                    *slot = None;
                }
            }
            if expired && !w.dirty {
                w.dirty = true;
                self.dirty_pops.push(i as u16);
            }
        }
        while let Some(e) = self.expiry.front().copied() {
            if fresh(e.at) {
                note(e.at);
                break;
            }
            self.expiry.pop_front();
            self.expire(e);
        }
        self.forget_empty_groups();
        self.compact_expiry();
        self.next_expiry = oldest.map(|t| self.clock.instant(t) + stale + Duration::from_millis(1));
        if self.next_expiry.is_none() && self.groups.iter().any(GroupWork::is_empty) {
            // Emptied now, published next: forgotten at the sweep after.
            self.next_expiry = Some(now);
        }
        self.last_sweep = Some(now);
    }

    /// Remove the measurement `e` queued, unless a newer one replaced it.
    fn expire(&mut self, e: Expiry) {
        let Some((gi, i)) = held(&self.groups, &self.group_ix, &e) else { return };
        let g = &mut self.groups[gi as usize];
        let cell = &mut g.cells[e.pop as usize];
        cell.by.swap_remove(i);
        if cell.by.is_empty() {
            cell.by = Vec::new(); // its memory back: most cells go quiet for good
        }
        g.live -= 1;
        if g.mark(e.pop) {
            self.dirty_groups.push(gi);
        }
    }

    /// Drop the queue entries of measurements replaced since, once they
    /// outnumber the ones held: a refresh queues a new entry and leaves the
    /// old one to be passed over at its expiry, so without this the queue
    /// held every measurement received within `stale_after` (24 bytes each:
    /// 7 MB at 10,000 routes/s and 30 s), not the ones that count. Each
    /// compaction removes at least half of what it reads, so its cost is
    /// paid once per entry, like the push.
    fn compact_expiry(&mut self) {
        let held_now: usize = self.groups.iter().map(|g| g.live as usize).sum();
        if self.expiry.len() <= 2 * held_now + EXPIRY_SLACK {
            return;
        }
        let (groups, group_ix) = (&self.groups, &self.group_ix);
        self.expiry.retain(|e| held(groups, group_ix, e).is_some());
        // And the memory of a burst back.
        self.expiry.shrink_to(2 * self.expiry.len() + EXPIRY_SLACK);
    }

    /// Drop the groups left without data once their rows are published
    /// (not while they wait in `dirty_groups`): indices move, so the map and
    /// the dirty list are renumbered.
    fn forget_empty_groups(&mut self) {
        let gone = |g: &GroupWork| g.dirty.is_empty() && g.is_empty();
        if !self.groups.iter().any(gone) {
            return;
        }
        let mut renumber = vec![u32::MAX; self.groups.len()];
        let mut kept = Vec::with_capacity(self.groups.len());
        for (i, g) in std::mem::take(&mut self.groups).into_iter().enumerate() {
            if !gone(&g) {
                renumber[i] = kept.len() as u32;
                kept.push(g);
            }
        }
        self.groups = kept;
        self.group_ix.retain(|_, i| {
            *i = renumber[*i as usize];
            *i != u32::MAX
        });
        self.dirty_groups.iter_mut().for_each(|i| *i = renumber[*i as usize]);
    }

    /// When to sweep next: the oldest datum's expiry, but not more often than
    /// a tenth of `stale_after` (at most 100 ms).
    fn sweep_at(&self, stale: Duration) -> Option<Instant> {
        let gap = (stale / 10).min(Duration::from_millis(100));
        let e = self.next_expiry?;
        Some(match self.last_sweep {
            Some(l) => e.max(l + gap),
            None => e,
        })
    }

    /// Build and store a new table: every POP's state, and the touched rows.
    fn publish(&mut self, snap: &Snapshot, shared: &Shared) {
        let now = Instant::now();
        let (stale, quorum) = match &snap.feed {
            Some(f) => (f.stale_after, f.quorum),
            None => (Duration::ZERO, Quorum::Majority),
        };
        self.remap(snap);
        if self.sweep_at(stale).is_some_and(|t| t <= now) {
            self.sweep(stale, now);
        }
        let fresh = fresh_since(self.clock.tick(now), stale);
        let mut scratch = std::mem::take(&mut self.scratch);
        self.publish_pops(fresh, quorum, &mut scratch.loads);
        self.publish_routes(snap.pops.len(), fresh, &mut scratch);
        self.scratch = scratch;
        self.generation += 1;
        let table = self.table(snap.generation);
        shared.quality.store(table);
        shared.feed_stats.published.fetch_add(1, Ordering::Release);
    }

    /// The table to publish: the POP states, and the rows (shared with it,
    /// not copied).
    fn table(&self, config_generation: u64) -> Arc<Quality> {
        Arc::new(Quality {
            generation: self.generation,
            config_generation,
            pops: self.states.clone(),
            routes: self.rows.clone(),
        })
    }

    /// Every changed POP's state: health by quorum over its reporters' fresh
    /// views, load their median.
    fn publish_pops(&mut self, fresh: impl Fn(Tick) -> bool + Copy, quorum: Quorum, loads: &mut Vec<f64>) {
        // Taken and given back, so its allocation is kept.
        let dirty_pops = std::mem::take(&mut self.dirty_pops);
        for &id in &dirty_pops {
            let Some(w) = self.pops.get_mut(id as usize) else { continue };
            w.dirty = false;
            let (mut seen, mut down) = (0u32, 0u32);
            loads.clear();
            for v in w.views.iter().flatten() {
                if v.health_at.is_some_and(fresh) {
                    seen += 1;
                    down += u32::from(!v.up);
                }
                if v.load_at.is_some_and(fresh) {
                    loads.push(v.load);
                }
            }
            let health = match (seen, quorum) {
                (0, _) => Health::Unknown,
                (n, Quorum::Majority) if down * 2 > n => Health::Down,
                (_, Quorum::Count(k)) if down >= k => Health::Down,
                _ => Health::Up,
            };
            let st = PopState { health, load: median(loads), drained: false, last_report_ms: w.last_report_ms };
            if let Some(slot) = self.states.get_mut(id as usize) {
                *slot = st;
            }
        }
        self.dirty_pops = dirty_pops;
        self.dirty_pops.clear();
    }

    /// Every changed route cell: the medians of its reporters' fresh values.
    /// Group by group, so a row is copied once, on write (the published
    /// table keeps the old one).
    fn publish_routes(&mut self, pops: usize, fresh: impl Fn(Tick) -> bool + Copy, scratch: &mut Scratch) {
        let Scratch { rtts, losses, .. } = scratch;
        // Taken and given back, so its allocation is kept.
        let dirty_groups = std::mem::take(&mut self.dirty_groups);
        for &gi in &dirty_groups {
            let Some(g) = self.groups.get_mut(gi as usize) else { continue };
            let row = Arc::make_mut(self.rows.entry(g.key).or_insert_with(|| vec![None; pops].into()));
            for &i in &g.dirty {
                let Some(e) = g.cells.get_mut(i as usize) else { continue };
                e.dirty = false;
                rtts.clear();
                losses.clear();
                for (_, m) in e.by.iter().filter(|(_, m)| fresh(m.at)) {
                    rtts.push(m.rtt_ms);
                    losses.push(m.loss);
                }
                if let Some(cell) = row.get_mut(i as usize) {
                    *cell = match (median(rtts), median(losses)) {
                        (Some(rtt_ms), Some(loss)) => Some(Route { rtt_ms, loss }),
                        _ => None,
                    };
                }
            }
            g.dirty.clear();
            if row.iter().all(Option::is_none) {
                self.rows.remove(&g.key);
            }
        }
        self.dirty_groups = dirty_groups;
        self.dirty_groups.clear();
    }
}

/// Queue entries allowed beyond twice the measurements held before the
/// queue is compacted (so a small table is not compacted at every sweep).
const EXPIRY_SLACK: usize = 1024;

/// Where the measurement queued as `e` is still held: its group's index and
/// its place in the cell. None if it expired or a newer one replaced it.
fn held(groups: &[GroupWork], group_ix: &Map<GroupKey, u32>, e: &Expiry) -> Option<(u32, usize)> {
    let gi = *group_ix.get(&e.group)?;
    let cell = groups.get(gi as usize)?.cells.get(e.pop as usize)?;
    let i = cell.by.iter().position(|(r, m)| *r == e.reporter && m.at == e.at)?;
    Some((gi, i))
}

/// The expiry queue of `groups`, oldest first (after a reload re-keyed them).
fn expiry_of(groups: &[GroupWork]) -> VecDeque<Expiry> {
    let mut v: Vec<Expiry> = groups
        .iter()
        .flat_map(|g| {
            g.cells.iter().enumerate().flat_map(move |(pop, e)| {
                e.by.iter().map(move |&(reporter, m)| Expiry { at: m.at, group: g.key, pop: pop as u16, reporter })
            })
        })
        .collect();
    v.sort_by_key(|e| e.at);
    v.into()
}

/// A reporter's view of a POP, made when it first reports on it.
fn view(w: &mut PopWork, reporter: ReporterIx) -> &mut View {
    let i = reporter as usize;
    if w.views.len() <= i {
        w.views.resize(i + 1, None);
    }
    w.views[i].get_or_insert(View { up: true, pending: 0, health_at: None, load: 0.0, load_at: None })
}

/// Token bucket per reporter: `rate` reports per second, bursts up to `rate`.
/// A rate of 0 means unlimited.
fn take_token(r: &mut Reporter, rate: u32, now: Instant) -> bool {
    if rate == 0 {
        return true;
    }
    let cap = rate as f64;
    let tokens = match r.refilled {
        None => cap,
        Some(t) => (r.tokens + now.duration_since(t).as_secs_f64() * cap).min(cap),
    };
    r.refilled = Some(now);
    if tokens >= 1.0 {
        r.tokens = tokens - 1.0;
        true
    } else {
        r.tokens = tokens;
        false
    }
}

/// Whether a datum received at `t` is still fresh at `now`: received at or
/// after `now - stale` (one comparison; the writer asks it for every datum
/// a publish reads).
fn fresh_since(now: Tick, stale: Duration) -> impl Fn(Tick) -> bool + Copy {
    let stale = u64::try_from(stale.as_nanos()).unwrap_or(u64::MAX);
    let cutoff = now.0.get().checked_sub(stale);
    move |t| cutoff.is_none_or(|c| t.0.get() >= c)
}

/// The median (a publish takes two per route it recomputes, and one per POP).
/// Up to 32 values (one per reporter, as a rule) are sorted as integer keys
/// in `f64::total_cmp`'s order, which is cheaper than comparing by it; more
/// than 8 by a sorting network, which has no branch to mispredict (an
/// insertion sort of 20 values was a tenth of the writer's time); more than
/// 32 are selected.
fn median(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let odd = n % 2 == 1;
    if n <= 32 {
        // Padding sorts last: the first n keys are the values, in order.
        let mut keys = [i64::MAX; 32];
        for (k, x) in keys.iter_mut().zip(v.iter()) {
            *k = total_key(*x);
        }
        match (n, keys.first_chunk_mut::<16>()) {
            (..=8, _) => keys[..n].sort_unstable(),
            (..=16, Some(first)) => odd_even_merge_sort(first),
            _ => odd_even_merge_sort(&mut keys),
        }
        let hi = from_total_key(keys[n / 2]);
        return Some(if odd { hi } else { (from_total_key(keys[n / 2 - 1]) + hi) / 2.0 });
    }
    let (below, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *mid;
    Some(if odd { hi } else { (below.iter().copied().max_by(f64::total_cmp).unwrap_or(hi) + hi) / 2.0 })
}

/// Batcher's odd-even merge sort of `N` (a power of two) keys: a fixed
/// sequence of compare-exchanges, each a min and a max.
fn odd_even_merge_sort<const N: usize>(a: &mut [i64; N]) {
    let mut p = 1;
    while p < N {
        let mut k = p;
        while k >= 1 {
            let mut j = k % p;
            while j + k < N {
                for i in 0..k.min(N - j - k) {
                    if (i + j) / (p * 2) == (i + j + k) / (p * 2) {
                        let (x, y) = (a[i + j], a[i + j + k]);
                        a[i + j] = x.min(y);
                        a[i + j + k] = x.max(y);
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        p *= 2;
    }
}

/// An integer whose order is `f64::total_cmp`'s (the transform it applies).
fn total_key(x: f64) -> i64 {
    let b = x.to_bits() as i64;
    b ^ ((((b >> 63) as u64) >> 1) as i64)
}

/// The inverse of `total_key` (the transform is its own inverse).
fn from_total_key(k: i64) -> f64 {
    f64::from_bits((k ^ ((((k >> 63) as u64) >> 1) as i64)) as u64)
}

/// Logs drops without flooding: the first of each reason at once, then at
/// most one line per reason every 10 s with the count in between.
#[derive(Default)]
struct DropLog {
    last: [Option<Instant>; 8],
    suppressed: [u64; 8],
}

impl DropLog {
    fn note(&mut self, reason: Drop, from: SocketAddr) {
        let i = reason as usize;
        let now = Instant::now();
        if self.last[i].is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            self.suppressed[i] += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed[i]);
        self.last[i] = Some(now);
        if suppressed > 0 {
            warn!(reason = reason.as_str(), %from, suppressed, "feed datagram dropped (and {suppressed} more since the last line)");
        } else {
            warn!(reason = reason.as_str(), %from, "feed datagram dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0]), Some(2.5));
        // Against sorting, on random lengths and values (ties included).
        let mut next = crate::testing::xorshift(9);
        for _ in 0..4000 {
            // Both ways (sorted keys up to 32 values, selection beyond), and
            // signed zeros and negatives, where total_cmp's order matters.
            let n = 1 + next(48) as usize;
            let pool = [-1.5, -0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0];
            let mut v: Vec<f64> = (0..n).map(|_| pool[next(8) as usize]).collect();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let want = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
            assert_eq!(median(&mut v), Some(want), "{sorted:?}");
        }
    }

    #[test]
    fn freshness_is_inclusive_of_the_stale_bound() {
        let clock = Clock::default();
        let tick = |ns: u64| clock.tick(clock.start + Duration::from_nanos(ns));
        let stale = Duration::from_secs(30);
        let (t0, now) = (tick(5), tick(5 + 30_000_000_000));
        let fresh = fresh_since(now, stale);
        assert!(fresh(t0), "exactly stale_after old is still fresh");
        assert!(fresh(now) && fresh(tick(40_000_000_000)), "a datum from the future is fresh");
        assert!(!fresh(tick(4)), "a nanosecond older is stale");
        assert!(fresh_since(t0, stale)(tick(0)), "a bound before the clock's start keeps everything");
        assert!(fresh_since(t0, Duration::MAX)(t0));
    }

    #[test]
    fn ticks_keep_order_and_map_back() {
        let clock = Clock::default();
        let a = clock.start + Duration::from_millis(3);
        let b = a + Duration::from_nanos(1);
        assert!(clock.tick(a) < clock.tick(b));
        assert_eq!(clock.instant(clock.tick(a)), a);
        assert_eq!(
            clock.tick(clock.start),
            clock.tick(clock.start - Duration::from_secs(1)),
            "before the start: its first tick"
        );
        assert_eq!(std::mem::size_of::<Option<View>>(), 32);
        assert_eq!(std::mem::size_of::<(ReporterIx, Measured)>(), 32);
        assert_eq!(std::mem::size_of::<Expiry>(), 24, "the README gives the queue's cost per measurement");
    }

    /// The shipped demo reporter's report at `ms` (Unix ms), routes only.
    fn demo_report(ms: u64, routes: &str) -> Vec<u8> {
        let key = feed::decode_hex("64656d6f2d6b65792d646f2d6e6f742d7573652d696e2d70726f64756374696f6e").unwrap();
        feed::encode("demo-probe", &key, format!(r#"{{"ts": {ms}, "routes": [{routes}]}}"#).as_bytes())
    }

    fn route(pop: &str, group: &str, rtt: f64) -> String {
        format!(r#"{{"pop": "{pop}", "group": "{group}", "rtt_ms": {rtt}, "loss": 0}}"#)
    }

    #[test]
    fn an_expired_group_leaves_and_the_others_keep_their_data() {
        let snap = crate::testing::demo();
        let stale = snap.feed.as_ref().unwrap().stale_after;
        let (zj, de) = ("CN-ZJ/chinatelecom", "DE");
        let fra = snap.pops.find("de-fra-1").unwrap().0 as usize;
        let (mut w, mut scratch) = (Work::default(), Scratch::default());
        let (t0, ms0) = (Instant::now(), feed::now_ms());
        let at = |s: u64| (t0 + Duration::from_secs(s), ms0 + s * 1000);
        let apply = |w: &mut Work, s: u64, routes: &[String]| {
            let (t, ms) = at(s);
            w.verify_and_apply(&demo_report(ms, &routes.join(",")), &snap, t, ms).unwrap();
        };
        let mut publish = |w: &mut Work, s: u64| {
            let (t, _) = at(s);
            if w.sweep_at(stale).is_some_and(|due| due <= t) {
                w.sweep(stale, t);
            }
            w.publish_routes(snap.pops.len(), fresh_since(w.clock.tick(t), stale), &mut scratch);
        };
        let rtt = |w: &Work, g: &str| {
            let key = GroupKey::parse(g, &snap.isps).unwrap();
            w.rows.get(&key).and_then(|row| row[fra]).map(|r| r.rtt_ms)
        };
        let cn = "CN";
        apply(&mut w, 0, &[route("de-fra-1", zj, 30.0), route("de-fra-1", de, 5.0)]);
        publish(&mut w, 0);
        assert_eq!((rtt(&w, zj), rtt(&w, de)), (Some(30.0), Some(5.0)));
        apply(&mut w, 10, &[route("de-fra-1", cn, 20.0)]);
        apply(&mut w, 30, &[route("de-fra-1", de, 7.0)]);
        publish(&mut w, 30);
        // 35 s: ZJ's measurement is stale; its row goes, the others stay.
        publish(&mut w, 35);
        assert_eq!((rtt(&w, zj), rtt(&w, cn), rtt(&w, de)), (None, Some(20.0), Some(7.0)));
        assert_eq!(w.groups.len(), 3, "published empty, forgotten at the next sweep");
        // 41 s: CN expires (and waits to be published) while ZJ is forgotten,
        // so both move down an index; DE still takes reports.
        publish(&mut w, 41);
        assert_eq!((rtt(&w, zj), rtt(&w, cn), rtt(&w, de)), (None, None, Some(7.0)));
        assert_eq!(w.groups.len(), 2);
        apply(&mut w, 42, &[route("de-fra-1", de, 9.0)]);
        publish(&mut w, 42);
        assert_eq!((rtt(&w, zj), rtt(&w, cn), rtt(&w, de)), (None, None, Some(9.0)));
        apply(&mut w, 43, &[route("de-fra-1", zj, 12.0)]);
        publish(&mut w, 43);
        assert_eq!((rtt(&w, zj), rtt(&w, de)), (Some(12.0), Some(9.0)), "a forgotten group comes back");
    }

    #[test]
    fn a_refreshed_measurement_outlives_its_first_expiry_and_a_reload_keeps_the_queue() {
        let snap = crate::testing::demo();
        let stale = snap.feed.as_ref().unwrap().stale_after;
        let fra = snap.pops.find("de-fra-1").unwrap().0 as usize;
        let de = GroupKey::parse("DE", &snap.isps).unwrap();
        let (mut w, mut scratch) = (Work::default(), Scratch::default());
        let (t0, ms0) = (Instant::now(), feed::now_ms());
        let at = |s: u64| (t0 + Duration::from_secs(s), ms0 + s * 1000);
        let apply = |w: &mut Work, snap: &Snapshot, s: u64, rtt: f64| {
            let (t, ms) = at(s);
            w.verify_and_apply(&demo_report(ms, &route("de-fra-1", "DE", rtt)), snap, t, ms).unwrap();
        };
        let mut publish = |w: &mut Work, s: u64| {
            let (t, _) = at(s);
            if w.sweep_at(stale).is_some_and(|due| due <= t) {
                w.sweep(stale, t);
            }
            w.publish_routes(snap.pops.len(), fresh_since(w.clock.tick(t), stale), &mut scratch);
            w.rows.get(&de).and_then(|row| row[fra]).map(|r| r.rtt_ms)
        };
        let held = |w: &Work| w.group_ix.get(&de).map(|&gi| w.groups[gi as usize].cells[fra].by.len());
        apply(&mut w, &snap, 0, 5.0);
        apply(&mut w, &snap, 20, 7.0);
        assert_eq!(held(&w), Some(1), "one reporter, one measurement: refreshed in place");
        assert_eq!(w.expiry.len(), 2, "both queued");
        // A reload (a new snapshot generation) keys everything again, and the
        // queue is rebuilt from the data held: the 20 s measurement, then 25 s.
        let reloaded = crate::testing::demo();
        apply(&mut w, &reloaded, 25, 9.0);
        assert_eq!(w.expiry.len(), 2, "the superseded 0 s entry is not carried over");
        // 35 s: due entries are passed over when a newer measurement replaced them.
        assert_eq!(publish(&mut w, 35), Some(9.0));
        assert_eq!(publish(&mut w, 51), Some(9.0));
        assert_eq!(held(&w), Some(1));
        // 56 s: the 25 s measurement expires; the cell gives its memory back.
        assert_eq!(publish(&mut w, 56), None);
        assert_eq!(held(&w), Some(0));
        let gi = w.group_ix[&de] as usize;
        assert_eq!(w.groups[gi].cells[fra].by.capacity(), 0);
        assert!(w.groups[gi].is_empty());
        // Published empty: the next sweep forgets the group.
        publish(&mut w, 72);
        assert!(!w.group_ix.contains_key(&de));
    }

    #[test]
    fn refreshes_do_not_pile_up_in_the_expiry_queue() {
        let snap = crate::testing::demo();
        let stale = snap.feed.as_ref().unwrap().stale_after;
        let (fra, zj) = (snap.pops.find("de-fra-1").unwrap().0, snap.pops.find("cn-zj-ct-1").unwrap().0);
        let de = GroupKey::parse("DE", &snap.isps).unwrap();
        let (mut w, mut scratch) = (Work::default(), Scratch::default());
        let (t0, ms0) = (Instant::now(), feed::now_ms());
        // Report i at i x 10 ms (the demo reporter may send 100 a second).
        let report = |w: &mut Work, i: u64, routes: &str| {
            let (t, ms) = (t0 + Duration::from_millis(i * 10), ms0 + i * 10);
            w.verify_and_apply(&demo_report(ms, routes), &snap, t, ms).unwrap();
        };
        // One cell measured once, first: its entry must survive.
        report(&mut w, 0, &route("cn-zj-ct-1", "DE", 30.0));
        // A cell named twice in one report is queued once.
        report(&mut w, 1, &[route("de-fra-1", "DE", 8.0), route("de-fra-1", "DE", 9.0)].join(","));
        assert_eq!(w.expiry.len(), 2);
        // Then 1,100 refreshes of that cell, a report each.
        for i in 2..1102 {
            report(&mut w, i, &route("de-fra-1", "DE", i as f64));
        }
        assert_eq!(w.expiry.len(), 1102);
        // A sweep before anything expires compacts: the two measurements held,
        // in arrival order.
        let t = t0 + Duration::from_secs(12);
        w.sweep(stale, t);
        assert_eq!(w.expiry.iter().map(|e| e.pop).collect::<Vec<_>>(), vec![zj, fra]);
        assert!(w.expiry.capacity() < 1102, "{} entries' room kept", w.expiry.capacity());
        w.publish_routes(snap.pops.len(), fresh_since(w.clock.tick(t), stale), &mut scratch);
        assert_eq!(w.rows[&de][fra as usize].map(|r| r.rtt_ms), Some(1101.0), "the last refresh");
        // Under twice the measurements held plus the slack, it is left alone.
        for i in 1200..1210 {
            report(&mut w, i, &route("de-fra-1", "DE", 1.0));
        }
        w.sweep(stale, t0 + Duration::from_secs(13));
        assert_eq!(w.expiry.len(), 12);
        // Each measurement still expires on time: the first at 30 s, the cell
        // 30 s after its last refresh (12.09 s), fresh up to that instant.
        w.sweep(stale, t0 + stale + Duration::from_millis(1));
        assert_eq!(w.expiry.len(), 11);
        assert!(!w.groups.iter().all(GroupWork::is_empty));
        w.sweep(stale, t0 + Duration::from_millis(12_090) + stale);
        assert_eq!(w.expiry.len(), 1);
        w.sweep(stale, t0 + Duration::from_millis(12_091) + stale);
        assert_eq!(w.expiry.len(), 0);
        assert!(w.groups.iter().all(GroupWork::is_empty));
    }

    #[test]
    fn token_bucket_allows_rate_then_refuses() {
        let mut r = Reporter::default();
        let t0 = Instant::now();
        let ok = (0..10).filter(|_| take_token(&mut r, 5, t0)).count();
        assert_eq!(ok, 5);
        assert!(take_token(&mut r, 5, t0 + Duration::from_millis(250)));
        assert!(take_token(&mut r, 0, t0), "0 means unlimited");
    }
}
