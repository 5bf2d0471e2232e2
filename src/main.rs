//! The `popdns` binary: parse the command line, run a subcommand, map the
//! outcome to the contract's exit codes (0 ok, 1 invalid input, 2 runtime failure).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // Config errors read `file:line: message`, as the contract prints them.
            eprintln!("{:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
