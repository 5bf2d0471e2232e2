//! Equivalence check before timing, and the time-to-first-answer probe.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::args::Args;
use crate::inventory::{self, km};
use crate::sample;
use crate::wire;

/// One query, a few tries; None when no answer.
pub fn ask(sock: &UdpSocket, to: SocketAddr, id: u16, name: &str, ecs: Option<(Ipv4Addr, u8)>) -> Option<wire::Resp> {
    let q = wire::query(id, name, wire::A, true, ecs);
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&q, to).ok()?;
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == to => {
                    if let Some(r) = wire::parse(&buf[..n])
                        && r.id == id
                    {
                        return Some(r);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    None
}

pub fn run(a: &Args) -> Result<(), String> {
    let servers: Vec<(String, SocketAddr)> = a
        .req("servers")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or(format!("--servers: {kv} is not name=addr"))?;
            Ok((k.to_string(), v.parse().map_err(|_| format!("--servers: bad address {v}"))?))
        })
        .collect::<Result<_, String>>()?;
    let samples = sample::load(a.req("samples")?)?;
    let pops = inventory::load_tsv_pops(a.req("pops")?)?;
    let regions = inventory::load_regions(a.req("regions")?)?;
    let n: usize = a.get("n", 2000)?;
    let name = a.opt("name").unwrap_or("www.aliyundoc.com.example.com");
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;

    let step = (samples.len() / n.max(1)).max(1);
    let chosen: Vec<&sample::Sample> = samples.iter().step_by(step).take(n).collect();
    let k = servers.len();
    let mut answered = vec![0usize; k];
    let mut eq_near = vec![0usize; k];
    let mut eq_table = vec![0usize; k];
    let mut scopes: Vec<Vec<u8>> = vec![Vec::new(); k];
    let mut pair = vec![vec![0usize; k]; k];
    let mut table_near = 0usize;
    let mut by_pop: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); k];
    let ip2pop: BTreeMap<String, String> = pops.iter().map(|p| (p.ipv4[0].clone(), p.id.clone())).collect();
    let mut id: u16 = 1;
    for s in &chosen {
        let at = [s.lat, s.lon];
        let dmin = pops.iter().map(|p| km(p.coords, at)).fold(f64::MAX, f64::min);
        let near: Vec<&str> =
            pops.iter().filter(|p| km(p.coords, at) <= dmin + 1.0).map(|p| p.ipv4[0].as_str()).collect();
        let table =
            regions.get(&format!("{};{}", s.cc, s.sub)).or_else(|| regions.get(&s.cc)).cloned().unwrap_or_default();
        if near.contains(&table.as_str()) {
            table_near += 1;
        }
        let mut got: Vec<Option<String>> = Vec::with_capacity(k);
        for (i, (_, addr)) in servers.iter().enumerate() {
            id = id.wrapping_add(1).max(1);
            let r = ask(&sock, *addr, id, name, Some((Ipv4Addr::from(s.net), 24)));
            let first = r.as_ref().and_then(|r| r.ips.first()).map(|ip| ip.to_string());
            if let Some(r) = &r
                && let Some(sc) = r.scope
            {
                scopes[i].push(sc);
            }
            if let Some(f) = &first {
                answered[i] += 1;
                if near.contains(&f.as_str()) {
                    eq_near[i] += 1;
                }
                if *f == table {
                    eq_table[i] += 1;
                }
                *by_pop[i].entry(ip2pop.get(f).cloned().unwrap_or_else(|| f.clone())).or_default() += 1;
            }
            got.push(first);
        }
        for i in 0..k {
            for j in 0..k {
                if got[i].is_some() && got[i] == got[j] {
                    pair[i][j] += 1;
                }
            }
        }
    }
    let m = chosen.len().max(1) as f64;
    let pct = |x: usize| format!("{:.1}%", 100.0 * x as f64 / m);
    let mut out = String::new();
    let _ = writeln!(out, "equivalence check: {} sampled /24s, name {name}", chosen.len());
    let _ = writeln!(out, "region table = nearest-by-coordinates: {}", pct(table_near));
    let _ = writeln!(out, "{:<10} {:>9} {:>9} {:>9} {:>11}", "server", "answered", "=nearest", "=table", "scope p50");
    for (i, (nm, _)) in servers.iter().enumerate() {
        let mut sc = scopes[i].clone();
        sc.sort_unstable();
        let med = sc.get(sc.len() / 2).map(|x| format!("/{x}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>9} {:>9} {:>11}",
            nm,
            pct(answered[i]),
            pct(eq_near[i]),
            pct(eq_table[i]),
            med
        );
    }
    let _ = writeln!(out, "pairwise same first answer:");
    let _ = write!(out, "{:<10}", "");
    for (nm, _) in &servers {
        let _ = write!(out, " {:>9}", nm);
    }
    let _ = writeln!(out);
    for (i, (nm, _)) in servers.iter().enumerate() {
        let _ = write!(out, "{:<10}", nm);
        for &x in &pair[i] {
            let _ = write!(out, " {:>9}", pct(x));
        }
        let _ = writeln!(out);
    }
    for (i, (nm, _)) in servers.iter().enumerate() {
        let mut v: Vec<(&String, &usize)> = by_pop[i].iter().collect();
        v.sort_by(|x, y| y.1.cmp(x.1));
        let top: Vec<String> = v.iter().take(8).map(|(p, c)| format!("{p} {c}")).collect();
        let _ = writeln!(out, "{nm} answers: {}", top.join(", "));
    }
    print!("{out}");
    Ok(())
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Query every few ms until an answer with an address arrives; print the time
/// since --t0-ns (wall clock ns, e.g. `date +%s%N` taken before the spawn).
pub fn probe(a: &Args) -> Result<(), String> {
    let to: SocketAddr = a.req("addr")?.parse().map_err(|_| "--addr")?;
    let name = a.opt("name").unwrap_or("www.aliyundoc.com.example.com");
    let ecs = match a.opt("ecs") {
        Some(e) => {
            let (ip, p) = e.split_once('/').ok_or("--ecs A.B.C.D/N")?;
            Some((ip.parse::<Ipv4Addr>().map_err(|_| "--ecs")?, p.parse::<u8>().map_err(|_| "--ecs")?))
        }
        None => None,
    };
    let timeout: f64 = a.get("timeout", 60.0)?;
    let t0: u128 = a.get("t0-ns", now_ns())?;
    let start = Instant::now();
    let sock = UdpSocket::bind(if to.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(2))).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut id: u16 = 1;
    while start.elapsed().as_secs_f64() < timeout {
        id = id.wrapping_add(1).max(1);
        let q = wire::query(id, name, wire::A, true, ecs);
        let _ = sock.send_to(&q, to);
        let until = Instant::now() + Duration::from_millis(5);
        while Instant::now() < until {
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && let Some(r) = wire::parse(&buf[..n])
                && !r.ips.is_empty()
            {
                let ms = (now_ns().saturating_sub(t0)) as f64 / 1e6;
                let ips: Vec<String> = r.ips.iter().map(IpAddr::to_string).collect();
                println!(
                    "ttfa_ms={ms:.1} rcode={} answer={} scope={}",
                    r.rcode,
                    ips.join(","),
                    r.scope.map(|s| s.to_string()).unwrap_or("-".into())
                );
                return Ok(());
            }
        }
    }
    Err(format!("no answer from {to} within {timeout}s"))
}
