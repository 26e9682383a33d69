//! A private Redis Cluster on loopback: masters and their replicas, each a
//! [`RedisServer`] in cluster mode with its own directory and free port,
//! joined by `redis-cli --cluster create`, with a short
//! `cluster-node-timeout` so that a replica takes over soon after its
//! master dies. Everything stops on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{LaunchError, RedisServer, START_TIMEOUT};

/// How long a node may go unreachable before the cluster fails it over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Why a cluster could not be started or asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// One of its servers could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// `redis-cli` could not be run (it comes with redis-server).
    #[error("cannot run redis-cli ({0}); install it with: apt-get install redis-tools")]
    Cli(std::io::Error),
    /// `redis-cli --cluster create` failed.
    #[error("redis-cli --cluster create failed ({status}): {output}")]
    Create {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        output: String,
    },
    /// The cluster did not report `cluster_state:ok` on every node in time.
    #[error("the cluster was not ready within {0:?}: {1}")]
    NotReady(Duration, String),
}

/// A Redis Cluster owned by this process.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each, and waits
    /// until every node sees the cluster as ok.
    pub fn start(masters: usize, replicas: usize) -> Result<RedisCluster, ClusterError> {
        let timeout = NODE_TIMEOUT.as_millis().to_string();
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout,
            // A replica takes over however long ago it last heard from its
            // master: with the default (10), a replica of a master that
            // was idle can refuse ("disconnected from master for longer
            // than allowed"), and the slot stays down.
            "--cluster-replica-validity-factor",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            nodes.push(RedisServer::start_with(&args)?);
        }
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null());
        let out = create.output().map_err(ClusterError::Cli)?;
        if !out.status.success() {
            return Err(ClusterError::Create {
                status: out.status,
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        cluster.wait_ok(START_TIMEOUT)?;
        Ok(cluster)
    }

    /// Waits until every running node reports `cluster_state:ok` and knows
    /// every slot, and every replica's link to its master is up.
    pub fn wait_ok(&self, within: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + within;
        loop {
            let mut last = String::new();
            let ok = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                let info = n.command_text(&["CLUSTER", "INFO"]).unwrap_or_default();
                let replication = n.command_text(&["INFO", "replication"]).unwrap_or_default();
                // A replica counts once its link to its master is up (its
                // first sync done), so that `WAIT` finds it.
                let ok = info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && (!replication.contains("role:slave")
                        || replication.contains("master_link_status:up"));
                if !ok {
                    last = format!("{info}\n{replication}");
                }
                ok
            });
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotReady(within, last));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes, masters and replicas (which is which changes with
    /// failovers: see [`RedisCluster::master_of`]).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to kill or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `redis://127.0.0.1:<port>` of every node, as seeds for a client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> Option<u16> {
        let node = self.nodes.iter().find(|n| n.pid().is_some())?;
        node.command(&["CLUSTER", "KEYSLOT", key])?
            .strip_prefix(':')?
            .parse()
            .ok()
    }

    /// The index of the running node that is master of `slot` now.
    pub fn master_of(&self, slot: u16) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.pid().is_some()
                && n.command_text(&["CLUSTER", "NODES"])
                    .and_then(|text| {
                        let me = text.lines().find(|l| l.contains("myself"))?.to_string();
                        Some(me.contains("master") && serves_slot(&me, slot))
                    })
                    .unwrap_or(false)
        })
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` among its ranges.
fn serves_slot(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        match (lo.parse::<u16>(), hi.parse::<u16>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_and_knows_who_serves_a_slot() {
        let cluster = RedisCluster::start(3, 1).expect("start a cluster");
        assert_eq!(cluster.nodes().len(), 6);
        let slot = cluster.slot("{a}x").expect("a slot");
        assert_eq!(cluster.slot("{a}y"), Some(slot));
        assert!(cluster.master_of(slot).is_some());
        assert!(serves_slot(
            "id addr myself,master - 0 0 1 connected 0-5460",
            5460
        ));
        assert!(!serves_slot(
            "id addr myself,master - 0 0 1 connected 0-5460",
            5461
        ));
    }
}
