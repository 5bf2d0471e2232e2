//! Serde structs mirroring the files word for word (`deny_unknown_fields`
//! everywhere: an unknown key is an error, with its line). Nothing here is
//! validated beyond its YAML type; `compile` does the rest.

use std::path::PathBuf;

use serde::Deserialize;

use super::yaml::Entries;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Main {
    pub listen: Listen,
    pub geo: Geo,
    #[serde(default)]
    pub isps: Entries<Vec<u32>>,
    pub pops: PathBuf,
    pub zones: PathBuf,
    #[serde(default)]
    pub ecs: Ecs,
    #[serde(default)]
    pub scoring: Scoring,
    #[serde(default)]
    pub feed: Option<Feed>,
    #[serde(default)]
    pub server: Server,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub feed: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    pub location: PathBuf,
    pub asn: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ecs {
    pub max_source_v4: u8,
    pub max_source_v6: u8,
}
impl Default for Ecs {
    fn default() -> Self {
        Ecs { max_source_v4: 24, max_source_v6: 56 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scoring {
    pub km_per_ms: f64,
    pub cross_isp_ms: f64,
    pub loss_ms: f64,
    pub load_ms: f64,
    pub overload: f64,
    pub spread_ms: f64,
}
impl Default for Scoring {
    fn default() -> Self {
        Scoring { km_per_ms: 50.0, cross_isp_ms: 40.0, loss_ms: 500.0, load_ms: 30.0, overload: 0.95, spread_ms: 5.0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    pub keys: PathBuf,
    #[serde(default)]
    pub stale_after: Option<String>,
    #[serde(default)]
    pub max_skew: Option<String>,
    #[serde(default)]
    pub quorum: Option<Quorum>,
    #[serde(default)]
    pub down_after: Option<u32>,
    #[serde(default)]
    pub up_after: Option<u32>,
    #[serde(default)]
    pub max_datagram: Option<usize>,
    #[serde(default)]
    pub max_reports_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Quorum {
    Count(u32),
    Word(String),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub workers: Option<Workers>,
    pub udp_payload: Option<u16>,
    pub tcp_clients: Option<usize>,
    pub tcp_idle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Workers {
    Count(usize),
    Word(String),
}

/// One item of pops.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop {
    pub id: String,
    pub country: String,
    #[serde(default)]
    pub region: Option<String>,
    pub coords: [f64; 2],
    #[serde(default)]
    pub isp: Option<String>,
    #[serde(default)]
    pub ipv4: Vec<String>,
    #[serde(default)]
    pub ipv6: Vec<String>,
    #[serde(default = "one_hundred")]
    pub capacity: u32,
    #[serde(default = "edge")]
    pub tier: String,
    #[serde(default = "up")]
    pub default_health: String,
}
fn one_hundred() -> u32 {
    100
}
fn edge() -> String {
    "edge".into()
}
fn up() -> String {
    "up".into()
}

/// One zones/*.yaml file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub zone: String,
    pub soa: Soa,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default)]
    pub records: Entries<Entries<OneOrMany>>,
    #[serde(default)]
    pub scheduled: Entries<Option<Scheduled>>,
}
fn default_ttl() -> u32 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Soa {
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// Record data: one value or a list; numbers allowed (e.g. an unquoted TXT).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

impl OneOrMany {
    pub fn values(&self) -> Vec<&Scalar> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v.iter().collect(),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Scheduled {
    #[serde(default)]
    pub coverage: Option<String>,
    #[serde(default)]
    pub answers: Option<u8>,
    #[serde(default)]
    pub ttl: Option<u32>,
    #[serde(default)]
    pub pops: Option<PopsSel>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum PopsSel {
    List(Vec<String>),
    Word(String),
}
