//! Feed datagrams -> verified reports. Pure: no I/O and no clock reads (the
//! caller passes `now`), so every check is easy to test and to fuzz.
//!
//! Wire format (one datagram = one report):
//! `popdns1 <reporter-id> <mac>\n<body>` where `<mac>` is HMAC-SHA256 under the
//! reporter's key over the body bytes in lower-case hex, and the body is JSON:
//! `{"ts": <unix ms>, "pops": [{"id", "up", "load"}], "routes": [{"pop", "group", "rtt_ms", "loss"}]}`.
//!
//! Checks run in this order and the first failure names the drop reason:
//! oversize, malformed, unknown_reporter, bad_mac, replay, skew, invalid, rate.
//! The MAC is checked before the body is parsed.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::borrow::Cow;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a datagram was dropped (the `reason` label of `popdns_feed_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    Oversize,
    Malformed,
    UnknownReporter,
    BadMac,
    Replay,
    Skew,
    Invalid,
    Rate,
}

impl Drop {
    pub const ALL: [Drop; 8] = [
        Drop::Oversize,
        Drop::Malformed,
        Drop::UnknownReporter,
        Drop::BadMac,
        Drop::Replay,
        Drop::Skew,
        Drop::Invalid,
        Drop::Rate,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Oversize => "oversize",
            Drop::Malformed => "malformed",
            Drop::UnknownReporter => "unknown_reporter",
            Drop::BadMac => "bad_mac",
            Drop::Replay => "replay",
            Drop::Skew => "skew",
            Drop::Invalid => "invalid",
            Drop::Rate => "rate",
        }
    }
}

/// The header of a datagram, borrowed from it.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub reporter: &'a str,
    pub mac: [u8; 32],
    pub body: &'a [u8],
}

/// Split and check the header line (oversize, malformed).
pub fn envelope(d: &[u8], max_datagram: usize) -> Result<Envelope<'_>, Drop> {
    if d.len() > max_datagram {
        return Err(Drop::Oversize);
    }
    let nl = d.iter().position(|&b| b == b'\n').ok_or(Drop::Malformed)?;
    let header = std::str::from_utf8(&d[..nl]).map_err(|_| Drop::Malformed)?;
    let mut parts = header.split(' ');
    let (Some("popdns1"), Some(reporter), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Drop::Malformed);
    };
    if reporter.is_empty() || !reporter.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(Drop::Malformed);
    }
    if mac.len() != 64 || !mac.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Drop::Malformed);
    }
    let raw = decode_hex(mac).ok_or(Drop::Malformed)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&raw);
    Ok(Envelope { reporter, mac: out, body: &d[nl + 1..] })
}

/// Constant-time MAC check.
pub fn mac_ok(key: &[u8], body: &[u8], mac: &[u8; 32]) -> bool {
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(body);
            m.verify_slice(mac).is_ok()
        }
        Err(_) => false,
    }
}

/// Build a datagram (used by `popdns feed`, tests and benchmarks).
pub fn encode(reporter: &str, key: &[u8], body: &[u8]) -> Vec<u8> {
    let mac = match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(body);
            m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
        }
        Err(_) => String::new(),
    };
    let mut d = format!("popdns1 {reporter} {mac}\n").into_bytes();
    d.extend_from_slice(body);
    d
}

/// A POP state report. `P` is what the caller resolved the POP's name to (a
/// POP index in the writer, which keys its POP data by index only).
#[derive(Clone, Debug, PartialEq)]
pub struct PopReport<P> {
    pub pop: P,
    pub up: Option<bool>,
    pub load: Option<f64>,
}

/// A route measurement report; `G` is what the group name resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteReport<'a, P, G> {
    pub pop: Cow<'a, str>,
    pub group: Cow<'a, str>,
    pub pop_id: P,
    pub group_key: G,
    pub rtt_ms: f64,
    pub loss: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report<'a, P, G> {
    pub ts: u64,
    pub pops: Vec<PopReport<P>>,
    pub routes: Vec<RouteReport<'a, P, G>>,
}

/// A body's `ts`, and the report it holds or why it is `invalid`. The outer
/// error is `malformed` (not UTF-8 JSON) or `invalid` with no usable `ts`;
/// the inner one comes after `ts`, so the caller checks replay and skew first,
/// in the contract's order.
pub type Parsed<'a, P, G> = Result<(u64, Result<Report<'a, P, G>, Drop>), Drop>;

/// Parse and validate a body in one pass over the bytes (no JSON tree, no
/// copy of it, names borrowed from it): types, ranges, and POPs and groups
/// known to the current config, resolved once by `pop` and `group` so the
/// writer does not look them up again.
pub fn parse<'a, P: Copy, G: Copy>(
    body: &'a [u8],
    pop: impl Fn(&str) -> Option<P>,
    group: impl Fn(&str) -> Option<G>,
) -> Parsed<'a, P, G> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body<'a> {
        ts: u64,
        #[serde(default, borrow, deserialize_with = "presized")]
        pops: Vec<Pb<'a>>,
        #[serde(default, borrow, deserialize_with = "presized")]
        routes: Vec<Rb<'a>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pb<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        up: Option<bool>,
        load: Option<f64>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rb<'a> {
        #[serde(borrow)]
        pop: Cow<'a, str>,
        #[serde(borrow)]
        group: Cow<'a, str>,
        rtt_ms: f64,
        #[serde(default)]
        loss: f64,
    }
    #[derive(serde::Deserialize)]
    struct TsOnly {
        ts: u64,
    }
    let text = std::str::from_utf8(body).map_err(|_| Drop::Malformed)?;
    let b: Body<'a> = match serde_json::from_str(text) {
        Ok(b) => b,
        Err(e) if e.is_data() => {
            // Valid JSON of the wrong shape: `invalid`, after replay and skew
            // when its `ts` can be read.
            return match serde_json::from_str::<TsOnly>(text) {
                Ok(t) => Ok((t.ts, Err(Drop::Invalid))),
                Err(e) if e.is_data() => Err(Drop::Invalid),
                Err(_) => Err(Drop::Malformed),
            };
        }
        Err(_) => return Err(Drop::Malformed),
    };
    let unit = |x: f64| (0.0..=1.0).contains(&x);
    // Sized up front (collecting into an Option<Vec> would grow it step by step).
    let mut pops = Vec::with_capacity(b.pops.len());
    for p in b.pops {
        let ok = (p.up.is_some() || p.load.is_some()) && p.load.is_none_or(unit);
        let Some(id) = pop(&p.id).filter(|_| ok) else { return Ok((b.ts, Err(Drop::Invalid))) };
        pops.push(PopReport { pop: id, up: p.up, load: p.load });
    }
    let mut routes = Vec::with_capacity(b.routes.len());
    for r in b.routes {
        let ok = unit(r.loss) && r.rtt_ms >= 0.0 && r.rtt_ms < 1e6;
        let (Some(pop_id), Some(group_key)) = (pop(&r.pop).filter(|_| ok), group(&r.group)) else {
            return Ok((b.ts, Err(Drop::Invalid)));
        };
        routes.push(RouteReport { pop: r.pop, group: r.group, pop_id, group_key, rtt_ms: r.rtt_ms, loss: r.loss });
    }
    Ok((b.ts, Ok(Report { ts: b.ts, pops, routes })))
}

/// A JSON array into a `Vec` with room for a whole report from the start:
/// serde's own starts empty and doubles, and on the writer's cold caches
/// those reallocations were a tenth of its time.
fn presized<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Seq<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Seq<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).max(64));
            while let Some(x) = seq.next_element()? {
                v.push(x);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Seq(std::marker::PhantomData))
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef";

    #[test]
    fn round_trip_and_header_errors() {
        let d = encode("probe-1", KEY, br#"{"ts":1}"#);
        let e = envelope(&d, 8192).unwrap();
        assert_eq!(e.reporter, "probe-1");
        assert!(mac_ok(KEY, e.body, &e.mac));
        assert!(!mac_ok(b"another key 12345", e.body, &e.mac));
        assert_eq!(envelope(&d, 10), Err(Drop::Oversize));
        for bad in [&b"no newline"[..], b"popdns2 a 00\n{}", b"popdns1 a\n{}", b"popdns1 a b c\n{}", b"\xff\n{}"] {
            assert_eq!(envelope(bad, 8192), Err(Drop::Malformed), "{bad:?}");
        }
        let upper = String::from_utf8(d.clone()).unwrap().replacen('a', "A", 1);
        let _ = envelope(upper.as_bytes(), 8192); // no panic whatever it says
    }

    #[test]
    fn body_checks() {
        let yes = |_: &str| Some(());
        assert_eq!(parse(b"\xff", yes, yes), Err(Drop::Malformed));
        assert_eq!(parse(b"{", yes, yes), Err(Drop::Malformed));
        assert_eq!(parse(b"{}", yes, yes), Err(Drop::Invalid), "no ts");
        let v: &[u8] = br#"{"ts":5,"pops":[{"id":"a","up":true,"load":0.5}],"routes":[{"pop":"a","group":"*","rtt_ms":3,"loss":0}]}"#;
        assert_eq!(parse(v, yes, yes).unwrap().1.unwrap().pops[0].load, Some(0.5));
        assert_eq!(parse(v, |_| None::<()>, yes), Ok((5, Err(Drop::Invalid))));
        assert_eq!(parse(v, yes, |_| None::<()>), Ok((5, Err(Drop::Invalid))));
        // Names are resolved once, in the order given, and kept beside the names.
        let ids = |n: &str| Some(n.len());
        let r = parse(v, ids, |g: &str| Some(g.len() + 100)).unwrap().1.unwrap();
        assert_eq!((r.pops[0].pop, r.routes[0].pop_id, r.routes[0].group_key), (1, 1, 101));
        assert!(matches!(r.routes[0].pop, Cow::Borrowed("a")), "names are borrowed from the datagram");
        assert!(matches!(r.routes[0].group, Cow::Borrowed("*")), "names are borrowed from the datagram");
        assert_eq!(parse(br#"{"ts":"5"}"#, yes, yes), Err(Drop::Invalid), "a ts that is not a number");
        for bad in [
            r#"{"ts":5,"pops":[{"id":"a","load":1.5}]}"#,
            r#"{"ts":5,"routes":[{"pop":"a","group":"*","rtt_ms":-1,"loss":0}]}"#,
            r#"{"ts":5,"routes":[{"pop":"a","group":"*","rtt_ms":1,"loss":2}]}"#,
            r#"{"ts":5,"pops":[{"id":"a","up":"yes"}]}"#,
            r#"{"ts":5,"extra":1}"#,
        ] {
            assert_eq!(parse(bad.as_bytes(), yes, yes), Ok((5, Err(Drop::Invalid))), "{bad}");
        }
    }
}
