//! `--key value` arguments; `--flag` alone is "true"; after `--` the rest is passed through.
use std::collections::HashMap;
use std::str::FromStr;

pub struct Args {
    kv: HashMap<String, Vec<String>>,
    pub rest: Vec<String>,
}

impl Args {
    pub fn parse(v: &[String]) -> Args {
        let mut kv: HashMap<String, Vec<String>> = HashMap::new();
        let mut rest = Vec::new();
        let mut i = 0;
        while i < v.len() {
            if v[i] == "--" {
                rest.extend_from_slice(&v[i + 1..]);
                break;
            }
            if let Some(k) = v[i].strip_prefix("--") {
                let val = if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                    i += 1;
                    v[i].clone()
                } else {
                    "true".to_string()
                };
                kv.entry(k.to_string()).or_default().push(val);
            } else {
                rest.push(v[i].clone());
            }
            i += 1;
        }
        Args { kv, rest }
    }
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.kv.get(k).and_then(|v| v.last()).map(|s| s.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.kv.get(k).cloned().unwrap_or_default()
    }
    pub fn req(&self, k: &str) -> Result<&str, String> {
        self.opt(k).ok_or_else(|| format!("--{k} is required"))
    }
    pub fn get<T: FromStr>(&self, k: &str, default: T) -> Result<T, String> {
        match self.opt(k) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| format!("--{k}: cannot parse {s:?}")),
        }
    }
    pub fn flag(&self, k: &str) -> bool {
        self.opt(k).is_some_and(|v| v != "false")
    }
}

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
    pub fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

pub fn write_file(path: &str, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("{path}: {e}"))
}

pub fn read_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}
