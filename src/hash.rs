//! FNV-1a for the maps the query path reads.
//!
//! Those maps (zone names, route-quality groups) are built by config and the
//! authenticated feed and only read by queries, so a query cannot grow them
//! with chosen collisions: the cheap hash is safe there, and SipHash was a
//! visible share of a query's cost in profiles.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default)]
pub struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `HashMap<K, V, Fnv>`.
pub type Fnv = BuildHasherDefault<FnvHasher>;

/// The FNV hash of a value, for sorting values that have no order of their own.
pub fn key_of<T: std::hash::Hash>(v: &T) -> u64 {
    let mut h = FnvHasher::default();
    v.hash(&mut h);
    std::hash::Hasher::finish(&h)
}
