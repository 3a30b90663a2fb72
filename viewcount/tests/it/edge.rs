//! `viewcount up` at its HTTP edge: a stop with a live stream and a slow
//! client open ends promptly and loses nothing acknowledged; a second
//! signal closes what is left at once and still archives everything; a
//! closed stdout (`up | tee log`, and `tee` ended) moves the output to
//! stderr and `up` keeps running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use crate::{Up, assert_all_archived, text};

/// The admin dev token `up` printed.
fn admin_token(up: &mut Up) -> String {
    let line = up.until("the admin token", |l| l.trim_start().starts_with("admin "));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

/// A live stream of a video, its head read; the rest arrives as events.
fn open_live(addr: &str, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET /v1/videos/v00001/live HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the live stream opens");
    s
}

/// A client that sent half a request head and then nothing.
fn slow_client(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s
}

/// Reads until the server closes `s` (a read timeout fails the test).
fn closed_by_server(mut s: TcpStream) {
    let mut sink = Vec::new();
    let r = s.read_to_end(&mut sink);
    assert!(r.is_ok(), "the server did not close the connection: {r:?}");
}

fn start(store: &str, rate: &str, extra: &[&str], stderr: Stdio) -> Up {
    let mut args = vec![
        "--demo",
        "400",
        "--demo-rate",
        rate,
        "--summary-every",
        "1s",
    ];
    args.extend_from_slice(&["--store", store]);
    args.extend_from_slice(extra);
    Up::start(&args, stderr)
}

/// [`start`] at 50 events/s with stderr into `log`, once the demo passed;
/// its address.
fn start_logged(store: &str, extra: &[&str], log: &std::path::Path) -> (Up, String) {
    let mut up = start(
        store,
        "50",
        extra,
        std::fs::File::create(log).unwrap().into(),
    );
    let addr = up.addr();
    up.until("the demo's checks", |l| l == "demo: every check passed");
    (up, addr)
}

#[test]
fn a_stop_with_a_live_stream_and_a_slow_client_open_is_prompt_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    // A drain deadline of an hour: only the stream being told to end (and
    // the slow client's header deadline) lets the stop be prompt.
    let mut up = start(&store, "4", &["--drain-timeout", "1h"], Stdio::null());
    let addr = up.addr();
    let token = admin_token(&mut up);
    up.until("the demo's checks", |l| l == "demo: every check passed");
    // A low rate is paced too (it was sent as fast as ingest took it):
    // over some 6 s of summaries, about 24 events, never hundreds.
    let events = |up: &mut Up| -> u64 {
        let l = up.until("a summary", |l| l.starts_with("events "));
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let first = events(&mut up);
    let t0 = std::time::Instant::now();
    for _ in 0..5 {
        events(&mut up);
    }
    let last = events(&mut up);
    let rate = (last - first) as f64 / t0.elapsed().as_secs_f64();
    assert!(rate < 20.0, "{rate:.1} events/s at --demo-rate 4");
    assert!(last > first, "traffic flows");
    let live = open_live(&addr, &token);
    let slow = slow_client(&addr);

    up.signal("INT");
    // Before: 75 s to 2 min, the stream holding the drain open.
    let (status, lines) = up.wait(Duration::from_secs(90));
    assert!(status.success(), "{status}: {}", lines.join("\n"));
    closed_by_server(live);
    closed_by_server(slow);
    assert_all_archived(&lines, &store);
}

#[test]
fn a_second_signal_closes_what_is_left_at_once_and_still_archives_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let log = dir.path().join("stderr");
    let (up, addr) = start_logged(
        &store,
        // A drain that would wait an hour, and clients that would hold it.
        &["--drain-timeout", "1h", "--header-timeout", "1h"],
        &log,
    );
    let slow = slow_client(&addr);
    // A request in flight whose body never comes.
    let mut in_flight = TcpStream::connect(&addr).unwrap();
    in_flight
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    up.signal("INT");
    std::thread::sleep(Duration::from_secs(2));
    up.signal("INT");
    let (status, lines) = up.wait(Duration::from_secs(90));
    let stderr = text(&std::fs::read(&log).unwrap());
    assert!(status.success(), "{status}: {}\n{stderr}", lines.join("\n"));
    assert!(stderr.contains("second signal"), "{stderr}");
    closed_by_server(slow);
    closed_by_server(in_flight);
    assert_all_archived(&lines, &store);
}

#[test]
fn with_its_stdout_closed_up_keeps_running_and_says_so_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/store", dir.path().display());
    let log = dir.path().join("stderr");
    let (mut up, addr) = start_logged(&store, &[], &log);
    // The reader of its stdout goes away (like `tee` after Ctrl-C).
    up.close_stdout();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !text(&std::fs::read(&log).unwrap()).contains("stdout is closed") {
        assert!(std::time::Instant::now() < deadline, "no stdout notice");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still serving, summaries on stderr now.
    std::thread::sleep(Duration::from_secs(2));
    assert!(crate::http(&addr, "GET", "/healthz", &[], "").is_some_and(|a| a.status == 200));
    up.signal("INT");
    let (status, _) = up.wait(Duration::from_secs(90));
    let stderr = text(&std::fs::read(&log).unwrap());
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("events "), "summaries go on: {stderr}");
    let stopped: Vec<String> = stderr
        .lines()
        .filter(|l| l.starts_with("stopped: all "))
        .map(str::to_owned)
        .collect();
    assert_all_archived(&stopped, &store);
}
