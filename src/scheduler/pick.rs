//! The stable, capacity-weighted choice among near-equal POPs.
//!
//! Weighted rendezvous hashing: each near POP draws `-ln(u) / capacity` with
//! `u` from a hash of (the client's cell block, POP index); the smallest draw
//! wins. A subnet keeps its POP while others come and go, load spreads in
//! proportion to capacity, and every address inside the answer's scope
//! hashes alike, so the scope stays truthful.

use std::net::IpAddr;

use super::{Candidate, Decision, Fallback, MAX_ANSWERS};
use crate::config::Snapshot;
use crate::pops::PopId;

/// Hash of the client's address truncated to `scope` bits (and of `scope`).
pub fn client_hash(ip: IpAddr, scope: u8) -> u64 {
    let bits: u128 = match ip {
        IpAddr::V4(a) => {
            let v = u32::from(a) as u128;
            let s = scope.min(32) as u32;
            if s == 0 { 0 } else { v & (u32::MAX << (32 - s)) as u128 }
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            let s = scope.min(128) as u32;
            if s == 0 { 0 } else { v & (u128::MAX << (128 - s)) }
        }
    };
    let fam = if ip.is_ipv4() { 4u64 } else { 6u64 };
    mix(mix(bits as u64 ^ fam) ^ (bits >> 64) as u64 ^ ((scope as u64) << 56))
}

/// splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn draw(hash: u64, pop: PopId, capacity: u32) -> f64 {
    let h = mix(hash ^ (pop.0 as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // (0, 1]
    if capacity == 0 { f64::INFINITY } else { -u.ln() / capacity as f64 }
}

/// Up to `want` distinct POPs among the candidates that pass `ok`: first the
/// near-equal ones by draw, then the rest by score.
pub fn pick(
    snap: &Snapshot,
    cands: &[Candidate],
    want: usize,
    hash: u64,
    ok: impl Fn(&Candidate) -> bool,
    fallback: Option<Fallback>,
) -> Decision {
    let mut d = Decision { pops: [PopId(0); MAX_ANSWERS], len: 0, fallback };
    let best = cands.iter().filter(|c| ok(c)).map(|c| c.score).fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return d;
    }
    let near_limit = best + snap.scoring.spread_ms;
    let want = want.min(MAX_ANSWERS);
    let chosen = |d: &Decision, p: PopId| d.pops[..d.len as usize].contains(&p);
    // Near-equal POPs in order of their draw.
    while (d.len as usize) < want {
        let next = cands
            .iter()
            .filter(|c| ok(c) && c.score <= near_limit && !chosen(&d, c.pop))
            .map(|c| (draw(hash, c.pop, snap.pops.get(c.pop).capacity), c.pop))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        match next {
            Some((_, p)) => {
                d.pops[d.len as usize] = p;
                d.len += 1;
            }
            None => break,
        }
    }
    // Then the rest by score.
    while (d.len as usize) < want {
        let next = cands
            .iter()
            .filter(|c| ok(c) && !chosen(&d, c.pop))
            .min_by(|a, b| a.score.total_cmp(&b.score).then(a.pop.cmp(&b.pop)));
        match next {
            Some(c) => {
                d.pops[d.len as usize] = c.pop;
                d.len += 1;
            }
            None => break,
        }
    }
    d
}
