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

/// `../shared/geo` beside the checkout when it holds the real databases;
/// otherwise None after a loud notice, or a failure under `CI=true`
/// (nothing skips in CI), as the integration tests do.
pub fn real_geo_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/geo");
    if dir.join("city.mmdb").exists() && dir.join("asn.mmdb").exists() {
        return Some(dir);
    }
    let what = format!("the real databases are not in {}", dir.display());
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"), "CI=true and {what}: nothing skips under CI");
    eprintln!("\n!!!!!!!! SKIPPED: {what} !!!!!!!!\n");
    None
}
