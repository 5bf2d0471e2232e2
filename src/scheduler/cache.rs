//! Each query worker's cache of rankings, keyed by client cell, ranking class
//! (POP list and coverage) and address family, valid for one pair of config
//! and route-quality generations.
//!
//! Per worker, so it takes no lock; allocated once, so a query allocates
//! nothing; direct-mapped, so a lookup is one slot. A new generation of either
//! snapshot empties it at once (by moving to a new epoch, not by clearing):
//! a cached ranking never outlives the data it was computed from, which keeps
//! cached answers byte for byte what `decide` computes.

use super::ranking::Ranking;
use crate::config::Snapshot;
use crate::geo::cells::CellId;
use crate::pops::{Family, PopId};
use crate::quality::Quality;
use crate::zones::RankingClass;

/// Slots per worker (a power of two): 64 Ki slots of 64 bytes, 4 MiB.
pub const SLOTS: usize = 1 << 16;
/// POP ids per worker for rankings with many near-equal POPs (2 MiB; its
/// pages are touched only in inventories dense enough to need them).
pub const ARENA: usize = 1 << 20;

#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    /// The epoch the ranking was computed in; 0 never matches.
    epoch: u32,
    ranking: Ranking,
}

pub struct RankCache {
    slots: Box<[Slot]>,
    /// The near-equal POPs of this epoch's spilled rankings (its capacity
    /// is fixed: a ranking that might not fit starts a new epoch first).
    arena: Vec<PopId>,
    epoch: u32,
    /// (config generation, quality generation) of the current epoch.
    seen: (u64, u64),
    pub hits: u64,
    pub misses: u64,
}

impl Default for RankCache {
    fn default() -> Self {
        RankCache::with_sizes(SLOTS, ARENA)
    }
}

impl RankCache {
    /// `slots` is rounded up to a power of two; `arena` is in POP ids.
    pub fn with_sizes(slots: usize, arena: usize) -> RankCache {
        let empty = Slot { key: 0, epoch: 0, ranking: Ranking::empty(None) };
        RankCache {
            slots: vec![empty; slots.next_power_of_two()].into_boxed_slice(),
            arena: Vec::with_capacity(arena),
            epoch: 0,
            seen: (u64::MAX, u64::MAX),
            hits: 0,
            misses: 0,
        }
    }

    /// Start a new epoch when either snapshot changed.
    fn sync(&mut self, snap: &Snapshot, quality: &Quality) {
        let now = (snap.generation, quality.generation);
        if now != self.seen {
            self.seen = now;
            self.flush();
        }
    }

    /// Forget every ranking: a new epoch, an empty arena.
    fn flush(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.arena.clear();
        if self.epoch == 0 {
            // After 2^32 epochs: forget every slot rather than trust an old one.
            self.slots.iter_mut().for_each(|s| s.epoch = 0);
            self.epoch = 1;
        }
    }

    fn index(&self, key: u64) -> usize {
        // Fibonacci hashing: neighbouring cells spread over the table.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (self.slots.len() - 1)
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
        let s = &self.slots[self.index(key)];
        if s.epoch == self.epoch && s.key == key {
            self.hits += 1;
            Some(s.ranking)
        } else {
            self.misses += 1;
            None
        }
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
    pub fn put(&mut self, cell: CellId, class: RankingClass, family: Family, ranking: Ranking) {
        let key = key(cell, class, family);
        let i = self.index(key);
        self.slots[i] = Slot { key, epoch: self.epoch, ranking };
    }
}

fn key(cell: CellId, class: RankingClass, family: Family) -> u64 {
    (cell.0 as u64) << 32 | (class.0 as u64) << 1 | u64::from(family == Family::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_64_bytes() {
        // One cache line per lookup: the table's size and speed rest on it.
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }
}
