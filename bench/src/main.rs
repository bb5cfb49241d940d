//! `stratum-bench`: everything is in the library; see `stratum-bench --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(e) = stratum_host::cpu::check("stratum-bench") {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let code = stratum_bench::cli::run(std::env::args_os(), &mut std::io::stdout(), &mut std::io::stderr());
    ExitCode::from(code)
}
