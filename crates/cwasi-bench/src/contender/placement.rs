//! Where B runs. By default everything is on this machine's loopback. With
//! `--netns` the run makes two network namespaces joined by a bridge ([`Net`],
//! from the `netns` crate): the measuring thread of the benchmark (A: the
//! caller, its pool threads, every client connection) runs inside node A,
//! and the B of every network contender runs inside node B: its `cwasi
//! serve` processes through `ip netns exec`, its server threads (http, tcp,
//! redis-storage receivers) started from a thread that joined node B, so
//! that they and the sockets they open live there. Traffic between A and B
//! then crosses two IP stacks and a bridge over veth pairs, as between two
//! machines, instead of loopback. The benchmark's main thread stays in the
//! host's namespace, so deleting the namespaces never touches it.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;

use super::{Kind, Parties};
use crate::BenchError;

/// What the namespaces of a `--netns` run start with (then the pid).
const PREFIX: &str = "cwb";

/// The two namespaces of a `--netns` run, node A and node B; deleted, with
/// every process left inside, on drop (also on Ctrl-C and on a panic's
/// unwinding). Namespaces of a bench that was killed outright are deleted
/// by the next `--netns` run.
pub struct Net {
    cluster: netns::NetCluster,
}

impl Net {
    /// Makes the namespaces, or says why it cannot (not root, no `ip`).
    pub fn create() -> Result<Net, BenchError> {
        let cluster = netns::NetCluster::new(PREFIX, 2)?;
        Ok(Net { cluster })
    }

    fn node(&self, i: usize) -> Result<&netns::NetNode, BenchError> {
        self.cluster
            .node(i)
            .ok_or_else(|| BenchError::setup("--netns", format!("no node {i}")))
    }

    /// Runs `f` on a thread inside node A (threads it starts are in node A
    /// too) and returns what it returns.
    pub fn in_a<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, BenchError> + Send,
    ) -> Result<T, BenchError> {
        self.node(0)?.run(f)?
    }

    /// Where B runs in this run.
    pub fn placement(&self) -> Result<Placement, BenchError> {
        let a = self.node(0)?;
        let b = self.node(1)?.clone();
        let b_id = b.id()?;
        Ok(Placement::Node {
            a_addr: a.addr(),
            a_id: a.id()?,
            b,
            b_id,
        })
    }
}

/// Where the B of a network contender runs.
#[derive(Debug, Clone)]
pub enum Placement {
    /// In this network namespace, on loopback.
    Here,
    /// In node B of a [`Net`].
    Node {
        /// Node A's address (where the caller's connections come from).
        a_addr: Ipv4Addr,
        /// Node A's namespace identity.
        a_id: u64,
        /// Node B.
        b: netns::NetNode,
        /// Node B's namespace identity.
        b_id: u64,
    },
}

impl Placement {
    /// The address B's servers listen on: loopback, or node B's address.
    pub fn b_ip(&self) -> Ipv4Addr {
        match self {
            Placement::Here => Ipv4Addr::LOCALHOST,
            Placement::Node { b, .. } => b.addr(),
        }
    }

    /// Runs `f` where B's threads and sockets belong: on this thread, or on
    /// a thread inside node B (threads `f` starts stay there).
    pub fn in_b<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, BenchError> + Send,
    ) -> Result<T, BenchError> {
        match self {
            Placement::Here => f(),
            Placement::Node { b, .. } => b.run(f)?,
        }
    }

    /// A command that runs `program` where B's processes belong.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self {
            Placement::Here => Command::new(program),
            Placement::Node { b, .. } => b.command(program),
        }
    }

    /// For `--netns`: checks that B's processes and threads of `kind` run in
    /// node B and that this thread (A) runs in node A, so that a figure is
    /// never labelled as crossing the link when it did not.
    pub fn check(&self, kind: Kind, parties: &Parties) -> Result<(), BenchError> {
        let Placement::Node { a_id, b_id, b, .. } = self else {
            return Ok(());
        };
        let wrong = |what: String| {
            Err(BenchError::setup(
                kind.name(),
                format!("{what} is not in network namespace {}", b.name()),
            ))
        };
        let me = crate::procfs::current_tid().and_then(netns::thread_netns_id);
        if me != Some(*a_id) {
            return Err(BenchError::setup(
                kind.name(),
                "the measuring thread is not in node A's network namespace",
            ));
        }
        if !kind.is_network() {
            return Ok(());
        }
        if parties.b_processes.is_empty() && parties.b_threads.is_empty() {
            return wrong("B (no process or thread to check)".into());
        }
        for &p in &parties.b_processes {
            if netns::process_netns_id(p) != Some(*b_id) {
                return wrong(format!("B's process {p}"));
            }
        }
        for &t in &parties.b_threads {
            // A thread that has ended (an idle pool thread) is skipped.
            if netns::thread_netns_id(t).is_some_and(|id| id != *b_id) {
                return wrong(format!("B's thread {t}"));
            }
        }
        Ok(())
    }

    /// For the report: where B ran.
    pub fn describe(&self) -> String {
        match self {
            Placement::Here => "loopback: every party in the host's network namespace".into(),
            Placement::Node { a_addr, b, .. } => format!(
                "--netns: A in one network namespace ({a_addr}), B of the network contenders \
                 and Redis in another ({}), joined by veth pairs and a bridge",
                b.addr()
            ),
        }
    }
}
