//! The `viewcount` binary as users and deployments run it, one test binary
//! (DESIGN's interface: commands, flags, exit codes, what they print and
//! leave in the store).
//!
//! - [`cli`]: the commands a user types, their output and errors;
//! - [`flags`]: the README's configuration table against every flag;
//! - [`metrics`]: every service's `/metrics` through Prometheus' linter;
//! - [`tamper`]: a flipped byte in any stored object is refused by every reader;
//! - [`up`]: `viewcount up --demo`, the README's main command, on a local
//!   store and on S3;
//! - [`ballista`] (with the `ballista` feature, which `scripts/test` turns
//!   on): the batch on a Ballista cluster of three `viewcount` processes.

#[cfg(feature = "ballista")]
mod ballista;
mod cli;
mod flags;
mod metrics;
mod tamper;
mod up;

use std::process::{Command, Output};

/// Runs `viewcount ARGS` to completion with the variables `env` (and
/// `NO_COLOR`), as a user's shell would.
fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_viewcount"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .env("NO_COLOR", "1")
        .output()
        .expect("viewcount runs")
}

/// Bytes a command printed, as text.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
