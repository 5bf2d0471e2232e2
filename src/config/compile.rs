//! raw -> validated [`Snapshot`]. Every error names the file and line of the
//! item it concerns.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::{ConfigError, ConfigWarning};
use super::raw;
use super::yaml::{self, Doc, LineIndex, Seg};
use crate::geo::{Coords, CountryCode, Databases, IspMap, RegionCode};
use crate::pops::{Coverage, IspId, Pop, PopId, Pops, Tier};
use crate::ypath;
use crate::zones::{self, NameMap, Node, RRset, RankingClass, SchedId, ScheduledName, Zone, Zones, name, rtype};

/// The secret of the demo reporter shipped in feed-keys.yaml: `check` warns
/// while any reporter uses it.
pub const DEMO_FEED_KEY: &str = "64656d6f2d6b65792d646f2d6e6f742d7573652d696e2d70726f64756374696f6e";

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone)]
pub struct Listen {
    pub dns: Vec<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub feed: Option<SocketAddr>,
}

/// Longest ECS source prefixes used for scheduling (longer ones are truncated).
#[derive(Debug, Clone, Copy)]
pub struct EcsLimits {
    pub max_source_v4: u8,
    pub max_source_v6: u8,
}

/// The scheduler's knobs, all in estimated milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Scoring {
    pub km_per_ms: f64,
    pub cross_isp_ms: f64,
    pub loss_ms: f64,
    pub load_ms: f64,
    pub overload: f64,
    pub spread_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// More than half of the reporters with fresh reports.
    Majority,
    Count(u32),
}

#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Reporter id -> shared secret.
    pub keys: HashMap<String, Vec<u8>>,
    pub stale_after: Duration,
    pub max_skew: Duration,
    pub quorum: Quorum,
    pub down_after: u32,
    pub up_after: u32,
    pub max_datagram: usize,
    pub max_reports_per_second: u32,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub workers: usize,
    pub udp_payload: u16,
    pub tcp_clients: usize,
    pub tcp_idle: Duration,
}

/// One generation of everything the query path reads from configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub path: PathBuf,
    pub listen: Listen,
    pub geo: Arc<Databases>,
    /// What `geo` was compiled from (None when the files could not be stamped).
    pub geo_stamp: Option<GeoStamp>,
    pub isps: IspMap,
    pub pops: Pops,
    pub zones: Zones,
    pub ecs: EcsLimits,
    pub scoring: Scoring,
    pub feed: Option<FeedConfig>,
    pub server: ServerConfig,
    pub warnings: Vec<ConfigWarning>,
    /// How to read a route-quality table built for the config this one
    /// replaced (see `Before`).
    pub before: Option<Before>,
}

/// After a reload the feed writer needs a moment (up to its publish gap) to
/// remap its table to the new config's POP ids. Until it has, queries read
/// the table of the config before through this translation, so health,
/// load and routes keep counting across a reload instead of reading as
/// "no data" for those milliseconds.
#[derive(Debug)]
pub struct Before {
    /// The replaced config's generation: the table it translates.
    pub generation: u64,
    /// For each POP of this config, its id in the replaced one.
    pub ids: Box<[Option<PopId>]>,
    /// Whether route rows carry over: their groups name ISPs by index, so
    /// only when the ISP map is unchanged.
    pub rows: bool,
}

impl Snapshot {
    /// The id under which `quality` knows POP `id` of this config: itself
    /// when the table was built for this config, its id before for a table
    /// of the config this one replaced, None for any other table.
    pub fn quality_id(&self, quality_config: u64, id: PopId) -> Option<PopId> {
        if quality_config == self.generation {
            return Some(id);
        }
        self.replaced(quality_config)?.ids.get(id.0 as usize).copied().flatten()
    }

    /// The translation from the config this one replaced, if a table of
    /// config `quality_config` is that config's.
    fn replaced(&self, quality_config: u64) -> Option<&Before> {
        self.before.as_ref().filter(|b| b.generation == quality_config)
    }

    /// Whether a table built for config `quality_config` can give this
    /// config's clients their route rows, and through which POP ids (None:
    /// this config's own).
    pub fn rows_of(&self, quality_config: u64) -> Option<Option<&[Option<PopId>]>> {
        if quality_config == self.generation {
            return Some(None);
        }
        let b = self.replaced(quality_config).filter(|b| b.rows)?;
        Some(Some(&b.ids))
    }
}

/// Load and validate everything `popdns.yaml` points at.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    load_after(path, None)
}

/// Which database files a snapshot's cell table was compiled from, and as
/// what: equal stamps mean the table can be reused.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoStamp {
    files: [FileStamp; 2],
    isps: IspMap,
}

/// One database file as `GeoStamp` knows it: path, size, mtime, (device, inode).
type FileStamp = (PathBuf, u64, Option<std::time::SystemTime>, (u64, u64));

impl GeoStamp {
    fn of(location: &Path, asn: &Path, isps: &IspMap) -> Option<GeoStamp> {
        use std::os::unix::fs::MetadataExt;
        // The inode too: a database renamed over the old one (the way to
        // replace it) is a new file even with the same size and mtime, as
        // a copy that keeps times (cp -p, rsync -t) would have.
        let stamp = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((p.canonicalize().ok()?, m.len(), m.modified().ok(), (m.dev(), m.ino())))
        };
        Some(GeoStamp { files: [stamp(location)?, stamp(asn)?], isps: isps.clone() })
    }
}

/// Load like [`load`], reusing `previous`'s compiled databases when the
/// database files (path, size, mtime) and the ISP map are unchanged: a reload
/// that changes a zone does not compile the cell table again.
pub fn load_after(path: &Path, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigError> {
    let doc: Doc<raw::Main> = yaml::load(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let ctx = Ctx { file: path, lines: &doc.lines };
    let main = &doc.value;
    let mut warnings = Vec::new();

    let listen = listen(&ctx, &main.listen, &mut warnings)?;
    let isps = isps(&ctx, &main.isps)?;
    let (location, asn) = (base.join(&main.geo.location), base.join(&main.geo.asn));
    let geo_stamp = GeoStamp::of(&location, &asn, &isps);
    let geo = match previous.filter(|p| geo_stamp.is_some() && p.geo_stamp == geo_stamp) {
        Some(p) => p.geo.clone(),
        None => Arc::new(Databases::open(&location, &asn, &isps).map_err(|e| ctx.err(&ypath!["geo"], e.to_string()))?),
    };
    let pops = pops(&base.join(&main.pops), &isps, &mut warnings)?;
    let zones = zones(&base.join(&main.zones), &pops, &ctx)?;
    let ecs = ecs(&ctx, &main.ecs)?;
    let scoring = scoring(&ctx, &main.scoring)?;
    let feed = match &main.feed {
        Some(f) => Some(feed(&ctx, &base, f, &mut warnings)?),
        None => None,
    };
    if feed.is_some() != listen.feed.is_some() {
        return Err(ctx.err(&ypath!["listen"], "`listen.feed` and the `feed` section go together"));
    }
    let server = server(&ctx, &main.server)?;
    let before = previous.map(|p| Before {
        generation: p.generation,
        ids: pops.list.iter().map(|pop| p.pops.find(&pop.id)).collect(),
        rows: p.isps == isps,
    });
    release_freed_memory();
    Ok(Snapshot {
        generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        path: path.to_path_buf(),
        listen,
        geo,
        geo_stamp,
        isps,
        pops,
        zones,
        ecs,
        scoring,
        feed,
        server,
        warnings,
        before,
    })
}

/// Compiling the cell table of a full database peaks at several hundred MB of
/// temporary vectors; hand the freed pages back so the server's resident
/// size is what it keeps, not what it once needed.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A file and its line index: turns a path in the document into an error.
struct Ctx<'a> {
    file: &'a Path,
    lines: &'a LineIndex,
}

impl Ctx<'_> {
    fn err(&self, at: &[Seg], msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, self.lines.line(at), msg)
    }
    fn warn(&self, at: &[Seg], msg: impl Into<String>) -> ConfigWarning {
        ConfigWarning { file: self.file.to_path_buf(), line: self.lines.line(at), message: msg.into() }
    }
}

/// `500ms`, `30s`, `5m`, `1h`, `14d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

fn duration(ctx: &Ctx, at: &[Seg], v: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s)
            .ok_or_else(|| ctx.err(at, format!("`{s}` is not a duration (e.g. 500ms, 30s, 5m, 1h, 14d)"))),
    }
}

fn socket_addr(ctx: &Ctx, at: &[Seg], s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| ctx.err(at, format!("`{s}` is not an address:port (IPv6 in brackets)")))
}

fn listen(ctx: &Ctx, l: &raw::Listen, warnings: &mut Vec<ConfigWarning>) -> Result<Listen, ConfigError> {
    let dns = l
        .dns
        .iter()
        .enumerate()
        .map(|(i, s)| socket_addr(ctx, &ypath!["listen", "dns", i], s))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in dns.iter().enumerate().filter(|(_, a)| a.ip().is_unspecified()) {
        // The UDP workers reply from the socket's address: on a wildcard
        // socket the kernel picks it by route, which on a host with several
        // addresses need not be the one asked (RFC 2181 §4.1).
        let msg = format!(
            "`{a}` is a wildcard address: UDP answers may leave from another of the host's addresses \
             than the one asked, and resolvers drop those; list each address instead"
        );
        warnings.push(ctx.warn(&ypath!["listen", "dns", i], msg));
    }
    if dns.is_empty() {
        return Err(ctx.err(&ypath!["listen", "dns"], "`listen.dns` needs at least one address"));
    }
    let http = l.http.as_deref().map(|s| socket_addr(ctx, &ypath!["listen", "http"], s)).transpose()?;
    let feed = l.feed.as_deref().map(|s| socket_addr(ctx, &ypath!["listen", "feed"], s)).transpose()?;
    Ok(Listen { dns, http, feed })
}

fn isps(ctx: &Ctx, m: &yaml::Entries<Vec<u32>>) -> Result<IspMap, ConfigError> {
    let mut names = vec!["other".to_string()];
    let mut by_asn = HashMap::new();
    // Ids in name order, whatever the file's order.
    let mut sorted: Vec<&(String, Vec<u32>)> = m.0.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ctx.err(&ypath!["isps", &w[0].0], format!("ISP `{}` is listed twice", w[0].0)));
    }
    for (name, asns) in sorted {
        let at = ypath!["isps", name];
        if name == "other"
            || name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ctx.err(&at, format!("`{name}` cannot name an ISP")));
        }
        if names.len() > 250 {
            return Err(ctx.err(&at, "more than 250 ISPs"));
        }
        let id = IspId(names.len() as u8);
        names.push(name.clone());
        for (i, asn) in asns.iter().enumerate() {
            if let Some(prev) = by_asn.insert(*asn, id) {
                return Err(ctx.err(
                    &ypath!["isps", name, i],
                    format!("AS{asn} is already listed under `{}`", names[prev.0 as usize]),
                ));
            }
        }
    }
    Ok(IspMap::new(names, by_asn))
}

fn ecs(ctx: &Ctx, e: &raw::Ecs) -> Result<EcsLimits, ConfigError> {
    if e.max_source_v4 > 32 || e.max_source_v4 == 0 {
        return Err(ctx.err(&ypath!["ecs", "max_source_v4"], "must be 1..32"));
    }
    if e.max_source_v6 > 128 || e.max_source_v6 == 0 {
        return Err(ctx.err(&ypath!["ecs", "max_source_v6"], "must be 1..128"));
    }
    Ok(EcsLimits { max_source_v4: e.max_source_v4, max_source_v6: e.max_source_v6 })
}

fn scoring(ctx: &Ctx, s: &raw::Scoring) -> Result<Scoring, ConfigError> {
    let checks = [
        ("km_per_ms", s.km_per_ms, s.km_per_ms > 0.0),
        ("cross_isp_ms", s.cross_isp_ms, s.cross_isp_ms >= 0.0),
        ("loss_ms", s.loss_ms, s.loss_ms >= 0.0),
        ("load_ms", s.load_ms, s.load_ms >= 0.0),
        ("overload", s.overload, s.overload > 0.0 && s.overload <= 1.0),
        ("spread_ms", s.spread_ms, s.spread_ms >= 0.0),
    ];
    for (key, v, ok) in checks {
        if !ok || !v.is_finite() {
            return Err(ctx.err(&ypath!["scoring", key], format!("`{key}: {v}` is out of range")));
        }
    }
    Ok(Scoring {
        km_per_ms: s.km_per_ms,
        cross_isp_ms: s.cross_isp_ms,
        loss_ms: s.loss_ms,
        load_ms: s.load_ms,
        overload: s.overload,
        spread_ms: s.spread_ms,
    })
}

fn server(ctx: &Ctx, s: &raw::Server) -> Result<ServerConfig, ConfigError> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = match &s.workers {
        None => cores,
        Some(raw::Workers::Word(w)) if w == "auto" => cores,
        Some(raw::Workers::Count(n)) if (1..=256).contains(n) => *n,
        Some(_) => return Err(ctx.err(&ypath!["server", "workers"], "`workers` is `auto` or 1..256")),
    };
    let udp_payload = s.udp_payload.unwrap_or(1232);
    if udp_payload < 512 {
        return Err(ctx.err(&ypath!["server", "udp_payload"], "`udp_payload` must be at least 512"));
    }
    Ok(ServerConfig {
        workers,
        udp_payload,
        tcp_clients: s.tcp_clients.unwrap_or(1000).max(1),
        tcp_idle: duration(ctx, &ypath!["server", "tcp_idle"], &s.tcp_idle, Duration::from_secs(10))?,
    })
}

fn feed(ctx: &Ctx, base: &Path, f: &raw::Feed, warnings: &mut Vec<ConfigWarning>) -> Result<FeedConfig, ConfigError> {
    let keys_path = base.join(&f.keys);
    let doc: Doc<yaml::Entries<String>> = yaml::load(&keys_path)?;
    let kctx = Ctx { file: &keys_path, lines: &doc.lines };
    let mut keys: HashMap<String, Vec<u8>> = HashMap::new();
    for (id, hex) in &doc.value.0 {
        let at = ypath![id];
        if keys.contains_key(id) {
            return Err(kctx.err(&at, format!("reporter id `{id}` is listed twice")));
        }
        if !crate::quality::feed::valid_reporter_id(id) {
            return Err(kctx.err(&at, format!("reporter id `{id}` must match [A-Za-z0-9._-]+")));
        }
        if hex.trim() == DEMO_FEED_KEY {
            warnings.push(kctx.warn(&at, format!("reporter `{id}` uses the shipped demo key: generate a secret")));
        }
        let secret =
            crate::quality::feed::decode_hex(hex.trim()).ok_or_else(|| kctx.err(&at, "the secret is not hex"))?;
        if secret.len() < crate::quality::feed::MIN_KEY_BYTES {
            return Err(
                kctx.err(&at, format!("the secret is shorter than {} bytes", crate::quality::feed::MIN_KEY_BYTES))
            );
        }
        // The MAC covers the body only, not the reporter id: with one secret
        // for two ids, anyone who sees a datagram of one could send it again
        // as the other's, one report counting as two votes.
        if let Some((other, _)) = keys.iter().find(|(_, k)| **k == secret) {
            return Err(kctx.err(&at, format!("reporters `{other}` and `{id}` share a secret: give each its own")));
        }
        keys.insert(id.clone(), secret);
    }
    let quorum = match &f.quorum {
        None => Quorum::Majority,
        Some(raw::Quorum::Word(w)) if w == "majority" => Quorum::Majority,
        Some(raw::Quorum::Count(n)) if *n >= 1 => Quorum::Count(*n),
        Some(_) => return Err(ctx.err(&ypath!["feed", "quorum"], "`quorum` is `majority` or an integer >= 1")),
    };
    let at_least_one = |v: Option<u32>, key: &str| match v {
        Some(0) => Err(ctx.err(&ypath!["feed", key], format!("`{key}` must be at least 1"))),
        v => Ok(v.unwrap_or(2)),
    };
    let stale_after = duration(ctx, &ypath!["feed", "stale_after"], &f.stale_after, Duration::from_secs(30))?;
    let max_skew = duration(ctx, &ypath!["feed", "max_skew"], &f.max_skew, Duration::from_secs(30))?;
    for (key, d) in [("stale_after", stale_after), ("max_skew", max_skew)] {
        if d.is_zero() {
            // 0 would expire every report at once, or accept none.
            return Err(ctx.err(&ypath!["feed", key], format!("`{key}` must be longer than 0")));
        }
    }
    if max_skew > stale_after {
        // One report dated max_skew ahead (a clock glitch) makes the
        // reporter's next reports replays for that long: longer than its
        // data lives, so its POPs go without its view meanwhile.
        let msg = "`max_skew` is longer than `stale_after`: after one report dated ahead, a reporter's data can \
                   expire before its next report is accepted";
        warnings.push(ctx.warn(&ypath!["feed", "max_skew"], msg));
    }
    Ok(FeedConfig {
        keys,
        stale_after,
        max_skew,
        quorum,
        down_after: at_least_one(f.down_after, "down_after")?,
        up_after: at_least_one(f.up_after, "up_after")?,
        max_datagram: match f.max_datagram.unwrap_or(8192) {
            // The header alone takes about 80 bytes; 65,507 is the most a UDP datagram holds.
            n @ 128..=65507 => n,
            n => return Err(ctx.err(&ypath!["feed", "max_datagram"], format!("`max_datagram` {n} is not 128..65507"))),
        },
        max_reports_per_second: f.max_reports_per_second.unwrap_or(100),
    })
}

fn pops(file: &Path, isps: &IspMap, warnings: &mut Vec<ConfigWarning>) -> Result<Pops, ConfigError> {
    let doc: Doc<Vec<raw::Pop>> = yaml::load(file)?;
    let ctx = Ctx { file, lines: &doc.lines };
    let mut list = Vec::with_capacity(doc.value.len());
    let mut seen: HashMap<&str, usize> = HashMap::new();
    if doc.value.len() > u16::MAX as usize {
        return Err(ctx.err(&[], "more than 65535 POPs"));
    }
    for (i, p) in doc.value.iter().enumerate() {
        let at = |k: &str| ypath![i, k];
        if p.id.is_empty() || !p.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(ctx.err(&at("id"), format!("POP id `{}` must match [a-z0-9-]+", p.id)));
        }
        if let Some(first) = seen.insert(&p.id, i) {
            let first_line = doc.lines.line(&ypath![first]);
            return Err(ctx.err(&at("id"), format!("duplicate POP id `{}` (first defined at line {first_line})", p.id)));
        }
        let country = CountryCode::parse(&p.country)
            .ok_or_else(|| ctx.err(&at("country"), format!("`{}` is not an ISO 3166-1 alpha-2 code", p.country)))?;
        let region = match &p.region {
            None => None,
            Some(r) => Some(RegionCode::parse(r).ok_or_else(|| {
                ctx.err(&at("region"), format!("`{r}` is not a subdivision code (1-3 letters or digits)"))
            })?),
        };
        let coords = Coords::new(p.coords[0], p.coords[1]).ok_or_else(|| {
            ctx.err(
                &at("coords"),
                format!("coordinates {:?} out of range (latitude -90..90, longitude -180..180)", p.coords),
            )
        })?;
        let isp =
            match &p.isp {
                None => None,
                Some(name) => Some(isps.by_name(name).filter(|id| *id != IspId::OTHER).ok_or_else(|| {
                    ctx.err(&at("isp"), format!("unknown ISP `{name}` (not in `isps` of popdns.yaml)"))
                })?),
            };
        let ipv4 = addrs::<Ipv4Addr>(&ctx, i, "ipv4", &p.ipv4, "IPv4")?;
        let ipv6 = addrs::<Ipv6Addr>(&ctx, i, "ipv6", &p.ipv6, "IPv6")?;
        let tier = match p.tier.as_str() {
            "edge" => Tier::Edge,
            "regional" => Tier::Regional,
            t => return Err(ctx.err(&at("tier"), format!("tier `{t}` is not `edge` or `regional`"))),
        };
        let default_up = match p.default_health.as_str() {
            "up" => true,
            "down" => false,
            h => return Err(ctx.err(&at("default_health"), format!("`{h}` is not `up` or `down`"))),
        };
        if tier == Tier::Edge && ipv4.is_empty() && ipv6.is_empty() {
            warnings.push(ctx.warn(&ypath![i], format!("edge POP `{}` has no address", p.id)));
        }
        list.push(Pop {
            id: p.id.clone(),
            country,
            region,
            coords,
            unit: coords.unit(),
            isp,
            ipv4,
            ipv6,
            capacity: p.capacity,
            tier,
            default_up,
            mainland: country.is_mainland(),
        });
    }
    if !list.iter().any(|p| p.tier == Tier::Edge && !(p.ipv4.is_empty() && p.ipv6.is_empty())) {
        // Every scheduled name would answer NODATA.
        return Err(ctx.err(&[], "no edge POP with an address: scheduled names would have nothing to answer"));
    }
    Ok(Pops::new(list))
}

fn addrs<T: std::str::FromStr>(ctx: &Ctx, i: usize, key: &str, v: &[String], fam: &str) -> Result<Vec<T>, ConfigError> {
    v.iter()
        .enumerate()
        .map(|(j, s)| {
            s.parse::<T>().map_err(|_| {
                let what = match s.parse::<IpAddr>() {
                    Ok(_) => format!("address of the wrong family: `{s}` in `{key}` is not {fam}"),
                    Err(_) => format!("`{s}` is not an {fam} address"),
                };
                ctx.err(&ypath![i, key, j], what)
            })
        })
        .collect()
}

/// Every `*.yaml` in the zones folder, sorted by file name.
fn zones(dir: &Path, pops: &Pops, main: &Ctx) -> Result<Zones, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| main.err(&ypath!["zones"], format!("{}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(main.err(&ypath!["zones"], format!("{}: no zone files (*.yaml)", dir.display())));
    }
    let mut list: Vec<Zone> = Vec::new();
    // Each zone file's name and lines, for errors that point at its `zone` key
    // (looked up only then: finding lines parses the file again).
    let mut origins: Vec<(PathBuf, LineIndex)> = Vec::new();
    let mut scheduled = Vec::new();
    let mut lists = PopLists::default();
    for file in &files {
        let doc: Doc<raw::Zone> = yaml::load(file)?;
        let ctx = Ctx { file, lines: &doc.lines };
        let zone = zone(&ctx, &doc.value, pops, &mut scheduled, &mut lists)?;
        if let Some(prev) = list.iter().position(|z| z.apex == zone.apex) {
            let (pf, pl) = &origins[prev];
            let pl = pl.line(&ypath!["zone"]);
            return Err(
                ctx.err(&ypath!["zone"], format!("zone `{}` is already defined in {}:{pl}", zone.name, pf.display()))
            );
        }
        origins.push((file.clone(), doc.lines));
        list.push(zone);
    }
    let zones = Zones::new(list, scheduled);
    // Overlapping zones: the longest match wins, so data of a parent zone at or
    // below a child zone's apex could never be answered. Refuse it.
    for (zi, z) in zones.list.iter().enumerate() {
        for (n, node) in z.nodes.iter() {
            let owner = zones.find(n).map(|o| o.apex.clone());
            if owner.as_deref() != Some(&z.apex[..]) && (!node.rrsets.is_empty() || node.scheduled.is_some()) {
                let (f, l) = &origins[zi];
                return Err(ConfigError::new(
                    f,
                    l.line(&ypath!["zone"]),
                    format!(
                        "`{}` lies in zone `{}`, which is configured too",
                        name::to_text(n),
                        name::to_text(&owner.unwrap_or_default())
                    ),
                ));
            }
        }
    }
    Ok(zones)
}

/// Full lower-case wire name of a record key: `@`, relative, or absolute (trailing dot, inside the zone).
fn owner(ctx: &Ctx, at: &[Seg], key: &str, apex: &[u8], zone: &str) -> Result<Vec<u8>, ConfigError> {
    let full = if key == "@" {
        return Ok(apex.to_vec());
    } else if key.ends_with('.') {
        key.to_string()
    } else {
        format!("{key}.{zone}")
    };
    let wire = name::lower(&name::to_wire(&full).map_err(|e| ctx.err(at, e))?);
    if !name::is_subdomain(&wire, apex) {
        return Err(ctx.err(at, format!("`{key}` is outside zone `{zone}`")));
    }
    if wire[1..].contains(&b'*') && !(wire[0] == 1 && wire[1] == b'*' && !wire[2..].contains(&b'*')) {
        return Err(ctx.err(at, format!("`{key}`: a wildcard `*` may only be the whole leftmost label")));
    }
    Ok(wire)
}

/// Interned POP lists of scheduled names, and the ranking class of each
/// (list, coverage) pair.
#[derive(Default)]
struct PopLists {
    lists: HashMap<Vec<PopId>, (Arc<[PopId]>, u32)>,
    classes: HashMap<(u32, Coverage), RankingClass>,
    /// The list of every POP and its number, once made.
    all: Option<(Arc<[PopId]>, u32)>,
}

impl PopLists {
    fn intern(&mut self, list: Vec<PopId>, coverage: Coverage) -> (Arc<[PopId]>, RankingClass) {
        let (arc, n) = self.list(list);
        self.class(arc, n, coverage)
    }

    /// Every POP (`pops: all`, the default), interned like any list but
    /// built and hashed once: per name, at 1,000 POPs and a million names,
    /// that was 2 GB of lists made and hashed and half of the load's time.
    fn all(&mut self, pops: usize, coverage: Coverage) -> (Arc<[PopId]>, RankingClass) {
        let (arc, n) = match &self.all {
            Some(a) => a.clone(),
            None => {
                let a = self.list((0..pops).map(|i| PopId(i as u16)).collect());
                self.all = Some(a.clone());
                a
            }
        };
        self.class(arc, n, coverage)
    }

    /// The shared copy of `list`, and its number.
    fn list(&mut self, list: Vec<PopId>) -> (Arc<[PopId]>, u32) {
        let n = self.lists.len() as u32;
        self.lists.entry(list).or_insert_with_key(|l| (l.as_slice().into(), n)).clone()
    }

    fn class(&mut self, arc: Arc<[PopId]>, list: u32, coverage: Coverage) -> (Arc<[PopId]>, RankingClass) {
        let n = self.classes.len() as u32;
        (arc, *self.classes.entry((list, coverage)).or_insert(RankingClass(n)))
    }
}

fn zone(
    ctx: &Ctx,
    z: &raw::Zone,
    pops: &Pops,
    scheduled: &mut Vec<ScheduledName>,
    lists: &mut PopLists,
) -> Result<Zone, ConfigError> {
    let zname = z.zone.trim_end_matches('.').to_string();
    let apex = name::lower(&name::to_wire(&zname).map_err(|e| ctx.err(&ypath!["zone"], e))?);
    let mut nodes: NameMap<Node> = NameMap::default();
    let soa = &z.soa;
    let mut soa_rdata = Vec::new();
    for n in [&soa.mname, &soa.rname] {
        soa_rdata.extend(name::to_wire(n).map_err(|e| ctx.err(&ypath!["soa"], e))?);
    }
    for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
        soa_rdata.extend_from_slice(&v.to_be_bytes());
    }
    let apex_node = nodes.entry_or_default(&apex);
    apex_node.rrsets.push(RRset {
        rtype: rtype::SOA,
        records: vec![zones::record_tail(rtype::SOA, z.ttl, &soa_rdata)],
        target: None,
        glue: vec![],
    });
    let negative_soa = zones::record_tail(rtype::SOA, z.ttl.min(soa.minimum), &soa_rdata);

    // Names and types written twice (`www` and `WWW`, `www` and
    // `www.example.com.`): a map would keep one of them without a word.
    // So far the map holds the apex (for its SOA) and the names before.
    let mut apex_listed = false;
    for (key, types) in &z.records.0 {
        let at = ypath!["records", key];
        let wire = owner(ctx, &at, key, &apex, &zname)?;
        let listed = if wire == apex { std::mem::replace(&mut apex_listed, true) } else { nodes.contains_key(&wire) };
        if listed {
            return Err(ctx.err(&at, format!("`{key}` is listed twice (names are case-insensitive)")));
        }
        let node = nodes.entry_or_default(&wire);
        for (tname, values) in &types.0 {
            let tat = ypath!["records", key, tname];
            let t = rtype::from_name(tname).ok_or_else(|| ctx.err(&tat, format!("unknown record type `{tname}`")))?;
            if t == rtype::SOA {
                return Err(ctx.err(&tat, "the SOA is set by the `soa` key"));
            }
            if node.rrset(t).is_some() {
                return Err(ctx.err(&tat, format!("`{tname}` is listed twice for `{key}`")));
            }
            if t == rtype::NS && wire != apex {
                return Err(ctx.err(&tat, "NS below the apex (a delegation) is not supported"));
            }
            let vals = values.values();
            if vals.is_empty() {
                return Err(ctx.err(&tat, format!("`{tname}` needs at least one value")));
            }
            if t == rtype::CNAME && vals.len() != 1 {
                return Err(ctx.err(&tat, "CNAME takes exactly one value"));
            }
            let mut records = Vec::new();
            let mut target = None;
            for (j, v) in vals.iter().enumerate() {
                let data = zones::rdata(t, &v.text()).map_err(|e| ctx.err(&ypath!["records", key, tname, j], e))?;
                if t == rtype::CNAME {
                    target = Some(name::lower(&data).into_boxed_slice());
                }
                records.push(zones::record_tail(t, z.ttl, &data));
            }
            node.rrsets.push(RRset { rtype: t, records, target, glue: vec![] });
        }
        if node.rrset(rtype::CNAME).is_some() && node.rrsets.len() > 1 {
            return Err(ctx.err(&at, "a CNAME cannot stand beside other data (RFC 1034 §3.6.2)"));
        }
        if wire == apex && node.rrset(rtype::CNAME).is_some() {
            return Err(ctx.err(&at, "a CNAME cannot stand at the zone apex"));
        }
    }

    no_alias_targets(ctx, z, &apex, &zname, &nodes)?;

    let no_settings = raw::Scheduled::default();
    for (key, s) in &z.scheduled.0 {
        let at = ypath!["scheduled", key];
        let wire = owner(ctx, &at, key, &apex, &zname)?;
        // `name:` with nothing under it takes every default.
        let s = s.as_ref().unwrap_or(&no_settings);
        let coverage = match &s.coverage {
            None => Coverage::Global,
            Some(c) => Coverage::parse(c).ok_or_else(|| {
                ctx.err(
                    &ypath!["scheduled", key, "coverage"],
                    format!("coverage `{c}` is not mainland, global or global-excluding-mainland"),
                )
            })?,
        };
        let answers = s.answers.unwrap_or(1);
        if !(1..=8).contains(&answers) {
            return Err(ctx.err(&ypath!["scheduled", key, "answers"], "`answers` must be 1..8"));
        }
        let list = match &s.pops {
            None => None,
            Some(raw::PopsSel::Word(w)) if w == "all" => None,
            Some(raw::PopsSel::Word(w)) => {
                return Err(ctx.err(
                    &ypath!["scheduled", key, "pops"],
                    format!("`pops: {w}`: expected `all` or a list of POP ids"),
                ));
            }
            Some(raw::PopsSel::List(l)) => {
                let mut ids = Vec::new();
                let mut seen = HashSet::new();
                for (j, p) in l.iter().enumerate() {
                    let id = pops.find(p).ok_or_else(|| {
                        ctx.err(&ypath!["scheduled", key, "pops", j], format!("unknown POP `{p}` (not in pops.yaml)"))
                    })?;
                    if seen.insert(id) {
                        ids.push(id);
                    }
                }
                Some(ids)
            }
        };
        let node = nodes.entry_or_default(&wire);
        if node.scheduled.is_some() {
            return Err(ctx.err(&at, format!("`{key}` is listed twice (names are case-insensitive)")));
        }
        if !node.rrsets.is_empty() {
            return Err(
                ctx.err(&at, format!("`{key}` has static records too: a scheduled name answers only A and AAAA"))
            );
        }
        node.scheduled = Some(SchedId(scheduled.len() as u32));
        let (pops, ranking) = match list {
            Some(list) => lists.intern(list, coverage),
            None => lists.all(pops.len(), coverage),
        };
        scheduled.push(ScheduledName { coverage, answers, ttl: s.ttl.unwrap_or(60), pops, ranking });
    }

    add_empty_non_terminals(&mut nodes, &apex);
    add_glue(&mut nodes, &apex);
    nodes.shrink_to_fit();
    Ok(Zone { name: zname, apex: apex.into(), negative_soa, nodes })
}

/// NS, MX and SRV targets in the zone must not be aliases (RFC 2181 §10.3,
/// RFC 2782): a resolver asking for the target's address would get a CNAME
/// where the protocol expects the host itself.
fn no_alias_targets(
    ctx: &Ctx,
    z: &raw::Zone,
    apex: &[u8],
    zname: &str,
    nodes: &NameMap<Node>,
) -> Result<(), ConfigError> {
    for (key, types) in &z.records.0 {
        let wire = owner(ctx, &ypath!["records", key], key, apex, zname)?;
        let Some(node) = nodes.get(&wire) else { continue };
        for (tname, _) in &types.0 {
            // Where the target name starts in a record tail (type, class,
            // TTL and RDLENGTH take 10 bytes; MX and SRV put numbers first).
            let (t, skip) = match rtype::from_name(tname) {
                Some(rtype::NS) => (rtype::NS, 10),
                Some(rtype::MX) => (rtype::MX, 12),
                Some(rtype::SRV) => (rtype::SRV, 16),
                _ => continue,
            };
            for rec in node.rrset(t).map(|r| r.records.as_slice()).unwrap_or_default() {
                let target = name::lower(rec.get(skip..).unwrap_or_default());
                if nodes.get(&target[..]).is_some_and(|n| n.rrset(rtype::CNAME).is_some()) {
                    return Err(ctx.err(
                        &ypath!["records", key, tname],
                        format!(
                            "{tname} target `{}` is an alias (CNAME): name the host itself (RFC 2181 §10.3)",
                            name::to_text(&target)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every ancestor of a node, up to the apex, becomes a node (RFC 8020).
fn add_empty_non_terminals(nodes: &mut NameMap<Node>, apex: &[u8]) {
    let mut name = [0u8; 255];
    for i in 0..nodes.len() {
        // Copied out: adding parents may move the map's name arena.
        let n = nodes.key_at(i);
        let len = n.len().min(name.len());
        name[..len].copy_from_slice(&n[..len]);
        let mut cur: &[u8] = &name[..len];
        while cur != apex {
            let Some(p) = name::parent(cur) else { break };
            if nodes.contains_key(p) {
                break; // and so are its ancestors
            }
            nodes.entry_or_default(p);
            cur = p;
        }
    }
}

/// Apex NS targets inside the zone get their A and AAAA as glue.
fn add_glue(nodes: &mut NameMap<Node>, apex: &[u8]) {
    let Some(ns) = nodes.get(apex).and_then(|n| n.rrset(rtype::NS)) else { return };
    let mut glue = Vec::new();
    for rec in &ns.records {
        let target = name::lower(&rec[10..]);
        if let Some(tn) = nodes.get(&target[..]) {
            for t in [rtype::A, rtype::AAAA] {
                for r in tn.rrset(t).map(|r| r.records.as_slice()).unwrap_or_default() {
                    glue.push((target.clone().into_boxed_slice(), r.clone()));
                }
            }
        }
    }
    if let Some(ns) = nodes.get_mut(apex).and_then(|n| n.rrsets.iter_mut().find(|r| r.rtype == rtype::NS)) {
        ns.glue = glue;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("14d"), Some(Duration::from_secs(14 * 86400)));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(parse_duration("s"), None);
    }

    /// `pops: all` (or none) and the same list written out share one
    /// interned list and ranking class, whichever comes first; another
    /// order or coverage is another class.
    #[test]
    fn every_pop_is_one_list_however_it_is_asked_for() {
        let all = |n: u16| (0..n).map(PopId).collect::<Vec<_>>();
        let mut l = PopLists::default();
        let (a, ca) = l.all(3, Coverage::Global);
        assert_eq!(&a[..], &all(3)[..]);
        let (b, cb) = l.intern(all(3), Coverage::Global);
        assert!(Arc::ptr_eq(&a, &b) && ca == cb);
        let (c, cc) = l.all(3, Coverage::Mainland);
        assert!(Arc::ptr_eq(&a, &c) && cc != ca);
        assert_eq!(l.all(3, Coverage::Global).1, ca, "asked again");
        let mut l = PopLists::default();
        let (x, cx) = l.intern(all(2), Coverage::Global);
        let (r, cr) = l.intern(vec![PopId(1), PopId(0)], Coverage::Global);
        let (y, cy) = l.all(2, Coverage::Global);
        assert!(Arc::ptr_eq(&x, &y) && cx == cy);
        assert!(!Arc::ptr_eq(&r, &y) && cr != cy);
        assert_eq!(l.lists.len(), 2);
    }

    #[test]
    fn hex() {
        use crate::quality::feed::decode_hex;
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
