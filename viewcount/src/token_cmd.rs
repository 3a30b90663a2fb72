//! `viewcount token`: bearer tokens for serving, and the signed playback
//! tokens ingest verifies (DESIGN §6).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serving::tokens::{Role, Tokens, new_token};

/// Token subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Add a token to the tokens file and print its secret, once.
    Create(CreateArgs),
    /// Make a playback signing key for the player service (FILE, readable
    /// by its owner only) and its public line for ingest's --playback-keys
    /// (FILE.pub).
    PlaybackKeygen(PlaybackKeygenArgs),
    /// Sign one playback, as the player service does, and print the token
    /// (for testing; a player service signs with its own code and the same
    /// key file format).
    SignPlayback(SignPlaybackArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct PlaybackKeygenArgs {
    /// The key id tokens name (1-32 of A-Z a-z 0-9 - _), e.g. the month it
    /// was made: a new id per key, so ingest can hold old and new during a
    /// rotation.
    #[arg(long)]
    key_id: String,
    /// Where to write the signing key (never overwritten); the public line
    /// goes to FILE.pub.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SignPlaybackArgs {
    /// The signing key file (`viewcount token playback-keygen`).
    #[arg(long, env = "VIEWCOUNT_PLAYBACK_SIGNING_KEY")]
    key: PathBuf,
    /// The video played.
    #[arg(long)]
    video: String,
    /// The playback's id (default: a new random one).
    #[arg(long)]
    playback_id: Option<String>,
    /// How long the token is valid from now (at most 24 h verifies).
    #[arg(long, default_value = "6h")]
    ttl: humantime::Duration,
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
    match c {
        TokenCommand::Create(a) => create(a),
        TokenCommand::PlaybackKeygen(a) => playback_keygen(a),
        TokenCommand::SignPlayback(a) => sign_playback(a),
    }
}

fn playback_keygen(a: PlaybackKeygenArgs) -> anyhow::Result<()> {
    let signer = playback::PlaybackSigner::generate(&a.key_id)?;
    let public = crate::billing_cmd::pub_path(&a.out);
    if public.exists() {
        bail!(
            "{} exists; an existing key is never overwritten: choose another --out",
            public.display()
        );
    }
    crate::billing_cmd::write_key(&a.out, signer.to_file_text().trim_end())?;
    std::fs::write(&public, signer.public_line())
        .with_context(|| format!("writing {}", public.display()))?;
    eprintln!(
        "playback signing key {:?} written to {} (keep it with the player service only); its public line is in {}: add it to the file ingest's --playback-keys names",
        a.key_id,
        a.out.display(),
        public.display()
    );
    Ok(())
}

fn sign_playback(a: SignPlaybackArgs) -> anyhow::Result<()> {
    let signer = crate::util::read_playback_signer(&a.key)?;
    let ttl = chrono::Duration::from_std(a.ttl.into()).context("--ttl is too long")?;
    if ttl > playback::MAX_LIFETIME {
        bail!("--ttl {} is longer than the 24 h ingest accepts", a.ttl);
    }
    let playback_id = a
        .playback_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    println!(
        "{}",
        signer.issue(&a.video, &playback_id, chrono::Utc::now(), ttl)
    );
    Ok(())
}

fn create(a: CreateArgs) -> anyhow::Result<()> {
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
