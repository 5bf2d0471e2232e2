//! Query bytes -> answer bytes: the one function every transport calls.
//!
//! It reads one config snapshot and one quality snapshot for the whole query,
//! writes into the caller's buffer and allocates nothing (the caller's
//! `Scratch` holds the reusable candidate list and location cache).
//!
//! Rules it follows, with their sources:
//! - AA on every answer from our zones; RA clear; RD and CD copied (RFC 1035 §4.1.1).
//! - NXDOMAIN and NODATA carry the zone's SOA in the authority section with
//!   TTL min(SOA TTL, minimum) (RFC 2308 §3); an empty non-terminal is NODATA (RFC 8020).
//! - Wildcards answer only names that do not exist, below their closest encloser (RFC 4592).
//! - ANY answers with one RRset (RFC 8482 §4.2); ANY or CNAME at an alias, the CNAME alone
//!   (RFC 1034 §3.6.2). A CNAME chain never repeats an RRset (RFC 2181 §5.5).
//! - OPT in the reply exactly when the query had one, errors included (RFC 6891 §6.1.1,
//!   §7); our buffer size advertised; version > 0 gets BADVERS (§6.1.3); DO copied
//!   (RFC 3225 §3); unknown options are not echoed; TC when a required RRset does not fit
//!   the client's UDP size, never for glue (RFC 2181 §9).
//! - ECS: FAMILY, SOURCE PREFIX-LENGTH and ADDRESS echoed, SCOPE the decision's
//!   real scope, 0 when the answer does not depend on the client (RFC 7871 §7.2.1);
//!   a CNAME that leads to a scheduled name is answered alone when the query has ECS.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::net::IpAddr;

use super::ecs::{self, ClientSubnet};
use super::wire::{self, HEADER_LEN, Question, Writer, rcode};
use crate::config::Snapshot;
use crate::pops::Family;
use crate::quality::Quality;
use crate::scheduler::{self, Candidate, Client, Decision, GeoPath, RankCache};
use crate::zones::{Glue, NameMatch, Node, RRset, Zone, rtype};

const OPCODE_QUERY: u16 = 0;
const OPCODE_NOTIFY: u16 = 4;
const OPCODE_UPDATE: u16 = 5;
const CLASS_IN: u16 = 1;
const MAX_CNAME_HOPS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Per-worker state reused across queries.
pub struct Scratch {
    pub cands: Vec<Candidate>,
    lname: [u8; 256],
    /// Where client locations come from: the cell table, or (for the tests
    /// that check the table) the databases record by record.
    pub geo: GeoPath,
    /// Rankings per client cell (UDP workers; only with `GeoPath::Cells`).
    pub cache: Option<Box<RankCache>>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::with_geo(GeoPath::Cells)
    }
}

impl Scratch {
    /// No ranking cache: every scheduled answer is decided from scratch.
    pub fn with_geo(geo: GeoPath) -> Scratch {
        Scratch { cands: Vec::with_capacity(64), lname: [0; 256], geo, cache: None }
    }

    /// A query worker's: the cell table and a ranking cache (4 MiB of slots
    /// and a 2 MiB arena, allocated here once).
    pub fn worker() -> Scratch {
        Scratch { cache: Some(Box::default()), ..Scratch::with_geo(GeoPath::Cells) }
    }
}

/// What one answer was, for counters and logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub qtype: u16,
    pub rcode: u16,
    pub ecs: bool,
    pub truncated: bool,
}

/// Answer `query` from `peer`. Returns the length written into `out` (which
/// should hold 65535 bytes), or None when the datagram deserves no answer (too
/// short to carry an ID, or itself a response).
pub fn answer(
    snap: &Snapshot,
    quality: &Quality,
    scratch: &mut Scratch,
    query: &[u8],
    peer: IpAddr,
    transport: Transport,
    out: &mut [u8],
) -> Option<(usize, Summary)> {
    let id = wire::u16_at(query, 0)?;
    let flags = wire::u16_at(query, 2)?;
    if query.len() < HEADER_LEN || flags & 0x8000 != 0 {
        return None;
    }
    let counts = [wire::u16_at(query, 4)?, wire::u16_at(query, 6)?, wire::u16_at(query, 8)?, wire::u16_at(query, 10)?];
    let opcode = (flags >> 11) & 0xF;
    let mut r =
        Response { id, flags, question: None, out: Writer::new(out), an: 0, ns: 0, ar: 0, limit: 65535, reserve: 0 };
    let mut summary = Summary::default();

    let parsed = if counts[0] == 1 { wire::question(query, &mut scratch.lname) } else { None };
    r.question = parsed.map(|p| p.0);
    summary.qtype = r.question.map_or(0, |q| q.qtype);
    // The records are walked before any error is answered: an error to an
    // EDNS query carries an OPT too (RFC 6891 §6.1.1, §7).
    let after_q = parsed.map(|p| p.1).or_else(|| wire::skip_questions(query, counts[0]));
    let sections = match after_q {
        Some(at) => wire::records(query, at, [counts[1], counts[2], counts[3]]),
        None => Err(wire::Malformed { opt: None }),
    };
    let opt = sections.unwrap_or_else(|m| m.opt);
    let edns = opt.map(|o| EdnsOut { our_size: snap.server.udp_payload, dnssec_ok: o.dnssec_ok, ecs: None, scope: 0 });
    if opcode != OPCODE_QUERY {
        let code = if opcode == OPCODE_NOTIFY || opcode == OPCODE_UPDATE { rcode::REFUSED } else { rcode::NOTIMP };
        return Some(r.finish_bare(code, edns, &mut summary));
    }
    let (Some(q), Ok(opt)) = (r.question, sections) else {
        return Some(r.finish_bare(rcode::FORMERR, edns, &mut summary));
    };
    if opt.is_some_and(|o| o.version > 0) {
        return Some(r.finish_bare(rcode::BADVERS, edns, &mut summary));
    }
    let ecs = match opt.map(|o| ecs::parse(o.options)) {
        None => None,
        Some(Ok(e)) => e,
        Some(Err(_)) => return Some(r.finish_bare(rcode::FORMERR, edns, &mut summary)),
    };
    summary.ecs = ecs.is_some();
    // From here on the reply echoes the ECS option, REFUSED included
    // (RFC 7871 §7.2.1: whether or not it was needed for the answer).
    let edns = edns.map(|e| EdnsOut { ecs, ..e });
    let limit = match (transport, opt) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(o)) => o.udp_size.clamp(512, snap.server.udp_payload.max(512)) as usize,
    };

    if q.qclass != CLASS_IN || q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
        return Some(r.finish_bare(rcode::REFUSED, edns, &mut summary));
    }
    let lname = &scratch.lname[..q.name_len];
    let Some(zone) = snap.zones.find(lname) else {
        return Some(r.finish_bare(rcode::REFUSED, edns, &mut summary));
    };
    r.start();
    (r.limit, r.reserve) = (limit, edns.map_or(0, |e| e.len()));
    // The cache is keyed by client cell: only clients located through cells use it.
    let cache = scratch.cache.as_deref_mut().filter(|_| scratch.geo == GeoPath::Cells);
    let mut ctx = Lookup { snap, quality, cands: &mut scratch.cands, cache, geo: scratch.geo, ecs, peer, scope: None };
    let code = ctx.resolve(&mut r, zone, q);
    let scope = ctx.scope.unwrap_or(0);
    let edns = edns.map(|e| EdnsOut { scope, ..e });
    Some(r.finish(code, edns, limit, &mut summary))
}

/// The OPT record of our reply.
#[derive(Clone, Copy)]
struct EdnsOut {
    our_size: u16,
    /// The query's DO bit, copied (RFC 3225 §3).
    dnssec_ok: bool,
    ecs: Option<ClientSubnet>,
    scope: u8,
}

impl EdnsOut {
    /// Bytes of the OPT record as `write_opt` writes it.
    fn len(&self) -> usize {
        11 + self.ecs.map_or(0, |c| 8 + c.addr_bytes().len())
    }
}

struct Response<'q, 'o> {
    id: u16,
    flags: u16,
    question: Option<Question<'q>>,
    out: Writer<'o>,
    an: u16,
    ns: u16,
    ar: u16,
    /// The client's message size, and the bytes the OPT will take: optional
    /// records (glue) are added only while both fit.
    limit: usize,
    reserve: usize,
}

impl Response<'_, '_> {
    /// Header placeholder and the question (the header is written in `finish`).
    fn start(&mut self) {
        self.out.len = 0;
        self.out.put(&[0; HEADER_LEN]);
        if let Some(q) = self.question {
            self.out.put(q.raw);
        }
    }

    fn header(&mut self, code: u16, aa: bool, tc: bool) {
        // QR, opcode, RD and CD from the query; AA and TC ours; RA, Z, AD clear.
        let mut f = 0x8000 | (self.flags & 0x7800) | (self.flags & 0x0100) | (self.flags & 0x0010);
        if aa {
            f |= 0x0400;
        }
        if tc {
            f |= 0x0200;
        }
        f |= code & 0xF;
        let qd = u16::from(self.question.is_some());
        let w = &mut self.out;
        w.set_u16(0, self.id);
        w.set_u16(2, f);
        w.set_u16(4, qd);
        w.set_u16(6, self.an);
        w.set_u16(8, self.ns);
        w.set_u16(10, self.ar);
    }

    fn write_opt(&mut self, e: EdnsOut, code: u16) {
        let w = &mut self.out;
        w.put(&[0]);
        w.u16(rtype::OPT);
        w.u16(e.our_size);
        // Extended RCODE (upper 8 bits), version 0, DO as asked, no other flags.
        w.put(&[(code >> 4) as u8, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0]);
        match e.ecs {
            Some(c) => {
                w.u16(4 + 4 + c.addr_bytes().len() as u16);
                c.write_echo(if c.source == 0 { 0 } else { e.scope }, w);
            }
            None => w.u16(0),
        }
        self.ar += 1;
    }

    /// An answer with no records: errors, REFUSED, NOTIMP, BADVERS. The OPT
    /// echoes an ECS option only where `edns` carries one (scope 0).
    fn finish_bare(mut self, code: u16, edns: Option<EdnsOut>, s: &mut Summary) -> (usize, Summary) {
        self.start();
        self.an = 0;
        self.ns = 0;
        self.ar = 0;
        if let Some(e) = edns {
            self.write_opt(EdnsOut { scope: 0, ..e }, code);
        }
        self.header(code, false, false);
        s.rcode = code;
        (self.out.len, *s)
    }

    /// Close the message; when it exceeds `limit`, send the question and OPT
    /// with TC set instead (RFC 2181 §9).
    fn finish(mut self, code: u16, edns: Option<EdnsOut>, limit: usize, s: &mut Summary) -> (usize, Summary) {
        if let Some(e) = edns {
            self.write_opt(e, code);
        }
        let tc = self.out.overflow || self.out.len > limit;
        if tc {
            self.start();
            self.an = 0;
            self.ns = 0;
            self.ar = 0;
            if let Some(e) = edns {
                self.write_opt(e, code);
            }
        }
        self.header(code, true, tc);
        s.rcode = code;
        s.truncated = tc;
        (self.out.len, *s)
    }

    /// Additional-section glue, as many whole RRsets as fit beside the
    /// answer and the OPT: glue that does not fit is left out, and is no
    /// reason for TC (RFC 2181 §9).
    fn glue(&mut self, glue: &[Glue]) {
        for rrset in glue.chunk_by(|a, b| a.0 == b.0 && a.1[..2] == b.1[..2]) {
            let size: usize = rrset.iter().map(|(n, rec)| n.len() + rec.len()).sum();
            if self.out.len + size + self.reserve > self.limit {
                continue;
            }
            for (gname, rec) in rrset {
                self.out.put(gname);
                self.out.put(rec);
                self.ar += 1;
            }
        }
    }

    /// Owner name: a pointer to the question name, or a name written out.
    fn owner(&mut self, owner: Owner<'_>) {
        match owner {
            Owner::Question => self.out.u16(0xC000 | HEADER_LEN as u16),
            Owner::QuestionSuffix(off) => self.out.u16(0xC000 | (HEADER_LEN + off) as u16),
            Owner::Name(n) => self.out.put(n),
        }
    }

    fn rrset(&mut self, owner: Owner<'_>, rr: &RRset) {
        for rec in &rr.records {
            self.owner(owner);
            self.out.put(rec);
            self.an += 1;
        }
    }
}

#[derive(Clone, Copy)]
enum Owner<'a> {
    Question,
    /// The suffix of the question name starting at this offset (the zone apex).
    QuestionSuffix(usize),
    Name(&'a [u8]),
}

/// One query's walk through the zones.
struct Lookup<'a> {
    snap: &'a Snapshot,
    quality: &'a Quality,
    cands: &'a mut Vec<Candidate>,
    cache: Option<&'a mut RankCache>,
    geo: GeoPath,
    ecs: Option<ClientSubnet>,
    peer: IpAddr,
    /// Set when the answer depends on the client.
    scope: Option<u8>,
}

impl<'s> Lookup<'s> {
    fn resolve(&mut self, r: &mut Response<'_, '_>, mut zone: &'s Zone, q: Question<'_>) -> u16 {
        let qname_lower = {
            // The question name, lower-cased, is what the caller looked the zone up with.
            let mut buf = [0u8; 256];
            buf[..q.name_len].copy_from_slice(&q.raw[..q.name_len]);
            buf[..q.name_len].make_ascii_lowercase();
            buf
        };
        let mut name: &[u8] = &qname_lower[..q.name_len];
        let mut owner = Owner::Question;
        // The nodes a CNAME chain has passed: a loop ends where it meets one
        // again, so no RRset is repeated (RFC 2181 §5.5, RFC 1034 §3.6.2).
        let mut passed = [std::ptr::null::<Node>(); MAX_CNAME_HOPS];
        for hop in 0..MAX_CNAME_HOPS {
            let node = match zone.lookup(name) {
                NameMatch::Exact(n) | NameMatch::Wildcard(n) => n,
                NameMatch::NxDomain => return self.negative(r, zone, name, rcode::NXDOMAIN, q),
            };
            if passed[..hop].contains(&std::ptr::from_ref(node)) {
                return rcode::NOERROR;
            }
            passed[hop] = node;
            // A CNAME to a scheduled name, asked with ECS: only the CNAME, so
            // a cache keeps it unscoped and asks for the tailored name itself
            // (RFC 7871 §7.2.1).
            if hop > 0 && node.scheduled.is_some() && self.ecs.is_some() {
                return rcode::NOERROR;
            }
            if let Some(sid) = node.scheduled {
                let family = match q.qtype {
                    rtype::A | rtype::ANY => Family::V4,
                    rtype::AAAA => Family::V6,
                    _ => return self.negative(r, zone, name, rcode::NOERROR, q),
                };
                let sched = self.snap.zones.sched(sid);
                let client = self.client();
                let d = match self.cache.as_deref_mut() {
                    Some(c) => scheduler::decide_cached(self.snap, self.quality, &client, sched, family, self.cands, c),
                    None => scheduler::decide(self.snap, self.quality, &client, sched, family, self.cands),
                };
                if d.pops().is_empty() {
                    // No POP of the family: NODATA for every client, scope 0.
                    return self.negative(r, zone, name, rcode::NOERROR, q);
                }
                self.scope = Some(client.scope);
                self.write_pops(r, owner, &d, family, sched.ttl, &client);
                return rcode::NOERROR;
            }
            // A CNAME or ANY query at an alias gets just the CNAME (RFC 1034 §3.6.2).
            if let Some(cname) = node.rrset(rtype::CNAME).filter(|_| q.qtype != rtype::CNAME && q.qtype != rtype::ANY) {
                r.rrset(owner, cname);
                // Followed while the target is in our zones (RFC 1034 §4.3.2 step 3a).
                let Some(target) = cname.target.as_deref() else { return rcode::NOERROR };
                match self.snap.zones.find(target) {
                    Some(z) => {
                        zone = z;
                        name = target;
                        owner = Owner::Name(target);
                        continue;
                    }
                    None => return rcode::NOERROR,
                }
            }
            let rr = if q.qtype == rtype::ANY { node.rrsets.first() } else { node.rrset(q.qtype) };
            return match rr {
                Some(rr) => {
                    r.rrset(owner, rr);
                    r.glue(&rr.glue);
                    rcode::NOERROR
                }
                None => self.negative(r, zone, name, rcode::NOERROR, q),
            };
        }
        // A CNAME chain longer than we follow: answer what we have.
        rcode::NOERROR
    }

    /// NXDOMAIN or NODATA: the SOA in the authority section.
    fn negative(&self, r: &mut Response<'_, '_>, zone: &Zone, name: &[u8], code: u16, q: Question<'_>) -> u16 {
        let is_qname = name.len() == q.name_len && name.eq_ignore_ascii_case(&q.raw[..q.name_len]);
        let owner =
            if is_qname { Owner::QuestionSuffix(q.name_len - zone.apex.len()) } else { Owner::Name(&zone.apex) };
        r.owner(owner);
        r.out.put(&zone.negative_soa);
        r.ns += 1;
        code
    }

    /// The client: the ECS address when the query carries a non-zero source
    /// prefix (capped at `ecs.max_source_*`), else the resolver's address.
    fn client(&mut self) -> Client {
        match self.ecs {
            Some(e) if e.source > 0 => Client::from_ecs_via(self.snap, e.addr(), e.source, self.geo),
            _ => Client::from_resolver_via(self.snap, self.peer, self.geo),
        }
    }

    fn write_pops(
        &self,
        r: &mut Response<'_, '_>,
        owner: Owner<'_>,
        d: &Decision,
        family: Family,
        ttl: u32,
        client: &Client,
    ) {
        // Among a POP's addresses, the same stable hash at the answer's scope.
        let pick = scheduler::address_index(client);
        for id in d.pops() {
            let Some(addr) = self.snap.pops.get(*id).address(family, pick) else { continue };
            r.owner(owner);
            match addr {
                IpAddr::V4(a) => {
                    r.out.u16(rtype::A);
                    r.out.u16(CLASS_IN);
                    r.out.u32(ttl);
                    r.out.u16(4);
                    r.out.put(&a.octets());
                }
                IpAddr::V6(a) => {
                    r.out.u16(rtype::AAAA);
                    r.out.u16(CLASS_IN);
                    r.out.u32(ttl);
                    r.out.u16(16);
                    r.out.put(&a.octets());
                }
            }
            r.an += 1;
        }
    }
}
