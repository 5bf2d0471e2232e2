//! The table from results.jsonl (one line per metered run, tags server,
//! workload, round, mode=sat|lat).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use crate::args::{Args, read_file};

const ORDER: [&str; 6] = ["bare", "popdns", "nsd", "gdnsd", "knot", "pdns"];

fn k(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 1000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cell(v: &[f64], f: fn(f64) -> String) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    let med = median(&mut s);
    if s.len() == 1 { f(med) } else { format!("{} ({}-{})", f(med), f(s[0]), f(s[s.len() - 1])) }
}

struct Run {
    server: String,
    workload: String,
    round: String,
    mode: String,
    v: Value,
}

impl Run {
    fn f(&self, key: &str) -> Option<f64> {
        self.v.get(key).and_then(Value::as_f64)
    }
    fn per_core(&self) -> Option<f64> {
        let c = self.f("completed")?;
        let cpu = self.f("server_cpu_s")?;
        (cpu > 0.0).then(|| c / cpu)
    }
    fn raw_qps(&self) -> Option<f64> {
        Some(self.f("completed")? / self.f("run_s").or(self.f("elapsed_s"))?)
    }
    fn share(&self) -> Option<f64> {
        Some(self.f("server_cpu_s")? / self.f("elapsed_s")?)
    }
    fn foreign(&self) -> Option<f64> {
        Some(self.f("foreign_s")? / self.f("elapsed_s")?)
    }
}

pub fn run(a: &Args) -> Result<(), String> {
    let path = a.req("results")?;
    let text = read_file(path)?;
    let mut runs = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).map_err(|e| format!("{path}: {e}"))?;
        if v.get("discarded").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let t = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        runs.push(Run { server: t("server"), workload: t("workload"), round: t("round"), mode: t("mode"), v });
    }
    let mut servers: Vec<String> = Vec::new();
    for s in ORDER {
        if runs.iter().any(|r| r.server == s) {
            servers.push(s.into());
        }
    }
    for r in &runs {
        if !servers.contains(&r.server) {
            servers.push(r.server.clone());
        }
    }
    let workloads: BTreeSet<String> = runs.iter().filter(|r| r.mode == "sat").map(|r| r.workload.clone()).collect();
    let sat = |s: &str, w: &str| -> Vec<&Run> {
        runs.iter().filter(|r| r.mode == "sat" && r.server == s && r.workload == w).collect()
    };
    let lat = |s: &str| -> Vec<&Run> { runs.iter().filter(|r| r.mode == "lat" && r.server == s).collect() };
    // per-round ratio to bare on the same workload
    let ratio = |s: &str, w: &str| -> Vec<f64> {
        let bare: BTreeMap<&str, f64> =
            sat("bare", w).into_iter().filter_map(|r| Some((r.round.as_str(), r.per_core()?))).collect();
        let base = if w == "e" { "c" } else { w };
        let bare_base: BTreeMap<&str, f64> =
            sat("bare", base).into_iter().filter_map(|r| Some((r.round.as_str(), r.per_core()?))).collect();
        let b = if bare.is_empty() { &bare_base } else { &bare };
        sat(s, w).into_iter().filter_map(|r| Some(r.per_core()? / b.get(r.round.as_str())?)).collect()
    };
    let rounds: BTreeSet<&str> = runs.iter().map(|r| r.round.as_str()).collect();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "QPS per server core (completed / server CPU s), median (min-max) of {} round(s); x bare = per-round ratio to the bare responder; (e) = (c) with the feed running, its x bare is against bare's (c)\n",
        rounds.len()
    );
    let has = |w: &str| workloads.contains(w);
    let mut head = vec!["server".to_string()];
    for w in ["a", "b", "c"] {
        if has(w) {
            head.push(format!("({w})"));
        }
    }
    if has("c") {
        head.push("(c) x bare".into());
    }
    if has("d") {
        head.push("(d) static".into());
    }
    if has("e") {
        head.push("(e) c+feed".into());
        head.push("(e) x bare".into());
    }
    head.push("(f) lat avg / p90 / p99 us @20k".into());
    head.push("lost @20k".into());
    head.push("RSS MiB (peak)".into());
    let _ = writeln!(o, "| {} |", head.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
    for s in &servers {
        let mut row = vec![s.clone()];
        let pc = |w: &str| -> Vec<f64> { sat(s, w).into_iter().filter_map(|r| r.per_core()).collect() };
        for w in ["a", "b", "c"] {
            if has(w) {
                row.push(cell(&pc(w), k));
            }
        }
        if has("c") {
            row.push(cell(&ratio(s, "c"), |x| format!("{x:.2}")));
        }
        if has("d") {
            row.push(cell(&pc("d"), k));
        }
        if has("e") {
            row.push(cell(&pc("e"), k));
            row.push(cell(&ratio(s, "e"), |x| format!("{x:.2}")));
        }
        let avg: Vec<f64> = lat(s).into_iter().filter_map(|r| r.f("lat_avg_us")).collect();
        let p90: Vec<f64> = lat(s).into_iter().filter_map(|r| r.f("lat_p90_us")).collect();
        let p99: Vec<f64> = lat(s).into_iter().filter_map(|r| r.f("lat_p99_us")).collect();
        let us = |x: f64| format!("{x:.0}");
        row.push(if avg.is_empty() {
            "-".into()
        } else if p90.is_empty() {
            format!("{} / - / {}", cell(&avg, us), cell(&p99, us)) // results from before p90 was kept
        } else {
            format!("{} / {} / {}", cell(&avg, us), cell(&p90, us), cell(&p99, us))
        });
        let lost: Vec<f64> = lat(s).into_iter().filter_map(|r| r.f("lost")).collect();
        row.push(cell(&lost, |x| format!("{x:.0}")));
        let rss = runs.iter().filter(|r| r.server == *s).filter_map(|r| r.f("rss_kb")).fold(0.0, f64::max);
        let hwm = runs.iter().filter(|r| r.server == *s).filter_map(|r| r.f("hwm_kb")).fold(0.0, f64::max);
        row.push(if hwm > 0.0 {
            format!("{:.0} ({:.0})", rss / 1024.0, hwm / 1024.0)
        } else {
            format!("{:.0}", rss / 1024.0)
        });
        let _ = writeln!(o, "| {} |", row.join(" | "));
    }

    head_to_head(&mut o, &runs, &servers, a.get("lat-max-steal", 0.004)?);

    let _ = writeln!(
        o,
        "\nRaw QPS (what dnsperf got) and server core share (CPU s / wall s), median of rounds; latency runs at -Q 20000 not included\n"
    );
    let mut head = vec!["server".to_string()];
    for w in &workloads {
        head.push(format!("({w}) qps"));
        head.push(format!("({w}) core"));
    }
    let _ = writeln!(o, "| {} |", head.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
    for s in &servers {
        let mut row = vec![s.clone()];
        for w in &workloads {
            let mut q: Vec<f64> = sat(s, w).into_iter().filter_map(|r| r.raw_qps()).collect();
            let mut c: Vec<f64> = sat(s, w).into_iter().filter_map(|r| r.share()).collect();
            row.push(if q.is_empty() { "-".into() } else { k(median(&mut q)) });
            row.push(if c.is_empty() { "-".into() } else { format!("{:.2}", median(&mut c)) });
        }
        let _ = writeln!(o, "| {} |", row.join(" | "));
    }

    // Noise: foreign CPU and steal per run.
    let mut noisy = Vec::new();
    let mut worst = (0.0f64, 0.0f64);
    for r in &runs {
        let f = r.foreign().unwrap_or(0.0);
        let st = r.f("steal_s").unwrap_or(0.0) / r.f("elapsed_s").unwrap_or(1.0);
        worst.0 = worst.0.max(f);
        worst.1 = worst.1.max(st);
        if f > 0.15 || st > 0.05 {
            noisy.push(format!("{}/{}/r{}/{} foreign {:.2} steal {:.2}", r.server, r.workload, r.round, r.mode, f, st));
        }
    }
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| r.v.get("exit").and_then(Value::as_i64) != Some(0) || r.f("completed").unwrap_or(0.0) == 0.0)
        .map(|r| format!("{}/{}/r{}/{}", r.server, r.workload, r.round, r.mode))
        .collect();
    let _ = writeln!(
        o,
        "\n{} runs; worst foreign CPU {:.2} cores, worst steal {:.2} cores{}",
        runs.len(),
        worst.0,
        worst.1,
        if noisy.is_empty() {
            String::new()
        } else {
            format!("; NOISY (foreign > 0.15 or steal > 0.05, rerun): {}", noisy.join("; "))
        }
    );
    if !bad.is_empty() {
        let _ = writeln!(o, "FAILED runs (dnsperf exit != 0 or nothing completed): {}", bad.join(", "));
    }
    print!("{o}");
    Ok(())
}

/// popdns against each peer round by round, on the figures the targets name:
/// the per-core ratio on (c), (e) against (c), and p99 at the fixed load.
/// Rounds are paired because drift between rounds moves every server alike.
fn head_to_head(o: &mut String, runs: &[Run], servers: &[String], lat_max_steal: f64) {
    let by_round = |s: &str, w: &str, mode: &str, f: &dyn Fn(&Run) -> Option<f64>| -> BTreeMap<String, f64> {
        runs.iter()
            .filter(|r| r.server == s && r.workload == w && r.mode == mode)
            .filter_map(|r| Some((r.round.clone(), f(r)?)))
            .collect()
    };
    let paired = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| -> Vec<f64> {
        a.iter().filter_map(|(round, x)| Some(x / b.get(round)?)).collect()
    };
    // (label, ratios, target, whether the ratio must be at least the target or at most)
    let line = |label: &str, v: Vec<f64>, target: f64, at_least: bool| -> Option<String> {
        if v.is_empty() {
            return None;
        }
        let met = v.iter().filter(|&&x| if at_least { x >= target } else { x <= target }).count();
        let each: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
        let mut m = v.clone();
        let goal = format!("{} {target:.2}", if at_least { ">=" } else { "<=" });
        Some(format!("| {label} | {goal} | {:.2} | {} | {met} of {} |", median(&mut m), each.join(" "), v.len()))
    };
    let per_core = |r: &Run| r.per_core();
    let p99 = |r: &Run| r.f("lat_p99_us");
    let steal = |r: &Run| Some(r.f("steal_s")? / r.f("elapsed_s")?);
    // p99 where the hypervisor took (almost) nothing from the window: steal
    // is what moves a 5 s window's p99 by milliseconds, whichever server runs.
    let quiet_p99 = |r: &Run| p99(r).filter(|_| steal(r).is_some_and(|x| x <= lat_max_steal));
    let has = |s: &str| servers.iter().any(|x| x == s);
    let popdns = |w: &str| by_round("popdns", w, "sat", &per_core);
    let peer = |s: &str, w: &str| by_round(s, w, "sat", &per_core);
    let mut rows = Vec::new();
    // The targets of the performance issue, as bench-notes.md reads them for a 2-core machine.
    for (s, target) in [("gdnsd", 1.0), ("knot", 1.5), ("pdns", 1.0)] {
        if has(s) {
            rows.extend(line(
                &format!("(c) per core, popdns / {s}"),
                paired(&popdns("c"), &peer(s, "c")),
                target,
                true,
            ));
        }
    }
    if has("nsd") {
        rows.extend(line("(d) per core, popdns / nsd", paired(&popdns("d"), &peer("nsd", "d")), 1.0, true));
    }
    rows.extend(line("(e) / (c) per core, popdns", paired(&popdns("e"), &popdns("c")), 0.95, true));
    if has("gdnsd") {
        let lat = |s: &str| by_round(s, "c", "lat", &p99);
        rows.extend(line("(f) p99, popdns / gdnsd", paired(&lat("popdns"), &lat("gdnsd")), 1.0, false));
        let quiet = |s: &str| by_round(s, "c", "lat", &quiet_p99);
        rows.extend(line(
            &format!("(f) p99, popdns / gdnsd, rounds where both saw steal <= {lat_max_steal:.3} cores"),
            paired(&quiet("popdns"), &quiet("gdnsd")),
            1.0,
            false,
        ));
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nHead to head, round by round (same round, same workload): the issue's targets (bench-notes.md reading), median, each round, rounds that meet it\n"
    );
    let _ = writeln!(o, "| ratio | target | median | per round | rounds met |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(o, "{r}");
    }
    let over: Vec<String> = servers
        .iter()
        .filter_map(|s| {
            let v: Vec<f64> =
                runs.iter().filter(|r| r.server == *s && r.mode == "lat").filter_map(|r| r.f("lat_over_1ms")).collect();
            (!v.is_empty()).then(|| format!("{s} {:.2}%", v.iter().sum::<f64>() / v.len() as f64 * 100.0))
        })
        .collect();
    let stolen: Vec<String> = servers
        .iter()
        .filter_map(|s| {
            let v: Vec<String> = by_round(s, "c", "lat", &steal).values().map(|x| format!("{x:.3}")).collect();
            (!v.is_empty()).then(|| format!("{s} {}", v.join(" ")))
        })
        .collect();
    if !stolen.is_empty() {
        let _ = writeln!(o, "\nSteal during the kept (c) latency runs, cores, round by round: {}", stolen.join("; "));
    }
    if !over.is_empty() {
        let _ = writeln!(
            o,
            "\nResponses slower than 1 ms at the fixed load (stalls of the machine, not of one server), mean of rounds: {}",
            over.join(", ")
        );
    }
    // One dnsperf sets the rate of (c) and (e), and a server offered less
    // drains smaller batches and pays more per query: read (e)/(c) with this.
    let raw = |r: &Run| r.raw_qps();
    let offered = paired(&by_round("popdns", "e", "sat", &raw), &by_round("popdns", "c", "sat", &raw));
    if !offered.is_empty() {
        let each: Vec<String> = offered.iter().map(|x| format!("{x:.2}")).collect();
        let _ = writeln!(
            o,
            "\nQueries dnsperf completed in (e) against (c), popdns, round by round (a less loaded server pays more per query): {}",
            each.join(" ")
        );
    }
}
