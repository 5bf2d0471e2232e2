//! The heap after one config load, as glibc counts it: how much is in use
//! (small blocks and mapped large ones) and how much is free. Tells live
//! data from fragmentation when the resident size of a big zone looks high.
//! Run:
//!   cargo run --release --example heap -- [popdns.yaml]
//! Not a test: figures go in the README.

fn main() {
    // As the server does (main.rs): large blocks mapped from 1 MiB.
    // SAFETY: only tunes the allocator, before any other thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    let config = std::env::args().nth(1).unwrap_or_else(|| "popdns.yaml".into());
    let snap = popdns::config::load(std::path::Path::new(&config)).expect("config");
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "{} scheduled names: heap in use {:.1} MiB (small blocks) + {:.1} MiB (mapped blocks), free in the heap {:.1} MiB",
        snap.zones.scheduled.len(),
        mib(m.uordblks),
        mib(m.hblkhd),
        mib(m.fordblks)
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for l in status.lines().filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM")) {
        println!("{l}");
    }
}
