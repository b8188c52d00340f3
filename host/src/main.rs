//! The `molt` binary: parse the command line, set up logging, run, map errors to exit codes.

use std::io::IsTerminal;

use clap::Parser;
use molt::cli::Cli;
use molt::output::Output;
use tracing_subscriber::EnvFilter;

fn main() {
    molt::failpoint::init_from_env();
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("molt={default_level},warn")));
    // Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .init();

    let out = Output::new(cli.command.json());
    let code = match cli.command.run(&out) {
        Ok(()) => 0,
        Err(err) => {
            let code = err.exit_class().code();
            let os_error = err.os_error().map(|o| o.name());
            out.failure(&err.report(), code, os_error.as_deref());
            code
        }
    };
    std::process::exit(code);
}
