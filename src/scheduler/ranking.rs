//! A ranking: what a decision is before the client's hash is known.
//!
//! Every input of a decision except the rendezvous hash comes from the
//! client's cell (location, ISP), the name's POP list and coverage, the
//! address family and the two snapshots. So the part that costs (scoring
//! every POP, the filters, the fail-open ladder) is done once per cell and
//! kept as a `Ranking`: the near-equal POPs and the next ones by score. A
//! query then costs the draws among the near-equal POPs (`choose`).
//!
//! `choose` gives exactly what `pick::pick` gives over the same candidates;
//! the unit tests below hold the two together.

use super::pick::draw;
use super::{Candidate, Decision, Fallback, MAX_ANSWERS};
use crate::config::Snapshot;
use crate::pops::PopId;

/// Most near-equal POPs a ranking holds; a cell with more (unlocated
/// clients before many equal POPs) is decided from its candidates each time.
pub const NEAR_MAX: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranking {
    /// `near` near-equal POPs (within `spread_ms` of the best), in candidate
    /// order; then up to `MAX_ANSWERS` others, best score first.
    pops: [PopId; NEAR_MAX + MAX_ANSWERS],
    near: u8,
    len: u8,
    pub fallback: Option<Fallback>,
}

/// What the candidates that pass a filter make.
pub enum Ranked {
    /// None passes.
    Empty,
    Fits(Ranking),
    /// More near-equal POPs than a ranking holds.
    TooMany,
}

impl Ranking {
    /// No POP: the answer is NODATA.
    pub fn empty(fallback: Option<Fallback>) -> Ranking {
        Ranking { pops: [PopId(0); NEAR_MAX + MAX_ANSWERS], near: 0, len: 0, fallback }
    }

    /// The ranking of the candidates that pass `ok`.
    pub fn of(
        snap: &Snapshot,
        cands: &[Candidate],
        ok: impl Fn(&Candidate) -> bool,
        fallback: Option<Fallback>,
    ) -> Ranked {
        let best = cands.iter().filter(|c| ok(c)).map(|c| c.score).fold(f64::INFINITY, f64::min);
        if !best.is_finite() {
            return Ranked::Empty;
        }
        let near_limit = best + snap.scoring.spread_ms;
        let mut r = Ranking::empty(fallback);
        for c in cands.iter().filter(|c| ok(c) && c.score <= near_limit) {
            if r.near as usize == NEAR_MAX {
                return Ranked::TooMany;
            }
            r.pops[r.near as usize] = c.pop;
            r.near += 1;
        }
        // The rest: the best MAX_ANSWERS by (score, POP), by insertion into a short sorted list.
        let mut rest: [(f64, PopId); MAX_ANSWERS] = [(f64::INFINITY, PopId(u16::MAX)); MAX_ANSWERS];
        let mut n = 0;
        for c in cands.iter().filter(|c| ok(c) && c.score > near_limit) {
            let item = (c.score, c.pop);
            let before = |a: &(f64, PopId), b: &(f64, PopId)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).is_lt();
            if n == MAX_ANSWERS && !before(&item, &rest[n - 1]) {
                continue;
            }
            let mut i = n.min(MAX_ANSWERS - 1);
            while i > 0 && before(&item, &rest[i - 1]) {
                rest[i] = rest[i - 1];
                i -= 1;
            }
            rest[i] = item;
            n = (n + 1).min(MAX_ANSWERS);
        }
        for (_, p) in &rest[..n] {
            r.pops[r.near as usize + r.len as usize] = *p;
            r.len += 1;
        }
        r.len += r.near;
        Ranked::Fits(r)
    }

    /// Up to `want` POPs for a client whose network hashes to `hash`: the
    /// near-equal ones in order of their draw, then the rest by score.
    pub fn choose(&self, snap: &Snapshot, want: usize, hash: u64) -> Decision {
        let mut d = Decision { pops: [PopId(0); MAX_ANSWERS], len: 0, fallback: self.fallback };
        let want = want.min(MAX_ANSWERS);
        let near = &self.pops[..self.near as usize];
        if near.len() == 1 {
            d.pops[0] = near[0];
            d.len = 1;
        } else {
            let mut draws = [(0f64, PopId(0)); NEAR_MAX];
            for (slot, p) in draws.iter_mut().zip(near) {
                *slot = (draw(hash, *p, snap.pops.get(*p).capacity), *p);
            }
            let draws = &mut draws[..near.len()];
            let k = want.min(draws.len());
            // Partial selection sort: the k smallest draws, in order.
            for i in 0..k {
                let mut m = i;
                for j in i + 1..draws.len() {
                    if draws[j].0.total_cmp(&draws[m].0).then(draws[j].1.cmp(&draws[m].1)).is_lt() {
                        m = j;
                    }
                }
                draws.swap(i, m);
                d.pops[i] = draws[i].1;
            }
            d.len = k as u8;
        }
        for p in &self.pops[self.near as usize..self.len as usize] {
            if d.len as usize >= want {
                break;
            }
            d.pops[d.len as usize] = *p;
            d.len += 1;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::super::pick::pick;
    use super::*;
    use crate::pops::Health;

    fn cand(pop: u16, score: f64, ok: bool) -> Candidate {
        Candidate {
            pop: PopId(pop),
            distance_km: None,
            isp_match: true,
            rtt_ms: score,
            loss: None,
            group: None,
            estimated: true,
            load: 0.0,
            health: Health::Up,
            up: true,
            drained: false,
            overloaded: false,
            score,
            removed_by: if ok { None } else { Some(super::super::Removal::Health) },
        }
    }

    /// `choose` over a ranking = `pick` over the candidates, on random
    /// candidate sets with ties, removals and every answer count.
    #[test]
    fn choose_agrees_with_pick() {
        let snap = super::super::tests::demo();
        let n = snap.pops.len() as u64;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut fits, mut too_many, mut empty) = (0, 0, 0);
        for r in 0..20_000 {
            let k = 1 + next() % n;
            let mut pops: Vec<u16> = (0..n as u16).collect();
            let mut cands = Vec::new();
            for _ in 0..k {
                let i = (next() % pops.len() as u64) as usize;
                // Scores on a coarse grid, so ties and exact spread limits
                // occur; now and then all within the spread.
                let score = (next() % if r % 8 == 0 { 2 } else { 40 }) as f64 * 2.5;
                cands.push(cand(pops.swap_remove(i), score, !next().is_multiple_of(4)));
            }
            let ok = |c: &Candidate| c.removed_by.is_none();
            let hash = next();
            for want in 1..=MAX_ANSWERS {
                let expected = pick(&snap, &cands, want, hash, ok, None);
                match Ranking::of(&snap, &cands, ok, None) {
                    Ranked::Fits(r) => {
                        fits += 1;
                        assert_eq!(r.choose(&snap, want, hash), expected, "{cands:?} want {want}");
                    }
                    Ranked::Empty => {
                        empty += 1;
                        assert_eq!(expected.len, 0);
                    }
                    Ranked::TooMany => too_many += 1,
                }
            }
        }
        assert!(fits > 100_000 && empty > 0 && too_many > 0, "{fits} {empty} {too_many}");
    }
}
