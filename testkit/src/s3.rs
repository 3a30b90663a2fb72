//! A real S3-compatible server on a free loopback port: `moto` in server
//! mode (from PyPI; `scripts/test` installs it), a child process with one
//! bucket, stopped on drop. It honours `If-None-Match: *`, so the store's
//! create-only writes are tested as they run on AWS S3 and MinIO; it
//! serves one request at a time ([`SERVE`]) so that it also decides racing
//! ones atomically, as they do.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infra::redis::{find_on_path, free_port};

use crate::{Error, Result};

/// A running S3 server with one bucket, killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    /// The server's log (it logs every request: a pipe nobody drains would
    /// fill and stall it).
    _log: tempfile::NamedTempFile,
    port: u16,
    bucket: String,
}

impl S3Server {
    /// Starts a server and creates `bucket` on it.
    pub fn start(bucket: &str) -> Result<Self> {
        let python = find_on_path("python3").ok_or_else(|| Error::S3Start(MISSING.into()))?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let log = tempfile::Builder::new()
                .prefix("viewcount-moto-")
                .suffix(".log")
                .tempfile()?;
            let mut command = Command::new(&python);
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let mut child = command
                .args(["-c", SERVE, "127.0.0.1"])
                .arg(port.to_string())
                .env("MOTO_PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log.reopen()?))
                .spawn()?;
            match wait_ready(&mut child, port, log.path()) {
                Ok(()) => {
                    let server = Self {
                        child,
                        _log: log,
                        port,
                        bucket: bucket.to_owned(),
                    };
                    server.create_bucket()?;
                    return Ok(server);
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                }
            }
        }
        Err(Error::S3Start(last))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://BUCKET/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The `AWS_*` settings that reach this server, for
    /// `store::open_with` or a child process's environment.
    pub fn vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn create_bucket(&self) -> Result<()> {
        let status = request(
            self.port,
            &format!(
                "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.bucket, self.port
            ),
        )
        .map_err(|e| Error::S3Start(format!("creating bucket {}: {e}", self.bucket)))?;
        if status != 200 {
            return Err(Error::S3Start(format!(
                "creating bucket {} answered HTTP {status}",
                self.bucket
            )));
        }
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's server (what `python3 -m moto.server` runs) with its requests
/// handled one at a time. moto checks a conditional PUT's precondition
/// (`If-None-Match: *`) and then writes, as two steps: on its threaded
/// server two racing creates of one key can both pass the check and both
/// win, where S3 lets exactly one win. One at a time, the check and the
/// write are one step. Connections are still accepted on threads.
const SERVE: &str = r#"
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
one = threading.Lock()

def one_at_a_time(environ, start_response):
    with one:
        return list(app(environ, start_response))

run_simple(sys.argv[1], int(sys.argv[2]), one_at_a_time, threaded=True)
"#;

const MISSING: &str = "python3 with moto is needed for the S3 tests: `python3 -m pip install 'moto[server]'` (scripts/test installs it)";

/// Sends one raw HTTP request; the status code.
fn request(port: u16, text: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(text.as_bytes())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// Waits for `GET /` to answer, or for the child to exit.
fn wait_ready(
    child: &mut Child,
    port: u16,
    log: &std::path::Path,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(log).unwrap_or_default();
            let hint = if err.contains("No module named") {
                MISSING
            } else {
                ""
            };
            return Err(format!("exited with {status}: {} {hint}", err.trim()));
        }
        let get = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        if request(port, &get).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("moto did not answer on port {port} within 30 s"))
}
