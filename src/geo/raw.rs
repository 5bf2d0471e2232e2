//! The MaxMind DB format read by hand, for the compile only: the search tree
//! walked node by node, and data values read in place by offset.
//!
//! Why not `maxminddb::Within` and `decode_path`: the compile reads every
//! network of the City database once (14.7M of them), and `perf` put
//! the crate's iterator (its stack entries carry a u128 address and an enum)
//! and its path decoding (one pass over the record per field asked for) at a
//! third of the compile's time. This walk keeps a stack of (node, depth,
//! start) and hands out raw data offsets; the decode reads a record once.
//! Everything else (lookups for `geo` and explain, metadata, validation)
//! stays with the crate, and the tests check this reading against it.
//!
//! The file is not trusted: every read is bounds-checked, the walk never goes
//! deeper than the address width and stops after twice the node count (a
//! tree that points back up would otherwise double the work at each level),
//! and a record read visits a bounded number of values. A malformed part reads as
//! "no data", as the crate's iterator errors did when they were skipped.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use maxminddb::{MaxMindDbError, Reader};

/// Marks the start of the metadata, which ends the data section.
const METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
/// Zero bytes between the search tree and the data section.
const SEPARATOR: usize = 16;

/// Which address family to walk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A database's search tree and data section, in place, with the crate's
/// reader over the same bytes (it checked the metadata, and it answers the
/// alias probes).
pub struct Tree<'a> {
    pub reader: Reader<&'a [u8]>,
    nodes: &'a [u8],
    record_size: u16,
    node_count: usize,
    ip_version: u16,
    /// Where IPv4 starts in an IPv6 tree (`::/96`): a node, or a record
    /// value if the tree ends above that depth.
    ipv4_start: usize,
    pub data: Data<'a>,
}

impl<'a> Tree<'a> {
    /// The tree of a database file (validated by the crate's reader first).
    pub fn new(file: &'a [u8]) -> Result<Tree<'a>, MaxMindDbError> {
        let reader = Reader::from_source(file)?;
        let meta = reader.metadata();
        let invalid = |m: &str| MaxMindDbError::InvalidDatabase { message: m.to_string(), offset: None };
        let node_count = meta.node_count as usize;
        let tree_len = node_count
            .checked_mul(meta.record_size as usize / 4)
            .ok_or_else(|| invalid("search tree size overflows"))?;
        // The metadata is in the last 128 KiB (the format's limit).
        let tail = file.len().saturating_sub(128 * 1024 + METADATA_MARKER.len());
        let marker = file[tail..]
            .windows(METADATA_MARKER.len())
            .rposition(|w| w == METADATA_MARKER)
            .map(|i| tail + i)
            .ok_or_else(|| invalid("no metadata marker"))?;
        let data_start = tree_len + SEPARATOR;
        if data_start > marker {
            return Err(invalid("search tree extends past the data section"));
        }
        let (record_size, ip_version) = (meta.record_size, meta.ip_version);
        let mut tree = Tree {
            reader,
            nodes: &file[..tree_len],
            record_size,
            node_count,
            ip_version,
            ipv4_start: 0,
            data: Data { bytes: &file[data_start..marker] },
        };
        if tree.ip_version == 6 {
            let mut node = 0usize;
            for _ in 0..96 {
                if node >= node_count {
                    break;
                }
                node = tree.record(node, 0).ok_or_else(|| invalid("search tree truncated"))?;
            }
            tree.ipv4_start = node;
        }
        Ok(tree)
    }

    /// Record `side` (0 left, 1 right) of `node`; None past the tree's end.
    fn record(&self, node: usize, side: usize) -> Option<usize> {
        let b = self.nodes;
        match self.record_size {
            24 => {
                let o = node.checked_mul(6)? + side * 3;
                let r = b.get(o..o + 3)?;
                Some(usize::from(r[0]) << 16 | usize::from(r[1]) << 8 | usize::from(r[2]))
            }
            28 => {
                let o = node.checked_mul(7)?;
                let r = b.get(o..o + 7)?;
                Some(match side {
                    0 => {
                        usize::from(r[3] >> 4) << 24
                            | usize::from(r[0]) << 16
                            | usize::from(r[1]) << 8
                            | usize::from(r[2])
                    }
                    _ => {
                        usize::from(r[3] & 0x0f) << 24
                            | usize::from(r[4]) << 16
                            | usize::from(r[5]) << 8
                            | usize::from(r[6])
                    }
                })
            }
            32 => {
                let o = node.checked_mul(8)? + side * 4;
                let r = b.get(o..o + 4)?;
                Some(u32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize)
            }
            _ => None,
        }
    }

    /// The data offset a record value points at, if it is a valid one.
    fn data_offset(&self, record: usize) -> Option<u32> {
        let off = record.checked_sub(self.node_count + SEPARATOR)?;
        (off < self.data.bytes.len()).then_some(off as u32)
    }

    /// Every network of `family` that has data, in address order: `leaf(first
    /// address, prefix length, data offset)`. Networks without data are left
    /// out, as are invalid records (a data pointer past the section, a node
    /// number past the tree, a path longer than the address). In an IPv6
    /// tree the IPv4 subtree (`::/96`) and the prefixes aliased to it
    /// (IPv4-mapped, Teredo, 6to4) belong to the IPv4 walk and are left out
    /// of the IPv6 one, as `maxminddb`'s iterator skips aliases.
    ///
    /// A valid tree has one path to each node (the aliases aside), so the
    /// walk visits each node once. One that points back up the tree would
    /// double the work at each level: the walk stops after twice the node
    /// count and says so (false), leaving the rest of the space without data.
    pub fn walk(&self, family: Family, mut leaf: impl FnMut(u128, u32, u32)) -> bool {
        let bits = family.bits();
        let root = match (family, self.ip_version) {
            (Family::V4, 6) => self.ipv4_start,
            (Family::V4, _) => 0,
            (Family::V6, 6) => 0,
            (Family::V6, _) => return true,
        };
        // A real IPv4 subtree node: every pointer to it in the IPv6 walk is skipped.
        let skip = (family == Family::V6 && self.ipv4_start < self.node_count && self.ipv4_start != 0)
            .then_some(self.ipv4_start);
        let mut stack: Vec<(usize, u32, u128)> = Vec::with_capacity(bits as usize + 1);
        stack.push((root, 0, 0));
        let mut visits = self.node_count.saturating_mul(2).saturating_add(1024);
        while let Some((node, depth, start)) = stack.pop() {
            if node > self.node_count {
                if let Some(off) = self.data_offset(node) {
                    leaf(start, depth, off);
                }
                continue;
            }
            if node == self.node_count || depth >= bits || Some(node) == skip && depth > 0 {
                continue;
            }
            visits = match visits.checked_sub(1) {
                Some(v) => v,
                None => return false,
            };
            let (Some(left), Some(right)) = (self.record(node, 0), self.record(node, 1)) else { continue };
            // Right first, so the left (lower) half comes off the stack first.
            stack.push((right, depth + 1, start | 1u128 << (bits - 1 - depth)));
            stack.push((left, depth + 1, start));
        }
        true
    }
}

/// The data section: values read in place by offset. Every accessor follows
/// one pointer at the offset it is given (pointers to pointers are invalid).
#[derive(Clone, Copy)]
pub struct Data<'a> {
    bytes: &'a [u8],
}

// The format's type numbers (those the compile reads or passes over).
const POINTER: u8 = 1;
const STRING: u8 = 2;
const DOUBLE: u8 = 3;
const UINT16: u8 = 5;
const UINT32: u8 = 6;
const MAP: u8 = 7;
const INT32: u8 = 8;
const UINT64: u8 = 9;
const UINT128: u8 = 10;
const ARRAY: u8 = 11;
const BOOL: u8 = 14;
const FLOAT: u8 = 15;

/// Values one map read may pass over (a City record has about a hundred):
/// a crafted file cannot make a record cost more than this.
const BUDGET: u32 = 4096;

/// A value's head as written: a pointer, or a type, a size and where the
/// payload starts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Head {
    Pointer { to: usize, next: usize },
    Value { ty: u8, size: usize, at: usize },
}

impl<'a> Data<'a> {
    #[cfg(test)]
    pub fn new(bytes: &'a [u8]) -> Data<'a> {
        Data { bytes }
    }

    fn byte(&self, at: usize) -> Option<usize> {
        self.bytes.get(at).map(|&b| usize::from(b))
    }

    /// Big-endian number of `n` bytes at `at`.
    fn be(&self, at: usize, n: usize) -> Option<usize> {
        Some(self.bytes.get(at..at.checked_add(n)?)?.iter().fold(0usize, |v, &b| v << 8 | usize::from(b)))
    }

    fn head(&self, off: usize) -> Option<Head> {
        let c = self.byte(off)?;
        let mut at = off + 1;
        let mut ty = (c >> 5) as u8;
        if ty == POINTER {
            let (ss, low) = ((c >> 3) & 3, c & 7);
            let to = match ss {
                0 => low << 8 | self.be(at, 1)?,
                1 => (low << 16 | self.be(at, 2)?) + 2048,
                2 => (low << 24 | self.be(at, 3)?) + 526_336,
                _ => self.be(at, 4)?,
            };
            return Some(Head::Pointer { to, next: at + ss + 1 });
        }
        if ty == 0 {
            ty = u8::try_from(7 + self.byte(at)?).ok()?;
            at += 1;
        }
        let size = match c & 0x1f {
            s @ 0..=28 => s,
            29 => 29 + self.be(at, 1)?,
            30 => 285 + self.be(at, 2)?,
            _ => 65_821 + self.be(at, 3)?,
        };
        at += match c & 0x1f {
            29 => 1,
            30 => 2,
            31 => 3,
            _ => 0,
        };
        Some(Head::Value { ty, size, at })
    }

    /// The value at `off`, one pointer followed: (type, size, payload start).
    fn value(&self, off: usize) -> Option<(u8, usize, usize)> {
        let h = match self.head(off)? {
            Head::Pointer { to, .. } => self.head(to)?,
            h => h,
        };
        match h {
            Head::Value { ty, size, at } => Some((ty, size, at)),
            Head::Pointer { .. } => None,
        }
    }

    /// Where the value written at `off` ends (a pointer ends after its own
    /// bytes), passing over at most `budget` values.
    fn skip(&self, mut off: usize, budget: &mut u32) -> Option<usize> {
        let mut pending: usize = 1;
        while pending > 0 {
            *budget = budget.checked_sub(1)?;
            pending -= 1;
            off = match self.head(off)? {
                Head::Pointer { next, .. } => next,
                Head::Value { ty: MAP, size, at } => {
                    pending = pending.checked_add(size.checked_mul(2)?)?;
                    at
                }
                Head::Value { ty: ARRAY, size, at } => {
                    pending = pending.checked_add(size)?;
                    at
                }
                Head::Value { ty: BOOL, at, .. } => at,
                Head::Value { size, at, .. } => {
                    let end = at.checked_add(size)?;
                    (end <= self.bytes.len()).then_some(end)?
                }
            };
        }
        Some(off)
    }

    /// The entries of the map at `off` (none if it is not a map): each key
    /// and the offset of its value.
    pub fn map(&self, off: usize) -> MapEntries<'a> {
        let (left, at) = match self.value(off) {
            Some((MAP, size, at)) => (size, at),
            _ => (0, 0),
        };
        MapEntries { data: *self, left, at, budget: BUDGET }
    }

    /// The value of `key` in the map at `off`.
    pub fn get(&self, off: usize, key: &[u8]) -> Option<usize> {
        self.map(off).find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The first element of the array at `off`.
    pub fn first(&self, off: usize) -> Option<usize> {
        match self.value(off)? {
            (ARRAY, size, at) if size > 0 => Some(at),
            _ => None,
        }
    }

    /// The UTF-8 string at `off`.
    pub fn str(&self, off: usize) -> Option<&'a str> {
        match self.value(off)? {
            (STRING, size, at) => std::str::from_utf8(self.bytes.get(at..at.checked_add(size)?)?).ok(),
            _ => None,
        }
    }

    /// The double (or float) at `off`.
    pub fn f64(&self, off: usize) -> Option<f64> {
        match self.value(off)? {
            (DOUBLE, 8, at) => Some(f64::from_bits(self.be(at, 8)? as u64)),
            (FLOAT, 4, at) => Some(f32::from_bits(self.be(at, 4)? as u32).into()),
            _ => None,
        }
    }

    /// The unsigned integer at `off`, if it fits in a u32 (a non-negative
    /// int32 counts).
    pub fn u32(&self, off: usize) -> Option<u32> {
        let (ty, size, at) = self.value(off)?;
        let max = match ty {
            UINT16 => 2,
            UINT32 | INT32 => 4,
            UINT64 => 8,
            UINT128 => 16,
            _ => return None,
        };
        if size > max {
            return None;
        }
        let bytes = self.bytes.get(at..at.checked_add(size)?)?;
        if ty == INT32 && size == 4 && bytes[0] & 0x80 != 0 {
            return None;
        }
        let v = bytes.iter().try_fold(0u128, |v, &b| v.checked_mul(256).map(|v| v | u128::from(b)))?;
        u32::try_from(v).ok()
    }
}

/// The entries of one map, read as they are passed.
pub struct MapEntries<'a> {
    data: Data<'a>,
    left: usize,
    at: usize,
    budget: u32,
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = (&'a [u8], usize);

    fn next(&mut self) -> Option<(&'a [u8], usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let d = self.data;
        let key = d.str(self.at).map(str::as_bytes);
        let value = d.skip(self.at, &mut self.budget);
        let next = value.and_then(|v| d.skip(v, &mut self.budget));
        match (key, value, next) {
            (Some(k), Some(v), Some(n)) => {
                self.at = n;
                Some((k, v))
            }
            // A malformed entry ends the map.
            _ => {
                self.left = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control byte and its size bytes for `ty` and `size`.
    fn head(ty: u8, size: usize) -> Vec<u8> {
        let (t, ext) = if ty > 7 { (0u8, Some(ty - 7)) } else { (ty, None) };
        let (s, more): (u8, Vec<u8>) = match size {
            0..=28 => (size as u8, vec![]),
            29..=284 => (29, vec![(size - 29) as u8]),
            285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
            _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
        };
        let mut v = vec![t << 5 | s];
        v.extend(ext);
        v.extend(more);
        v
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = head(STRING, s.len());
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn heads_of_every_size_form_and_pointer_form() {
        for size in [0usize, 28, 29, 284, 285, 65_820, 65_821, 70_000] {
            let mut b = head(STRING, size);
            let at = b.len();
            b.resize(at + size, b'x');
            let d = Data::new(&b);
            assert_eq!(d.head(0), Some(Head::Value { ty: STRING, size, at }), "size {size}");
            assert_eq!(d.skip(0, &mut 10), Some(b.len()));
        }
        // Extended types: the type byte comes before the size bytes.
        let b = [&head(UINT64, 29)[..], &[0u8; 29]].concat();
        assert_eq!(Data::new(&b).head(0), Some(Head::Value { ty: UINT64, size: 29, at: 3 }));
        // The four pointer sizes (the format's example values).
        for (bytes, to) in [
            (vec![0x20u8 | 0x05, 0x01], 0x0501usize),
            (vec![0x28 | 0x03, 0x02, 0x01], 0x03_0201 + 2048),
            (vec![0x30 | 0x01, 0x03, 0x02, 0x01], 0x0103_0201 + 526_336),
            (vec![0x38 | 0x07, 0x12, 0x34, 0x56, 0x78], 0x1234_5678),
        ] {
            let next = bytes.len();
            assert_eq!(Data::new(&bytes).head(0), Some(Head::Pointer { to, next }));
        }
        // Truncated heads and payloads read as nothing.
        assert_eq!(Data::new(&[0x38, 1, 2]).head(0), None);
        assert_eq!(Data::new(&head(STRING, 300)[..1]).head(0), None);
        assert_eq!(Data::new(&string("abc")[..3]).str(0), None);
        assert_eq!(Data::new(&string("abc")[..3]).skip(0, &mut 10), None);
    }

    /// A map with a pointer key, a pointer value, a nested map to pass over,
    /// an array and numbers: every accessor reads what was written.
    #[test]
    fn maps_arrays_pointers_and_numbers() {
        // At 0: "iso_code" (a key to point at), at 9: "DE" (a value to point at).
        let mut b = string("iso_code");
        b.extend(string("DE"));
        let top = b.len();
        b.extend(head(MAP, 5));
        b.extend([0x20, 0]); // key: pointer to "iso_code"
        b.extend([0x20, 9]); // value: pointer to "DE"
        b.extend(string("names"));
        b.extend(head(MAP, 2));
        for s in ["en", "Germany", "zh-CN", "德国"] {
            b.extend(string(s));
        }
        b.extend(string("subdivisions"));
        b.extend(head(ARRAY, 2));
        b.extend(head(MAP, 1));
        b.extend([0x20, 0]);
        b.extend(string("BE"));
        b.extend(head(BOOL, 1));
        b.extend(string("lat"));
        b.extend(head(DOUBLE, 8));
        b.extend(52.52f64.to_bits().to_be_bytes());
        b.extend(string("asn"));
        b.extend(head(UINT32, 3));
        b.extend([0x01, 0x02, 0x03]);
        let end = b.len();
        let d = Data::new(&b);
        let keys: Vec<&[u8]> = d.map(top).map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"iso_code"[..], b"names", b"subdivisions", b"lat", b"asn"]);
        assert_eq!(d.get(top, b"iso_code").and_then(|v| d.str(v)), Some("DE"));
        let names = d.get(top, b"names").unwrap();
        assert_eq!(d.get(names, b"zh-CN").and_then(|v| d.str(v)), Some("德国"));
        let sub = d.get(top, b"subdivisions").and_then(|v| d.first(v)).unwrap();
        assert_eq!(d.get(sub, b"iso_code").and_then(|v| d.str(v)), Some("BE"));
        assert_eq!(d.get(top, b"lat").and_then(|v| d.f64(v)), Some(52.52));
        assert_eq!(d.get(top, b"asn").and_then(|v| d.u32(v)), Some(0x010203));
        assert_eq!(d.skip(top, &mut 100), Some(end));
        // Wrong types read as nothing.
        assert_eq!(d.get(top, b"lat").and_then(|v| d.str(v)), None);
        assert_eq!(d.get(top, b"names").and_then(|v| d.first(v)), None);
        assert_eq!(d.map(d.get(top, b"asn").unwrap()).count(), 0);
        // A pointer to a pointer is invalid.
        let pp = [0x20u8, 2, 0x20, 4, 0x40 | 1, b'x'];
        assert_eq!(Data::new(&pp).str(2), Some("x"));
        assert_eq!(Data::new(&pp).str(0), None);
    }

    /// A map claiming millions of entries, or nesting without end, stops at
    /// the budget or the end of the bytes, never reading past them.
    #[test]
    fn hostile_sizes_are_bounded() {
        let mut b = head(MAP, 5_000_000);
        for _ in 0..10_000 {
            b.extend(string("k"));
            b.extend(head(BOOL, 0));
        }
        let d = Data::new(&b);
        assert_eq!(d.map(0).count(), (BUDGET / 2) as usize);
        let mut unlimited = u32::MAX;
        assert_eq!(d.skip(0, &mut unlimited), None, "runs off the end");
        let nested: Vec<u8> = std::iter::repeat_n(head(ARRAY, 1), 100_000).flatten().collect();
        let mut budget = BUDGET;
        assert_eq!(Data::new(&nested).skip(0, &mut budget), None);
        assert_eq!(budget, 0);
        let ints = [head(UINT128, 16), vec![0xff; 16]].concat();
        assert_eq!(Data::new(&ints).u32(0), None);
        let neg = [head(INT32, 4), vec![0xff; 4]].concat();
        assert_eq!(Data::new(&neg).u32(0), None);
    }

    fn demo(file: &str) -> Vec<u8> {
        std::fs::read(format!("{}/geo/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// What maxminddb's iterator gives for a family, as the compile read it
    /// before this walk: networks with data, IPv4 ones in the IPv4 walk,
    /// IPv6 ones outside `::/96` in the IPv6 walk, aliases skipped.
    pub(crate) fn crate_walk(file: &[u8], family: Family) -> Vec<(u128, u32, u32)> {
        let reader = Reader::from_source(file).unwrap();
        let root = match family {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        };
        let mut out = Vec::new();
        for res in reader.within(root.parse().unwrap(), Default::default()).unwrap() {
            let res = res.unwrap();
            let (start, len) = match (res.network().unwrap(), family) {
                (ipnetwork::IpNetwork::V4(n), Family::V4) => (u32::from(n.network()) as u128, n.prefix()),
                (ipnetwork::IpNetwork::V6(n), Family::V6) => (u128::from(n.network()), n.prefix()),
                _ => continue,
            };
            if family == Family::V6 && start <= u32::MAX as u128 && len >= 96 {
                continue;
            }
            out.push((start, len as u32, res.offset().unwrap() as u32));
        }
        out
    }

    pub(crate) fn own_walk(file: &[u8], family: Family) -> Vec<(u128, u32, u32)> {
        let mut out = Vec::new();
        assert!(Tree::new(file).unwrap().walk(family, |s, l, o| out.push((s, l, o))));
        out
    }

    #[test]
    fn the_walk_gives_the_crates_networks() {
        for file in ["demo-city.mmdb", "demo-asn.mmdb"] {
            let b = demo(file);
            for family in [Family::V4, Family::V6] {
                let own = own_walk(&b, family);
                assert!(!own.is_empty(), "{file} {family:?}");
                assert_eq!(own, crate_walk(&b, family), "{file} {family:?}");
            }
        }
    }

    /// The real databases: the walk gives the crate's networks, in order, and
    /// the in-place reading of every record they point at gives what the
    /// crate's decoding gives (`records`, used by explain and `geo`).
    #[test]
    fn the_walk_and_the_reading_agree_with_the_crate_on_the_real_databases() {
        use crate::geo::mmdb::{asn_at, decode_asn, decode_location, location_at};
        let Some(dir) = crate::testing::real_geo_dir() else { return };
        for (file, city) in [("city.mmdb", true), ("asn.mmdb", false)] {
            let b = std::fs::read(dir.join(file)).unwrap();
            let (tree, reader) = (Tree::new(&b).unwrap(), Reader::from_source(&b[..]).unwrap());
            let mut read = std::collections::HashSet::new();
            for family in [Family::V4, Family::V6] {
                // Streamed side by side: the City database has 14.7M networks.
                let mut own = Vec::with_capacity(1 << 16);
                let mut crate_networks = reader
                    .within(
                        if family == Family::V4 { "0.0.0.0/0" } else { "::/0" }.parse().unwrap(),
                        Default::default(),
                    )
                    .unwrap()
                    .map(|r| r.unwrap())
                    .filter_map(|res| {
                        let (start, len) = match (res.network().unwrap(), family) {
                            (ipnetwork::IpNetwork::V4(n), Family::V4) => (u32::from(n.network()) as u128, n.prefix()),
                            (ipnetwork::IpNetwork::V6(n), Family::V6) => (u128::from(n.network()), n.prefix()),
                            _ => return None,
                        };
                        (family == Family::V4 || start > u32::MAX as u128 || len < 96).then_some((start, len, res))
                    });
                let mut n = 0usize;
                let mut check = |own: &mut Vec<(u128, u32, u32)>| {
                    for &(start, len, off) in own.iter() {
                        let (s, l, res) = crate_networks.next().expect("the crate has no more networks");
                        assert_eq!((start, len, off as usize), (s, u32::from(l), res.offset().unwrap()), "{file}");
                        if read.insert(off) {
                            if city {
                                assert_eq!(
                                    location_at(&tree.data, off as usize),
                                    decode_location(&res),
                                    "{file} @{off}"
                                );
                            } else {
                                assert_eq!(asn_at(&tree.data, off as usize), decode_asn(&res), "{file} @{off}");
                            }
                        }
                    }
                    n += own.len();
                    own.clear();
                };
                assert!(tree.walk(family, |s, l, o| {
                    own.push((s, l, o));
                    if own.len() == own.capacity() {
                        check(&mut own);
                    }
                }));
                check(&mut own);
                assert!(crate_networks.next().is_none(), "{file} {family:?}: the crate has more networks");
                eprintln!("{file} {family:?}: {n} networks, {} records read", read.len());
                assert!(n > 100_000, "{file} {family:?}: {n} networks");
            }
        }
    }

    /// Flipped bits anywhere in either database, and records read at every
    /// byte offset: whatever the compile gets, it neither panics nor hangs.
    #[test]
    fn garbage_databases_compile_to_some_table() {
        use crate::geo::cells::Cells;
        use crate::geo::mmdb::{asn_at, location_at};
        let isps = crate::testing::demo().isps;
        let (city, asn) = (demo("demo-city.mmdb"), demo("demo-asn.mmdb"));
        for b in [&city, &asn] {
            let t = Tree::new(b).unwrap();
            for off in 0..t.data.bytes.len() + 8 {
                let _ = (location_at(&t.data, off), asn_at(&t.data, off));
            }
        }
        let mut next = crate::testing::xorshift(0xdb);
        let (mut compiled, mut refused) = (0, 0);
        for round in 0..400 {
            let (mut c, mut a) = (city.clone(), asn.clone());
            let target = if round % 2 == 0 { &mut c } else { &mut a };
            for _ in 0..1 + next(16) {
                let i = next(target.len() as u64) as usize;
                target[i] ^= 1 << next(8);
            }
            match (Tree::new(&c), Tree::new(&a)) {
                (Ok(c), Ok(a)) => {
                    let cells = Cells::walk(&c, &a, &isps).cells();
                    let _ = cells.lookup("115.236.1.1".parse().unwrap());
                    compiled += 1;
                }
                _ => refused += 1,
            }
        }
        // Most files still open (flips in the tree and the data, which the
        // reader does not check); the demo files are small, so a third of
        // the flips hit their metadata and the reader refuses them.
        assert!(compiled > 200, "{compiled} compiled, {refused} refused");
    }

    /// A tree whose records point back at the root, or past the tree or the
    /// data, gives what it can and ends.
    #[test]
    fn a_corrupt_tree_ends() {
        let b = demo("demo-city.mmdb");
        let t = Tree::new(&b).unwrap();
        let bytes = (t.record_size / 4) as usize;
        for bad in [0u32, t.node_count as u32 + 1, u32::MAX >> (32 - t.record_size.min(32))] {
            let mut c = b.clone();
            // Every record of the first half of the tree: point it at `bad`.
            for n in 0..t.node_count / 2 {
                let node = &mut c[n * bytes..(n + 1) * bytes];
                match t.record_size {
                    24 => node.copy_from_slice(&[&bad.to_be_bytes()[1..], &bad.to_be_bytes()[1..]].concat()),
                    32 => node.copy_from_slice(&[bad.to_be_bytes(), bad.to_be_bytes()].concat()),
                    _ => unreachable!("the demo databases use 24 or 32-bit records"),
                }
            }
            for family in [Family::V4, Family::V6] {
                let mut n = 0usize;
                let whole = Tree::new(&c).unwrap().walk(family, |_, _, _| n += 1);
                assert!(n <= 2 * t.node_count + 1024, "record {bad}: {n} networks");
                // Only the cycle through the root is cut short.
                assert_eq!(whole, bad != 0, "record {bad} {family:?}");
            }
        }
    }
}
