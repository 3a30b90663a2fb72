//! A child `redis-server` process on a free loopback port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Options for [`RedisServer::start`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Append-only file on (`appendfsync everysec`), for restart tests.
    pub appendonly: bool,
    /// Data directory to use instead of a fresh temporary one (restart tests
    /// start a second server on the first one's directory).
    pub dir: Option<PathBuf>,
    /// Port to use instead of a free one (restart on the same address).
    pub port: Option<u16>,
    /// A Redis Cluster node (`cluster-enabled`, node timeout 1 s), as the
    /// test kit's cluster starts them.
    pub cluster: bool,
    /// A password clients must give (`requirepass`, with protected mode
    /// on). It reaches the server on its standard input, never its command
    /// line (which other local users can read); [`RedisServer::url`]
    /// carries it, [`RedisServer::shown_url`] does not.
    pub password: Option<String>,
    /// The server is killed (SIGKILL) when the thread that started it
    /// ends, so a parent killed with SIGKILL leaves no server behind: it is
    /// started through util-linux's `setpriv --pdeathsig KILL` (Linux; a
    /// warning, and a server without it, where `setpriv` is missing). Start
    /// it from a thread that lives as long as the server is needed (a
    /// program's main thread, as `viewcount up` does).
    pub die_with_parent: bool,
}

impl RedisOptions {
    /// A random password (128 bits from the OS's generator).
    pub fn random_password() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// A running `redis-server`, killed on drop. Its temporary directory (if it made
/// one) is removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a server with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server and waits until it answers.
    pub fn start_with(opts: RedisOptions) -> Result<Self> {
        let binary = find_on_path("redis-server").ok_or(Error::RedisMissing)?;
        // util-linux's `setpriv` (on every Debian) sets the parent-death
        // signal, then execs the server in its place.
        let die_with = opts
            .die_with_parent
            .then(|| find_on_path("setpriv"))
            .flatten();
        if opts.die_with_parent && die_with.is_none() {
            tracing::warn!(
                "setpriv (util-linux) is not on PATH: the child redis-server will outlive this process if it is killed with SIGKILL"
            );
        }
        let (temp, dir) = match opts.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("viewcount-redis-")
                    .tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        // A free port can be taken by someone else before redis binds it; retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = match opts.port {
                Some(p) => p,
                None => free_port()?,
            };
            let mut command = match &die_with {
                Some(setpriv) => {
                    let mut c = Command::new(setpriv);
                    c.args(["--pdeathsig", "KILL", "--"]).arg(&binary);
                    c
                }
                None => Command::new(&binary),
            };
            // Its own process group: a Ctrl-C at the terminal reaches the
            // parent only, which still needs this server to stop in order
            // (it is killed when its handle drops).
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            if opts.password.is_some() {
                // The configuration file is standard input (the password
                // goes there); the options below add to it.
                command.arg("-");
            }
            let mut child = command
                .arg("--port")
                .arg(port.to_string())
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--protected-mode",
                    if opts.password.is_some() { "yes" } else { "no" },
                ])
                .args(["--appendonly", if opts.appendonly { "yes" } else { "no" }])
                .args(if opts.cluster {
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                    ][..]
                } else {
                    &[][..]
                })
                .arg("--dir")
                .arg(&dir)
                .stdin(if opts.password.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            if let (Some(pw), Some(mut stdin)) = (&opts.password, child.stdin.take()) {
                use std::io::Write;
                writeln!(stdin, "requirepass {pw}")?;
            }
            match wait_ready(&mut child, port, opts.password.as_deref()) {
                Ok(()) => {
                    return Ok(Self {
                        child,
                        port,
                        password: opts.password.clone(),
                        dir,
                        _temp: temp,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = e;
                    if opts.port.is_some() {
                        break;
                    }
                }
            }
        }
        Err(Error::RedisStart(last_err))
    }

    /// `redis://127.0.0.1:PORT/` (with the password, if it has one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// [`Self::url`] to print: the password, if any, elided.
    pub fn shown_url(&self) -> String {
        match &self.password {
            Some(_) => format!("redis://:***@127.0.0.1:{}/", self.port),
            None => self.url(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the process at once (like `kill -9`), keeping the data directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on loopback that nothing listens on now (the OS picked it;
/// another process could still take it before the caller binds).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The path of program `name`: on `PATH`, else in `/usr/bin` or
/// `/usr/local/bin`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Waits for `PING` (after `AUTH` with `password`) to answer `+PONG`, or for
/// the child to exit.
fn wait_ready(
    child: &mut Child,
    port: u16,
    password: Option<&str>,
) -> std::result::Result<(), String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("exited with {status}: {}", err.trim()));
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let (ask, want): (String, &[u8]) = match password {
                Some(pw) => (format!("AUTH {pw}\r\nPING\r\n"), b"+OK\r\n+PONG\r\n"),
                None => ("PING\r\n".to_owned(), b"+PONG\r\n"),
            };
            let mut buf = vec![0u8; want.len()];
            if s.write_all(ask.as_bytes()).is_ok() && s.read_exact(&mut buf).is_ok() && buf == want
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("no answer on port {port} within 10 s"))
}
