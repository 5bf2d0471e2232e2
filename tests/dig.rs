//! The real `dig` against the real server: what an operator sees (contract.md,
//! "Defaults that ship": `dig @127.0.0.1 -p 5300 www.aliyundoc.com.example.com
//! +subnet=115.236.1.0/24` answers).

mod common;
use common::*;

/// dig's output with runs of whitespace collapsed, line by line.
fn run(s: &TestServer, args: &[&str]) -> Option<Vec<String>> {
    let server = format!("@{}", s.udp.ip());
    let port = s.udp.port().to_string();
    let mut all = vec![server.as_str(), "-p", port.as_str(), "+time=3", "+tries=2"];
    all.extend_from_slice(args);
    let out = dig(&all)?;
    Some(out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect())
}

fn has(out: &[String], want: &str) -> bool {
    out.iter().any(|l| l == want)
}

fn flags(out: &[String]) -> Vec<String> {
    let line = out.iter().find(|l| l.starts_with(";; flags:")).expect("no flags line");
    let f = line.trim_start_matches(";; flags:").split(';').next().unwrap();
    f.split_whitespace().map(String::from).collect()
}

fn status(out: &[String]) -> String {
    let line = out.iter().find(|l| l.contains("status:")).expect("no status line");
    line.split("status: ").nth(1).unwrap().split(',').next().unwrap().to_string()
}

#[test]
fn dig_sees_the_scheduled_answer_with_its_client_subnet() {
    let s = TestServer::start();
    let Some(out) = run(&s, &["www.aliyundoc.com.example.com", "A", "+subnet=115.236.1.0/24"]) else { return };
    let text = out.join("\n");
    assert_eq!(status(&out), "NOERROR", "{text}");
    assert_eq!(flags(&out), ["qr", "aa", "rd"], "{text}");
    assert!(has(&out, "www.aliyundoc.com.example.com. 60 IN A 192.0.2.10"), "{text}");
    assert!(has(&out, "; CLIENT-SUBNET: 115.236.1.0/24/16"), "{text}");
    assert!(out.iter().any(|l| l.starts_with("; EDNS: version: 0") && l.ends_with("udp: 1232")), "{text}");

    // Over TCP, without RD.
    let Some(out) = run(&s, &["www.aliyundoc.com.example.com", "A", "+subnet=8.8.8.0/24", "+tcp", "+norec"]) else {
        return;
    };
    let text = out.join("\n");
    assert_eq!(status(&out), "NOERROR", "{text}");
    assert_eq!(flags(&out), ["qr", "aa"], "{text}");
    assert!(has(&out, "www.aliyundoc.com.example.com. 60 IN A 203.0.113.40"), "{text}");
    assert!(has(&out, "; CLIENT-SUBNET: 8.8.8.0/24/24"), "{text}");
    assert!(out.iter().any(|l| l.starts_with(";; SERVER:") && l.contains("(TCP)")), "{text}");

    // IPv6 client subnet, AAAA.
    let Some(out) = run(&s, &["www.aliyundoc.com.example.com", "AAAA", "+subnet=2600:1f00::/56", "+norec"]) else {
        return;
    };
    let text = out.join("\n");
    assert!(has(&out, "www.aliyundoc.com.example.com. 60 IN AAAA 2001:db8:230::1"), "{text}");
    assert!(has(&out, "; CLIENT-SUBNET: 2600:1f00::/56/24"), "{text}");

    // The CNAME at www.example.com leads to the scheduled name: asked with
    // ECS, the answer is the CNAME alone, unscoped (RFC 7871 §7.2.1); asked
    // without, the chain is followed.
    let Some(out) = run(&s, &["www.example.com", "AAAA", "+subnet=2600:1f00::/56", "+norec"]) else { return };
    let text = out.join("\n");
    assert!(has(&out, "www.example.com. 3600 IN CNAME www.aliyundoc.com.example.com."), "{text}");
    assert!(!out.iter().any(|l| l.contains(" IN AAAA ")), "{text}");
    assert!(has(&out, "; CLIENT-SUBNET: 2600:1f00::/56/0"), "{text}");
    let Some(out) = run(&s, &["www.example.com", "AAAA", "+norec"]) else { return };
    let text = out.join("\n");
    assert!(has(&out, "www.example.com. 3600 IN CNAME www.aliyundoc.com.example.com."), "{text}");
    assert!(out.iter().any(|l| l.starts_with("www.aliyundoc.com.example.com. 60 IN AAAA ")), "{text}");

    // Source prefix 0: the resolver's address is used, scope 0.
    let Some(out) = run(&s, &["www.aliyundoc.com.example.com", "+subnet=0.0.0.0/0"]) else { return };
    assert!(has(&out, "; CLIENT-SUBNET: 0.0.0.0/0/0"), "{}", out.join("\n"));
}

#[test]
fn dig_sees_negative_answers_and_refusals() {
    let s = TestServer::start();
    let Some(out) = run(&s, &["nope.example.com", "A", "+norec"]) else { return };
    let text = out.join("\n");
    assert_eq!(status(&out), "NXDOMAIN", "{text}");
    assert_eq!(flags(&out), ["qr", "aa"], "{text}");
    assert!(
        has(&out, "example.com. 60 IN SOA ns1.example.com. hostmaster.example.com. 2026113001 3600 600 1209600 60"),
        "{text}"
    );

    let Some(out) = run(&s, &["_udp.example.com", "SRV", "+norec"]) else { return };
    let text = out.join("\n");
    assert_eq!(status(&out), "NOERROR", "empty non-terminal: {text}");
    assert!(out.iter().any(|l| l.contains("ANSWER: 0, AUTHORITY: 1")), "{text}");

    let Some(out) = run(&s, &["example.org", "A"]) else { return };
    let text = out.join("\n");
    assert_eq!(status(&out), "REFUSED", "{text}");
    assert!(!flags(&out).contains(&"aa".to_string()), "{text}");

    let Some(out) = run(&s, &["example.com", "AXFR"]) else { return };
    let text = out.join("\n");
    assert!(text.contains("Transfer failed") || text.contains("REFUSED"), "{text}");
    assert!(!text.contains("IN SOA"), "AXFR sent records: {text}");

    // No EDNS: no OPT in the reply; the apex NS with glue.
    let Some(out) = run(&s, &["example.com", "NS", "+noedns", "+norec"]) else { return };
    let text = out.join("\n");
    assert!(!text.contains("OPT PSEUDOSECTION"), "{text}");
    assert!(has(&out, "ns1.example.com. 3600 IN A 192.0.2.53"), "{text}");
    assert!(has(&out, "ns2.example.com. 3600 IN AAAA 2001:db8:1::53"), "{text}");
}
