//! `run`: live evaluation (being written).

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub async fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`run` is not built yet")
}
