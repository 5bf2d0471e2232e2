//! Route-quality feed load: every reporter of a feed-keys file sends --rate
//! reports/s (20 reporters x 50/s = 1,000 reports/s), each report a full POP
//! state list and a handful of route measurements, HMAC-SHA256 signed, `ts`
//! strictly rising per reporter. Bounded by --duration. The generator wakes
//! every --tick-ms (5) and sends the reports due by then.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
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
    // Waking once per report (1,000 times a second) cost dnsperf, which shares
    // the load core, 3.6-7% of its queries in (e): fewer offered queries, smaller
    // batches at the server, a higher cost per query that is not the server's.
    // popdns reads its feed socket at most every 5 ms under a steady feed, so
    // reports sent together every 5 ms reach it as spread ones do.
    let tick = Duration::try_from_secs_f64(a.get::<f64>("tick-ms", 5.0)? / 1000.0).map_err(|_| "--tick-ms")?;
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

    // The reports' contents are drawn once, up front. Formatting ~30 floats
    // per report made the generator cost ~50 us of CPU a report (35 now, most
    // of it the kernel's send), CPU that workload (e) takes from dnsperf on
    // the load core: fewer queries offered than in (c), smaller batches at the
    // server, a lower per-core figure for a reason that is not the server's.
    // A send now writes `ts` and the MAC, nothing else.
    let tails = draw_tails(&pops, &groups, routes, TAILS, &mut Rng::new(a.get("seed", 7)?));
    let macs: Vec<Hmac<Sha256>> = reporters
        .iter()
        .map(|(_, k)| <Hmac<Sha256> as KeyInit>::new_from_slice(k).expect("hmac takes any key length"))
        .collect();

    let sock = UdpSocket::bind(if to.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).map_err(|e| e.to_string())?;
    let total_rate = rate * reporters.len() as f64;
    let interval = Duration::from_secs_f64(1.0 / total_rate);
    let mut last_ts = vec![0u64; reporters.len()];
    let start = Instant::now();
    let mut next = start;
    let (mut sent, mut errors, mut i) = (0u64, 0u64, 0usize);
    let mut body: Vec<u8> = Vec::with_capacity(4096);
    let mut d: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let now = Instant::now();
        if now.duration_since(start).as_secs_f64() >= duration {
            break;
        }
        if now < next {
            std::thread::sleep(tick.max(next - now));
            continue;
        }
        next += interval;
        let r = i % reporters.len();
        let tail = &tails[i % tails.len()];
        i += 1;
        let ts = now_ms().max(last_ts[r] + 1);
        last_ts[r] = ts;
        body.clear();
        let _ = write!(body, "{{\"ts\":{ts}");
        body.extend_from_slice(tail.as_bytes());
        // The datagram of popdns's `quality::feed::encode`.
        let mut m = macs[r].clone();
        m.update(&body);
        d.clear();
        let _ = write!(d, "popdns1 {} ", reporters[r].0);
        for b in m.finalize().into_bytes() {
            d.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
        d.push(b'\n');
        d.extend_from_slice(&body);
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

/// Distinct report contents the generator cycles through, one after the
/// other whoever sends: consecutive reports differ, within one reporter and
/// across reporters (reports with the same routes would touch fewer route
/// cells per publish than probes measuring independently do).
const TAILS: usize = 512;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `count` report bodies without their opening `{"ts":N`: every POP's state
/// (up, a random load) and `routes` route measurements to random (POP, group)
/// pairs.
fn draw_tails(pops: &[inventory::Pop], groups: &[String], routes: usize, count: usize, rng: &mut Rng) -> Vec<String> {
    (0..count)
        .map(|_| {
            let mut t = String::with_capacity(4096);
            t.push_str(",\"pops\":[");
            for (k, p) in pops.iter().enumerate() {
                let load = 0.1 + 0.6 * rng.f64();
                let _ =
                    write!(t, "{}{{\"id\":\"{}\",\"up\":true,\"load\":{load:.3}}}", if k > 0 { "," } else { "" }, p.id);
            }
            t.push_str("],\"routes\":[");
            for k in 0..routes {
                let p = &pops[rng.below(pops.len() as u64) as usize];
                let g = &groups[rng.below(groups.len() as u64) as usize];
                let rtt = 5.0 + 150.0 * rng.f64();
                let loss = 0.02 * rng.f64();
                let _ = write!(
                    t,
                    "{}{{\"pop\":\"{}\",\"group\":\"{g}\",\"rtt_ms\":{rtt:.1},\"loss\":{loss:.4}}}",
                    if k > 0 { "," } else { "" },
                    p.id
                );
            }
            t.push_str("]}");
            t
        })
        .collect()
}
