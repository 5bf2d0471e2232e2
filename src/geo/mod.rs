//! Who asks: an address -> location, ISP and the prefix inside which every
//! address gets the same location and ISP (the cell), which bounds the ECS scope.
//!
//! Both databases are memory-mapped MaxMind DB files (`mmdb.rs` is the only
//! file that knows their field names). A lookup is two tree walks; the location
//! record is decoded once per record and then served from a small per-worker
//! cache keyed by the record's offset, so the query path does not allocate.

pub mod build;
pub mod mmdb;

use std::collections::HashMap;
use std::net::IpAddr;

pub use mmdb::{Databases, GeoError};

use crate::pops::IspId;

/// ISO 3166-1 alpha-2, upper case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(pub [u8; 2]);

impl CountryCode {
    pub fn parse(s: &str) -> Option<CountryCode> {
        let b = s.as_bytes();
        (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic))
            .then(|| CountryCode([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
    pub fn is_mainland(&self) -> bool {
        self.0 == *b"CN"
    }
}

/// ISO 3166-2 subdivision code without the country: one to three letters or digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode {
    bytes: [u8; 3],
    len: u8,
}

impl RegionCode {
    pub fn parse(s: &str) -> Option<RegionCode> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut bytes = [0u8; 3];
        for (d, s) in bytes.iter_mut().zip(b) {
            *d = s.to_ascii_uppercase();
        }
        Some(RegionCode { bytes, len: b.len() as u8 })
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

/// Continent code as MaxMind writes it (`AS`, `EU`, `NA`, `SA`, `AF`, `OC`, `AN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Continent(pub [u8; 2]);

impl Continent {
    pub fn parse(s: &str) -> Option<Continent> {
        const ALL: [&str; 7] = ["AS", "EU", "NA", "SA", "AF", "OC", "AN"];
        ALL.contains(&s).then(|| {
            let b = s.as_bytes();
            Continent([b[0], b[1]])
        })
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// A point on the globe, with what the distance formula needs precomputed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coords {
    pub lat: f64,
    pub lon: f64,
    lat_rad: f64,
    lon_rad: f64,
    cos_lat: f64,
}

impl Coords {
    /// None unless -90 <= lat <= 90 and -180 <= lon <= 180.
    pub fn new(lat: f64, lon: f64) -> Option<Coords> {
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return None;
        }
        let lat_rad = lat.to_radians();
        Some(Coords { lat, lon, lat_rad, lon_rad: lon.to_radians(), cos_lat: lat_rad.cos() })
    }

    /// Great-circle distance in km (haversine, mean Earth radius 6371 km).
    pub fn distance_km(&self, other: &Coords) -> f64 {
        let dlat = (other.lat_rad - self.lat_rad) * 0.5;
        let dlon = (other.lon_rad - self.lon_rad) * 0.5;
        let s1 = dlat.sin();
        let s2 = dlon.sin();
        let h = s1 * s1 + self.cos_lat * other.cos_lat * s2 * s2;
        2.0 * 6371.0 * h.min(1.0).sqrt().asin()
    }
}

/// What the location database says of an address. Every field is optional:
/// a private or unannounced address has none and is still answered.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Location {
    pub country: Option<CountryCode>,
    pub region: Option<RegionCode>,
    pub continent: Option<Continent>,
    pub coords: Option<Coords>,
}

/// Everything the scheduler reads about a client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientInfo {
    pub location: Location,
    pub asn: Option<u32>,
    pub isp: IspId,
    /// Prefix length of the location record's network (or the empty subtree it fell in).
    pub location_prefix: u8,
    /// Prefix length of the ASN record's network.
    pub asn_prefix: u8,
}

impl ClientInfo {
    /// The client cell: the intersection of the two records' networks, inside
    /// which every address has the same location and ISP.
    pub fn cell_prefix(&self) -> u8 {
        self.location_prefix.max(self.asn_prefix)
    }
}

/// Maps origin ASNs to the ISPs named in `isps`.
#[derive(Debug, Default, Clone)]
pub struct IspMap {
    pub names: Vec<String>,
    by_asn: HashMap<u32, IspId>,
}

impl IspMap {
    /// `names[0]` is always `other`.
    pub fn new(names: Vec<String>, by_asn: HashMap<u32, IspId>) -> IspMap {
        IspMap { names, by_asn }
    }
    pub fn of_asn(&self, asn: Option<u32>) -> IspId {
        asn.and_then(|a| self.by_asn.get(&a).copied()).unwrap_or(IspId::OTHER)
    }
    pub fn by_name(&self, name: &str) -> Option<IspId> {
        self.names.iter().position(|n| n == name).map(|i| IspId(i as u8))
    }
    pub fn name(&self, id: IspId) -> &str {
        self.names.get(id.0 as usize).map(String::as_str).unwrap_or("other")
    }
}

/// A small direct-mapped cache of decoded location records, one per worker.
/// Keyed by the record's offset in the data section and the databases' load id,
/// so a reload never serves a stale record.
pub struct LocationCache {
    slots: Box<[(u64, u32, Location)]>,
}

impl LocationCache {
    /// `slots` is rounded up to a power of two.
    pub fn with_slots(slots: usize) -> LocationCache {
        let n = slots.max(1).next_power_of_two();
        LocationCache { slots: vec![(0, u32::MAX, Location::default()); n].into_boxed_slice() }
    }

    fn slot(&mut self, offset: usize) -> &mut (u64, u32, Location) {
        let h = (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let i = (h as usize) & (self.slots.len() - 1);
        &mut self.slots[i]
    }
    pub fn get(&mut self, load_id: u64, offset: usize) -> Option<Location> {
        let s = self.slot(offset);
        (s.0 == load_id && s.1 as usize == offset).then_some(s.2)
    }
    pub fn put(&mut self, load_id: u64, offset: usize, loc: Location) {
        *self.slot(offset) = (load_id, offset as u32, loc);
    }
}

/// Normalise an IPv4-mapped IPv6 address to IPv4, so `::ffff:a.b.c.d` and
/// `a.b.c.d` are the same client.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
