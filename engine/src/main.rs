use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc, not the system allocator: decoding and evaluation make and free
/// many small buffers, and glibc's malloc took a fifth of a replay's time
/// (BENCHMARKS.md). Built without its transparent huge pages (`no_thp` in
/// Cargo.toml): a fifth less peak memory and less time zeroing pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = engine::cli::Cli::parse();
    // the engine's own spans and metrics, when OTEL_EXPORTER_OTLP_*ENDPOINT asks
    let telemetry = match engine::telemetry::init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match engine::cli::main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    if let Some(t) = telemetry {
        t.shutdown();
    }
    code
}
