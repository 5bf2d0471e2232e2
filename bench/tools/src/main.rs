//! pbench: the helpers behind bench/run.sh and bench/scale.sh.
//!
//! Subcommands (each prints its own usage on a bad argument):
//!   sample     draw distinct client /24s from the real databases (carriers + uniform routed)
//!   workloads  write dnsperf -B input files (a)-(d) from a sample file
//!   inventory  edge POPs -> pops.tsv, region table -> regions.tsv, Knot geo.conf
//!   check      ask every server about N sampled /24s; agreement with nearest-by-coords and the table
//!   measure    run dnsperf and meter it: server-tree CPU, machine CPU, steal, RSS, latency
//!   report     the table from results.jsonl
//!   feed       route-quality feed load: every reporter of a keys file at R reports/s
//!   probe      query until answered; print time to first answer
//!   scale-gen  synthetic POP inventories and zones for bench/scale.sh
//!   lat        avg/p50/p99 of a dnsperf -v output file
//!   quiet      wait until the machine is idle (between runs)

mod args;
mod check;
mod feed;
mod inventory;
mod measure;
mod report;
mod sample;
mod scale;
mod wire;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().cloned() else {
        eprintln!("usage: pbench <sample|workloads|inventory|check|measure|report|feed|probe|scale-gen|lat|quiet> ...");
        return ExitCode::from(1);
    };
    let a = args::Args::parse(&argv[1..]);
    let r = match cmd.as_str() {
        "sample" => sample::run(&a),
        "workloads" => sample::workloads(&a),
        "inventory" => inventory::run(&a),
        "check" => check::run(&a),
        "measure" => measure::run(&a),
        "report" => report::run(&a),
        "feed" => feed::run(&a),
        "probe" => check::probe(&a),
        "scale-gen" => scale::run(&a),
        "lat" => measure::lat_cmd(&a),
        "quiet" => measure::quiet(&a),
        _ => Err(format!("unknown subcommand {cmd}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pbench {cmd}: {e}");
            ExitCode::from(1)
        }
    }
}
