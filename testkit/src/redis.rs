//! A Redis Cluster on loopback, of child `redis-server` processes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infra::redis::{RedisOptions, RedisServer, find_on_path};

use crate::{Error, Result};

/// A Redis Cluster on loopback: `masters` masters with `replicas` replicas
/// each, every node a child `redis-server` (no persistence: a killed node
/// stays dead, its replica takes over), joined by `redis-cli --cluster
/// create`. Nodes can be killed to test failover.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    cli: PathBuf,
    /// Ports of the nodes killed.
    dead: Vec<u16>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its port.
    pub port: u16,
    /// A master (else a replica).
    pub master: bool,
    /// Marked failed by the cluster.
    pub failed: bool,
    /// The slot ranges it serves (masters), inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster, and waits until every slot is
    /// served and every replica is in sync with its master.
    pub fn start(masters: usize, replicas: usize) -> Result<Self> {
        let cli = find_on_path("redis-cli").ok_or(Error::RedisMissing)?;
        let nodes = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(RedisOptions {
                    cluster: true,
                    ..RedisOptions::default()
                })
            })
            .collect::<std::result::Result<Vec<_>, infra::Error>>()?;
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(Error::RedisStart(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = Self {
            nodes,
            cli,
            dead: Vec::new(),
        };
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:PORT,...` of every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Ports of the nodes still running.
    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| !self.dead.contains(&n.port()))
            .map(RedisServer::port)
    }

    fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.cli)
            .args(["-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(Error::RedisStart(format!(
                "redis-cli -p {port} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The nodes as a running node sees them.
    pub fn nodes(&self) -> Result<Vec<ClusterNode>> {
        let port = self
            .live()
            .next()
            .ok_or_else(|| Error::RedisStart("no node is running".into()))?;
        let text = self.cli(port, &["cluster", "nodes"])?;
        Ok(text.lines().filter_map(parse_node).collect())
    }

    /// The port of the master serving `slot`.
    pub fn master_of(&self, slot: u16) -> Result<u16> {
        self.nodes()?
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|n| n.port)
            .ok_or_else(|| Error::RedisStart(format!("no master serves slot {slot}")))
    }

    /// Kills the node on `port` at once (like `kill -9`).
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port() == port) {
            n.kill();
            self.dead.push(port);
        }
    }

    /// Waits until every running node says `cluster_state:ok`, all 16384
    /// slots have a running master, and every running replica's link to
    /// its master is up.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut why = String::new();
        while Instant::now() < deadline {
            match self.healthy() {
                Ok(()) => return Ok(()),
                Err(e) => why = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::RedisStart(format!(
            "the cluster did not become healthy within {timeout:?}: {why}"
        )))
    }

    fn healthy(&self) -> Result<()> {
        let live: Vec<u16> = self.live().collect();
        for &port in &live {
            let info = self.cli(port, &["cluster", "info"])?;
            if !info.contains("cluster_state:ok") {
                return Err(Error::RedisStart(format!("node {port} is not ok yet")));
            }
        }
        let nodes = self.nodes()?;
        let mut served = 0u32;
        for n in nodes.iter().filter(|n| n.master && !n.failed) {
            if !live.contains(&n.port) {
                return Err(Error::RedisStart(format!(
                    "node {} is down but not yet failed over",
                    n.port
                )));
            }
            served += n
                .slots
                .iter()
                .map(|&(a, b)| u32::from(b - a) + 1)
                .sum::<u32>();
        }
        if served != 16384 {
            return Err(Error::RedisStart(format!("{served} of 16384 slots served")));
        }
        for n in nodes.iter().filter(|n| !n.master && live.contains(&n.port)) {
            let info = self.cli(n.port, &["info", "replication"])?;
            if !info.contains("master_link_status:up") {
                return Err(Error::RedisStart(format!(
                    "replica {} is not in sync yet",
                    n.port
                )));
            }
        }
        Ok(())
    }
}

/// A `CLUSTER NODES` line: `id host:port@bus flags master ping pong epoch
/// link slot...`.
fn parse_node(line: &str) -> Option<ClusterNode> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let port = f
        .get(1)?
        .split('@')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let flags = f.get(2)?;
    let slots = f
        .iter()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|x| (x, x)),
        })
        .collect();
    Some(ClusterNode {
        port,
        master: flags.contains("master"),
        failed: flags.contains("fail") && !flags.contains("fail?"),
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let master = "07c3 127.0.0.1:30004@40004 myself,master - 0 1426238317239 4 connected 0-5460 7000 [93-<-292f]";
        assert_eq!(
            parse_node(master),
            Some(ClusterNode {
                port: 30004,
                master: true,
                failed: false,
                slots: vec![(0, 5460), (7000, 7000)],
            })
        );
        let failed =
            "9fd8 127.0.0.1:30002@40002 master,fail - 1426238316232 1426238314000 2 disconnected";
        assert!(parse_node(failed).is_some_and(|n| n.failed && n.slots.is_empty()));
        let replica = "e7d1 127.0.0.1:30005@40005 slave 07c3 0 1426238316232 4 connected";
        assert!(parse_node(replica).is_some_and(|n| !n.master));
    }
}
