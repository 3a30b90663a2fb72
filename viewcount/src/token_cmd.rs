//! `viewcount token`: bearer tokens for serving (DESIGN §6).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serving::tokens::{Role, Tokens, new_token};

/// Token subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Add a token to the tokens file and print its secret, once.
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// creator (only its own videos), finance or admin (everything).
    #[arg(long, value_parser = ["creator", "finance", "admin"])]
    role: String,
    /// The creator a creator token is scoped to.
    #[arg(long)]
    creator: Option<String>,
    /// A name people recognise (unique in the file).
    #[arg(long)]
    name: String,
    /// The tokens file (created if missing).
    #[arg(long, env = "VIEWCOUNT_TOKENS", default_value = "tokens.toml")]
    tokens: PathBuf,
}

pub(crate) fn run(c: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create(a) = c;
    let role = match a.role.as_str() {
        "creator" => Role::Creator,
        "finance" => Role::Finance,
        _ => Role::Admin,
    };
    let existing = match std::fs::read_to_string(&a.tokens) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", a.tokens.display())),
    };
    // Refuse to append to a file that is already broken.
    Tokens::parse(&existing).with_context(|| format!("{} is not valid", a.tokens.display()))?;
    let (secret, table) = new_token(&a.name, role, a.creator.as_deref())?;
    let combined = format!("{existing}{table}");
    if let Err(e) = Tokens::parse(&combined) {
        bail!("the token was not added: {e}");
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&a.tokens)
        .with_context(|| format!("opening {}", a.tokens.display()))?;
    f.write_all(table.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", a.tokens.display()))?;
    println!("{secret}");
    eprintln!(
        "token {:?} ({}) added to {}; the secret above is shown only now: send it as `Authorization: Bearer <secret>`",
        a.name,
        a.role,
        a.tokens.display()
    );
    Ok(())
}
