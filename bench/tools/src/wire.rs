//! Just enough DNS wire format: build a query (RD=0, EDNS 1232, optional ECS),
//! read the A/AAAA answers, rcode and ECS scope of a response.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const A: u16 = 1;

pub fn query(id: u16, name: &str, qtype: u16, edns: bool, ecs: Option<(Ipv4Addr, u8)>) -> Vec<u8> {
    let mut m = Vec::with_capacity(80);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, if edns { 1 } else { 0 }]);
    for label in name.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        let mut opts = Vec::new();
        if let Some((addr, src)) = ecs {
            let nbytes = (src as usize).div_ceil(8);
            let mut a = addr.octets();
            // zero the bits beyond the source prefix (RFC 7871)
            let mask = if src == 0 { 0 } else { u32::MAX << (32 - src as u32) };
            a = (u32::from_be_bytes(a) & mask).to_be_bytes();
            opts.extend_from_slice(&8u16.to_be_bytes());
            opts.extend_from_slice(&((4 + nbytes) as u16).to_be_bytes());
            opts.extend_from_slice(&[0, 1, src, 0]);
            opts.extend_from_slice(&a[..nbytes]);
        }
        m.push(0); // root
        m.extend_from_slice(&41u16.to_be_bytes());
        m.extend_from_slice(&1232u16.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&(opts.len() as u16).to_be_bytes());
        m.extend_from_slice(&opts);
    }
    m
}

#[derive(Debug, Default)]
pub struct Resp {
    pub id: u16,
    pub rcode: u8,
    pub ips: Vec<IpAddr>,
    pub scope: Option<u8>,
}

fn skip_name(b: &[u8], mut p: usize) -> Option<usize> {
    loop {
        let l = *b.get(p)? as usize;
        if l == 0 {
            return Some(p + 1);
        }
        if l & 0xc0 == 0xc0 {
            return Some(p + 2);
        }
        p += l + 1;
    }
}

fn u16at(b: &[u8], p: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(p)?, *b.get(p + 1)?]))
}

pub fn parse(b: &[u8]) -> Option<Resp> {
    if b.len() < 12 || b[2] & 0x80 == 0 {
        return None;
    }
    let mut r = Resp { id: u16at(b, 0)?, rcode: b[3] & 0x0f, ..Default::default() };
    let qd = u16at(b, 4)?;
    let total = u16at(b, 6)? as usize + u16at(b, 8)? as usize + u16at(b, 10)? as usize;
    let an = u16at(b, 6)? as usize;
    let mut p = 12;
    for _ in 0..qd {
        p = skip_name(b, p)? + 4;
    }
    for i in 0..total {
        p = skip_name(b, p)?;
        let t = u16at(b, p)?;
        let rdlen = u16at(b, p + 8)? as usize;
        let rd = b.get(p + 10..p + 10 + rdlen)?;
        if i < an && t == 1 && rdlen == 4 {
            r.ips.push(IpAddr::V4(Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3])));
        } else if i < an && t == 28 && rdlen == 16 {
            let a: [u8; 16] = rd.try_into().ok()?;
            r.ips.push(IpAddr::V6(Ipv6Addr::from(a)));
        } else if t == 41 {
            let mut q = 0;
            while q + 4 <= rd.len() {
                let code = u16::from_be_bytes([rd[q], rd[q + 1]]);
                let len = u16::from_be_bytes([rd[q + 2], rd[q + 3]]) as usize;
                if code == 8 && len >= 4 && q + 4 + len <= rd.len() {
                    r.scope = Some(rd[q + 7]);
                }
                q += 4 + len;
            }
        }
        p += 10 + rdlen;
    }
    Some(r)
}
