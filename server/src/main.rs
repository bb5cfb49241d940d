//! `stratumd`: command line, logging, configuration; everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stratumd::config::{Config, EMBEDDED_NAME};
use tracing_subscriber::EnvFilter;

/// A fast, accurate NTP server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it, the embedded default serves loopback on port 11123.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check a configuration file and exit: 0 if valid (warnings, if any, on stderr), 1 with one
    /// line naming file, line and key.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", stratumd::config::EMBEDDED_DEFAULT);
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &args.check_config {
        return match Config::from_file(path) {
            Ok(config) => {
                // Warnings do not fail the check: the configuration is valid, perhaps not meant.
                for warning in &config.warnings {
                    eprintln!("{warning}");
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = stratum_host::cpu::check("stratumd") {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let (config, name) = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => (c, path.display().to_string()),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => (Config::embedded_default(), EMBEDDED_NAME.to_string()),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.log.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    exit_on_panic();
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }

    match stratumd::run(&config, &name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status after a panic in any thread (EX_SOFTWARE).
const PANIC_EXIT: i32 = 70;

/// A panic in any thread (a worker, the sync thread, an endpoint) ends the process at once with
/// one log line, instead of leaving a server that looks up while a queue or the clock is dead:
/// a service manager then restarts it (stratumd.service: Restart=on-failure), and nothing stays
/// attached (the XDP program hangs on a BPF link the kernel drops with the process).
fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        // One line: the message's own line breaks would split it in the journal.
        let message = message.replace('\n', " ");
        tracing::error!("thread {name} panicked{at}: {message}; exiting with status {PANIC_EXIT} to be restarted");
        std::process::exit(PANIC_EXIT);
    }));
}
