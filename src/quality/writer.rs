//! The single writer of the route-quality table.
//!
//! One task owns the feed socket and a working copy of everything reported.
//! It verifies each datagram (`feed.rs`), applies the accepted ones, drains
//! whatever else is already queued (a burst is published once), and then
//! publishes a new immutable [`Quality`] with `store`. Queries only `load`.
//! It also wakes when the oldest fresh report expires, so stale data leaves
//! the table on time even when no datagram arrives, and when the config is
//! reloaded (POP ids may have moved).
//!
//! Everything is keyed by POP id string and group name here, and mapped to the
//! current snapshot's `PopId`s and `GroupKey`s only when publishing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::feed::{self, Drop, Report};
use super::{GroupKey, PopState, Quality, Route};
use crate::config::{FeedConfig, Quorum, Snapshot};
use crate::pops::Health;
use crate::server::Shared;

/// Feed counters (exported as `popdns_feed_reports_total` and
/// `popdns_feed_dropped_total{reason}`), and the writer's wake-up for reloads.
#[derive(Default)]
pub struct FeedStats {
    pub accepted: AtomicU64,
    pub dropped: [AtomicU64; 8],
    /// Publishes so far (each a new `Quality` generation).
    pub published: AtomicU64,
    pub reconfigured: Notify,
}

impl FeedStats {
    pub fn dropped(&self, d: Drop) -> u64 {
        self.dropped[d as usize].load(Ordering::Relaxed)
    }
}

/// Bind the feed socket and start the writer task.
pub async fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, Vec<tokio::task::JoinHandle<()>>)> {
    let sock = UdpSocket::bind(addr).await?;
    let bound = sock.local_addr()?;
    Ok((bound, vec![tokio::spawn(run(sock, shared, cancel))]))
}

/// Tell the writer the config changed (POP ids may have moved): it republishes.
pub fn config_changed(shared: &Shared) {
    shared.feed_stats.reconfigured.notify_one();
}

async fn run(sock: UdpSocket, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut work = Work::default();
    let mut buf = vec![0u8; 65536];
    let mut log = DropLog::default();
    loop {
        let wake = work.next_expiry.map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => {
                let snap = shared.snapshot.load_full();
                let mut accepted = 0u64;
                if let Ok((n, from)) = r {
                    accepted += work.receive(&buf[..n], from, &snap, &shared, &mut log);
                }
                // Coalesce the burst already queued: one publish for all of it.
                for _ in 0..4096 {
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, from)) => accepted += work.receive(&buf[..n], from, &snap, &shared, &mut log),
                        Err(_) => break,
                    }
                }
                if accepted > 0 {
                    work.publish(&snap, &shared);
                    // Counted after the store: whoever sees the count sees the data.
                    shared.feed_stats.accepted.fetch_add(accepted, Ordering::Release);
                }
            }
            _ = sleep_until(wake) => work.publish(&shared.snapshot.load_full(), &shared),
            _ = shared.feed_stats.reconfigured.notified() => work.publish(&shared.snapshot.load_full(), &shared),
        }
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// One reporter's view of one POP.
#[derive(Debug, Clone, Copy)]
struct View {
    /// Its current verdict (after hysteresis).
    up: bool,
    /// Consecutive reports disagreeing with `up`.
    pending: u32,
    health_at: Option<Instant>,
    load: Option<(f64, Instant)>,
}

/// One reporter's latest route measurement: rtt_ms, loss, when received.
type Measured = (f64, f64, Instant);

#[derive(Debug, Default)]
struct Reporter {
    last_ts: u64,
    tokens: f64,
    refilled: Option<Instant>,
}

#[derive(Default)]
struct Work {
    reporters: HashMap<String, Reporter>,
    /// pop id -> reporter -> view
    pops: HashMap<String, HashMap<String, View>>,
    /// (pop id, group) -> reporter -> (rtt, loss, when)
    routes: HashMap<(String, String), HashMap<String, Measured>>,
    /// pop id -> unix ms of its newest accepted report
    last_report_ms: HashMap<String, u64>,
    next_expiry: Option<Instant>,
    generation: u64,
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
        let cfg = snap.feed.as_ref().ok_or(Drop::UnknownReporter)?;
        let env = feed::envelope(d, cfg.max_datagram)?;
        let key = cfg.keys.get(env.reporter).ok_or(Drop::UnknownReporter)?;
        if !feed::mac_ok(key, env.body, &env.mac) {
            return Err(Drop::BadMac);
        }
        let json = feed::body_json(env.body)?;
        let ts = feed::ts_of(&json)?;
        let last = self.reporters.get(env.reporter).map_or(0, |r| r.last_ts);
        if ts <= last {
            return Err(Drop::Replay);
        }
        if ts.abs_diff(now_ms) > cfg.max_skew.as_millis() as u64 {
            return Err(Drop::Skew);
        }
        let report =
            feed::report(&json, |p| snap.pops.find(p).is_some(), |g| GroupKey::parse(g, &snap.isps).is_some())?;
        let reporter = self.reporters.entry(env.reporter.to_string()).or_default();
        if !take_token(reporter, cfg.max_reports_per_second, now) {
            return Err(Drop::Rate);
        }
        reporter.last_ts = ts;
        self.apply(env.reporter, &report, cfg, now);
        Ok(())
    }

    fn apply(&mut self, reporter: &str, r: &Report, cfg: &FeedConfig, now: Instant) {
        for p in &r.pops {
            self.last_report_ms.insert(p.id.clone(), r.ts);
            let views = self.pops.entry(p.id.clone()).or_default();
            let fresh = |at: Option<Instant>| at.is_some_and(|t| now.duration_since(t) <= cfg.stale_after);
            let v =
                views.entry(reporter.to_string()).or_insert(View { up: true, pending: 0, health_at: None, load: None });
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
                v.load = Some((load, now));
            }
        }
        for rt in &r.routes {
            self.last_report_ms.insert(rt.pop.clone(), r.ts);
            self.routes
                .entry((rt.pop.clone(), rt.group.clone()))
                .or_default()
                .insert(reporter.to_string(), (rt.rtt_ms, rt.loss, now));
        }
    }

    /// Build and store a new table from the fresh data; forget expired data.
    fn publish(&mut self, snap: &Snapshot, shared: &Shared) {
        let now = Instant::now();
        let (stale, quorum) = match &snap.feed {
            Some(f) => (f.stale_after, f.quorum),
            None => (Duration::ZERO, Quorum::Majority),
        };
        let fresh = |t: Instant| now.duration_since(t) <= stale;
        let mut next: Option<Instant> = None;
        let mut note = |t: Instant| {
            let e = t + stale + Duration::from_millis(1);
            next = Some(next.map_or(e, |n: Instant| n.min(e)));
        };

        // Forget what expired.
        for views in self.pops.values_mut() {
            for v in views.values_mut() {
                if v.health_at.is_some_and(|t| !fresh(t)) {
                    v.health_at = None;
                }
                if v.load.is_some_and(|(_, t)| !fresh(t)) {
                    v.load = None;
                }
            }
            views.retain(|_, v| v.health_at.is_some() || v.load.is_some());
        }
        self.pops.retain(|_, v| !v.is_empty());
        for by in self.routes.values_mut() {
            by.retain(|_, (_, _, t)| fresh(*t));
        }
        self.routes.retain(|_, by| !by.is_empty());

        let mut pops = Vec::with_capacity(snap.pops.len());
        for pop in &snap.pops.list {
            let mut st = PopState { last_report_ms: self.last_report_ms.get(&pop.id).copied(), ..Default::default() };
            if let Some(views) = self.pops.get(&pop.id) {
                let (mut seen, mut down) = (0u32, 0u32);
                let mut loads = Vec::new();
                for v in views.values() {
                    if let Some(t) = v.health_at {
                        note(t);
                        seen += 1;
                        down += u32::from(!v.up);
                    }
                    if let Some((l, t)) = v.load {
                        note(t);
                        loads.push(l);
                    }
                }
                st.health = match (seen, quorum) {
                    (0, _) => Health::Unknown,
                    (n, Quorum::Majority) if down * 2 > n => Health::Down,
                    (_, Quorum::Count(k)) if down >= k => Health::Down,
                    _ => Health::Up,
                };
                st.load = median(&mut loads);
            }
            pops.push(st);
        }
        let mut routes: HashMap<GroupKey, Box<[Option<Route>]>> = HashMap::new();
        for ((pop, group), by) in &self.routes {
            let (Some(id), Some(key)) = (snap.pops.find(pop), GroupKey::parse(group, &snap.isps)) else { continue };
            let mut rtts: Vec<f64> = by.values().map(|v| v.0).collect();
            let mut losses: Vec<f64> = by.values().map(|v| v.1).collect();
            by.values().for_each(|v| note(v.2));
            let (Some(rtt_ms), Some(loss)) = (median(&mut rtts), median(&mut losses)) else { continue };
            let row = routes.entry(key).or_insert_with(|| vec![None; snap.pops.len()].into_boxed_slice());
            row[id.0 as usize] = Some(Route { rtt_ms, loss });
        }
        self.next_expiry = next;
        self.generation += 1;
        shared.quality.store(Arc::new(Quality {
            generation: self.generation,
            config_generation: snap.generation,
            pops,
            routes,
        }));
        shared.feed_stats.published.fetch_add(1, Ordering::Release);
    }
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

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
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
