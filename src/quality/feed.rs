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

/// A POP state report.
#[derive(Clone, Debug, PartialEq)]
pub struct PopReport {
    pub id: String,
    pub up: Option<bool>,
    pub load: Option<f64>,
}

/// A route measurement report.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteReport {
    pub pop: String,
    pub group: String,
    pub rtt_ms: f64,
    pub loss: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub ts: u64,
    pub pops: Vec<PopReport>,
    pub routes: Vec<RouteReport>,
}

/// The body as JSON (malformed when it is not UTF-8 JSON) and its `ts`
/// (invalid when missing or not an unsigned integer).
pub fn body_json(body: &[u8]) -> Result<serde_json::Value, Drop> {
    let text = std::str::from_utf8(body).map_err(|_| Drop::Malformed)?;
    serde_json::from_str(text).map_err(|_| Drop::Malformed)
}

pub fn ts_of(v: &serde_json::Value) -> Result<u64, Drop> {
    v.get("ts").and_then(serde_json::Value::as_u64).ok_or(Drop::Invalid)
}

/// Full validation: types, ranges, known POPs and groups. `known_pop` and
/// `known_group` come from the current config snapshot.
pub fn report(
    v: &serde_json::Value,
    known_pop: impl Fn(&str) -> bool,
    known_group: impl Fn(&str) -> bool,
) -> Result<Report, Drop> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        ts: u64,
        #[serde(default)]
        pops: Vec<P>,
        #[serde(default)]
        routes: Vec<R>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        id: String,
        up: Option<bool>,
        load: Option<f64>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct R {
        pop: String,
        group: String,
        rtt_ms: f64,
        #[serde(default)]
        loss: f64,
    }
    let b: Body = serde_json::from_value(v.clone()).map_err(|_| Drop::Invalid)?;
    let unit = |x: f64| (0.0..=1.0).contains(&x);
    for p in &b.pops {
        if !known_pop(&p.id) || (p.up.is_none() && p.load.is_none()) || p.load.is_some_and(|l| !unit(l)) {
            return Err(Drop::Invalid);
        }
    }
    for r in &b.routes {
        if !(known_pop(&r.pop) && known_group(&r.group) && unit(r.loss) && r.rtt_ms >= 0.0 && r.rtt_ms < 1e6) {
            return Err(Drop::Invalid);
        }
    }
    Ok(Report {
        ts: b.ts,
        pops: b.pops.into_iter().map(|p| PopReport { id: p.id, up: p.up, load: p.load }).collect(),
        routes: b
            .routes
            .into_iter()
            .map(|r| RouteReport { pop: r.pop, group: r.group, rtt_ms: r.rtt_ms, loss: r.loss })
            .collect(),
    })
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
        let yes = |_: &str| true;
        assert_eq!(body_json(b"\xff"), Err(Drop::Malformed));
        assert_eq!(body_json(b"{"), Err(Drop::Malformed));
        assert_eq!(ts_of(&body_json(b"{}").unwrap()), Err(Drop::Invalid));
        let v = body_json(br#"{"ts":5,"pops":[{"id":"a","up":true,"load":0.5}],"routes":[{"pop":"a","group":"*","rtt_ms":3,"loss":0}]}"#).unwrap();
        assert_eq!(report(&v, yes, yes).unwrap().pops[0].load, Some(0.5));
        assert_eq!(report(&v, |_| false, yes), Err(Drop::Invalid));
        assert_eq!(report(&v, yes, |_| false), Err(Drop::Invalid));
        for bad in [
            r#"{"ts":5,"pops":[{"id":"a","load":1.5}]}"#,
            r#"{"ts":5,"routes":[{"pop":"a","group":"*","rtt_ms":-1,"loss":0}]}"#,
            r#"{"ts":5,"routes":[{"pop":"a","group":"*","rtt_ms":1,"loss":2}]}"#,
            r#"{"ts":5,"pops":[{"id":"a","up":"yes"}]}"#,
            r#"{"ts":"5"}"#,
            r#"{"ts":5,"extra":1}"#,
        ] {
            assert_eq!(report(&body_json(bad.as_bytes()).unwrap(), yes, yes), Err(Drop::Invalid), "{bad}");
        }
    }
}
