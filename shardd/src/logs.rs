//! Logging setup shared by the binaries: human-readable lines on stderr, level from `RUST_LOG`.

/// Sends `tracing` output to stderr (stdout carries the `listening on` lines), at the level
/// `RUST_LOG` names or `info`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}
