//! The MaxMind DB readers: the only code that knows the databases' field names.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{LookupResult, MaxMindDbError, Mmap, PathElement, Reader};

use super::cells::Cells;
use super::raw::{Data, Tree};
use super::{ClientInfo, Continent, Coords, CountryCode, IspMap, Location, Records, RegionCode};

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{}: cannot open MaxMind DB: {source}", .path.display())]
    Open { path: PathBuf, source: MaxMindDbError },
    #[error("{}: database type `{found}` is not a {expected} database", .path.display())]
    Layout { path: PathBuf, found: String, expected: &'static str },
}

/// The location (City or Country layout) and ASN databases, memory-mapped,
/// and the client-cell table compiled from them.
pub struct Databases {
    location: Reader<Mmap>,
    asn: Reader<Mmap>,
    pub cells: Cells,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases")
            .field("location", &self.location.metadata().database_type)
            .field("asn", &self.asn.metadata().database_type)
            .field("cells", &self.cells)
            .finish()
    }
}

/// A database's reader, and the open file: the compile maps that same file
/// again, so a database renamed over this one meanwhile cannot give the
/// cells one file and `records` (explain, `geo`) another.
fn open(path: &Path) -> Result<(Reader<Mmap>, File), GeoError> {
    let file = File::open(path).map_err(|e| open_error(path, MaxMindDbError::Io(e)))?;
    let reader = Reader::from_source(map(&file, path)?).map_err(|e| open_error(path, e))?;
    Ok((reader, file))
}

fn map(file: &File, path: &Path) -> Result<Mmap, GeoError> {
    // SAFETY: the file must not be modified in place while mapped. Operators
    // replace databases by writing a new file and renaming it over the old one,
    // which leaves this mapping on the old inode.
    unsafe { Mmap::map(file) }.map_err(|e| open_error(path, MaxMindDbError::Io(e)))
}

fn open_error(path: &Path, source: MaxMindDbError) -> GeoError {
    GeoError::Open { path: path.to_path_buf(), source }
}

impl Databases {
    /// Open both databases and compile the cell table (for the real 14.7M-network
    /// City database this walks every network once; see the README for the time it takes).
    pub fn open(location: &Path, asn: &Path, isps: &IspMap) -> Result<Databases, GeoError> {
        let (loc, loc_file) = open(location)?;
        let t = &loc.metadata().database_type;
        if !(t.contains("City") || t.contains("Country")) {
            return Err(GeoError::Layout { path: location.into(), found: t.clone(), expected: "City or Country" });
        }
        let (asn_db, asn_file) = open(asn)?;
        let t = &asn_db.metadata().database_type;
        if !(t.contains("ASN") || t.contains("ISP")) {
            return Err(GeoError::Layout { path: asn.into(), found: t.clone(), expected: "ASN" });
        }
        // The walk reads the files through mappings of its own: it touches
        // every page, and dropping them before the table is written keeps
        // those pages out of the load's peak, and out of the server's memory
        // until explain or `geo` reads them through the readers.
        let walked = {
            let (lb, ab) = (map(&loc_file, location)?, map(&asn_file, asn)?);
            let tree = |b, path: &Path| Tree::new(b).map_err(|e| open_error(path, e));
            Cells::walk(&tree(&lb, location)?, &tree(&ab, asn)?, isps)
        };
        Ok(Databases { location: loc, asn: asn_db, cells: walked.cells() })
    }

    /// The client as the query path sees it: one cell lookup.
    pub fn client(&self, ip: IpAddr) -> ClientInfo {
        let hit = self.cells.lookup(ip);
        let cell = self.cells.cell(hit.cell);
        ClientInfo { location: cell.location, isp: cell.isp, cell: hit.cell, prefix: hit.prefix }
    }

    /// What the two databases say of an address, record by record (for `geo`,
    /// explain and the tests that check the cell table against the databases).
    /// Never fails: a database error reads as "unknown" with the full prefix.
    pub fn records(&self, ip: IpAddr, isps: &IspMap) -> Records {
        let full = if ip.is_ipv4() { 32 } else { 128 };
        let (location, location_prefix) = match self.location.lookup(ip) {
            Ok(res) => {
                (if res.has_data() { decode_location(&res) } else { Location::default() }, prefix_of(&res, full))
            }
            Err(_) => (Location::default(), full),
        };
        let (asn, asn_prefix) = match self.asn.lookup(ip) {
            Ok(res) => (decode_asn(&res), prefix_of(&res, full)),
            Err(_) => (None, full),
        };
        Records { location, location_prefix, asn, asn_prefix, isp: isps.of_asn(asn) }
    }
}

pub(super) fn decode_asn<S: AsRef<[u8]>>(res: &LookupResult<'_, S>) -> Option<u32> {
    res.decode_path::<u32>(&[PathElement::Key("autonomous_system_number")]).ok().flatten()
}

fn prefix_of<S: AsRef<[u8]>>(res: &LookupResult<'_, S>, full: u8) -> u8 {
    match res.network() {
        Ok(net) => net.prefix().min(full),
        Err(_) => full,
    }
}

/// The ASN of the record at `off`, read in place for the compile (the same
/// field as `decode_asn`).
pub(super) fn asn_at(data: &Data<'_>, off: usize) -> Option<u32> {
    data.get(off, b"autonomous_system_number").and_then(|v| data.u32(v))
}

/// The location of the record at `off`, read in place in one pass for the
/// compile: the fields `decode_location` reads, by the same paths.
pub(super) fn location_at(data: &Data<'_>, off: usize) -> Location {
    let iso = |v: usize, key: &[u8]| data.get(v, key).and_then(|s| data.str(s));
    let mut loc = Location::default();
    let (mut lat, mut lon) = (None, None);
    for (key, v) in data.map(off) {
        match key {
            b"country" => loc.country = iso(v, b"iso_code").and_then(CountryCode::parse),
            b"subdivisions" => loc.region = data.first(v).and_then(|s| iso(s, b"iso_code")).and_then(RegionCode::parse),
            b"continent" => loc.continent = iso(v, b"code").and_then(Continent::parse),
            b"location" => {
                for (k, x) in data.map(v) {
                    match k {
                        b"latitude" => lat = data.f64(x),
                        b"longitude" => lon = data.f64(x),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    loc.coords = lat.zip(lon).and_then(|(lat, lon)| Coords::new(lat, lon));
    loc
}

pub(super) fn decode_location<S: AsRef<[u8]>>(res: &LookupResult<'_, S>) -> Location {
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
