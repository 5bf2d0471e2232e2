//! Garbage in: 10,000 random and bit-flipped datagrams, then bit-flipped
//! queries with ECS. The server must answer only with well-formed responses,
//! never panic, and keep answering normal queries correctly afterwards.
//!
//! Deterministic: a seeded xorshift generator, no new crates.

mod common;
use common::*;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use hickory_proto::rr::RecordType;

const SENTINEL_ID: u16 = 0xF00D;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Panics in the server's threads (UDP workers, tokio workers), counted by a
/// panic hook: a dead worker would otherwise go unnoticed, since the kernel
/// hands its share of the port to the others.
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_server_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            if name.starts_with("popdns") || name.starts_with("tokio") {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

const NAMES: [&str; 9] = [
    "www.aliyundoc.com.example.com",
    "intl.aliyundoc.com.example.com",
    "x.img.example.com",
    "mail.example.com",
    "example.com",
    "foo.static.example.com",
    "nope.example.com",
    "example.org",
    "www.example.com",
];
const QTYPES: [u16; 7] = [1, 28, 15, 255, 16, 6, 2];

fn ecs_options() -> [Vec<u8>; 4] {
    [
        ecs_option(1, 24, 0, &[115, 236, 1]),
        ecs_option(1, 32, 0, &[8, 8, 8, 8]),
        ecs_option(2, 56, 0, &[0x24, 0x0e, 0, 0, 0, 0, 0x12]),
        ecs_option(1, 0, 0, &[]),
    ]
}

/// Valid queries with an ECS option, for every name and type.
fn ecs_corpus() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        for qtype in QTYPES {
            for e in &ecs_options() {
                v.push(raw_query(i as u16, name, qtype, Some((4096, 0, e))));
            }
        }
    }
    v
}

/// Valid queries to mutate: names in and out of the zone, several types, with
/// and without EDNS and ECS.
fn corpus() -> Vec<Vec<u8>> {
    let mut v = ecs_corpus();
    for (i, name) in NAMES.iter().enumerate() {
        for qtype in QTYPES {
            v.push(raw_query(i as u16, name, qtype, None));
            v.push(raw_query(i as u16, name, qtype, Some((1232, 0, &[]))));
        }
    }
    v
}

fn flip_bits(rng: &mut XorShift, q: &[u8], max_flips: usize, tail: Option<usize>) -> Vec<u8> {
    let mut q = q.to_vec();
    for _ in 0..1 + rng.below(max_flips) {
        let at = match tail {
            // Only in the last `n` bytes (the OPT and its ECS option).
            Some(n) => q.len() - 1 - rng.below(n.min(q.len())),
            None => rng.below(q.len()),
        };
        q[at] ^= 1 << rng.below(8);
    }
    q
}

/// 10,000 datagrams: random bytes, bit flips, truncations, random headers.
fn datagrams(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = XorShift(seed);
    let corpus = corpus();
    let mut out = Vec::with_capacity(10_000);
    while out.len() < 10_000 {
        let base = &corpus[rng.below(corpus.len())];
        let d = match rng.below(10) {
            0..=1 => {
                let n = rng.below(600);
                rng.bytes(n)
            }
            2 => {
                let n = rng.below(24);
                rng.bytes(n)
            }
            3..=6 => flip_bits(&mut rng, base, 8, None),
            7 => base[..rng.below(base.len())].to_vec(),
            8 => {
                let mut d = base.clone();
                let n = 1 + rng.below(40);
                d.extend(rng.bytes(n));
                d
            }
            _ => {
                let mut d = rng.bytes(12);
                d.extend_from_slice(&base[12..]);
                d
            }
        };
        if d.len() >= 2 && u16::from_be_bytes([d[0], d[1]]) == SENTINEL_ID {
            continue;
        }
        out.push(d);
    }
    out
}

/// Walk a reply's sections; false when the bytes do not add up.
fn well_formed(b: &[u8]) -> bool {
    fn name(b: &[u8], mut i: usize) -> Option<usize> {
        for _ in 0..128 {
            let len = *b.get(i)? as usize;
            match len & 0xC0 {
                0xC0 => return b.get(i + 1).map(|_| i + 2),
                0 if len == 0 => return Some(i + 1),
                0 => i += 1 + len,
                _ => return None,
            }
        }
        None
    }
    let go = || -> Option<()> {
        let c = |k: usize| u16::from_be_bytes([b[4 + 2 * k], b[5 + 2 * k]]) as usize;
        let mut i = 12;
        for _ in 0..c(0) {
            i = name(b, i)? + 4;
        }
        for _ in 0..c(1) + c(2) + c(3) {
            i = name(b, i)?;
            let rdlen = u16::from_be_bytes([*b.get(i + 8)?, *b.get(i + 9)?]) as usize;
            i += 10 + rdlen;
        }
        (i == b.len()).then_some(())
    };
    b.len() >= 12 && b[2] & 0x80 != 0 && go().is_some()
}

/// The sentinel after batch `n`: mail.example.com with QTYPE 0xF000 + n (NODATA),
/// ID SENTINEL_ID (which no fuzz datagram carries).
fn sentinel(n: usize) -> Vec<u8> {
    raw_query(SENTINEL_ID, "mail.example.com", 0xF000 + n as u16, None)
}

/// Send the datagrams from one socket, in batches of 100, while a reader
/// thread checks every reply. After each batch a sentinel query: the worker
/// reads one socket's datagrams in order, so its reply means the batch has
/// been read (flow control, so the socket buffers never overflow and no
/// reply goes missing). Returns the number of replies to the datagrams.
fn blast(server: SocketAddr, grams: &[Vec<u8>]) -> usize {
    let ids: HashSet<u16> = grams.iter().filter(|g| g.len() >= 2).map(|g| u16::from_be_bytes([g[0], g[1]])).collect();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let reader = sock.try_clone().unwrap();
    reader.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65535];
        let mut replies = 0usize;
        let mut bad: Vec<String> = Vec::new();
        while stop_rx.try_recv().is_err() {
            let Ok(n) = reader.recv(&mut buf) else { continue };
            let r = &buf[..n];
            if n >= 32 && u16::from_be_bytes([r[0], r[1]]) == SENTINEL_ID {
                let _ = done_tx.send((u16::from_be_bytes([r[30], r[31]]) - 0xF000) as usize);
                continue;
            }
            replies += 1;
            if !well_formed(r) {
                bad.push(format!("malformed reply {r:02x?}"));
            } else if n > 1232 {
                bad.push(format!("UDP reply of {n} bytes, over udp_payload 1232"));
            } else if !ids.contains(&u16::from_be_bytes([r[0], r[1]])) {
                bad.push(format!("reply with an ID nobody sent: {r:02x?}"));
            }
        }
        (replies, bad)
    });
    let mut lost = None;
    'batches: for (n, batch) in grams.chunks(100).enumerate() {
        for g in batch {
            sock.send_to(g, server).unwrap();
        }
        // Resend the sentinel if it (not the batch) got lost; give up after 20 s.
        for _ in 0..20 {
            sock.send_to(&sentinel(n), server).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match done_rx.recv_timeout(left) {
                    Ok(m) if m == n => continue 'batches,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        lost = Some(n);
        break;
    }
    stop_tx.send(()).unwrap();
    let (replies, bad) = handle.join().unwrap();
    assert_eq!(lost, None, "the sentinel after this batch was never answered");
    assert!(bad.is_empty(), "{} bad replies, first: {}", bad.len(), bad[0]);
    replies
}

/// After the fuzz: correct answers from many client sockets (spread over every
/// worker) and over TCP, and no panic in any server thread.
fn still_correct(s: &Srv) {
    for i in 0..20 {
        let ecs = if i % 2 == 0 { "115.236.1.0/24" } else { "8.8.8.0/24" };
        let want = if i % 2 == 0 { "192.0.2.10" } else { "203.0.113.40" };
        assert_eq!(ask(s.udp, "www.aliyundoc.com.example.com.", ecs), [want], "after the fuzz, socket {i}");
    }
    let m = s.tcp.msg(&query_msg("mail.example.com.", RecordType::A, None));
    assert_eq!(addrs(&m), ["192.0.2.25"], "TCP after the fuzz");
    assert_eq!(SERVER_PANICS.load(Ordering::SeqCst), 0, "a server thread panicked (see the output above)");
}

#[test]
fn ten_thousand_random_and_bit_flipped_datagrams() {
    count_server_panics();
    let s = Srv::start();
    let grams = datagrams(0x9E37_79B9_7F4A_7C15);
    assert_eq!(grams.len(), 10_000);
    let replies = blast(s.udp, &grams);
    // Most mutated queries still carry a parsable header: many get answers.
    assert!(replies > 1_000, "only {replies} replies to 10,000 datagrams");
    still_correct(&s);
}

#[test]
fn bit_flipped_queries_with_ecs() {
    count_server_panics();
    let s = Srv::start();
    let corpus = ecs_corpus();
    assert!(corpus.len() > 50, "ECS corpus of {}", corpus.len());
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let mut grams = Vec::new();
    while grams.len() < 3_000 {
        let base = &corpus[rng.below(corpus.len())];
        // Flip bits in the OPT record and its ECS option (the last 11 + 4 + 8 bytes).
        let g = flip_bits(&mut rng, base, 3, Some(23));
        if u16::from_be_bytes([g[0], g[1]]) != SENTINEL_ID {
            grams.push(g);
        }
    }
    let replies = blast(s.udp, &grams);
    // The flips stay behind the header, so every one deserves a reply (an
    // answer or FORMERR): none may be dropped.
    assert_eq!(replies, grams.len(), "flipped ECS queries left unanswered");
    still_correct(&s);
}

#[test]
fn garbage_over_tcp() {
    // Pipelined on one connection; when the server closes it (after a message
    // shorter than a header), a new one. Every message of 12 bytes or more with
    // QR clear deserves a reply (an answer or FORMERR); responses and shorter
    // messages none. A response is skipped and the connection goes on, so
    // the reply read next must carry the next query's ID.
    count_server_panics();
    let s = Srv::start();
    use std::io::{Read, Write};
    let grams = datagrams(0x1234_5678_9ABC_DEF1);
    let mut conn: Option<std::net::TcpStream> = None;
    for g in grams.iter().filter(|g| !g.is_empty()).take(1_000) {
        let t = conn.get_or_insert_with(|| {
            let t = std::net::TcpStream::connect(s.server.tcp).unwrap();
            t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            t
        });
        let mut framed = (g.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(g);
        t.write_all(&framed).unwrap();
        if g.len() >= 12 && g[2] & 0x80 != 0 {
            continue;
        }
        let deserves = g.len() >= 12;
        let mut len = [0u8; 2];
        match t.read_exact(&mut len) {
            Ok(()) => {
                let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
                t.read_exact(&mut body).unwrap();
                assert!(deserves, "TCP reply {body:02x?} to a message that deserves none: {g:02x?}");
                assert!(well_formed(&body), "malformed TCP reply {body:02x?} to {g:02x?}");
                assert_eq!(body[..2], g[..2], "TCP reply with another ID");
            }
            Err(e) => {
                assert!(!deserves, "no TCP reply ({e}) to {g:02x?}");
                conn = None;
            }
        }
    }
    still_correct(&s);
}
