//! Route-quality feed load: every reporter of a feed-keys file sends --rate
//! reports/s (20 reporters x 50/s = 1,000 reports/s), each report a full POP
//! state list and a handful of route measurements, HMAC-SHA256 signed, `ts`
//! strictly rising per reporter. Bounded by --duration.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::args::{Args, Rng, read_file};
use crate::inventory;

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Same datagram as popdns's `quality::feed::encode`.
pub fn encode(reporter: &str, key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("hmac takes any key length");
    m.update(body);
    let mac: String = m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let mut d = format!("popdns1 {reporter} {mac}\n").into_bytes();
    d.extend_from_slice(body);
    d
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn run(a: &Args) -> Result<(), String> {
    let to: SocketAddr = a.req("to")?.parse().map_err(|_| "--to")?;
    let keys_path = a.req("keys")?;
    let keys: BTreeMap<String, String> =
        serde_yaml::from_str(&read_file(keys_path)?).map_err(|e| format!("{keys_path}: {e}"))?;
    let reporters: Vec<(String, Vec<u8>)> = keys
        .into_iter()
        .map(|(id, k)| Ok((id.clone(), hex(k.trim()).ok_or(format!("{keys_path}: key of {id} is not hex"))?)))
        .collect::<Result<_, String>>()?;
    if reporters.is_empty() {
        return Err("no reporters".into());
    }
    let pops = inventory::load_tsv_pops(a.req("pops")?)?;
    let rate: f64 = a.get("rate", 50.0)?;
    let duration: f64 = a.get("duration", 10.0)?;
    let routes: usize = a.get("routes", 10)?;
    let mut groups: Vec<String> = vec!["*".into(), "continent:AS".into(), "continent:EU".into(), "continent:NA".into()];
    for p in &pops {
        groups.push(p.country.clone());
        if let Some(r) = &p.region {
            groups.push(format!("{}-{}", p.country, r));
            if let Some(isp) = &p.isp {
                groups.push(format!("{}-{}/{}", p.country, r, isp));
                groups.push(format!("{}/{}", p.country, isp));
            }
        }
    }
    groups.sort();
    groups.dedup();

    let sock = UdpSocket::bind(if to.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).map_err(|e| e.to_string())?;
    let total_rate = rate * reporters.len() as f64;
    let interval = Duration::from_secs_f64(1.0 / total_rate);
    let mut last_ts = vec![0u64; reporters.len()];
    let mut rng = Rng::new(a.get("seed", 7)?);
    let start = Instant::now();
    let mut next = start;
    let (mut sent, mut errors, mut i) = (0u64, 0u64, 0usize);
    let mut body = String::with_capacity(4096);
    while start.elapsed().as_secs_f64() < duration {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        let r = i % reporters.len();
        i += 1;
        let ts = now_ms().max(last_ts[r] + 1);
        last_ts[r] = ts;
        body.clear();
        let _ = write!(body, "{{\"ts\":{ts},\"pops\":[");
        for (k, p) in pops.iter().enumerate() {
            let load = 0.1 + 0.6 * rng.f64();
            let _ =
                write!(body, "{}{{\"id\":\"{}\",\"up\":true,\"load\":{load:.3}}}", if k > 0 { "," } else { "" }, p.id);
        }
        body.push_str("],\"routes\":[");
        for k in 0..routes {
            let p = &pops[rng.below(pops.len() as u64) as usize];
            let g = &groups[rng.below(groups.len() as u64) as usize];
            let rtt = 5.0 + 150.0 * rng.f64();
            let loss = 0.02 * rng.f64();
            let _ = write!(
                body,
                "{}{{\"pop\":\"{}\",\"group\":\"{g}\",\"rtt_ms\":{rtt:.1},\"loss\":{loss:.4}}}",
                if k > 0 { "," } else { "" },
                p.id
            );
        }
        body.push_str("]}");
        let d = encode(&reporters[r].0, &reporters[r].1, body.as_bytes());
        match sock.send_to(&d, to) {
            Ok(_) => sent += 1,
            Err(_) => errors += 1,
        }
    }
    let el = start.elapsed().as_secs_f64();
    eprintln!(
        "feed: {sent} reports from {} reporters in {el:.1}s ({:.0}/s, target {total_rate:.0}/s), {errors} send errors",
        reporters.len(),
        sent as f64 / el
    );
    Ok(())
}
