//! What the unit tests share: the shipped config and a seeded random source.

use crate::config::Snapshot;

/// The shipped configuration with its demo databases.
pub fn demo() -> Snapshot {
    crate::config::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/popdns.yaml"))).unwrap()
}

/// A xorshift64 source: `next(m)` is below `m`, or any u64 for `m == 0`.
/// Seeded, so a failing case repeats.
pub fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |m| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if m == 0 { x } else { x % m }
    }
}
