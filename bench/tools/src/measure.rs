//! One metered dnsperf run.
//!
//! Before and after: utime+stime of every process in the server's tree (by
//! PPid, since NSD forks workers), /proc/stat (all CPUs, cpu0 and steal). After:
//! dnsperf's own CPU from wait4 (RUSAGE_CHILDREN), this meter's (RUSAGE_SELF),
//! any auxiliary load generator's (--aux-pid), the tree's RSS. Foreign CPU =
//! machine busy (user+nice+system+irq+softirq: this kernel charges softirq to
//! both the process and the softirq column, so it must be in "busy") minus
//! server, dnsperf, aux and meter. With --latency, the per-response lines of
//! dnsperf `-v` are reduced to avg/p50/p99/max and dropped from the saved output.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::args::{Args, read_file, write_file};

const HZ: f64 = 100.0;

fn ticks_of(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the ")" of comm: state ppid ... utime(14) stime(15)
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ppid: u32 = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, ut + st))
}

/// pid -> cpu ticks for `root` and all its descendants.
pub fn tree(root: u32) -> HashMap<u32, u64> {
    let mut all: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && let Some((ppid, t)) = ticks_of(pid)
            {
                all.push((pid, ppid, t));
            }
        }
    }
    let mut out = HashMap::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid, t) in &all {
            if pid == p {
                out.insert(pid, t);
            }
            if ppid == p && pid != p {
                frontier.push(pid);
            }
        }
    }
    out
}

/// (VmRSS, VmHWM) in kB summed over the pids.
pub fn rss_kb(pids: impl Iterator<Item = u32>) -> (u64, u64) {
    let (mut rss, mut hwm) = (0, 0);
    let kb = |v: &str| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
    for pid in pids {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for l in s.lines() {
                if let Some(v) = l.strip_prefix("VmRSS:") {
                    rss += kb(v);
                } else if let Some(v) = l.strip_prefix("VmHWM:") {
                    hwm += kb(v);
                }
            }
        }
    }
    (rss, hwm)
}

/// (busy, steal) ticks of the "cpu", "cpu0", "cpu1" lines.
fn proc_stat() -> HashMap<String, (u64, u64)> {
    let mut m = HashMap::new();
    if let Ok(s) = std::fs::read_to_string("/proc/stat") {
        for l in s.lines().filter(|l| l.starts_with("cpu")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let v = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            let busy = v(1) + v(2) + v(3) + v(6) + v(7);
            m.insert(f[0].to_string(), (busy, v(8)));
        }
    }
    m
}

fn rusage(who: i32) -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut r);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(r.ru_utime) + tv(r.ru_stime)
    }
}

fn delta(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after.iter().map(|(p, t)| t.saturating_sub(*before.get(p).unwrap_or(&0))).sum()
}

pub struct Lat {
    pub n: usize,
    pub avg: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// Share of responses slower than 1 ms: the machine's stalls (a
    /// neighbour, the hypervisor) show here, and they set p99 for every server.
    pub over_1ms: f64,
}

/// Latencies (us) of dnsperf -v lines "> NOERROR binary input 0.000123"; the other lines.
pub fn split_verbose(text: &str) -> (Vec<f64>, String) {
    let mut v = Vec::new();
    let mut other = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("> ")
            && let Some(x) = rest.rsplit(' ').next().and_then(|x| x.parse::<f64>().ok())
        {
            v.push(x * 1e6);
            continue;
        }
        other.push_str(l);
        other.push('\n');
    }
    (v, other)
}

pub fn lat_of(mut v: Vec<f64>) -> Option<Lat> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let q = |p: f64| v[((n as f64 * p).ceil() as usize).clamp(1, n) - 1];
    let over_1ms = v.iter().filter(|&&x| x > 1000.0).count() as f64 / n as f64;
    Some(Lat {
        n,
        avg: v.iter().sum::<f64>() / n as f64,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: v[n - 1],
        over_1ms,
    })
}

fn field(text: &str, key: &str) -> Option<f64> {
    let l = text.lines().find(|l| l.trim_start().starts_with(key))?;
    l.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

pub fn run(a: &Args) -> Result<(), String> {
    let root: u32 = a.req("pid")?.parse().map_err(|_| "--pid")?;
    let aux: Vec<u32> = a.all("aux-pid").iter().filter_map(|s| s.parse().ok()).collect();
    let out = a.req("out")?.to_string();
    if a.rest.is_empty() {
        return Err("usage: measure --pid PID --out FILE [--jsonl F] [--tag k=v].. [--latency] -- dnsperf ...".into());
    }
    let s0 = proc_stat();
    let t0 = tree(root);
    if t0.is_empty() {
        return Err(format!("server pid {root} is not running"));
    }
    let aux0: Vec<HashMap<u32, u64>> = aux.iter().map(|&p| tree(p)).collect();
    let self0 = rusage(libc::RUSAGE_SELF);
    let clock = Instant::now();
    let f = File::create(&out).map_err(|e| format!("{out}: {e}"))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let status = Command::new(&a.rest[0])
        .args(&a.rest[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .status()
        .map_err(|e| format!("{}: {e}", a.rest[0]))?;
    let elapsed = clock.elapsed().as_secs_f64();
    let s1 = proc_stat();
    let t1 = tree(root);
    let aux1: Vec<HashMap<u32, u64>> = aux.iter().map(|&p| tree(p)).collect();
    let gen_cpu = rusage(libc::RUSAGE_CHILDREN);
    let meter_cpu = rusage(libc::RUSAGE_SELF) - self0;
    let (rss, hwm) = rss_kb(t1.keys().copied());
    let server_cpu = delta(&t0, &t1) as f64 / HZ;
    let aux_cpu: f64 = aux0.iter().zip(&aux1).map(|(b, a)| delta(b, a) as f64 / HZ).sum();
    let d = |k: &str| {
        let (b0, st0) = s0.get(k).copied().unwrap_or((0, 0));
        let (b1, st1) = s1.get(k).copied().unwrap_or((0, 0));
        ((b1.saturating_sub(b0)) as f64 / HZ, (st1.saturating_sub(st0)) as f64 / HZ)
    };
    let (busy, steal) = d("cpu");
    let (busy0, steal0) = d("cpu0");
    let foreign = busy - server_cpu - gen_cpu - aux_cpu - meter_cpu;
    let foreign0 = busy0 - server_cpu;

    let text = read_file(&out).unwrap_or_default();
    let mut lat = None;
    let mut keep = text.clone();
    if a.flag("latency") {
        let (v, other) = split_verbose(&text);
        lat = lat_of(v);
        keep = other;
        write_file(&out, keep.as_bytes())?;
    }
    let completed = field(&keep, "Queries completed").unwrap_or(0.0);
    let mut m = Map::new();
    for t in a.all("tag") {
        if let Some((k, v)) = t.split_once('=') {
            m.insert(k.into(), Value::String(v.into()));
        }
    }
    let rcodes = keep
        .lines()
        .find(|l| l.trim_start().starts_with("Response codes"))
        .and_then(|l| l.split_once(':'))
        .map(|x| x.1.trim().to_string());
    let obj = json!({
        "exit": status.code(),
        "sent": field(&keep, "Queries sent"),
        "completed": completed,
        "lost": field(&keep, "Queries lost"),
        "qps": field(&keep, "Queries per second"),
        "run_s": field(&keep, "Run time (s)"),
        "dnsperf_avg_us": field(&keep, "Average Latency (s)").map(|x| x * 1e6),
        "rcodes": rcodes,
        "elapsed_s": elapsed,
        "server_cpu_s": server_cpu,
        "server_pids": t1.len(),
        "rss_kb": rss,
        "hwm_kb": hwm,
        "dnsperf_cpu_s": gen_cpu,
        "aux_cpu_s": aux_cpu,
        "meter_cpu_s": meter_cpu,
        "busy_s": busy,
        "busy_cpu0_s": busy0,
        "steal_s": steal,
        "steal_cpu0_s": steal0,
        "foreign_s": foreign,
        "foreign_cpu0_s": foreign0,
        "lat_n": lat.as_ref().map(|l| l.n),
        "lat_avg_us": lat.as_ref().map(|l| l.avg),
        "lat_p50_us": lat.as_ref().map(|l| l.p50),
        "lat_p90_us": lat.as_ref().map(|l| l.p90),
        "lat_p99_us": lat.as_ref().map(|l| l.p99),
        "lat_over_1ms": lat.as_ref().map(|l| l.over_1ms),
        "lat_max_us": lat.as_ref().map(|l| l.max),
    });
    if let Value::Object(o) = obj {
        m.extend(o);
    }
    let max_foreign: f64 = a.get("max-foreign", f64::INFINITY)?;
    // Latency runs take a stricter limit on steal alone: a few tens of ms of
    // it in a 5 s window are 1% of the responses held up, and so the p99.
    let max_steal: f64 = a.get("max-steal", f64::INFINITY)?;
    let noisy = foreign / elapsed > max_foreign || steal / elapsed > max_foreign.min(max_steal);
    if noisy && a.flag("discard-noisy") {
        m.insert("discarded".into(), Value::Bool(true));
    }
    let line = Value::Object(m.clone()).to_string();
    if let Some(j) = a.opt("jsonl") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(j).map_err(|e| format!("{j}: {e}"))?;
        writeln!(f, "{line}").map_err(|e| e.to_string())?;
    }
    let run_s = field(&keep, "Run time (s)").unwrap_or(elapsed);
    let mut h = String::new();
    let _ = write!(
        h,
        "{:>8.0} qps  {:>8.0} q/core-s  core {:.2}  lost {:>6}  foreign {:+.2}c steal {:.2}c  rss {:.0}MiB",
        completed / run_s.max(1e-9),
        if server_cpu > 0.0 { completed / server_cpu } else { 0.0 },
        server_cpu / elapsed,
        field(&keep, "Queries lost").unwrap_or(0.0),
        foreign / elapsed,
        steal / elapsed,
        rss as f64 / 1024.0
    );
    if let Some(l) = &lat {
        let _ = write!(
            h,
            "  lat avg {:.0} p90 {:.0} p99 {:.0} us, {:.2}% over 1 ms",
            l.avg,
            l.p90,
            l.p99,
            l.over_1ms * 100.0
        );
    }
    if noisy {
        let _ = write!(h, "  NOISY");
    }
    println!("{h}");
    if noisy && a.flag("discard-noisy") {
        std::process::exit(3);
    }
    Ok(())
}

pub fn lat_cmd(a: &Args) -> Result<(), String> {
    let text = read_file(a.req("file")?)?;
    let (v, _) = split_verbose(&text);
    match lat_of(v) {
        Some(l) => println!(
            "n={} avg={:.1}us p50={:.1}us p90={:.1}us p99={:.1}us max={:.1}us over_1ms={:.3}%",
            l.n,
            l.avg,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            l.over_1ms * 100.0
        ),
        None => println!("no latency lines"),
    }
    Ok(())
}

/// Wait until the machine is quiet: 1 s windows of /proc/stat until busy CPU
/// plus steal (all CPUs) is under --threshold cores and steal alone under
/// --max-steal, or --timeout passes. Prints the last window's busy and
/// steal; exit 0 either way (the run's own figures are what the report judges).
pub fn quiet(a: &Args) -> Result<(), String> {
    let threshold: f64 = a.get("threshold", 0.15)?;
    let max_steal: f64 = a.get("max-steal", f64::INFINITY)?;
    let timeout: f64 = a.get("timeout", 30.0)?;
    let window: f64 = a.get("window", 1.0)?;
    let start = Instant::now();
    loop {
        let s0 = proc_stat();
        let t = Instant::now();
        std::thread::sleep(std::time::Duration::from_secs_f64(window));
        let s1 = proc_stat();
        let el = t.elapsed().as_secs_f64();
        let (b0, st0) = s0.get("cpu").copied().unwrap_or((0, 0));
        let (b1, st1) = s1.get("cpu").copied().unwrap_or((0, 0));
        let busy = (b1 - b0) as f64 / HZ / el;
        let steal = (st1 - st0) as f64 / HZ / el;
        if busy + steal < threshold && steal <= max_steal {
            return Ok(());
        }
        if start.elapsed().as_secs_f64() > timeout {
            eprintln!(
                "quiet: machine still busy after {timeout:.0}s: {busy:.2} cores busy, {steal:.2} steal (going on)"
            );
            return Ok(());
        }
    }
}
