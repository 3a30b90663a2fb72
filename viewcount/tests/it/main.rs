//! The `viewcount` binary as users and deployments run it, one test binary
//! (DESIGN's interface: commands, flags, exit codes, what they print and
//! leave in the store).
//!
//! - [`cli`]: the commands a user types, their output and errors;
//! - [`faults`]: `up` under a failing store write: loud, acknowledging
//!   nothing it cannot keep, resuming by itself;
//! - [`edge`]: `up` stopping with a live stream and a slow client open, on a
//!   second signal, and with its stdout closed;
//! - [`flags`]: the README's configuration table against every flag;
//! - [`metrics`]: every service's `/metrics` through Prometheus' linter;
//! - [`soak`]: the production topology as separate processes under kills
//!   and freezes, then every layer against the truth;
//! - [`tamper`]: a flipped byte in any stored object is refused by every reader;
//! - [`up`]: `viewcount up --demo`, the README's main command, on a local
//!   store and on S3;
//! - [`ballista`] (with the `ballista` feature, which `scripts/test` turns
//!   on): the batch on a Ballista cluster of three `viewcount` processes.

#[cfg(feature = "ballista")]
mod ballista;
mod cli;
mod edge;
mod faults;
mod flags;
mod metrics;
mod soak;
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

/// `viewcount up ARGS` running as a child (embedded Kafka, child Redis),
/// its stdout lines arriving on a channel as they are printed.
struct Up {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Up {
    /// Starts it; its stderr goes to `stderr`.
    fn start(args: &[&str], stderr: std::process::Stdio) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_viewcount"))
            .arg("up")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .env_remove("VIEWCOUNT_KAFKA")
            .env_remove("VIEWCOUNT_REDIS_URL")
            .env_remove("VIEWCOUNT_STORE")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("viewcount up starts");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            reader: Some(reader),
        }
    }

    /// The next line `pred` accepts (waiting up to 4 minutes).
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no {what} in:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The `host:port` it listens on.
    fn addr(&mut self) -> String {
        let line = self.until("ingest line", |l| l.starts_with("ingest: http://"));
        line["ingest: http://".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    }

    /// Stops reading its stdout: the pipe closes at its next line, as when
    /// the `tee` it prints into ends.
    fn close_stdout(&mut self) {
        self.lines = std::sync::mpsc::channel().1;
    }

    /// Sends `signal` (`INT`, `TERM`) to it.
    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits for it to exit (at most `timeout`: a stop that hangs fails);
    /// its status and every line it printed.
    fn wait(mut self, timeout: std::time::Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "up did not stop within {timeout:?}:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.seen.extend(self.lines.try_iter());
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Ends a `viewcount` child that may still run: SIGTERM, so that `up` stops
/// its child redis-server (a SIGKILL would leave that running), then
/// SIGKILL if it has not ended within 20 s.
fn stop_child(child: &mut std::process::Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The number in `stopped: all N records ...`, and that the archive's
/// progress in `store` covers exactly that many: nothing acknowledged lost.
fn assert_all_archived(lines: &[String], store: &str) -> u64 {
    let stopped = lines
        .iter()
        .find(|l| l.starts_with("stopped: all "))
        .unwrap_or_else(|| panic!("no ordered stop in:\n{}", lines.join("\n")));
    let n: u64 = stopped["stopped: all ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = run(&["status", "--json", "--store", store], &[]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let archived: u64 = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["archive_offset"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(archived, n, "{s:#}");
    n
}
