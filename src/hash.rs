//! The hash of the maps the query path reads.
//!
//! Those maps (zone names, route-quality groups) are built by config and the
//! authenticated feed and only read by queries, so a query cannot grow them
//! with chosen collisions: a fast unkeyed hash is safe there. SipHash, and
//! then byte-at-a-time FNV, were a visible share of a query's cost in
//! profiles; rustc-hash's FxHasher takes a name eight bytes at a time.

/// `HashMap<K, V, Fast>`.
pub type Fast = rustc_hash::FxBuildHasher;

/// The hash of a value, for sorting values that have no order of their own
/// (deterministic: the same in every process).
pub fn key_of<T: std::hash::Hash>(v: &T) -> u64 {
    use std::hash::BuildHasher;
    Fast::default().hash_one(v)
}
