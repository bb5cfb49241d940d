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
