//! Zone index and answer data, compiled once per config generation.
//!
//! Names are kept in lower-case wire format, so a lookup is a hash probe on the
//! bytes of the (lower-cased) question name. Every ancestor of a name that has
//! data is present as a node (an empty non-terminal when it has none), so "not a
//! node" means "nothing at or below" and NXDOMAIN is exact (RFC 8020). Static
//! RRsets are stored as ready wire bytes (type, class, TTL, RDLENGTH, RDATA):
//! answering one is a two-byte owner pointer and a copy.

use std::hash::BuildHasher;

use crate::pops::{Coverage, PopId};

/// Values by wire-format name, for the zone index. The names lie back to
/// back in one byte arena and the hash table holds entry numbers. As a
/// `HashMap` of boxed names, each name cost a 48-byte bucket (at under half
/// load) and a heap block of its own: a million-name zone's live heap after
/// loading fell from 176 to 112 MiB with this map (`bench/heap.rs`).
pub struct NameMap<V> {
    arena: Vec<u8>,
    entries: Vec<(NameRef, V)>,
    table: hashbrown::HashTable<u32>,
}

/// Where a name lies in the arena: its start above 16 bits, its length
/// below (a wire name has at most 255 bytes; a longer key would be cut
/// short and never found, not panic).
#[derive(Clone, Copy)]
struct NameRef(u64);

impl NameRef {
    fn range(self) -> std::ops::Range<usize> {
        let start = (self.0 >> 16) as usize;
        start..start + (self.0 & 0xFFFF) as usize
    }
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap { arena: Vec::new(), entries: Vec::new(), table: hashbrown::HashTable::new() }
    }
}

impl<V> std::fmt::Debug for NameMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys().map(name::to_text)).finish()
    }
}

impl<V> NameMap<V> {
    fn hash(name: &[u8]) -> u64 {
        crate::hash::Fast::default().hash_one(name)
    }

    fn find(&self, name: &[u8]) -> Option<usize> {
        let (arena, entries) = (&self.arena, &self.entries);
        self.table.find(Self::hash(name), |&i| &arena[entries[i as usize].0.range()] == name).map(|&i| i as usize)
    }

    pub fn get(&self, name: &[u8]) -> Option<&V> {
        self.find(name).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut V> {
        self.find(name).map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.find(name).is_some()
    }

    /// The value of `name`, made (default) if it is not there yet.
    pub fn entry_or_default(&mut self, name: &[u8]) -> &mut V
    where
        V: Default,
    {
        let NameMap { arena, entries, table } = self;
        let name_of = |j: u32| &arena[entries[j as usize].0.range()];
        let slot = table.entry(Self::hash(name), |&j| name_of(j) == name, |&j| Self::hash(name_of(j)));
        let i = match slot {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get() as usize,
            hashbrown::hash_table::Entry::Vacant(e) => {
                // Entry numbers fit in u32: each entry takes tens of bytes.
                e.insert(entries.len() as u32);
                let at = NameRef((arena.len() as u64) << 16 | name.len().min(0xFFFF) as u64);
                arena.extend_from_slice(&name[..name.len().min(0xFFFF)]);
                entries.push((at, V::default()));
                entries.len() - 1
            }
        };
        &mut entries[i].1
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Names and values, in the order the names were first added.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.entries.iter().map(|(at, v)| (&self.arena[at.range()], v))
    }

    /// The `i`th name added.
    pub fn key_at(&self, i: usize) -> &[u8] {
        self.entries.get(i).map_or(&[], |(at, _)| &self.arena[at.range()])
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Gives back the growth room, once the map is complete.
    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.entries.shrink_to_fit();
        let NameMap { arena, entries, table } = self;
        table.shrink_to_fit(|&j| Self::hash(&arena[entries[j as usize].0.range()]));
    }
}

/// RR types popdns knows by name.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
    pub const CAA: u16 = 257;

    pub fn from_name(s: &str) -> Option<u16> {
        Some(match s {
            "A" => A,
            "NS" => NS,
            "CNAME" => CNAME,
            "SOA" => SOA,
            "PTR" => PTR,
            "MX" => MX,
            "TXT" => TXT,
            "AAAA" => AAAA,
            "SRV" => SRV,
            "CAA" => CAA,
            _ => return None,
        })
    }

    pub fn name(t: u16) -> std::borrow::Cow<'static, str> {
        let s = match t {
            A => "A",
            NS => "NS",
            CNAME => "CNAME",
            SOA => "SOA",
            PTR => "PTR",
            HINFO => "HINFO",
            MX => "MX",
            TXT => "TXT",
            AAAA => "AAAA",
            SRV => "SRV",
            OPT => "OPT",
            IXFR => "IXFR",
            AXFR => "AXFR",
            ANY => "ANY",
            CAA => "CAA",
            other => return format!("TYPE{other}").into(),
        };
        s.into()
    }
}

/// Domain names in wire format.
pub mod name {
    /// Presentation -> wire (a trailing dot is optional; "." or "" is the root).
    /// Case is kept.
    pub fn to_wire(s: &str) -> Result<Vec<u8>, String> {
        let s = s.strip_suffix('.').unwrap_or(s);
        let mut out = Vec::with_capacity(s.len() + 2);
        if !s.is_empty() {
            for label in s.split('.') {
                if label.is_empty() {
                    return Err(format!("empty label in name `{s}`"));
                }
                if label.len() > 63 {
                    return Err(format!("label longer than 63 bytes in name `{s}`"));
                }
                if !label.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
                    return Err(format!("unsupported character in name `{s}`"));
                }
                out.push(label.len() as u8);
                out.extend_from_slice(label.as_bytes());
            }
        }
        out.push(0);
        if out.len() > 255 {
            return Err(format!("name `{s}` is longer than 255 bytes"));
        }
        Ok(out)
    }

    pub fn lower(wire: &[u8]) -> Vec<u8> {
        wire.to_ascii_lowercase()
    }

    /// Wire -> presentation with a trailing dot.
    pub fn to_text(wire: &[u8]) -> String {
        let mut s = String::new();
        let mut i = 0;
        while i < wire.len() && wire[i] != 0 {
            let n = wire[i] as usize;
            let end = (i + 1 + n).min(wire.len());
            s.push_str(&String::from_utf8_lossy(&wire[i + 1..end]));
            s.push('.');
            i = end;
        }
        if s.is_empty() {
            s.push('.');
        }
        s
    }

    /// Byte offsets of each label start, then the root (for suffix walks).
    pub fn is_subdomain(name: &[u8], apex: &[u8]) -> bool {
        suffixes(name).any(|off| &name[off..] == apex)
    }

    /// Offsets of every suffix of `name` that starts at a label, longest first,
    /// ending with the root.
    pub fn suffixes(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
        let mut off = Some(0usize);
        std::iter::from_fn(move || {
            let cur = off?;
            let len = *name.get(cur)? as usize;
            off = if len == 0 { None } else { Some(cur + 1 + len) };
            Some(cur)
        })
    }

    /// Parent name (drop the first label), None at the root.
    pub fn parent(name: &[u8]) -> Option<&[u8]> {
        let len = *name.first()? as usize;
        if len == 0 { None } else { name.get(1 + len..) }
    }
}

/// A glue record: owner (wire name) and record tail.
pub type Glue = (Box<[u8]>, Box<[u8]>);

/// An RRset ready to copy into an answer.
#[derive(Debug, Clone)]
pub struct RRset {
    pub rtype: u16,
    /// Each record's type, class, TTL, RDLENGTH and RDATA, in wire form.
    pub records: Vec<Box<[u8]>>,
    /// CNAME only: the target, lower-case wire.
    pub target: Option<Box<[u8]>>,
    /// Apex NS only: glue (owner wire name, record tail) for targets in the zone.
    pub glue: Vec<Glue>,
}

/// Index of a scheduled name in `Zones::scheduled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedId(pub u32);

#[derive(Debug, Default)]
pub struct Node {
    pub rrsets: Vec<RRset>,
    pub scheduled: Option<SchedId>,
}

impl Node {
    pub fn rrset(&self, t: u16) -> Option<&RRset> {
        self.rrsets.iter().find(|r| r.rtype == t)
    }
}

/// A name answered by the scheduler.
#[derive(Debug, Clone)]
pub struct ScheduledName {
    pub coverage: Coverage,
    pub answers: u8,
    pub ttl: u32,
    /// Candidate POPs (`pops: all` expands to every POP). Interned: names
    /// with the same list share one allocation (a million names on `all`
    /// must not hold a million copies of it).
    pub pops: std::sync::Arc<[PopId]>,
    /// Names with the same POP list and coverage rank POPs alike for a
    /// client: the query workers cache one ranking per class and client cell.
    pub ranking: RankingClass,
}

/// Index of a (POP list, coverage) pair among a snapshot's scheduled names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RankingClass(pub u32);

#[derive(Debug)]
pub struct Zone {
    pub name: String,
    /// Lower-case wire name of the apex.
    pub apex: Box<[u8]>,
    /// SOA record tail with the negative TTL min(SOA TTL, minimum) (RFC 2308 §3).
    pub negative_soa: Box<[u8]>,
    pub nodes: NameMap<Node>,
}

/// Result of looking a name up inside its zone.
pub enum NameMatch<'a> {
    Exact(&'a Node),
    /// Synthesised from `*.<closest encloser>` (RFC 4592).
    Wildcard(&'a Node),
    NxDomain,
}

impl Zone {
    /// `lname` must be lower-case wire and inside this zone.
    pub fn lookup(&self, lname: &[u8]) -> NameMatch<'_> {
        if let Some(node) = self.nodes.get(lname) {
            return NameMatch::Exact(node);
        }
        // Closest encloser: the longest existing ancestor. The apex exists, so
        // the walk ends inside the zone.
        let mut buf = [0u8; 257];
        for off in name::suffixes(lname).skip(1) {
            let encloser = &lname[off..];
            if self.nodes.contains_key(encloser) {
                buf[0] = 1;
                buf[1] = b'*';
                let n = encloser.len().min(255);
                buf[2..2 + n].copy_from_slice(&encloser[..n]);
                return match self.nodes.get(&buf[..2 + n]) {
                    Some(node) => NameMatch::Wildcard(node),
                    None => NameMatch::NxDomain,
                };
            }
        }
        NameMatch::NxDomain
    }
}

#[derive(Debug, Default)]
pub struct Zones {
    apexes: NameMap<u32>,
    /// Bit n set: some apex is n bytes long in wire form. Only suffixes of
    /// those lengths are hashed and looked up.
    apex_lens: [u64; 4],
    pub list: Vec<Zone>,
    pub scheduled: Vec<ScheduledName>,
}

impl Zones {
    pub fn new(list: Vec<Zone>, scheduled: Vec<ScheduledName>) -> Zones {
        let mut apexes = NameMap::default();
        for (i, z) in list.iter().enumerate() {
            *apexes.entry_or_default(&z.apex) = i as u32;
        }
        let mut apex_lens = [0u64; 4];
        for z in &list {
            let n = z.apex.len().min(255);
            apex_lens[n / 64] |= 1 << (n % 64);
        }
        Zones { apexes, apex_lens, list, scheduled }
    }

    /// The zone with the longest apex that `lname` lies in (lower-case wire).
    pub fn find(&self, lname: &[u8]) -> Option<&Zone> {
        let is_apex_len = |n: usize| n < 256 && self.apex_lens[n / 64] & (1 << (n % 64)) != 0;
        name::suffixes(lname)
            .filter(|&off| is_apex_len(lname.len() - off))
            .find_map(|off| self.apexes.get(&lname[off..]))
            .map(|&i| &self.list[i as usize])
    }

    pub fn sched(&self, id: SchedId) -> &ScheduledName {
        &self.scheduled[id.0 as usize]
    }

    /// Resolve a presentation name to its scheduled name, if any (exact or wildcard).
    pub fn find_scheduled(&self, qname: &str) -> Option<SchedId> {
        let lname = name::lower(&name::to_wire(qname).ok()?);
        match self.find(&lname)?.lookup(&lname) {
            NameMatch::Exact(n) | NameMatch::Wildcard(n) => n.scheduled,
            NameMatch::NxDomain => None,
        }
    }
}

/// Wire tail of one record: type, class IN, TTL, RDLENGTH, RDATA.
pub fn record_tail(rtype: u16, ttl: u32, rdata: &[u8]) -> Box<[u8]> {
    let mut v = Vec::with_capacity(10 + rdata.len());
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    v.extend_from_slice(rdata);
    v.into_boxed_slice()
}

/// Presentation record data -> RDATA. Names in it are absolute (a trailing dot is optional).
pub fn rdata(rtype: u16, text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let num = |s: &str, what: &str| s.parse::<u16>().map_err(|_| format!("bad {what} `{s}` in `{text}`"));
    let mut out = Vec::new();
    match rtype {
        rtype::A => {
            let a: std::net::Ipv4Addr = text.parse().map_err(|_| format!("`{text}` is not an IPv4 address"))?;
            out.extend_from_slice(&a.octets());
        }
        rtype::AAAA => {
            let a: std::net::Ipv6Addr = text.parse().map_err(|_| format!("`{text}` is not an IPv6 address"))?;
            out.extend_from_slice(&a.octets());
        }
        rtype::NS | rtype::CNAME | rtype::PTR => {
            if fields.len() != 1 {
                return Err(format!("expected one name, found `{text}`"));
            }
            out = name::to_wire(text)?;
        }
        rtype::MX => {
            let [pref, host] = fields[..] else {
                return Err(format!("MX wants `preference name`, found `{text}`"));
            };
            out.extend_from_slice(&num(pref, "preference")?.to_be_bytes());
            out.extend_from_slice(&name::to_wire(host)?);
        }
        rtype::SRV => {
            let [p, w, port, target] = fields[..] else {
                return Err(format!("SRV wants `priority weight port target`, found `{text}`"));
            };
            for (v, what) in [(p, "priority"), (w, "weight"), (port, "port")] {
                out.extend_from_slice(&num(v, what)?.to_be_bytes());
            }
            out.extend_from_slice(&name::to_wire(target)?);
        }
        rtype::TXT => {
            // One string per value, split into 255-byte character-strings.
            let bytes = text.as_bytes();
            if bytes.is_empty() {
                out.push(0);
            }
            for chunk in bytes.chunks(255) {
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
            if out.len() > 65535 {
                return Err("TXT value longer than 65535 bytes".into());
            }
        }
        rtype::CAA => {
            let mut it = text.splitn(3, char::is_whitespace);
            let (Some(flags), Some(tag), Some(value)) = (it.next(), it.next(), it.next()) else {
                return Err(format!("CAA wants `flags tag \"value\"`, found `{text}`"));
            };
            let flags: u8 = flags.parse().map_err(|_| format!("bad CAA flags `{flags}`"))?;
            if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("bad CAA tag `{tag}`"));
            }
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            out.push(flags);
            out.push(tag.len() as u8);
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        other => return Err(format!("record type {} is not supported", rtype::name(other))),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arena map against std's HashMap on names that share prefixes and
    /// suffixes, through growth and after shrinking: every name finds its
    /// own value, and runs of arena bytes that are not names find nothing.
    #[test]
    fn name_map_finds_what_a_hash_map_finds() {
        let mut next = crate::testing::xorshift(0x5eed);
        let mut names: Vec<Vec<u8>> = Vec::new();
        for i in 0..5000u64 {
            let labels = 1 + next(4) as usize;
            let text: Vec<String> = (0..labels)
                .map(|j| format!("{}{}", ["a", "ab", "www", "c"][next(4) as usize], (i + j as u64) % 7))
                .collect();
            names.push(name::to_wire(&format!("{}.example.com", text.join("."))).unwrap());
        }
        let (mut map, mut reference) = (NameMap::default(), std::collections::HashMap::new());
        for (i, n) in names.iter().enumerate() {
            *map.entry_or_default(n) += i;
            *reference.entry(n.clone()).or_insert(0) += i;
        }
        assert_eq!(map.len(), reference.len());
        let probe = |map: &NameMap<usize>| {
            for (n, v) in &reference {
                assert_eq!(map.get(n), Some(v), "{}", name::to_text(n));
            }
            // A name's own tail, and bytes spanning two neighbours in the arena.
            for w in map.arena.windows(9).step_by(7) {
                let found = map.get(w);
                assert_eq!(found.is_some(), reference.contains_key(w), "{w:?}");
            }
            assert_eq!(map.get(&name::to_wire("example.com").unwrap()), None);
            assert!(map.iter().all(|(k, v)| reference.get(k) == Some(v)));
            assert_eq!(map.key_at(0), &names[0][..]);
            assert_eq!(map.key_at(map.len()), &[] as &[u8]);
        };
        probe(&map);
        map.shrink_to_fit();
        probe(&map);
        *map.get_mut(&names[0]).unwrap() = usize::MAX;
        assert_eq!(map.get(&names[0]), Some(&usize::MAX));
    }

    #[test]
    fn names_round_trip_and_suffixes() {
        let w = name::to_wire("WWW.Example.com.").unwrap();
        assert_eq!(name::to_text(&w), "WWW.Example.com.");
        let offs: Vec<usize> = name::suffixes(&w).collect();
        assert_eq!(offs, vec![0, 4, 12, 16]);
        assert!(name::to_wire("a..b").is_err());
        assert!(name::to_wire(&"x".repeat(64)).is_err());
    }

    #[test]
    fn rdata_encodings() {
        assert_eq!(rdata(rtype::MX, "10 mail.example.com").unwrap()[..2], [0, 10]);
        assert_eq!(rdata(rtype::TXT, &"a".repeat(300)).unwrap().len(), 302);
        let caa = rdata(rtype::CAA, "0 issue \"ca.example.net\"").unwrap();
        assert_eq!(&caa[..7], b"\x00\x05issue");
        assert_eq!(&caa[7..], b"ca.example.net");
        assert!(rdata(rtype::A, "2001:db8::1").is_err());
        assert!(rdata(rtype::SRV, "1 2 x t").is_err());
    }
}
