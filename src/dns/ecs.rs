//! EDNS Client Subnet (RFC 7871), parsed straight from the OPT RDATA.
//!
//! hickory's decoder ignores extra address bytes and bits set beyond the
//! prefix, and its server answers decoding failures without an OPT, so popdns
//! validates the option itself.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const OPTION_CODE: u16 = 8;

/// A valid ECS option from a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSubnet {
    /// 1 = IPv4, 2 = IPv6.
    pub family: u16,
    pub source: u8,
    /// ADDRESS as received: ceil(source / 8) bytes.
    addr: [u8; 16],
    addr_len: u8,
}

impl ClientSubnet {
    pub fn addr(&self) -> IpAddr {
        if self.family == 1 {
            IpAddr::V4(Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        }
    }
    pub fn addr_bytes(&self) -> &[u8] {
        &self.addr[..self.addr_len as usize]
    }
    /// The option as popdns echoes it: FAMILY, SOURCE PREFIX-LENGTH and ADDRESS
    /// as received, with our SCOPE PREFIX-LENGTH (RFC 7871 §7.2.1).
    pub fn write_echo(&self, scope: u8, w: &mut super::wire::Writer<'_>) {
        w.u16(OPTION_CODE);
        w.u16(4 + self.addr_len as u16);
        w.u16(self.family);
        w.put(&[self.source, scope]);
        w.put(self.addr_bytes());
    }
}

/// Why an ECS option (or the OPT holding it) is malformed: FORMERR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcsError {
    /// An option runs past the end of the OPT RDATA.
    Truncated,
    /// "payload under 4 bytes"
    Short,
    /// "family not 1 or 2"
    Family,
    /// "source prefix over 32/128"
    SourceTooLong,
    /// "address bytes not ceil(source/8)"
    AddressLength,
    /// "bits set beyond the source prefix" (RFC 7871 §6: MUST be zero)
    HostBits,
    /// "non-zero scope in the query" (§6: SCOPE PREFIX-LENGTH MUST be 0 in queries)
    Scope,
    /// Two ECS options.
    Duplicate,
}

/// Find and validate the ECS option among the OPT options.
pub fn parse(options: &[u8]) -> Result<Option<ClientSubnet>, EcsError> {
    let mut found = None;
    let mut i = 0;
    while i < options.len() {
        let code = super::wire::u16_at(options, i).ok_or(EcsError::Truncated)?;
        let len = super::wire::u16_at(options, i + 2).ok_or(EcsError::Truncated)? as usize;
        let data = options.get(i + 4..i + 4 + len).ok_or(EcsError::Truncated)?;
        i += 4 + len;
        if code == OPTION_CODE {
            if found.is_some() {
                return Err(EcsError::Duplicate);
            }
            found = Some(one(data)?);
        }
    }
    Ok(found)
}

fn one(data: &[u8]) -> Result<ClientSubnet, EcsError> {
    if data.len() < 4 {
        return Err(EcsError::Short);
    }
    let family = u16::from_be_bytes([data[0], data[1]]);
    let (source, scope, addr) = (data[2], data[3], &data[4..]);
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return Err(EcsError::Family),
    };
    if source > max {
        return Err(EcsError::SourceTooLong);
    }
    if scope != 0 {
        return Err(EcsError::Scope);
    }
    let want = (source as usize).div_ceil(8);
    if addr.len() != want {
        return Err(EcsError::AddressLength);
    }
    if source % 8 != 0 {
        let mask = 0xFFu8 >> (source % 8);
        if addr[want - 1] & mask != 0 {
            return Err(EcsError::HostBits);
        }
    }
    let mut bytes = [0u8; 16];
    bytes[..want].copy_from_slice(addr);
    Ok(ClientSubnet { family, source, addr: bytes, addr_len: want as u8 })
}

/// `ip` with every bit past `prefix` cleared.
pub fn truncate(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let p = prefix.min(32) as u32;
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let p = prefix.min(128) as u32;
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 8, 0, data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn valid_and_each_malformed_case() {
        let ok = parse(&opt(&[0, 1, 24, 0, 115, 236, 1])).unwrap().unwrap();
        assert_eq!(ok.addr(), "115.236.1.0".parse::<IpAddr>().unwrap());
        assert_eq!(ok.source, 24);
        let cases: [(&[u8], EcsError); 7] = [
            (&[0, 1, 24], EcsError::Short),
            (&[0, 3, 24, 0, 1, 2, 3], EcsError::Family),
            (&[0, 1, 33, 0, 1, 2, 3, 4, 5], EcsError::SourceTooLong),
            (&[0, 1, 24, 0, 1, 2, 3, 4], EcsError::AddressLength),
            (&[0, 1, 20, 0, 1, 2, 255], EcsError::HostBits),
            (&[0, 1, 24, 8, 1, 2, 3], EcsError::Scope),
            (&[0, 2, 129, 0], EcsError::SourceTooLong),
        ];
        for (data, want) in cases {
            assert_eq!(parse(&opt(data)), Err(want), "{data:?}");
        }
        let mut two = opt(&[0, 1, 0, 0]);
        two.extend(opt(&[0, 1, 0, 0]));
        assert_eq!(parse(&two), Err(EcsError::Duplicate));
        assert_eq!(parse(&[0, 8, 0, 9, 0]), Err(EcsError::Truncated));
        assert_eq!(parse(&opt(&[0, 1, 0, 0])).unwrap().unwrap().source, 0);
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate("115.236.1.77".parse().unwrap(), 24), "115.236.1.0".parse::<IpAddr>().unwrap());
        assert_eq!(truncate("2001:db8:ffff::1".parse().unwrap(), 32), "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(truncate("1.2.3.4".parse().unwrap(), 0), "0.0.0.0".parse::<IpAddr>().unwrap());
    }
}
