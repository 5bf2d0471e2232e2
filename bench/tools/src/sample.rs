//! Client /24s drawn from the real databases, and the dnsperf -B workloads.
//!
//! Carriers: every IPv4 network of the Chinese carriers' ASNs found by walking
//! asn.mmdb (0.73M networks: cheap); /24s drawn uniformly over their address
//! space. Uniform: random /24s of the whole IPv4 space, kept when asn.mmdb has
//! a record (routed). Either way a /24 is kept only when city.mmdb gives its
//! base address a country and coordinates; city.mmdb is only looked up, never
//! walked.
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use maxminddb::{Mmap, PathElement, Reader, WithinOptions};

use crate::args::{Args, Rng, read_file, write_file};
use crate::wire;

pub const CARRIERS: [u32; 21] = [
    4134, 4809, 4812, 23764, // China Telecom
    4837, 9929, 4808, 17621, 17622, 17623, // China Unicom
    9808, 24400, 56040, 56041, 56042, 56043, 56044, 56045, 56046, 56047, 56048, // China Mobile
];

pub struct Sample {
    pub net: u32,
    pub cc: String,
    pub sub: String,
    pub lat: f64,
    pub lon: f64,
    pub asn: u32,
    pub kind: &'static str,
}

pub fn open(path: &str) -> Result<Reader<Mmap>, String> {
    // SAFETY: the shared databases are read-only files.
    unsafe { Reader::open_mmap(path) }.map_err(|e| format!("{path}: {e}"))
}

fn asn_of(r: &Reader<Mmap>, ip: Ipv4Addr) -> Option<u32> {
    let res = r.lookup(IpAddr::V4(ip)).ok()?;
    res.decode_path::<u32>(&[PathElement::Key("autonomous_system_number")]).ok().flatten()
}

pub fn locate(r: &Reader<Mmap>, ip: Ipv4Addr) -> Option<(String, String, f64, f64)> {
    use PathElement::{Index, Key};
    let res = r.lookup(IpAddr::V4(ip)).ok()?;
    if !res.has_data() {
        return None;
    }
    let cc = res.decode_path::<String>(&[Key("country"), Key("iso_code")]).ok().flatten()?;
    let sub = res.decode_path::<String>(&[Key("subdivisions"), Index(0), Key("iso_code")]).ok().flatten();
    let lat = res.decode_path::<f64>(&[Key("location"), Key("latitude")]).ok().flatten()?;
    let lon = res.decode_path::<f64>(&[Key("location"), Key("longitude")]).ok().flatten()?;
    Some((cc, sub.unwrap_or_default(), lat, lon))
}

pub fn run(a: &Args) -> Result<(), String> {
    let city = open(a.req("city")?)?;
    let asn = open(a.req("asn")?)?;
    let n: usize = a.get("n", 200_000)?;
    let carrier_share: f64 = a.get("carrier-share", 0.45)?;
    let mut rng = Rng::new(a.get("seed", 20261130)?);
    let out = a.req("out")?;

    // Carrier networks: (first /24 index, number of /24s).
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    let t0 = std::time::Instant::now();
    let walk = asn
        .within("0.0.0.0/0".parse().map_err(|e| format!("{e}"))?, WithinOptions::default())
        .map_err(|e| format!("walking asn db: {e}"))?;
    let mut walked = 0u64;
    for item in walk {
        let Ok(item) = item else { continue };
        walked += 1;
        let Some(num) = item.decode_path::<u32>(&[PathElement::Key("autonomous_system_number")]).ok().flatten() else {
            continue;
        };
        if !CARRIERS.contains(&num) {
            continue;
        }
        let Ok(net) = item.network() else { continue };
        let (IpAddr::V4(base), p) = (net.network(), net.prefix()) else { continue };
        let idx = u32::from(base) >> 8;
        let count = if p <= 24 { 1u32 << (24 - p) } else { 1 };
        ranges.push((idx, count));
    }
    let total: u64 = ranges.iter().map(|r| r.1 as u64).sum();
    eprintln!(
        "asn.mmdb: {walked} IPv4 networks walked, {} carrier networks, {total} carrier /24s ({:.1}s)",
        ranges.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut cum = Vec::with_capacity(ranges.len());
    let mut acc = 0u64;
    for r in &ranges {
        acc += r.1 as u64;
        cum.push(acc);
    }

    let want_carrier = (n as f64 * carrier_share).round() as usize;
    let mut seen: HashSet<u32> = HashSet::with_capacity(n * 2);
    let mut samples: Vec<Sample> = Vec::with_capacity(n);
    let mut tries = 0u64;
    let push = |idx: u32, kind: &'static str, asn_num: u32, seen: &mut HashSet<u32>, samples: &mut Vec<Sample>| {
        if seen.contains(&idx) {
            return;
        }
        let ip = Ipv4Addr::from(idx << 8);
        if let Some((cc, sub, lat, lon)) = locate(&city, ip) {
            seen.insert(idx);
            samples.push(Sample { net: idx << 8, cc, sub, lat, lon, asn: asn_num, kind });
        }
    };
    while samples.len() < want_carrier && total > 0 {
        tries += 1;
        if tries > 50 * n as u64 {
            return Err("cannot draw enough carrier /24s".into());
        }
        let k = rng.below(total);
        let i = cum.partition_point(|&c| c <= k);
        let before = if i == 0 { 0 } else { cum[i - 1] };
        let idx = ranges[i].0 + (k - before) as u32;
        let num = asn_of(&asn, Ipv4Addr::from(idx << 8)).unwrap_or(0);
        if !CARRIERS.contains(&num) {
            continue; // a more specific non-carrier network inside a carrier block
        }
        push(idx, "carrier", num, &mut seen, &mut samples);
    }
    while samples.len() < n {
        tries += 1;
        if tries > 100 * n as u64 {
            return Err("cannot draw enough routed /24s".into());
        }
        let idx = rng.below(1 << 24) as u32;
        let first = idx >> 16;
        // unicast space only
        if first == 0 || first == 10 || first == 127 || first >= 224 {
            continue;
        }
        let Some(num) = asn_of(&asn, Ipv4Addr::from(idx << 8)) else { continue };
        push(idx, "uniform", num, &mut seen, &mut samples);
    }
    rng.shuffle(&mut samples);
    let mut s = String::from("net\tcc\tsub\tlat\tlon\tasn\tkind\n");
    let mut countries = HashSet::new();
    let mut cn = 0usize;
    for x in &samples {
        countries.insert(x.cc.clone());
        if x.cc == "CN" {
            cn += 1;
        }
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{:.4}\t{:.4}\t{}\t{}",
            Ipv4Addr::from(x.net),
            x.cc,
            x.sub,
            x.lat,
            x.lon,
            x.asn,
            x.kind
        );
    }
    write_file(out, s.as_bytes())?;
    eprintln!(
        "{} distinct /24s ({} carrier) in {} countries, CN {:.0}%, {} lookups, {:.1}s -> {out}",
        samples.len(),
        want_carrier,
        countries.len(),
        100.0 * cn as f64 / samples.len().max(1) as f64,
        tries,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn load(path: &str) -> Result<Vec<Sample>, String> {
    let text = read_file(path)?;
    let mut v = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 7 {
            continue;
        }
        let ip: Ipv4Addr = f[0].parse().map_err(|_| format!("{path}: bad net {}", f[0]))?;
        v.push(Sample {
            net: u32::from(ip),
            cc: f[1].into(),
            sub: f[2].into(),
            lat: f[3].parse().unwrap_or(0.0),
            lon: f[4].parse().unwrap_or(0.0),
            asn: f[5].parse().unwrap_or(0),
            kind: if f[6] == "carrier" { "carrier" } else { "uniform" },
        });
    }
    Ok(v)
}

fn frame(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
}

/// dnsperf -B files: 2-byte big-endian length + wire query, RD=0, EDNS 1232.
pub fn workloads(a: &Args) -> Result<(), String> {
    let samples = load(a.req("samples")?)?;
    let dir = a.req("out")?;
    let name = a.opt("name").unwrap_or("www.aliyundoc.com.example.com");
    let fixed: Ipv4Addr = a.opt("fixed-ecs").unwrap_or("115.236.1.0").parse().map_err(|_| "--fixed-ecs")?;
    let statics: Vec<String> = match a.opt("static") {
        Some(s) => s.split(',').map(String::from).collect(),
        None => ["ns1.example.com", "ns2.example.com", "mail.example.com", "sip.example.com"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let mut w = Vec::new();
    frame(&mut w, &wire::query(0, name, wire::A, true, None));
    write_file(&format!("{dir}/a.bin"), &w)?;
    let mut w = Vec::new();
    frame(&mut w, &wire::query(0, name, wire::A, true, Some((fixed, 24))));
    write_file(&format!("{dir}/b.bin"), &w)?;
    let mut w = Vec::new();
    for s in &samples {
        frame(&mut w, &wire::query(0, name, wire::A, true, Some((Ipv4Addr::from(s.net), 24))));
    }
    write_file(&format!("{dir}/c.bin"), &w)?;
    let mut w = Vec::new();
    for s in &statics {
        frame(&mut w, &wire::query(0, s, wire::A, true, None));
    }
    write_file(&format!("{dir}/d.bin"), &w)?;
    eprintln!(
        "workloads: a, b (ECS {fixed}/24), c ({} ECS /24s), d ({} static names) -> {dir}",
        samples.len(),
        statics.len()
    );
    Ok(())
}
