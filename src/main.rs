//! The `popdns` binary: parse the command line, run a subcommand, map the
//! outcome to the contract's exit codes (0 ok, 1 invalid input, 2 runtime failure).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    fixed_mmap_threshold();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // Config errors read `file:line: message`, as the contract prints them.
            eprintln!("{:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// Allocations from 1 MiB up are mapped and unmapped on their own. glibc's
/// moving threshold (each large free raises it, up to 32 MiB) let the cell
/// build's freed vectors stay in a thread arena's top chunk, which
/// `malloc_trim` does not return: the server kept 6-30 MiB it no longer
/// used after loading the real databases (95 MiB resident, or 101-125).
/// The query path allocates nothing, so it is not affected.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
