//! `shop <service>`: runs one of the shop's services (see shop/README.md);
//! `shop migrate`: applies the migrations and seeds the accounts.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shop::services::{self, Config, Service};

#[derive(Parser)]
#[command(about = "The instrumented shop's services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service until SIGINT/SIGTERM (listens on SHOP_<SERVICE>_ADDR).
    Serve {
        #[arg(value_enum)]
        service: Service,
    },
    /// Apply the migrations and seed the test accounts, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env();
    match cli.command {
        Command::Serve { service } => {
            let addr = Config::listen_addr(service)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} for {}", service.service_name()))?;
            services::run(service, config, listener, services::shutdown_signal()).await
        }
        Command::Migrate => services::migrate(&config).await,
    }
}
