//! Logging setup shared by the binaries: lines on stderr, level from `RUST_LOG`.

use std::io::IsTerminal;

/// Sends `tracing` output to stderr (stdout carries the `listening on` lines), at the level
/// `RUST_LOG` names or `info`, with colours only when stderr is a terminal.
pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}
