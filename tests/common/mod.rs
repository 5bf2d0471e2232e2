//! Shared helpers for the integration tests: start the real server on
//! loopback ephemeral ports and talk to it as clients do.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True under CI (`CI=true`): nothing may be skipped there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip loudly outside CI; fail under CI.
pub fn skip_or_fail(what: &str) {
    if in_ci() {
        panic!("CI=true and {what}: nothing skips under CI");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {what} !!!!!!!!\n");
}

/// The real databases in ../shared/geo, or None (after a loud skip).
pub fn real_geo() -> Option<(PathBuf, PathBuf)> {
    let dir = repo().join("../shared/geo");
    let (city, asn) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    if city.exists() && asn.exists() {
        Some((city.canonicalize().ok()?, asn.canonicalize().ok()?))
    } else {
        skip_or_fail(&format!("the real databases are not in {}", dir.display()));
        None
    }
}

/// The shipped pops.yaml with the IPv6 addresses of the POPs whose line
/// `strip` picks taken out, written into `dir`; its path.
pub fn pops_without_ipv6(dir: &Path, strip: impl Fn(&str) -> bool) -> PathBuf {
    let pops: String = std::fs::read_to_string(repo().join("pops.yaml"))
        .unwrap()
        .lines()
        .map(|l| match (strip(l), l.find(", ipv6: ["), l.find("], capacity")) {
            (true, Some(a), Some(b)) => format!("{}{}\n", &l[..a], &l[b + 1..]),
            _ => format!("{l}\n"),
        })
        .collect();
    let path = dir.join("pops.yaml");
    std::fs::write(&path, pops).unwrap();
    path
}

pub const TEST_REPORTERS: [(&str, &str); 3] = [
    ("probe-a", "000102030405060708090a0b0c0d0e0f"),
    ("probe-b", "101112131415161718191a1b1c1d1e1f"),
    ("probe-c", "202122232425262728292a2b2c2d2e2f"),
];

/// Options for a test config; defaults mirror the shipped popdns.yaml.
#[derive(Clone)]
pub struct Setup {
    pub city: PathBuf,
    pub asn: PathBuf,
    pub pops: PathBuf,
    pub zones: PathBuf,
    /// Extra YAML appended under `feed:` (e.g. "  stale_after: 1s\n").
    pub feed_extra: String,
    /// Extra top-level YAML (e.g. a `scoring:` section).
    pub extra: String,
    pub workers: usize,
    /// Extra reporters `probe-0..N` with keys from `reporter_key(i)`.
    pub extra_reporters: usize,
}

/// The secret of extra reporter `probe-<i>` (hex).
pub fn reporter_key(i: usize) -> String {
    format!("{:032x}", 0x5eed_0000_0000_0000_0000_0000_0000_0000u128 + i as u128)
}

impl Default for Setup {
    fn default() -> Self {
        let r = repo();
        Setup {
            city: r.join("geo/demo-city.mmdb"),
            asn: r.join("geo/demo-asn.mmdb"),
            pops: r.join("pops.yaml"),
            zones: r.join("zones"),
            feed_extra: String::new(),
            extra: String::new(),
            workers: 2,
            extra_reporters: 0,
        }
    }
}

impl Setup {
    /// Write popdns.yaml and feed-keys.yaml into `dir`; returns the config path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let mut keys: String = TEST_REPORTERS.iter().map(|(id, k)| format!("{id}: \"{k}\"\n")).collect();
        for i in 0..self.extra_reporters {
            keys.push_str(&format!("probe-{i}: \"{}\"\n", reporter_key(i)));
        }
        std::fs::write(dir.join("feed-keys.yaml"), keys).unwrap();
        let yaml = format!(
            r#"listen:
  dns: ["127.0.0.1:0"]
  feed: "127.0.0.1:0"
  http: "127.0.0.1:0"
geo:
  location: {city}
  asn: {asn}
isps:
  chinatelecom: [4134, 4809, 4812, 23764]
  chinaunicom: [4837, 9929, 4808, 17621, 17622, 17623]
  chinamobile: [9808, 24400, 56040, 56041, 56042, 56043, 56044, 56045, 56046, 56047, 56048]
pops: {pops}
zones: {zones}
feed:
  keys: feed-keys.yaml
{feed_extra}server:
  workers: {workers}
{extra}"#,
            city = self.city.display(),
            asn = self.asn.display(),
            pops = self.pops.display(),
            zones = self.zones.display(),
            feed_extra = self.feed_extra,
            workers = self.workers,
            extra = self.extra,
        );
        let path = dir.join("popdns.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// The real server, in process, on 127.0.0.1 ephemeral ports.
pub struct TestServer {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub feed: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub config: PathBuf,
    pub handle: Option<popdns::server::ServerHandle>,
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(&Setup::default())
    }

    pub fn start_with(setup: &Setup) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = setup.write(dir.path());
        let snap = popdns::config::load(&config).unwrap_or_else(|e| panic!("test config: {e}"));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let handle = rt.block_on(popdns::server::start(snap)).unwrap();
        TestServer {
            udp: handle.dns_udp[0],
            tcp: handle.dns_tcp[0],
            feed: handle.feed,
            http: handle.http,
            config,
            handle: Some(handle),
            rt,
            dir,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// A query message: RD clear, EDNS (1232) with an ECS option when `ecs` is given.
pub fn query_msg(name: &str, rtype: RecordType, ecs: Option<&str>) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(e) = ecs {
        edns.options_mut().insert(EdnsOption::Subnet(ClientSubnet::from_str(e).unwrap()));
    }
    m.set_edns(edns);
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0x1234);
    N.fetch_add(0x3b1, Ordering::Relaxed)
}

/// Send raw bytes over UDP; the raw reply, or None after a 2 s timeout.
pub fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(bytes, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Send raw bytes over TCP (length-framed); the raw reply.
pub fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    buf
}

pub fn udp(server: SocketAddr, m: &Message) -> Message {
    let raw = udp_raw(server, &m.to_vec().unwrap()).expect("no UDP answer");
    let r = Message::from_vec(&raw).unwrap();
    assert_eq!(r.metadata.id, m.metadata.id);
    r
}

pub fn tcp(server: SocketAddr, m: &Message) -> Message {
    let r = Message::from_vec(&tcp_raw(server, &m.to_vec().unwrap())).unwrap();
    assert_eq!(r.metadata.id, m.metadata.id);
    r
}

/// Addresses in the answer section (A and AAAA), in order.
pub fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The ECS option of a reply: (source prefix, scope prefix).
pub fn ecs_of(m: &Message) -> Option<(u8, u8)> {
    m.edns.as_ref()?.options().as_ref().iter().find_map(|(_, o)| match o {
        EdnsOption::Subnet(cs) => Some((cs.source_prefix(), cs.scope_prefix())),
        _ => None,
    })
}

/// Ask the scheduled name over UDP with an ECS subnet; the answer's addresses.
pub fn ask(server: SocketAddr, name: &str, ecs: &str) -> Vec<String> {
    addrs(&udp(server, &query_msg(name, RecordType::A, Some(ecs))))
}

/// Run `dig` with these arguments; None (after a loud skip, or a failure
/// under CI) when dig is not installed.
pub fn dig(args: &[&str]) -> Option<String> {
    match std::process::Command::new("dig").args(args).output() {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(_) => {
            skip_or_fail("dig is not installed (apt-get install dnsutils)");
            None
        }
    }
}

/// Build a raw query by hand, for the cases no client library will send.
/// `opt`: Some((udp size, version, options bytes)).
pub fn raw_query(id: u16, name: &str, qtype: u16, opt: Option<(u16, u8, &[u8])>) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    if let Some((size, version, options)) = opt {
        v.push(0);
        v.extend_from_slice(&41u16.to_be_bytes());
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(&[0, version, 0, 0]);
        v.extend_from_slice(&(options.len() as u16).to_be_bytes());
        v.extend_from_slice(options);
    }
    v
}

/// An ECS option (code 8) with these raw fields.
pub fn ecs_option(family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
    let mut v = 8u16.to_be_bytes().to_vec();
    v.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
    v.extend_from_slice(&family.to_be_bytes());
    v.extend_from_slice(&[source, scope]);
    v.extend_from_slice(addr);
    v
}

/// One TCP connection reused by every TCP query of a test (RFC 7766
/// pipelining). A connection per query would leave a client port in TIME_WAIT
/// each time, and a later TestServer whose UDP port 0 lands on such a number
/// cannot bind its TCP listener there (EADDRINUSE).
pub struct TcpConn(std::cell::RefCell<std::net::TcpStream>);

impl TcpConn {
    pub fn connect(addr: std::net::SocketAddr) -> TcpConn {
        let t = std::net::TcpStream::connect(addr).unwrap();
        t.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        TcpConn(std::cell::RefCell::new(t))
    }
    pub fn raw(&self, query: &[u8]) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut t = self.0.borrow_mut();
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        t.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        t.read_exact(&mut len).expect("no TCP answer (connection closed?)");
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        t.read_exact(&mut buf).unwrap();
        buf
    }
    pub fn msg(&self, m: &hickory_proto::op::Message) -> hickory_proto::op::Message {
        let r = hickory_proto::op::Message::from_vec(&self.raw(&m.to_vec().unwrap())).unwrap();
        assert_eq!(r.metadata.id, m.metadata.id);
        r
    }
}

/// A server with its TCP connection. `server` is dropped first: the server
/// closes the connection, so the TIME_WAIT stays on its side.
pub struct Srv {
    pub server: TestServer,
    pub udp: std::net::SocketAddr,
    pub tcp: TcpConn,
}

impl Srv {
    pub fn start() -> Srv {
        Srv::start_with(&Setup::default())
    }
    pub fn start_with(setup: &Setup) -> Srv {
        let server = TestServer::start_with(setup);
        let (udp, tcp) = (server.udp, TcpConn::connect(server.tcp));
        Srv { server, udp, tcp }
    }
}

/// Header and OPT of a raw reply, read by hand (no DNS library in between).
#[derive(Debug)]
pub struct Raw {
    pub id: u16,
    pub flags: u16,
    pub counts: [u16; 4],
    pub opt: Option<RawOpt>,
}

#[derive(Debug)]
pub struct RawOpt {
    pub udp_size: u16,
    pub ext_rcode: u8,
    pub version: u8,
    pub flags: u16,
    pub options: Vec<(u16, Vec<u8>)>,
}

impl Raw {
    /// The ECS option's data (FAMILY, SOURCE, SCOPE, ADDRESS), if any.
    pub fn ecs(&self) -> Option<&[u8]> {
        self.opt.as_ref()?.options.iter().find(|(c, _)| *c == 8).map(|(_, d)| d.as_slice())
    }
    pub fn ecs_count(&self) -> usize {
        self.opt.as_ref().map_or(0, |o| o.options.iter().filter(|(c, _)| *c == 8).count())
    }
    pub fn qr(&self) -> bool {
        self.flags & 0x8000 != 0
    }
    pub fn opcode(&self) -> u16 {
        (self.flags >> 11) & 0xF
    }
    pub fn aa(&self) -> bool {
        self.flags & 0x0400 != 0
    }
    pub fn tc(&self) -> bool {
        self.flags & 0x0200 != 0
    }
    pub fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }
    pub fn ra(&self) -> bool {
        self.flags & 0x0080 != 0
    }
    /// The full 12-bit RCODE: header low 4 bits plus the OPT's extended RCODE.
    pub fn rcode(&self) -> u16 {
        (u16::from(self.opt.as_ref().map_or(0, |o| o.ext_rcode)) << 4) | (self.flags & 0xF)
    }
}

pub fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

pub fn skip_name(b: &[u8], mut i: usize) -> usize {
    loop {
        let len = b[i] as usize;
        if len & 0xC0 == 0xC0 {
            return i + 2;
        }
        i += 1 + len;
        if len == 0 {
            return i;
        }
    }
}

pub fn parse_raw(b: &[u8]) -> Raw {
    assert!(b.len() >= 12, "reply shorter than a header: {b:?}");
    let counts = [be16(b, 4), be16(b, 6), be16(b, 8), be16(b, 10)];
    let mut i = 12;
    for _ in 0..counts[0] {
        i = skip_name(b, i) + 4;
    }
    let mut opt = None;
    for section in 0..3 {
        for _ in 0..counts[section + 1] {
            i = skip_name(b, i);
            let (t, class) = (be16(b, i), be16(b, i + 2));
            let ttl = &b[i + 4..i + 8];
            let rdlen = be16(b, i + 8) as usize;
            let rdata = &b[i + 10..i + 10 + rdlen];
            if t == 41 {
                assert_eq!(section, 2, "OPT outside the additional section");
                assert!(opt.is_none(), "two OPT records");
                let mut options = Vec::new();
                let mut j = 0;
                while j < rdata.len() {
                    let (code, len) = (be16(rdata, j), be16(rdata, j + 2) as usize);
                    options.push((code, rdata[j + 4..j + 4 + len].to_vec()));
                    j += 4 + len;
                }
                opt = Some(RawOpt {
                    udp_size: class,
                    ext_rcode: ttl[0],
                    version: ttl[1],
                    flags: u16::from_be_bytes([ttl[2], ttl[3]]),
                    options,
                });
            }
            i += 10 + rdlen;
        }
    }
    assert_eq!(i, b.len(), "trailing bytes after the last record");
    Raw { id: be16(b, 0), flags: be16(b, 2), counts, opt }
}
