//! Reading a query and writing an answer, on bytes, without allocation.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub const HEADER_LEN: usize = 12;

/// Response codes (the high bits of BADVERS go into the OPT record).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const BADVERS: u16 = 16;

    pub fn name(r: u16) -> &'static str {
        match r {
            NOERROR => "NOERROR",
            FORMERR => "FORMERR",
            SERVFAIL => "SERVFAIL",
            NXDOMAIN => "NXDOMAIN",
            NOTIMP => "NOTIMP",
            REFUSED => "REFUSED",
            BADVERS => "BADVERS",
            _ => "OTHER",
        }
    }
}

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The question as received: the raw bytes (echoed as asked), the name
/// lower-cased for lookup, type and class.
#[derive(Clone, Copy)]
pub struct Question<'a> {
    pub raw: &'a [u8],
    pub name_len: usize,
    pub qtype: u16,
    pub qclass: u16,
}

/// Parse the question at offset 12. The name must be uncompressed (nothing
/// precedes it to point at). Writes the lower-cased name into `lname`.
pub fn question<'a>(msg: &'a [u8], lname: &mut [u8; 256]) -> Option<(Question<'a>, usize)> {
    let mut i = HEADER_LEN;
    loop {
        let len = *msg.get(i)? as usize;
        if len & 0xC0 != 0 {
            return None;
        }
        if i - HEADER_LEN + 1 + len > 255 {
            return None;
        }
        let label = msg.get(i..i + 1 + len)?;
        for (d, s) in lname[i - HEADER_LEN..].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    let name_len = i - HEADER_LEN;
    let qtype = u16_at(msg, i)?;
    let qclass = u16_at(msg, i + 2)?;
    let end = i + 4;
    Some((Question { raw: &msg[HEADER_LEN..end], name_len, qtype, qclass }, end))
}

/// Skip a possibly compressed name; returns the offset after it.
fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(i)? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(i + 1),
            0x00 => i += 1 + len,
            0xC0 => {
                msg.get(i + 1)?;
                return Some(i + 2);
            }
            _ => return None,
        }
    }
    None
}

/// The OPT pseudo-record of a query.
#[derive(Clone, Copy, Debug)]
pub struct Opt<'a> {
    pub udp_size: u16,
    pub version: u8,
    /// The DO bit, which a response copies (RFC 3225 §3).
    pub dnssec_ok: bool,
    pub options: &'a [u8],
}

/// A message whose sections do not parse: FORMERR. `opt` is the first OPT
/// record met before the fault, if any: the FORMERR then carries an OPT, so
/// the client can tell an EDNS format error from a server without EDNS
/// (RFC 6891 §7).
#[derive(Clone, Copy, Debug)]
pub struct Malformed<'a> {
    pub opt: Option<Opt<'a>>,
}

/// The offset after `n` questions (names possibly compressed), for walking
/// the records of a message whose question count is not 1.
pub fn skip_questions(msg: &[u8], n: u16) -> Option<usize> {
    let mut i = HEADER_LEN;
    for _ in 0..n {
        i = skip_name(msg, i)? + 4;
    }
    (i <= msg.len()).then_some(i)
}

/// Walk the answer, authority and additional sections after the question:
/// Ok(Some(opt)) with the one OPT, Ok(None) without, Err for a malformed message.
pub fn records(msg: &[u8], mut i: usize, counts: [u16; 3]) -> Result<Option<Opt<'_>>, Malformed<'_>> {
    let mut opt = None;
    for (section, &n) in counts.iter().enumerate() {
        for _ in 0..n {
            let owner = i;
            let fault = Malformed { opt };
            i = skip_name(msg, i).ok_or(fault)?;
            let rtype = u16_at(msg, i).ok_or(fault)?;
            let class = u16_at(msg, i + 2).ok_or(fault)?;
            let ttl = msg.get(i + 4..i + 8).ok_or(fault)?;
            let rdlen = u16_at(msg, i + 8).ok_or(fault)? as usize;
            let rdata = msg.get(i + 10..i + 10 + rdlen).ok_or(fault)?;
            i += 10 + rdlen;
            if rtype == crate::zones::rtype::OPT {
                let this = Opt { udp_size: class, version: ttl[1], dnssec_ok: ttl[2] & 0x80 != 0, options: rdata };
                // RFC 6891 §6.1.1: one OPT, owner root, in the additional section.
                if section != 2 || opt.is_some() || msg[owner] != 0 {
                    return Err(Malformed { opt: opt.or(Some(this)) });
                }
                opt = Some(this);
            }
        }
    }
    if i != msg.len() {
        return Err(Malformed { opt });
    }
    Ok(opt)
}

/// Writes a message into a caller-owned buffer. Overflow is remembered, not
/// reported per call: the caller checks `overflow` once at the end.
pub struct Writer<'o> {
    pub buf: &'o mut [u8],
    pub len: usize,
    pub overflow: bool,
}

impl<'o> Writer<'o> {
    pub fn new(buf: &'o mut [u8]) -> Self {
        Writer { buf, len: 0, overflow: false }
    }
    pub fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(d) => {
                d.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.overflow = true,
        }
    }
    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    pub fn set_u16(&mut self, at: usize, v: u16) {
        if let Some(d) = self.buf.get_mut(at..at + 2) {
            d.copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// The IPv4 client address a query will most likely be scheduled for, read
/// cheaply from the usual layout (one question, one OPT record whose first
/// option is an IPv4 ECS), without any validation: a hint for prefetching
/// the client's cell while the rest of a batch is answered, never an input
/// to an answer. None for any other layout.
pub fn ecs_v4_hint(msg: &[u8]) -> Option<u32> {
    if msg.get(4..12)? != [0, 1, 0, 0, 0, 0, 0, 1] {
        return None;
    }
    // The question name's labels up to the root label.
    let mut i = HEADER_LEN;
    while *msg.get(i)? != 0 {
        i += 1 + *msg.get(i)? as usize;
    }
    const ROOT_QTYPE_QCLASS: usize = 5;
    const OPT_FIXED: usize = 11; // root name, TYPE, CLASS, TTL, RDLENGTH
    i += ROOT_QTYPE_QCLASS;
    if *msg.get(i)? != 0 || u16_at(msg, i + 1)? != 41 {
        return None;
    }
    i += OPT_FIXED;
    // First option: CODE 8, LENGTH, FAMILY 1, SOURCE, SCOPE, address bytes.
    if u16_at(msg, i)? != 8 || u16_at(msg, i + 4)? != 1 {
        return None;
    }
    let source = (*msg.get(i + 6)?).min(32);
    if source == 0 {
        return None; // scheduled for the resolver's address
    }
    let n = (u16_at(msg, i + 2)? as usize).checked_sub(4)?.min(4);
    let mut a = [0u8; 4];
    a[..n].copy_from_slice(msg.get(i + 8..i + 8 + n)?);
    Some(u32::from_be_bytes(a) & u32::MAX << (32 - source as u32))
}

#[cfg(test)]
mod tests {
    use super::ecs_v4_hint;

    fn query(opt_rdata: &[u8], arcount: u8) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, arcount];
        q.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        q.extend_from_slice(&(opt_rdata.len() as u16).to_be_bytes());
        q.extend_from_slice(opt_rdata);
        q
    }

    #[test]
    fn hint_reads_the_ecs_address_of_the_usual_layout() {
        let ecs24 = [0, 8, 0, 7, 0, 1, 24, 0, 115, 236, 1];
        assert_eq!(ecs_v4_hint(&query(&ecs24, 1)), Some(u32::from_be_bytes([115, 236, 1, 0])));
        let ecs32 = [0, 8, 0, 8, 0, 1, 32, 0, 1, 2, 3, 4];
        assert_eq!(ecs_v4_hint(&query(&ecs32, 1)), Some(0x0102_0304));
        // Bits past the source prefix do not count; source 0 means the resolver.
        let ecs20 = [0, 8, 0, 7, 0, 1, 20, 0, 115, 236, 0xFF];
        assert_eq!(ecs_v4_hint(&query(&ecs20, 1)), Some(u32::from_be_bytes([115, 236, 0xF0, 0])));
        assert_eq!(ecs_v4_hint(&query(&[0, 8, 0, 4, 0, 1, 0, 0], 1)), None);
        // IPv6 ECS, another option first, no OPT, a truncated packet: no hint.
        assert_eq!(ecs_v4_hint(&query(&[0, 8, 0, 6, 0, 2, 16, 0, 0x24, 0x0e], 1)), None);
        assert_eq!(ecs_v4_hint(&query(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], 1)), None);
        assert_eq!(ecs_v4_hint(&query(&ecs24, 0)), None);
        let q = query(&ecs24, 1);
        for n in 0..q.len() {
            assert_eq!(ecs_v4_hint(&q[..n]), None, "cut at {n}");
        }
    }
}
