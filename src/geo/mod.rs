//! Who asks: an address -> location, ISP and the prefix inside which every
//! address gets the same location and ISP (the cell), which bounds the ECS scope.
//!
//! Both databases are memory-mapped MaxMind DB files (`mmdb.rs` is the only
//! file that knows their field names). At load they are compiled into the
//! client-cell table (`cells.rs`), reading the files in place (`raw.rs`);
//! the query path does one lookup there.

pub mod build;
pub mod cells;
pub mod mmdb;
mod raw;

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

/// A point on the globe. Stored compactly (the cell table holds one per
/// distinct location); [`Unit`] is what distances are computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coords {
    lat: f32,
    lon: f32,
}

/// A point as a unit vector: the distance between two is one chord.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Unit([f64; 3]);

impl Coords {
    /// None unless -90 <= lat <= 90 and -180 <= lon <= 180.
    pub fn new(lat: f64, lon: f64) -> Option<Coords> {
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
            .then_some(Coords { lat: lat as f32, lon: lon as f32 })
    }
    pub fn lat(&self) -> f64 {
        self.lat as f64
    }
    pub fn lon(&self) -> f64 {
        self.lon as f64
    }
    pub fn unit(&self) -> Unit {
        let (la, lo) = (self.lat().to_radians(), self.lon().to_radians());
        Unit([la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()])
    }
    /// Great-circle distance in km (mean Earth radius 6371 km).
    pub fn distance_km(&self, other: &Coords) -> f64 {
        self.unit().distance_km(&other.unit())
    }
}

impl Unit {
    /// Great-circle distance in km from the chord: 2 R asin(chord / 2), exact
    /// for short and long distances alike.
    pub fn distance_km(&self, o: &Unit) -> f64 {
        let (a, b) = (self.0, o.0);
        let d = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
        let chord = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        2.0 * 6371.0 * asin((chord * 0.5).min(1.0))
    }
}

/// asin on [0, 1] by Abramowitz and Stegun 4.4.46 (|error| <= 2e-8 rad, that
/// is 0.1 m on the Earth): a third of libm's cost, and this runs once per POP
/// per query.
fn asin(x: f64) -> f64 {
    const A: [f64; 8] = [
        1.570_796_305_0,
        -0.214_598_801_6,
        0.088_978_987_4,
        -0.050_174_304_6,
        0.030_891_881_0,
        -0.017_088_125_6,
        0.006_670_090_1,
        -0.001_262_491_1,
    ];
    let p = A.iter().rev().fold(0.0f64, |acc, a| acc * x + a);
    std::f64::consts::FRAC_PI_2 - (1.0 - x).sqrt() * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asin_matches_libm() {
        for i in 0..=1000 {
            let x = i as f64 / 1000.0;
            assert!((asin(x) - x.asin()).abs() < 3e-8, "{x}");
        }
    }

    #[test]
    fn distances() {
        let hz = Coords::new(30.27, 120.15).unwrap();
        let fra = Coords::new(50.11, 8.68).unwrap();
        assert!((hz.distance_km(&fra) - 8829.0).abs() < 5.0, "{}", hz.distance_km(&fra));
        assert!(hz.distance_km(&hz) < 1e-3, "within a metre of zero");
        let near = Coords::new(30.2936, 120.1614).unwrap();
        assert!((hz.distance_km(&near) - 2.8).abs() < 0.2, "{}", hz.distance_km(&near));
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

/// Everything the scheduler reads about a client: its cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientInfo {
    pub location: Location,
    pub isp: IspId,
    pub cell: cells::CellId,
    /// The largest network around the address inside the cell's range: every
    /// address in it has the same location and ISP, hence the same answer.
    pub prefix: u8,
}

/// What the two databases say of an address, record by record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Records {
    pub location: Location,
    /// Prefix length of the location record's network (or the empty subtree it fell in).
    pub location_prefix: u8,
    pub asn: Option<u32>,
    pub asn_prefix: u8,
    pub isp: IspId,
}

/// Maps origin ASNs to the ISPs named in `isps`.
#[derive(Debug, Default, Clone, PartialEq)]
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

/// Normalise an IPv4-mapped IPv6 address to IPv4, so `::ffff:a.b.c.d` and
/// `a.b.c.d` are the same client.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
