//! Client groups: the populations route measurements are reported for.
//!
//! From most to least specific: subdivision+ISP (`CN-ZJ/chinatelecom`),
//! country+ISP (`CN/chinaunicom`), subdivision (`CN-ZJ`), country (`DE`),
//! continent (`continent:AS`: continents carry a prefix, since AS, AF, NA and
//! SA are also country codes), everyone (`*`).

use crate::geo::cells::Cells;
use crate::geo::{ClientInfo, Continent, CountryCode, IspMap, RegionCode};
use crate::pops::IspId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupKey {
    RegionIsp(CountryCode, RegionCode, IspId),
    CountryIsp(CountryCode, IspId),
    Region(CountryCode, RegionCode),
    Country(CountryCode),
    Continent(Continent),
    Any,
}

impl GroupKey {
    /// Parse a group name; ISP names must be those of `isps` or `other`.
    pub fn parse(s: &str, isps: &IspMap) -> Option<GroupKey> {
        if s == "*" {
            return Some(GroupKey::Any);
        }
        if let Some(c) = s.strip_prefix("continent:") {
            return Continent::parse(c).map(GroupKey::Continent);
        }
        let (place, isp) = match s.split_once('/') {
            Some((p, i)) => (p, Some(isps.by_name(i)?)),
            None => (s, None),
        };
        let (country, region) = match place.split_once('-') {
            Some((c, r)) => (c, Some(r)),
            None => (place, None),
        };
        // Codes are upper case on the wire of the feed, as in ISO 3166.
        if !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let country = CountryCode::parse(country)?;
        let region = match region {
            Some(r) if r.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) => Some(RegionCode::parse(r)?),
            Some(_) => return None,
            None => None,
        };
        Some(match (region, isp) {
            (Some(r), Some(i)) => GroupKey::RegionIsp(country, r, i),
            (None, Some(i)) => GroupKey::CountryIsp(country, i),
            (Some(r), None) => GroupKey::Region(country, r),
            (None, None) => GroupKey::Country(country),
        })
    }

    /// Parse a group name the feed may keep data for: besides `parse`'s
    /// syntax, its country or subdivision must be a place the location
    /// database knows. Any other group could hold no client, and letting a
    /// reporter invent them (`ZZ-ZZZ`, `QQ-999`, ...) would let one key grow
    /// the writer's tables without bound.
    pub fn parse_known(s: &str, isps: &IspMap, cells: &Cells) -> Option<GroupKey> {
        let g = GroupKey::parse(s, isps)?;
        let known = match g {
            GroupKey::RegionIsp(c, r, _) | GroupKey::Region(c, r) => cells.has_place(c, Some(r)),
            GroupKey::CountryIsp(c, _) | GroupKey::Country(c) => cells.has_place(c, None),
            GroupKey::Continent(_) | GroupKey::Any => true,
        };
        known.then_some(g)
    }

    pub fn display(&self, isps: &IspMap) -> String {
        match self {
            GroupKey::RegionIsp(c, r, i) => format!("{}-{}/{}", c.as_str(), r.as_str(), isps.name(*i)),
            GroupKey::CountryIsp(c, i) => format!("{}/{}", c.as_str(), isps.name(*i)),
            GroupKey::Region(c, r) => format!("{}-{}", c.as_str(), r.as_str()),
            GroupKey::Country(c) => c.as_str().to_string(),
            GroupKey::Continent(c) => format!("continent:{}", c.as_str()),
            GroupKey::Any => "*".to_string(),
        }
    }
}

/// The client's groups, most specific first. Fixed-size: no allocation.
pub fn client_groups(c: &ClientInfo) -> ([GroupKey; 6], usize) {
    let mut out = [GroupKey::Any; 6];
    let mut n = 0;
    let loc = &c.location;
    let mut push = |g| {
        out[n] = g;
        n += 1;
    };
    if let Some(country) = loc.country {
        if let Some(r) = loc.region {
            push(GroupKey::RegionIsp(country, r, c.isp));
        }
        push(GroupKey::CountryIsp(country, c.isp));
        if let Some(r) = loc.region {
            push(GroupKey::Region(country, r));
        }
        push(GroupKey::Country(country));
    }
    if let Some(ct) = loc.continent {
        push(GroupKey::Continent(ct));
    }
    push(GroupKey::Any);
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn isps() -> IspMap {
        IspMap::new(vec!["other".into(), "chinatelecom".into()], HashMap::new())
    }

    #[test]
    fn parses_every_level_and_rejects_garbage() {
        let m = isps();
        for s in ["CN-ZJ/chinatelecom", "CN/chinatelecom", "CN-ZJ", "DE", "continent:AS", "*", "CN/other"] {
            let g = GroupKey::parse(s, &m).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(g.display(&m), s);
        }
        for s in ["", "cn", "CN-", "CN/nope", "continent:XX", "CN-ZJZJ", "C", "CN-zj", "**"] {
            assert!(GroupKey::parse(s, &m).is_none(), "{s}");
        }
    }

    #[test]
    fn the_feed_keeps_only_groups_of_places_the_database_knows() {
        let snap = crate::testing::demo();
        let known = |s: &str| GroupKey::parse_known(s, &snap.isps, &snap.geo.cells).is_some();
        for s in ["CN-ZJ/chinatelecom", "CN/chinaunicom", "CN-ZJ", "CN", "DE", "US-CA", "continent:AS", "*"] {
            assert!(known(s), "{s}");
        }
        // Well-formed, but no location of the demo database is there.
        for s in ["ZZ", "ZZ-ZZZ", "QQ-999/other", "CN-ZZ", "CN-ZZ/chinatelecom", "AQ"] {
            assert!(GroupKey::parse(s, &snap.isps).is_some() && !known(s), "{s}");
        }
    }
}
