//! The POP inventory: what each point of presence is, where it stands, which
//! ISP carries it and which addresses it answers with.
//!
//! A `PopId` is an index into `Pops::list`, fixed for one config generation.
//! Coordinates are kept as unit vectors computed once, so a great-circle
//! distance on the query path is one chord: a few multiplications and an asin.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::geo::{Coords, CountryCode, RegionCode, Unit};

/// Index of a POP in the snapshot's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PopId(pub u16);

/// An ISP named in `isps`; 0 is `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IspId(pub u8);

impl IspId {
    pub const OTHER: IspId = IspId(0);
}

/// Edge POPs answer users; regional (L2) POPs never do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Edge,
    Regional,
}

/// Health of a POP as the route-quality table sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    /// No fresh report: counts as the POP's `default_health`.
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

/// The part of the world a scheduled name may be answered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coverage {
    /// Only POPs in the Chinese mainland (country CN; HK, MO, TW are other countries).
    Mainland,
    Global,
    GlobalExcludingMainland,
}

impl Coverage {
    pub fn parse(s: &str) -> Option<Coverage> {
        match s {
            "mainland" => Some(Coverage::Mainland),
            "global" => Some(Coverage::Global),
            "global-excluding-mainland" => Some(Coverage::GlobalExcludingMainland),
            _ => None,
        }
    }
    pub fn admits(self, pop: &Pop) -> bool {
        match self {
            Coverage::Mainland => pop.mainland,
            Coverage::Global => true,
            Coverage::GlobalExcludingMainland => !pop.mainland,
        }
    }
}

/// Address family of a query: A or AAAA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone)]
pub struct Pop {
    pub id: String,
    pub country: CountryCode,
    pub region: Option<RegionCode>,
    pub coords: Coords,
    /// `coords` as a unit vector, computed once for the distance formula.
    pub unit: Unit,
    pub isp: Option<IspId>,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub capacity: u32,
    pub tier: Tier,
    /// What an unknown health counts as.
    pub default_up: bool,
    /// In the Chinese mainland (country CN).
    pub mainland: bool,
}

impl Pop {
    pub fn has_family(&self, f: Family) -> bool {
        match f {
            Family::V4 => !self.ipv4.is_empty(),
            Family::V6 => !self.ipv6.is_empty(),
        }
    }

    /// The address of `family` that a client with this stable `pick` gets.
    pub fn address(&self, f: Family, pick: usize) -> Option<std::net::IpAddr> {
        match f {
            Family::V4 => self.ipv4.get(pick % self.ipv4.len().max(1)).map(|a| (*a).into()),
            Family::V6 => self.ipv6.get(pick % self.ipv6.len().max(1)).map(|a| (*a).into()),
        }
    }
}

/// All POPs of one config generation.
#[derive(Debug, Default)]
pub struct Pops {
    pub list: Vec<Pop>,
    /// Id -> index (the feed looks a POP up by name for every entry of a report).
    by_id: std::collections::HashMap<String, PopId, crate::hash::Fast>,
}

impl Pops {
    /// `list` must hold at most 65,536 POPs with distinct ids (config checks both).
    pub fn new(list: Vec<Pop>) -> Pops {
        let by_id = list.iter().enumerate().map(|(i, p)| (p.id.clone(), PopId(i as u16))).collect();
        Pops { list, by_id }
    }
    pub fn get(&self, id: PopId) -> &Pop {
        &self.list[id.0 as usize]
    }
    pub fn find(&self, name: &str) -> Option<PopId> {
        self.by_id.get(name).copied()
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
