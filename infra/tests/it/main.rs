//! The harness itself: real redis-server and a real Kafka-protocol broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use infra::kafka::{EmbeddedKafka, read_topic};
use infra::redis::{RedisOptions, RedisServer};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Sends one inline command and returns the raw reply.
fn redis_cmd(port: u16, cmd: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn redis_server_starts_keeps_aof_data_across_kill_and_stops_on_drop() {
    let mut first = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    })
    .unwrap();
    let port = first.port();
    assert_eq!(redis_cmd(port, "SET k 41"), "+OK\r\n");
    assert_eq!(redis_cmd(port, "INCR k"), ":42\r\n");
    // fsync the AOF before the hard kill (everysec would lose up to a second).
    redis_cmd(port, "BGREWRITEAOF");
    std::thread::sleep(Duration::from_millis(500));
    let dir = first.dir().to_path_buf();
    first.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "killed");

    let second = RedisServer::start_with(RedisOptions {
        appendonly: true,
        dir: Some(dir),
        port: Some(port),
        ..RedisOptions::default()
    })
    .unwrap();
    assert_eq!(redis_cmd(second.port(), "GET k"), "$2\r\n42\r\n");
    drop(second);
    drop(first);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped on drop"
    );
}

#[test]
fn two_redis_servers_get_different_ports() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!(redis_cmd(a.port(), "PING"), "+PONG\r\n");
    assert_eq!(redis_cmd(b.port(), "PING"), "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_kafka_round_trips_records_and_injects_faults() {
    let kafka = EmbeddedKafka::start(1).unwrap();
    kafka.create_topic("t", 2).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("message.timeout.ms", "1500")
        .create()
        .unwrap();
    for i in 0..10 {
        let key = format!("k{}", i % 3);
        let payload = format!("p{i}");
        producer
            .send(
                FutureRecord::to("t").key(&key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let b = kafka.bootstrap_servers().to_owned();
    let records = tokio::task::spawn_blocking(move || read_topic(&b, "t", Duration::from_secs(20)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(records.len(), 10);
    let mut payloads: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.payload.clone().unwrap()).unwrap())
        .collect();
    payloads.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    want.sort();
    assert_eq!(payloads, want);

    kafka.brokers_down().unwrap();
    let r = producer
        .send(
            FutureRecord::to("t").key("k").payload("lost"),
            Duration::from_secs(5),
        )
        .await;
    assert!(r.is_err(), "a downed broker does not acknowledge");
    kafka.brokers_up().unwrap();
}

#[test]
fn a_server_with_a_password_refuses_clients_without_it() {
    let pw = RedisOptions::random_password();
    let r = RedisServer::start_with(RedisOptions {
        password: Some(pw.clone()),
        ..RedisOptions::default()
    })
    .unwrap();
    assert!(redis_cmd(r.port(), "PING").starts_with("-NOAUTH"));
    assert!(redis_cmd(r.port(), "AUTH wrong").starts_with("-WRONGPASS"));
    assert_eq!(redis_cmd(r.port(), &format!("AUTH {pw}")), "+OK\r\n");
    assert!(r.url().contains(&pw));
    assert!(!r.shown_url().contains(&pw));
    // Not on its command line, where any local user could read it.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", r.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&pw));
}
