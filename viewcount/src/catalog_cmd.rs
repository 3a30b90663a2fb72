//! `viewcount catalog`: the video → creator catalog (DESIGN §6).

use std::path::PathBuf;

use anyhow::Context;

use crate::batch_cmd::StoreFlag;

/// Catalog subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CatalogCommand {
    /// Check a catalog CSV (`video_id,creator_id,title`) and put it in force.
    /// A bad line is an error naming the line and the rule; nothing is
    /// imported then.
    Import(ImportArgs),
    /// Show the catalog in force.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The catalog file.
    file: PathBuf,
    #[command(flatten)]
    store: StoreFlag,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    store: StoreFlag,
}

pub(crate) async fn run(c: CatalogCommand) -> anyhow::Result<()> {
    match c {
        CatalogCommand::Import(a) => {
            let bytes = std::fs::read(&a.file)
                .with_context(|| format!("reading the catalog {}", a.file.display()))?;
            let store = store::open(&a.store.url())?;
            let (_, cur) = store::catalog::import(store.as_ref(), bytes.into())
                .await
                .with_context(|| format!("{} was not imported", a.file.display()))?;
            println!(
                "catalog {}: {} videos of {} creators, now in force ({})",
                cur.sha256, cur.videos, cur.creators, cur.path
            );
        }
        CatalogCommand::Show(a) => {
            let store = store::open(&a.store.url())?;
            match store::catalog::current(store.as_ref()).await? {
                Some(c) => println!(
                    "catalog {}: {} videos of {} creators",
                    c.sha256,
                    c.len(),
                    c.creators()
                ),
                None => println!(
                    "no catalog imported: every view is unattributed until `viewcount catalog import FILE`"
                ),
            }
        }
    }
    Ok(())
}
