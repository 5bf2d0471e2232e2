//! The MaxMind DB readers: the only code that knows the databases' field names.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use maxminddb::{LookupResult, Mmap, PathElement, Reader};

use super::{ClientInfo, Continent, Coords, CountryCode, IspMap, Location, LocationCache, RegionCode};

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{}: cannot open MaxMind DB: {source}", .path.display())]
    Open { path: PathBuf, source: maxminddb::MaxMindDbError },
    #[error("{}: database type `{found}` is not a {expected} database", .path.display())]
    Layout { path: PathBuf, found: String, expected: &'static str },
}

static LOAD_IDS: AtomicU64 = AtomicU64::new(1);

/// The location (City or Country layout) and ASN databases, memory-mapped.
pub struct Databases {
    location: Reader<Mmap>,
    asn: Reader<Mmap>,
    /// Unique per load: keys worker caches so a reload never serves stale records.
    load_id: u64,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases")
            .field("location", &self.location.metadata().database_type)
            .field("asn", &self.asn.metadata().database_type)
            .finish()
    }
}

fn open(path: &Path) -> Result<Reader<Mmap>, GeoError> {
    // SAFETY: the file must not be modified in place while mapped. Operators
    // replace databases by writing a new file and renaming it over the old one,
    // which leaves this mapping on the old inode.
    unsafe { Reader::open_mmap(path) }.map_err(|source| GeoError::Open { path: path.to_path_buf(), source })
}

impl Databases {
    pub fn open(location: &Path, asn: &Path) -> Result<Databases, GeoError> {
        let loc = open(location)?;
        let t = &loc.metadata().database_type;
        if !(t.contains("City") || t.contains("Country")) {
            return Err(GeoError::Layout { path: location.into(), found: t.clone(), expected: "City or Country" });
        }
        let asn_db = open(asn)?;
        let t = &asn_db.metadata().database_type;
        if !(t.contains("ASN") || t.contains("ISP")) {
            return Err(GeoError::Layout { path: asn.into(), found: t.clone(), expected: "ASN" });
        }
        Ok(Databases { location: loc, asn: asn_db, load_id: LOAD_IDS.fetch_add(1, Ordering::Relaxed) })
    }

    /// Build epochs (seconds) of the location and ASN databases.
    pub fn build_epochs(&self) -> (u64, u64) {
        (self.location.metadata().build_epoch, self.asn.metadata().build_epoch)
    }

    /// Location, ASN, ISP and the two records' prefixes. Never fails: a
    /// database error reads as "unknown" with the widest prefix the tree gave.
    pub fn lookup(&self, ip: IpAddr, isps: &IspMap, cache: Option<&mut LocationCache>) -> ClientInfo {
        let full = if ip.is_ipv4() { 32 } else { 128 };
        let (location, location_prefix) = match self.location.lookup(ip) {
            Ok(res) => {
                let prefix = prefix_of(&res, full);
                let loc = match (res.offset(), cache) {
                    (None, _) => Location::default(),
                    (Some(off), Some(cache)) => match cache.get(self.load_id, off) {
                        Some(loc) => loc,
                        None => {
                            let loc = decode_location(&res);
                            cache.put(self.load_id, off, loc);
                            loc
                        }
                    },
                    (Some(_), None) => decode_location(&res),
                };
                (loc, prefix)
            }
            Err(_) => (Location::default(), full),
        };
        let (asn, asn_prefix) = match self.asn.lookup(ip) {
            Ok(res) => {
                let asn = res.decode_path::<u32>(&[PathElement::Key("autonomous_system_number")]).ok().flatten();
                (asn, prefix_of(&res, full))
            }
            Err(_) => (None, full),
        };
        ClientInfo { location, asn, isp: isps.of_asn(asn), location_prefix, asn_prefix }
    }
}

fn prefix_of<S: AsRef<[u8]>>(res: &LookupResult<'_, S>, full: u8) -> u8 {
    match res.network() {
        Ok(net) => net.prefix().min(full),
        Err(_) => full,
    }
}

fn decode_location<S: AsRef<[u8]>>(res: &LookupResult<'_, S>) -> Location {
    use PathElement::{Index, Key};
    let s = |p: &[PathElement<'_>]| res.decode_path::<&str>(p).ok().flatten();
    let f = |p: &[PathElement<'_>]| res.decode_path::<f64>(p).ok().flatten();
    let country = s(&[Key("country"), Key("iso_code")]).and_then(CountryCode::parse);
    let region = s(&[Key("subdivisions"), Index(0), Key("iso_code")]).and_then(RegionCode::parse);
    let continent = s(&[Key("continent"), Key("code")]).and_then(Continent::parse);
    let coords = match (f(&[Key("location"), Key("latitude")]), f(&[Key("location"), Key("longitude")])) {
        (Some(lat), Some(lon)) => Coords::new(lat, lon),
        _ => None,
    };
    Location { country, region, continent, coords }
}
