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
    if mac.len() != 64 {
        return Err(Drop::Malformed);
    }
    // Straight into the array (a Vec per datagram was a tenth of the
    // envelope's cost).
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(mac.as_bytes().chunks_exact(2)) {
        *o = (lower_hex(pair[0]).ok_or(Drop::Malformed)? << 4) | lower_hex(pair[1]).ok_or(Drop::Malformed)?;
    }
    Ok(Envelope { reporter, mac: out, body: &d[nl + 1..] })
}

/// A lower-case hex digit's value (the MAC is written in lower case).
fn lower_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
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
/// The names themselves are not kept: the writer needs them only for a
/// (POP, group) it has never seen, and gets them back from the config.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteReport<P, G> {
    pub pop: P,
    pub group: G,
    pub rtt_ms: f64,
    pub loss: f64,
}

/// A verified body, resolved against the config. The writer keeps one and
/// parses every datagram into it (`parse_into`), so a report costs no
/// allocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Report<P, G> {
    pub ts: u64,
    pub pops: Vec<PopReport<P>>,
    pub routes: Vec<RouteReport<P, G>>,
}

impl<P, G> Default for Report<P, G> {
    fn default() -> Self {
        Report { ts: 0, pops: Vec::new(), routes: Vec::new() }
    }
}

/// A body's `ts`, and whether its report is usable or why it is `invalid`.
/// The outer error is `malformed` (not UTF-8 JSON) or `invalid` with no
/// usable `ts`; the inner one comes after `ts`, so the caller checks replay
/// and skew first, in the contract's order.
pub type Parsed<T> = Result<(u64, Result<T, Drop>), Drop>;

/// Parse and validate a body into `out` (cleared first), in one pass over
/// the bytes (no JSON tree, no copy of it): types, ranges, and POPs and
/// groups known to the current config, resolved once by `pop` and `group`
/// so the writer does not look them up again. `out` holds the report only
/// when the inner result is `Ok`.
pub fn parse_into<P: Copy, G: Copy>(
    body: &[u8],
    pop: impl Fn(&str) -> Option<P>,
    group: impl Fn(&str) -> Option<G>,
    out: &mut Report<P, G>,
) -> Parsed<()> {
    let text = std::str::from_utf8(body).map_err(|_| Drop::Malformed)?;
    out.pops.clear();
    out.routes.clear();
    let mut valid = true;
    let plain = plain::body(text, &mut |item| valid = valid && resolve(item, &pop, &group, out).is_some());
    let ts = match plain {
        Some(ts) => ts,
        None => {
            out.pops.clear();
            out.routes.clear();
            let raw = match by_serde(text)? {
                Ok(raw) => raw,
                Err(ts) => return Ok((ts, Err(Drop::Invalid))),
            };
            let items = raw.pops.into_iter().map(Item::Pop).chain(raw.routes.into_iter().map(Item::Route));
            valid = items.into_iter().all(|item| resolve(item, &pop, &group, out).is_some());
            raw.ts
        }
    };
    out.ts = ts;
    Ok((ts, if valid { Ok(()) } else { Err(Drop::Invalid) }))
}

/// `parse_into` a new report (tests and tools; the writer reuses one).
pub fn parse<P: Copy, G: Copy>(
    body: &[u8],
    pop: impl Fn(&str) -> Option<P>,
    group: impl Fn(&str) -> Option<G>,
) -> Parsed<Report<P, G>> {
    let mut out = Report::default();
    let (ts, valid) = parse_into(body, pop, group, &mut out)?;
    Ok((ts, valid.map(|()| out)))
}

/// A body's fields before checks and name lookups (serde_json's reading).
#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    ts: u64,
    #[serde(default, borrow)]
    pops: Vec<RawPop<'a>>,
    #[serde(default, borrow)]
    routes: Vec<RawRoute<'a>>,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPop<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    up: Option<bool>,
    load: Option<f64>,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute<'a> {
    #[serde(borrow)]
    pop: Cow<'a, str>,
    #[serde(borrow)]
    group: Cow<'a, str>,
    rtt_ms: f64,
    #[serde(default)]
    loss: f64,
}

/// One element of a body's `pops` or `routes`, as either reader hands it on.
#[derive(Debug)]
enum Item<'a> {
    Pop(RawPop<'a>),
    Route(RawRoute<'a>),
}

/// Any JSON body, by serde_json. `Ok(Err(ts))`: valid JSON of the wrong
/// shape whose `ts` can be read (`invalid`, checked after replay and skew).
fn by_serde(text: &str) -> Result<Result<Raw<'_>, u64>, Drop> {
    #[derive(serde::Deserialize)]
    struct TsOnly {
        ts: u64,
    }
    // A body is an object. serde's derived structs would also read a JSON
    // array positionally (`[ts, [[id, up, load]], ...]`): a second format
    // the contract does not have, so any other JSON is `invalid`.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Drop::Invalid,
            Err(_) => Drop::Malformed,
        });
    }
    match serde_json::from_str(text) {
        Ok(raw) => Ok(Ok(raw)),
        Err(e) if e.is_data() => match serde_json::from_str::<TsOnly>(text) {
            Ok(t) => Ok(Err(t.ts)),
            Err(e) if e.is_data() => Err(Drop::Invalid),
            Err(_) => Err(Drop::Malformed),
        },
        Err(_) => Err(Drop::Malformed),
    }
}

/// Check an item's ranges, resolve its names and add it to `out`; None if
/// it is invalid.
fn resolve<P: Copy, G: Copy>(
    item: Item<'_>,
    pop: &impl Fn(&str) -> Option<P>,
    group: &impl Fn(&str) -> Option<G>,
    out: &mut Report<P, G>,
) -> Option<()> {
    let unit = |x: f64| (0.0..=1.0).contains(&x);
    match item {
        Item::Pop(p) => {
            let ok = (p.up.is_some() || p.load.is_some()) && p.load.is_none_or(unit);
            let id = pop(&p.id).filter(|_| ok)?;
            out.pops.push(PopReport { pop: id, up: p.up, load: p.load });
        }
        Item::Route(r) => {
            let ok = unit(r.loss) && r.rtt_ms >= 0.0 && r.rtt_ms < 1e6;
            let (pop, group) = (pop(&r.pop).filter(|_| ok)?, group(&r.group)?);
            out.routes.push(RouteReport { pop, group, rtt_ms: r.rtt_ms, loss: r.loss });
        }
    }
    Some(())
}

/// The plain form of a body, read by hand: what probes send (each key once,
/// no escapes, no nulls, numbers without sign or exponent). On the writer's
/// cold caches serde_json took about a quarter of its time per report.
/// Anything outside the plain form gives `None` and goes to serde_json, so
/// the result is always serde_json's: numbers are limited to those serde_json
/// computes exactly (significand below 2^53, at most 22 decimals), with the
/// same operations (the tests compare both ways on mutated bodies).
mod plain {
    use std::borrow::Cow;

    use super::{Item, RawPop, RawRoute};

    /// The body's `ts`, each element of `pops` and `routes` handed to `sink`
    /// as it is read (no vectors in between). None: not plain; `sink` may
    /// have seen some elements by then.
    pub(super) fn body<'a>(text: &'a str, sink: &mut dyn FnMut(Item<'a>)) -> Option<u64> {
        let mut c = Cursor { s: text.as_bytes(), text, i: 0 };
        let (mut ts, mut pops, mut routes) = (None, None, None);
        c.object(|c, key| match key {
            "ts" => once(&mut ts, c.uint()?),
            "pops" => once(&mut pops, c.array(|c| c.pop().map(|p| sink(Item::Pop(p))))?),
            "routes" => once(&mut routes, c.array(|c| c.route().map(|r| sink(Item::Route(r))))?),
            _ => None,
        })?;
        c.ws();
        (c.i == c.s.len()).then_some(())?;
        ts
    }

    /// Set a field seen for the first time (a repeated key is not plain).
    fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
        slot.is_none().then_some(())?;
        *slot = Some(v);
        Some(())
    }

    /// Exact powers of ten, as serde_json divides by them.
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
        1e20, 1e21, 1e22,
    ];

    struct Cursor<'a> {
        s: &'a [u8],
        text: &'a str,
        i: usize,
    }

    impl<'a> Cursor<'a> {
        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
                self.i += 1;
            }
        }

        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.i).copied()
        }

        fn eat(&mut self, b: u8) -> Option<()> {
            (self.peek()? == b).then(|| self.i += 1)
        }

        /// A string without escapes or control characters, borrowed.
        fn string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let start = self.i;
            let n = self.s[start..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            (self.s[start + n] == b'"').then_some(())?;
            self.i = start + n + 1;
            self.text.get(start..start + n)
        }

        /// Digits, no leading zero: the value and how many digits.
        fn digits(&mut self, mut v: u64) -> Option<(u64, u32)> {
            let start = self.i;
            while let Some(&d @ b'0'..=b'9') = self.s.get(self.i) {
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                self.i += 1;
            }
            Some((v, (self.i - start) as u32))
        }

        /// A JSON integer part (`0` or no leading zero).
        fn int_part(&mut self) -> Option<u64> {
            self.ws();
            let start = self.i;
            let (v, n) = self.digits(0)?;
            (n > 0 && (n == 1 || self.s[start] != b'0')).then_some(v)
        }

        /// Not followed by more of a number (a fraction, an exponent).
        fn number_ends(&self) -> Option<()> {
            (!matches!(self.s.get(self.i), Some(b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9'))).then_some(())
        }

        fn uint(&mut self) -> Option<u64> {
            let v = self.int_part()?;
            self.number_ends()?;
            Some(v)
        }

        fn float(&mut self) -> Option<f64> {
            let mut v = self.int_part()?;
            let mut decimals = 0;
            if self.s.get(self.i) == Some(&b'.') {
                self.i += 1;
                (v, decimals) = self.digits(v)?;
                (decimals > 0).then_some(())?;
            }
            self.number_ends()?;
            (v < 1 << 53).then_some(())?;
            let f = v as f64;
            Some(if decimals == 0 { f } else { f / POW10.get(decimals as usize)? })
        }

        fn boolean(&mut self) -> Option<bool> {
            self.ws();
            let rest = &self.s[self.i..];
            let (v, n) = if rest.starts_with(b"true") {
                (true, 4)
            } else if rest.starts_with(b"false") {
                (false, 5)
            } else {
                return None;
            };
            self.i += n;
            Some(v)
        }

        /// `{ "key": value, ... }`, each value read by `field`.
        fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
            self.list(b'{', b'}', |c| {
                let key = c.string()?;
                c.eat(b':')?;
                field(c, key)
            })
        }

        /// `[ item, ... ]`, each item read by `item`.
        fn array(&mut self, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
            self.list(b'[', b']', item)
        }

        /// `open item, ... close` (maybe empty), each item read by `item`.
        fn list(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
            self.eat(open)?;
            if self.eat(close).is_some() {
                return Some(());
            }
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b if b == close => {
                        self.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        fn pop(&mut self) -> Option<RawPop<'a>> {
            let (mut id, mut up, mut load) = (None, None, None);
            self.object(|c, key| match key {
                "id" => once(&mut id, c.string()?),
                "up" => once(&mut up, c.boolean()?),
                "load" => once(&mut load, c.float()?),
                _ => None,
            })?;
            Some(RawPop { id: Cow::Borrowed(id?), up, load })
        }

        fn route(&mut self) -> Option<RawRoute<'a>> {
            let (mut pop, mut group, mut rtt_ms, mut loss) = (None, None, None, None);
            self.object(|c, key| match key {
                "pop" => once(&mut pop, c.string()?),
                "group" => once(&mut group, c.string()?),
                "rtt_ms" => once(&mut rtt_ms, c.float()?),
                "loss" => once(&mut loss, c.float()?),
                _ => None,
            })?;
            Some(RawRoute {
                pop: Cow::Borrowed(pop?),
                group: Cow::Borrowed(group?),
                rtt_ms: rtt_ms?,
                loss: loss.unwrap_or(0.0),
            })
        }
    }
}

/// Reporter ids the contract allows: `[A-Za-z0-9._-]+`.
pub fn valid_reporter_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Shortest reporter secret accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None; // from_str_radix would take a sign: "+0" as a byte
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
        let mac_at = "popdns1 probe-1 ".len();
        for (at, bad) in [(0, b'A'), (63, b'F'), (10, b'g'), (1, b'/'), (2, b':'), (3, b'`')] {
            let mut m = d.clone();
            m[mac_at + at] = bad;
            assert_eq!(envelope(&m, 8192), Err(Drop::Malformed), "{}", String::from_utf8_lossy(&m));
        }
    }

    #[test]
    fn hex_is_hex_digits_only() {
        assert_eq!(decode_hex("00ff10Ab"), Some(vec![0, 255, 16, 171]));
        for bad in ["+0+1", "0", "0g", " 00", "-1", "\u{e9}0"] {
            assert_eq!(decode_hex(bad), None, "{bad}");
        }
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
        assert_eq!((r.pops[0].pop, r.routes[0].pop, r.routes[0].group), (1, 1, 101));
        assert_eq!(parse(br#"{"ts":"5"}"#, yes, yes), Err(Drop::Invalid), "a ts that is not a number");
        // A body is an object: serde would read a struct from an array too.
        for other in [r#"[5,[["a",false,0.5]],[["a","*",7,0]]]"#, "[5]", "[1,2]", "5", r#""ts""#, " [5]"] {
            assert_eq!(parse(other.as_bytes(), yes, yes), Err(Drop::Invalid), "{other}");
        }
        assert_eq!(parse(b"[5,", yes, yes), Err(Drop::Malformed));
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

    #[test]
    fn a_reused_report_holds_only_the_last_body() {
        let ids = |n: &str| n.strip_prefix('p').and_then(|d| d.parse::<u8>().ok());
        let groups = |g: &str| Some(g.len());
        let mut out = Report::default();
        let first = br#"{"ts":1,"pops":[{"id":"p1","up":true},{"id":"p2","up":false}],"routes":[{"pop":"p1","group":"*","rtt_ms":1}]}"#;
        assert_eq!(parse_into(first, ids, groups, &mut out), Ok((1, Ok(()))));
        assert_eq!((out.pops.len(), out.routes.len()), (2, 1));
        // Plain until its last route's escaped group name: the plain reader
        // has handed on two elements when it gives up, serde_json reads it all.
        let escaped = br#"{"ts":2,"pops":[{"id":"p3","load":0.5}],"routes":[{"pop":"p3","group":"a","rtt_ms":2},{"pop":"p4","group":"\u0062","rtt_ms":3}]}"#;
        assert_eq!(parse_into(escaped, ids, groups, &mut out), Ok((2, Ok(()))));
        let want = Report {
            ts: 2,
            pops: vec![PopReport { pop: 3, up: None, load: Some(0.5) }],
            routes: vec![
                RouteReport { pop: 3, group: 1, rtt_ms: 2.0, loss: 0.0 },
                RouteReport { pop: 4, group: 1, rtt_ms: 3.0, loss: 0.0 },
            ],
        };
        assert_eq!(out, want);
        // An unknown POP makes the body invalid, whichever reader read it.
        for bad in
            [&br#"{"ts":3,"pops":[{"id":"x","up":true}]}"#[..], br#"{"ts":3,"pops":[{"id":"\u0078","up":true}]}"#]
        {
            assert_eq!(parse_into(bad, ids, groups, &mut out), Ok((3, Err(Drop::Invalid))));
        }
        assert_eq!(parse_into(first, ids, groups, &mut out), Ok((1, Ok(()))));
        assert_eq!(out, parse(first, ids, groups).unwrap().1.unwrap());
    }

    /// A body like a probe's: every POP's state, a few routes, plain JSON.
    fn probe_body(next: &mut impl FnMut(u64) -> u64) -> String {
        let mut b = format!("{{\"ts\":{},\"pops\":[", 1_700_000_000_000 + next(1 << 30));
        for k in 0..next(6) {
            let load = next(1000) as f64 / 1000.0;
            b += &format!(
                "{}{{\"id\":\"pop-{k}\",\"up\":{},\"load\":{load}}}",
                if k > 0 { "," } else { "" },
                next(2) == 0
            );
        }
        b += "],\"routes\":[";
        for k in 0..next(6) {
            let (rtt, loss) = (next(2_000_000) as f64 / 10.0, next(10_000) as f64 / 10_000.0);
            b += &format!(
                "{}{{\"pop\":\"pop-{}\",\"group\":\"CN-ZJ/chinatelecom\",\"rtt_ms\":{rtt},\"loss\":{loss}}}",
                if k > 0 { "," } else { "" },
                next(4)
            );
        }
        b + "]}"
    }

    /// What the plain reader hands on, gathered as serde_json's `Raw`.
    fn plain_raw(text: &str) -> Option<Raw<'_>> {
        let (mut pops, mut routes) = (Vec::new(), Vec::new());
        let ts = plain::body(text, &mut |item| match item {
            Item::Pop(p) => pops.push(p),
            Item::Route(r) => routes.push(r),
        })?;
        Some(Raw { ts, pops, routes })
    }

    /// The hand-read plain form and serde_json agree wherever the plain
    /// reader answers; it answers for the bodies probes send.
    fn agree(text: &str) -> bool {
        match plain_raw(text) {
            Some(raw) => {
                // Debug, not ==, so that -0.0 and 0.0 differ.
                assert_eq!(
                    format!("{:?}", by_serde(text)),
                    format!("{:?}", Ok::<_, Drop>(Ok::<_, u64>(raw))),
                    "{text}"
                );
                true
            }
            None => false,
        }
    }

    #[test]
    fn plain_reader_agrees_with_serde_json_on_mutated_bodies() {
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let alphabet = b" \t\n\"\\,:{}[]0123456789.eE+-tfnulx\x01\x7f";
        let (mut plain_answered, mut total) = (0, 0);
        for _ in 0..3000 {
            let body = probe_body(&mut next);
            assert!(agree(&body), "a probe's body is plain: {body}");
            let mut m = body.into_bytes();
            for _ in 0..1 + next(3) {
                let at = next(m.len() as u64 + 1) as usize;
                let b = alphabet[next(alphabet.len() as u64) as usize];
                match next(4) {
                    0 if at < m.len() => m[at] = b,
                    1 if at < m.len() => {
                        m.remove(at);
                    }
                    2 => {
                        let end = (at + next(40) as usize).min(m.len());
                        let dup = m[at..end].to_vec();
                        m.splice(at..at, dup);
                    }
                    _ => m.insert(at, b),
                }
            }
            if let Ok(text) = std::str::from_utf8(&m) {
                total += 1;
                plain_answered += usize::from(agree(text));
            }
        }
        // The check above is only as good as the mutants the plain reader took.
        assert!(plain_answered > total / 10, "plain reader answered {plain_answered} of {total}");
    }

    #[test]
    fn plain_numbers_are_serde_json_numbers() {
        let mut next = crate::testing::xorshift(7);
        let (mut whole, mut fractions) = (0, 0);
        for _ in 0..20_000 {
            let int: String = match next(4) {
                0 => "0".into(),
                _ => (0..next(12)).map(|_| char::from(b'0' + next(10) as u8)).collect(),
            };
            let frac: String = (0..next(26)).map(|_| char::from(b'0' + next(10) as u8)).collect();
            let num = match next(3) {
                0 => int,
                _ => format!("{int}.{frac}"),
            };
            let text = format!(r#"{{"ts":1,"routes":[{{"pop":"a","group":"*","rtt_ms":{num},"loss":{num}}}]}}"#);
            if agree(&text) {
                *(if num.contains('.') { &mut fractions } else { &mut whole }) += 1;
            }
            agree(&format!(r#"{{"ts":{num}}}"#));
        }
        // Both kinds were compared, not only the ones the plain reader takes easily.
        assert!(whole > 2_000 && fractions > 4_000, "{whole} whole, {fractions} with a fraction");
        for exact in ["0", "1", "10", "9007199254740991", "0.1", "123.456", "0.0000000000000000000001"] {
            let text = format!(r#"{{"ts":1,"pops":[{{"id":"a","load":{exact}}}]}}"#);
            assert!(agree(&text), "{exact} is plain");
        }
        for not_plain in
            ["-1", "01", "1.", ".5", "1e3", "1E-3", "9007199254740992", "0.00000000000000000000001", "null"]
        {
            let text = format!(r#"{{"ts":1,"pops":[{{"id":"a","load":{not_plain}}}]}}"#);
            assert!(!agree(&text), "{not_plain} goes to serde_json");
        }
    }

    #[test]
    fn plain_reader_leaves_the_unusual_to_serde_json() {
        for text in [
            r#"{"ts":1,"ts":2}"#,
            r#"{"ts":1,"extra":0}"#,
            r#"{"ts":1,"pops":[{"id":"a\u0062","up":true}]}"#,
            r#"{"ts":1,"pops":[{"id":"a","up":null}]}"#,
            r#"{"ts":1,"pops":null}"#,
            r#"{"ts":1} x"#,
            r#"{"ts":1,}"#,
            r#"{"ts":18446744073709551616}"#,
            r#"{"ts":1,"routes":[{"pop":"a","group":"*"}]}"#,
            r#"{"ts":1,"routes":[{"group":"*","rtt_ms":1}]}"#,
            r#"{"ts":1,"routes":[{"pop":"a","rtt_ms":1}]}"#,
            r#"{"ts":1,"pops":[{"up":true}]}"#,
            r#"{"ts":1,"pops":[{"id":"a","id":"b","up":true}]}"#,
            r#"{"ts":1,"routes":[{"pop":"a","group":"*","rtt_ms":1,"rtt_ms":2}]}"#,
            "\u{feff}{\"ts\":1}",
            "{\"ts\":1,\u{c}\"pops\":[]}",
            "{\"ts\":1,\"pops\":[{\"id\":\"a\u{1}\",\"up\":true}]}",
        ] {
            assert!(!agree(text), "{text}");
        }
        let spaced = " {\n \"routes\" : [ { \"loss\" : 0.5 , \"group\" : \"*\", \"rtt_ms\":3, \"pop\":\"a\" } ] ,\t\"ts\" : 9 }\r\n";
        assert!(agree(spaced), "whitespace and any key order are plain");
        assert!(agree(r#"{"ts":18446744073709551615,"pops":[],"routes":[]}"#));
        assert!(agree(r#"{"ts":1,"routes":[{"pop":"a","group":"*","rtt_ms":3}]}"#), "loss defaults as in serde");
    }
}
