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

/// POPs a ranking holds in itself: near-equal ones and the rest.
const INLINE: usize = 22;
/// Most near-equal POPs held inline (room stays for `MAX_ANSWERS` others).
/// More (dense inventories: dozens of POPs within `spread_ms`) go to the
/// cache's arena, or, without a cache, are picked from the candidates.
pub const NEAR_INLINE: usize = INLINE - MAX_ANSWERS;
/// `spill` of a ranking whose near-equal POPs are inline.
const NO_SPILL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranking {
    /// The near-equal POPs (within `spread_ms` of the best), in candidate
    /// order, unless spilled; then up to `MAX_ANSWERS` others, best first.
    pops: [PopId; INLINE],
    /// How many POPs are near-equal.
    near: u16,
    /// POPs used in `pops`.
    len: u8,
    pub fallback: Option<Fallback>,
    /// Where the near-equal POPs start in the arena, when there are more
    /// than `NEAR_INLINE` (then none are inline, and no others are needed:
    /// `near` already exceeds any answer count).
    spill: u32,
}

/// What the candidates that pass a filter make.
pub enum Ranked {
    /// None passes.
    Empty,
    Fits(Ranking),
    /// More near-equal POPs than the ranking (and the arena) can hold.
    TooMany,
}

impl Ranking {
    /// No POP: the answer is NODATA.
    pub fn empty(fallback: Option<Fallback>) -> Ranking {
        Ranking { pops: [PopId(0); INLINE], near: 0, len: 0, fallback, spill: NO_SPILL }
    }

    /// The ranking of the candidates that pass `ok`. Near-equal POPs beyond
    /// `NEAR_INLINE` are appended to `arena` when it has room for them.
    pub fn of(
        snap: &Snapshot,
        cands: &[Candidate],
        ok: impl Fn(&Candidate) -> bool,
        fallback: Option<Fallback>,
        arena: Option<&mut Vec<PopId>>,
    ) -> Ranked {
        let best = cands.iter().filter(|c| ok(c)).map(|c| c.score).fold(f64::INFINITY, f64::min);
        if !best.is_finite() {
            return Ranked::Empty;
        }
        let near_limit = best + snap.scoring.spread_ms;
        let is_near = |c: &&Candidate| ok(c) && c.score <= near_limit;
        let mut r = Ranking::empty(fallback);
        let near = cands.iter().filter(is_near).count();
        if near > NEAR_INLINE {
            return match arena {
                Some(a) if near <= u16::MAX as usize && a.capacity() - a.len() >= near => {
                    r.spill = a.len() as u32;
                    r.near = near as u16;
                    a.extend(cands.iter().filter(is_near).map(|c| c.pop));
                    Ranked::Fits(r)
                }
                _ => Ranked::TooMany,
            };
        }
        for c in cands.iter().filter(is_near) {
            r.pops[r.len as usize] = c.pop;
            r.len += 1;
        }
        r.near = near as u16;
        // The rest: the best MAX_ANSWERS by (score, POP).
        let mut rest = TopK::new(MAX_ANSWERS);
        // Not `score > near_limit`: a NaN score is in pick's rest too.
        for c in cands.iter().filter(|c| ok(c) && !is_near(c)) {
            rest.offer(c.score, c.pop);
        }
        for (_, p) in rest.items() {
            r.pops[r.len as usize] = *p;
            r.len += 1;
        }
        Ranked::Fits(r)
    }

    /// Up to `want` POPs for a client whose network hashes to `hash`: the
    /// near-equal ones in order of their draw, then the rest by score.
    /// `arena` is the one the ranking was made with.
    pub fn choose(&self, snap: &Snapshot, want: usize, hash: u64, arena: &[PopId]) -> Decision {
        let mut d = Decision { pops: [PopId(0); MAX_ANSWERS], len: 0, fallback: self.fallback };
        let want = want.min(MAX_ANSWERS);
        if want == 0 {
            return d;
        }
        let near = if self.spill == NO_SPILL {
            &self.pops[..self.near as usize]
        } else {
            &arena[self.spill as usize..self.spill as usize + self.near as usize]
        };
        if near.len() == 1 {
            d.pops[0] = near[0];
            d.len = 1;
        } else {
            let mut by_draw = TopK::new(want);
            for p in near {
                by_draw.offer(draw(hash, *p, snap.pops.get(*p).capacity), *p);
            }
            for (_, p) in by_draw.items() {
                d.pops[d.len as usize] = *p;
                d.len += 1;
            }
        }
        let inline_near = if self.spill == NO_SPILL { self.near as usize } else { 0 };
        for p in &self.pops[inline_near..self.len as usize] {
            if d.len as usize >= want {
                break;
            }
            d.pops[d.len as usize] = *p;
            d.len += 1;
        }
        d
    }
}

/// The k smallest (key, POP) pairs offered, in order (ties by POP).
struct TopK {
    items: [(f64, PopId); MAX_ANSWERS],
    len: usize,
    k: usize,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK { items: [(f64::INFINITY, PopId(u16::MAX)); MAX_ANSWERS], len: 0, k: k.min(MAX_ANSWERS) }
    }

    fn offer(&mut self, key: f64, pop: PopId) {
        let before = |a: (f64, PopId), b: (f64, PopId)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).is_lt();
        let item = (key, pop);
        if self.k == 0 || (self.len == self.k && !before(item, self.items[self.len - 1])) {
            return;
        }
        let mut i = self.len.min(self.k - 1);
        while i > 0 && before(item, self.items[i - 1]) {
            self.items[i] = self.items[i - 1];
            i -= 1;
        }
        self.items[i] = item;
        self.len = (self.len + 1).min(self.k);
    }

    fn items(&self) -> &[(f64, PopId)] {
        &self.items[..self.len]
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
        let snap = crate::testing::demo();
        let n = snap.pops.len() as u64;
        let mut next = crate::testing::xorshift(0x2545_F491_4F6C_DD1D);
        let (mut fits, mut too_many, mut empty) = (0, 0, 0);
        for r in 0..20_000 {
            let k = 1 + next(n);
            let mut pops: Vec<u16> = (0..n as u16).collect();
            let mut cands = Vec::new();
            for _ in 0..k {
                let i = next(pops.len() as u64) as usize;
                // Scores on a coarse grid, so ties and exact spread limits
                // occur; now and then all within the spread.
                let score = next(if r % 8 == 0 { 2 } else { 40 }) as f64 * 2.5;
                cands.push(cand(pops.swap_remove(i), score, next(4) != 0));
            }
            let ok = |c: &Candidate| c.removed_by.is_none();
            let hash = next(0);
            for want in 1..=MAX_ANSWERS {
                let expected = pick(&snap, &cands, want, hash, ok, None);
                match Ranking::of(&snap, &cands, ok, None, None) {
                    Ranked::Fits(r) => {
                        fits += 1;
                        assert_eq!(r.choose(&snap, want, hash, &[]), expected, "{cands:?} want {want}");
                    }
                    Ranked::Empty => {
                        empty += 1;
                        assert_eq!(expected.len, 0);
                    }
                    Ranked::TooMany => {
                        too_many += 1;
                        // Spilled into an arena that already holds another ranking's POPs.
                        let mut arena = Vec::with_capacity(snap.pops.len() + 1);
                        arena.push(PopId(7));
                        let Ranked::Fits(r) = Ranking::of(&snap, &cands, ok, None, Some(&mut arena)) else {
                            panic!("the arena had room: {cands:?}");
                        };
                        assert_eq!(r.choose(&snap, want, hash, &arena), expected, "{cands:?} want {want}");
                        let mut small = Vec::with_capacity(NEAR_INLINE);
                        assert!(matches!(Ranking::of(&snap, &cands, ok, None, Some(&mut small)), Ranked::TooMany));
                    }
                }
            }
        }
        assert!(fits > 100_000 && empty > 0 && too_many > 0, "{fits} {empty} {too_many}");
    }
}
