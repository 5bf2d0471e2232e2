//! `popdns feed`: send one authenticated route-quality report; and the client
//! side of `explain --server`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};

use super::{Failure, invalid, runtime};

#[derive(clap::Args)]
pub struct FeedArgs {
    /// Server feed address (repeatable).
    #[arg(long = "to", required = true)]
    to: Vec<SocketAddr>,
    #[arg(long)]
    reporter: String,
    /// File holding the reporter's secret in hex on one line.
    #[arg(long)]
    key: PathBuf,
    /// The report body (JSON); stdin when absent.
    report: Option<PathBuf>,
}

pub fn run(a: FeedArgs) -> Result<(), Failure> {
    // What the server would drop every time is refused here, with a reason.
    if !popdns::quality::feed::valid_reporter_id(&a.reporter) {
        return Err(invalid(anyhow!("reporter id `{}` must match [A-Za-z0-9._-]+", a.reporter)));
    }
    let hex =
        std::fs::read_to_string(&a.key).with_context(|| format!("reading {}", a.key.display())).map_err(invalid)?;
    let key = popdns::quality::feed::decode_hex(hex.trim())
        .ok_or_else(|| anyhow!("{}: the key is not hex", a.key.display()))
        .map_err(invalid)?;
    if key.len() < popdns::quality::feed::MIN_KEY_BYTES {
        let min = popdns::quality::feed::MIN_KEY_BYTES;
        return Err(invalid(anyhow!("{}: the key is shorter than {min} bytes", a.key.display())));
    }
    let body = match &a.report {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
        None => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).context("reading stdin").map(|_| v)
        }
    }
    .map_err(invalid)?;
    let mut report: serde_json::Value =
        serde_json::from_slice(&body).context("the report is not JSON").map_err(invalid)?;
    let obj = report.as_object_mut().ok_or_else(|| anyhow!("the report is not a JSON object")).map_err(invalid)?;
    if !obj.contains_key("ts") {
        obj.insert("ts".into(), popdns::quality::feed::now_ms().into());
    }
    let body = serde_json::to_vec(&report).map_err(runtime)?;
    let datagram = popdns::quality::feed::encode(&a.reporter, &key, &body);
    if datagram.len() > 8192 {
        eprintln!(
            "warning: the datagram is {} bytes; a server with the default feed.max_datagram (8192) drops it",
            datagram.len()
        );
    }
    for to in &a.to {
        let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(runtime)?;
        let sock = UdpSocket::bind(bind).map_err(runtime)?;
        sock.send_to(&datagram, to).with_context(|| format!("sending to {to}")).map_err(runtime)?;
    }
    Ok(())
}

/// `GET /api/v1/explain` on a running server (plain HTTP/1.1, no dependencies).
pub fn explain_remote(
    url: &str,
    name: &str,
    client: IpAddr,
    ecs: Option<&str>,
    qtype: &str,
) -> anyhow::Result<serde_json::Value> {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    if url.starts_with("https://") {
        bail!("--server takes an http:// URL");
    }
    let mut q = format!("name={}&client={}&type={}", enc(name), enc(&client.to_string()), enc(qtype));
    if let Some(e) = ecs {
        q.push_str(&format!("&ecs={}", enc(e)));
    }
    let mut s = std::net::TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET /api/v1/explain?{q} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("server answered {status}: {body}");
    }
    Ok(serde_json::from_str(body)?)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
