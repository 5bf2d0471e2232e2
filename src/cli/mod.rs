//! Subcommands, each a thin call into the library.

mod feed;

use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use popdns::config::{self, Snapshot};
use popdns::quality::Quality;

/// An error with the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

/// Invalid input (config, arguments): exit 1.
fn invalid(e: impl Into<anyhow::Error>) -> Failure {
    Failure { code: 1, error: e.into() }
}
/// Runtime failure (cannot bind, ...): exit 2.
fn runtime(e: impl Into<anyhow::Error>) -> Failure {
    Failure { code: 2, error: e.into() }
}

#[derive(Parser)]
#[command(name = "popdns", version, about = "Authoritative GeoDNS scheduler: answers each query with the best POP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        #[arg(short, long, default_value = "popdns.yaml")]
        config: PathBuf,
    },
    /// Load and validate the configuration, print a summary.
    Check {
        #[arg(short, long, default_value = "popdns.yaml")]
        config: PathBuf,
    },
    /// Show how a client's query for NAME is scheduled.
    Explain {
        name: String,
        #[arg(long)]
        client: IpAddr,
        #[arg(short, long, default_value = "popdns.yaml")]
        config: PathBuf,
        /// ECS subnet, e.g. 115.236.1.0/24
        #[arg(long)]
        ecs: Option<String>,
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        #[arg(long)]
        json: bool,
        /// Ask a running server (GET /api/v1/explain) for live health and route quality.
        #[arg(long)]
        server: Option<String>,
    },
    /// What the databases say of an address.
    Geo {
        ip: IpAddr,
        #[arg(short, long, default_value = "popdns.yaml")]
        config: PathBuf,
    },
    /// Build MaxMind DB files from CSV (the recipe of the demo databases in geo/).
    GeoBuild {
        #[arg(long, default_value = "geo/demo-city.csv")]
        city_csv: PathBuf,
        #[arg(long, default_value = "geo/demo-asn.csv")]
        asn_csv: PathBuf,
        #[arg(long, default_value = "geo/demo-city.mmdb")]
        city_out: PathBuf,
        #[arg(long, default_value = "geo/demo-asn.mmdb")]
        asn_out: PathBuf,
    },
    /// Send one route-quality report as an authenticated datagram.
    Feed(feed::FeedArgs),
}

pub fn run() -> Result<(), Failure> {
    let cli = Cli::try_parse().map_err(|e| {
        if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) {
            let _ = e.print();
            std::process::exit(0);
        }
        let _ = e.print();
        std::process::exit(1);
    })?;
    init_tracing();
    if !matches!(cli.cmd, Cmd::Serve { .. }) {
        quiet_on_closed_stdout();
    }
    match cli.cmd {
        Cmd::Serve { config } => serve(&config),
        Cmd::Check { config } => check(&config),
        Cmd::Explain { name, client, config, ecs, qtype, json, server } => {
            explain(&config, &name, client, ecs.as_deref(), &qtype, json, server.as_deref())
        }
        Cmd::Geo { ip, config } => geo(&config, ip),
        Cmd::GeoBuild { city_csv, asn_csv, city_out, asn_out } => {
            popdns::geo::build::build_files(&city_csv, &asn_csv, &city_out, &asn_out).map_err(invalid)?;
            println!("wrote {} and {}", city_out.display(), asn_out.display());
            Ok(())
        }
        Cmd::Feed(args) => feed::run(args),
    }
}

/// A command whose output goes to a closed pipe (`popdns check | head`)
/// ends quietly, as Unix tools do, instead of panicking in `println!` on
/// EPIPE (Rust ignores SIGPIPE). Not for `serve`, whose sockets must never
/// raise it.
fn quiet_on_closed_stdout() {
    // SAFETY: restores the default disposition of one signal, before any
    // thread of ours writes anywhere.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Plain text when stderr is not a terminal, so `listening proto=udp addr=…` can be grepped.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

fn load(path: &Path) -> Result<Snapshot, Failure> {
    config::load(path).map_err(invalid)
}

fn check(path: &Path) -> Result<(), Failure> {
    let snap = load(path)?;
    for w in &snap.warnings {
        eprintln!("{w}");
    }
    let edge = snap.pops.list.iter().filter(|p| p.tier == popdns::pops::Tier::Edge).count();
    println!("{}: ok", path.display());
    println!("  listen dns: {:?}", snap.listen.dns);
    if let Some(f) = snap.listen.feed {
        println!("  listen feed: {f}");
    }
    println!("  pops: {} ({} edge, {} regional)", snap.pops.len(), edge, snap.pops.len() - edge);
    println!("  isps: {}", snap.isps.names[1..].join(", "));
    for z in &snap.zones.list {
        let n = z.nodes.values().filter(|n| n.scheduled.is_some()).count();
        println!("  zone {}: {} names, {} scheduled", z.name, z.nodes.len(), n);
    }
    if let Some(f) = &snap.feed {
        println!("  feed reporters: {}", f.keys.len());
    }
    println!("  geo: {:?}", snap.geo);
    Ok(())
}

fn serve(path: &Path) -> Result<(), Failure> {
    // SIGHUP's default action ends the process, and loading the full
    // databases takes a second or two before the reload handler is in
    // place: a reload sent meanwhile (a deploy's config push) would kill
    // the server. Until then it is ignored; the load reads the files as
    // they are.
    // SAFETY: sets one signal's disposition; tokio's handler replaces it later.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let snap = load(path)?;
    for w in &snap.warnings {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(runtime)?;
    rt.block_on(async move {
        let handle = popdns::server::start(snap).await.map_err(runtime)?;
        wait_for_signals(path, &handle).await;
        tracing::info!("shutting down");
        handle.shutdown().await;
        Ok(())
    })
}

/// SIGINT/SIGTERM stop; SIGHUP reloads (an invalid config keeps the old one serving).
async fn wait_for_signals(path: &Path, handle: &popdns::server::ServerHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            // Compiling the cell table of a full database takes seconds: keep it
            // off the runtime's other tasks (TCP, the feed writer).
            _ = hup.recv() => match tokio::task::block_in_place(|| handle.reload(path)) {
                Ok(g) => tracing::info!(generation = g, "reloaded"),
                Err(e) => tracing::error!("reload failed, keeping the running config: {e}"),
            },
        }
    }
}

fn explain(
    path: &Path,
    name: &str,
    client: IpAddr,
    ecs: Option<&str>,
    qtype: &str,
    json: bool,
    server: Option<&str>,
) -> Result<(), Failure> {
    let v = match server {
        Some(url) => feed::explain_remote(url, name, client, ecs, qtype).map_err(runtime)?,
        None => {
            let snap = load(path)?;
            let quality = Quality { config_generation: snap.generation, ..Default::default() };
            popdns::explain::explain(&snap, &quality, name, client, ecs, qtype).map_err(invalid)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v).map_err(runtime)?);
    } else {
        print!("{}", popdns::explain::to_text(&v));
    }
    Ok(())
}

fn geo(path: &Path, ip: IpAddr) -> Result<(), Failure> {
    let snap = load(path)?;
    let info = snap.geo.records(ip, &snap.isps);
    let cell = snap.geo.client(ip);
    let loc = &info.location;
    let net = |p: u8| format!("{}/{}", popdns::dns::ecs::truncate(ip, p), p);
    println!("address     {ip}");
    println!("location    {}", net(info.location_prefix));
    println!("country     {}", loc.country.map_or("-".into(), |c| c.as_str().to_string()));
    println!("subdivision {}", loc.region.map_or("-".into(), |r| r.as_str().to_string()));
    println!("continent   {}", loc.continent.map_or("-".into(), |c| c.as_str().to_string()));
    println!("coords      {}", loc.coords.map_or("-".into(), |c| format!("{:.4}, {:.4}", c.lat(), c.lon())));
    println!("asn         {} ({})", info.asn.map_or("-".into(), |a| a.to_string()), net(info.asn_prefix));
    println!("isp         {}", snap.isps.name(info.isp));
    println!("cell        {} (cell {})", net(cell.prefix), cell.cell.0);
    Ok(())
}
