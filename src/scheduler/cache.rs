//! Each query worker's cache of rankings, keyed by client cell, ranking class
//! (POP list and coverage) and address family, valid for one pair of config
//! and route-quality generations.
//!
//! Per worker, so it takes no lock; allocated once, so a query allocates
//! nothing; two ways per bucket and the bucket chosen by cell alone, so a
//! lookup reads two cache lines that the UDP worker prefetched with the
//! cell (`prefetch`), and the A and AAAA rankings of a cell (or two names'
//! rankings) live side by side. A new generation of either
//! snapshot empties it at once (by moving to a new epoch, not by clearing):
//! a cached ranking never outlives the data it was computed from, which keeps
//! cached answers byte for byte what `decide` computes.
//!
//! A second, smaller table holds the rankings that do not depend on the
//! cell at all: those where every POP whose score can matter was measured
//! (distance and ISP match only enter estimated scores), which are a
//! function of the route rows the client's groups select (`RowsKey`). Under a busy feed every
//! publish starts a new epoch; the cells then refill from this table, one
//! entry per group set in use, instead of each scoring every POP again.

use super::ranking::Ranking;
use super::score::RowsKey;
use crate::config::Snapshot;
use crate::geo::cells::CellId;
use crate::pages::HugeSlice;
use crate::pops::{Family, PopId};
use crate::quality::Quality;
use crate::zones::RankingClass;

/// Slots per worker (a power of two): 64 Ki slots of 64 bytes, 4 MiB.
pub const SLOTS: usize = 1 << 16;
/// Slots per bucket.
const WAYS: usize = 2;
/// POP ids per worker for rankings with many near-equal POPs (2 MiB; its
/// pages are touched only in inventories dense enough to need them).
pub const ARENA: usize = 1 << 20;
/// Slots of the table keyed by route rows (a power of two; 512 KiB).
pub const ROW_SLOTS: usize = 1 << 12;

/// One cache line: aligned, so a slot never straddles two.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    key: u64,
    /// The epoch the ranking was computed in; 0 never matches.
    epoch: u32,
    ranking: Ranking,
}

/// A ranking shared by every cell whose groups select these route rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct RowSlot {
    rows: RowsKey,
    class: RankingClass,
    family: Family,
    epoch: u32,
    ranking: Ranking,
}

pub struct RankCache {
    slots: HugeSlice<Slot>,
    /// Direct-mapped, by a hash of (rows, class, family).
    by_rows: Box<[RowSlot]>,
    /// The near-equal POPs of this epoch's spilled rankings (its capacity
    /// is fixed: a ranking that might not fit starts a new epoch first).
    arena: Vec<PopId>,
    epoch: u32,
    /// log2 of the number of buckets.
    bucket_bits: u32,
    /// (config generation, quality generation) of the current epoch.
    seen: Option<(u64, u64)>,
    /// Epochs begun (tests and reports read it).
    pub epochs: u64,
    pub hits: u64,
    pub misses: u64,
    /// Misses answered from the table keyed by route rows.
    pub row_hits: u64,
}

impl Default for RankCache {
    fn default() -> Self {
        RankCache::with_sizes(SLOTS, ARENA)
    }
}

impl RankCache {
    /// `slots` is rounded up to a power of two (at least one bucket); `arena` is in POP ids.
    pub fn with_sizes(slots: usize, arena: usize) -> RankCache {
        let empty = Slot { key: 0, epoch: 0, ranking: Ranking::empty(None) };
        let slots = slots.next_power_of_two().max(WAYS);
        let row_slot = RowSlot {
            rows: RowsKey::default(),
            class: RankingClass(0),
            family: Family::V4,
            epoch: 0,
            ranking: empty.ranking,
        };
        let row_slots = (slots / 16).clamp(64, ROW_SLOTS);
        RankCache {
            slots: HugeSlice::filled(empty, slots),
            by_rows: vec![row_slot; row_slots].into_boxed_slice(),
            arena: Vec::with_capacity(arena),
            epoch: 0,
            bucket_bits: (slots / WAYS).trailing_zeros(),
            seen: None,
            epochs: 0,
            hits: 0,
            misses: 0,
            row_hits: 0,
        }
    }

    /// Start a new epoch when either snapshot changed. The pair names the
    /// data exactly: the writer never publishes two tables with one generation.
    fn sync(&mut self, snap: &Snapshot, quality: &Quality) {
        let now = Some((snap.generation, quality.generation));
        if now != self.seen {
            self.seen = now;
            self.flush();
        }
    }

    /// Forget every ranking: a new epoch, an empty arena.
    fn flush(&mut self) {
        self.epochs += 1;
        self.epoch = self.epoch.wrapping_add(1);
        self.arena.clear();
        if self.epoch == 0 {
            // After 2^32 epochs: forget every slot rather than trust an old one.
            self.slots.iter_mut().for_each(|s| s.epoch = 0);
            self.by_rows.iter_mut().for_each(|s| s.epoch = 0);
            self.epoch = 1;
        }
    }

    /// The first slot of the cell's bucket. Fibonacci hashing (the top bits
    /// of the product): neighbouring cells spread over the table.
    fn bucket(&self, cell: CellId) -> usize {
        let h = (cell.0 as u64 | 1 << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h.checked_shr(64 - self.bucket_bits).unwrap_or(0) as usize) * WAYS
    }

    /// Start loading the cell's bucket (the UDP worker calls it for a whole
    /// batch before answering, with the cells it prefetched).
    pub fn prefetch(&self, cell: CellId) {
        let b = self.bucket(cell);
        crate::geo::cells::prefetch(&self.slots[b]);
        crate::geo::cells::prefetch(&self.slots[b + 1]);
    }

    pub fn get(
        &mut self,
        snap: &Snapshot,
        quality: &Quality,
        cell: CellId,
        class: RankingClass,
        family: Family,
    ) -> Option<Ranking> {
        self.sync(snap, quality);
        let key = key(cell, class, family);
        let b = self.bucket(cell);
        let found = self.slots[b..b + WAYS].iter().find(|s| s.epoch == self.epoch && s.key == key);
        match found {
            Some(s) => {
                self.hits += 1;
                Some(s.ranking)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// The ranking every client whose groups select `rows` gets, if one was
    /// stored this epoch (`get` has synced the epoch for this query).
    pub fn get_by_rows(&mut self, rows: &RowsKey, class: RankingClass, family: Family) -> Option<Ranking> {
        let s = &self.by_rows[self.row_index(rows, class, family)];
        let found = s.epoch == self.epoch && s.rows == *rows && s.class == class && s.family == family;
        self.row_hits += u64::from(found);
        found.then_some(s.ranking)
    }

    /// Store a ranking in which every POP whose score can matter was
    /// measured (so the cell did not enter it), computed from the snapshots
    /// last passed to `get`.
    pub fn put_by_rows(&mut self, rows: RowsKey, class: RankingClass, family: Family, ranking: Ranking) {
        let i = self.row_index(&rows, class, family);
        self.by_rows[i] = RowSlot { rows, class, family, epoch: self.epoch, ranking };
    }

    fn row_index(&self, rows: &RowsKey, class: RankingClass, family: Family) -> usize {
        let mut h = (class.0 as u64) << 1 | u64::from(family == Family::V6);
        for r in rows.0 {
            h = (h ^ r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23);
        }
        (h as usize) & (self.by_rows.len() - 1)
    }

    /// The arena the current epoch's rankings spill into.
    pub fn arena(&self) -> &[PopId] {
        &self.arena
    }

    /// The arena, with room for `need` more POPs: when it has less, every
    /// ranking is forgotten (a dense inventory fills it; the next queries
    /// refill it with the cells in use).
    pub fn arena_with_room(&mut self, need: usize) -> &mut Vec<PopId> {
        if self.arena.capacity() - self.arena.len() < need {
            self.flush();
        }
        &mut self.arena
    }

    /// Store a ranking computed from the snapshots last passed to `get`.
    /// The newest goes first in its bucket; the older one moves to the
    /// second way unless that way is the one being replaced.
    pub fn put(&mut self, cell: CellId, class: RankingClass, family: Family, ranking: Ranking) {
        let key = key(cell, class, family);
        let b = self.bucket(cell);
        let first = self.slots[b];
        if !(first.epoch == self.epoch && first.key == key) {
            self.slots[b + 1] = first;
        }
        self.slots[b] = Slot { key, epoch: self.epoch, ranking };
    }
}

fn key(cell: CellId, class: RankingClass, family: Family) -> u64 {
    // Classes are counted per snapshot, far below 2^31 (config rejects more).
    debug_assert!(class.0 < 1 << 31);
    (cell.0 as u64) << 32 | (class.0 as u64) << 1 | u64::from(family == Family::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_one_aligned_cache_line() {
        // One line per way: the table's size and speed rest on it.
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<RowSlot>(), 128);
    }
}
