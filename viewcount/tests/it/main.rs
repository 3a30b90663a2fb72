//! The `viewcount` binary as users and deployments run it, one test binary
//! (DESIGN's interface: commands, flags, exit codes, what they print and
//! leave in the store).
//!
//! - [`cli`]: the commands a user types, their output and errors;
//! - [`faults`]: `up` under a failing store write: loud, acknowledging
//!   nothing it cannot keep, resuming by itself;
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
mod faults;
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

/// An HTTP answer: status, head (lowercased) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.1 request to `addr` (`host:port`) with `headers` and `body`,
/// read to its end; `None` when it cannot connect or the answer is cut.
fn http(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Option<Answer> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}
