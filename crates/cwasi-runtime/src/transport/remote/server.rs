//! [`StreamServer`]: serves one function from its stream with a few
//! consumer threads and the announcement heartbeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::codec::GROUP;
use super::conn::Broker;
use super::consumer::{Consumer, Handler};
use super::keys::FnKeys;
use super::registry::heartbeat;
use crate::deadline::BROKER_OP_TIMEOUT;
use crate::error::{CallError, RuntimeError};

/// Serves one function from its stream: consumer threads, a reclaimer of
/// entries left by dead consumers, and the announcement heartbeat. Dropping
/// it stops them and unannounces the function.
pub struct StreamServer {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    broker: Arc<Broker>,
    namespace: String,
    name: String,
    keys: FnKeys,
}

impl StreamServer {
    /// Starts `workers` consumers of `cwasi:{<ns>/<name>}:stream` running `handler`,
    /// announcing the function with `record` (JSON) every heartbeat. An entry
    /// pending longer than `lease` is taken over by another consumer.
    pub fn start(
        broker: Arc<Broker>,
        ns: &str,
        name: &str,
        record: String,
        workers: usize,
        lease: Duration,
        handler: Handler,
    ) -> Result<StreamServer, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let function = FnKeys::new(ns, name).map_err(|e| RuntimeError::Config(e.to_string()))?;
        let spawn = |label: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(label)
                .spawn(f)
                .map_err(|source| RuntimeError::Spawn {
                    what: "a broker thread",
                    source,
                })
        };
        for w in 0..workers.max(1) {
            let consumer = Consumer::new(
                broker.clone(),
                function.clone(),
                format!("{}:{}:{w}", broker.node(), std::process::id()),
                lease,
                handler.clone(),
                stop.clone(),
            );
            threads.push(spawn(
                format!("cwasi-consume-{w}"),
                Box::new(move || consumer.run()),
            )?);
        }
        let (b, ns2, name2, st) = (
            broker.clone(),
            ns.to_string(),
            name.to_string(),
            stop.clone(),
        );
        threads.push(spawn(
            "cwasi-heartbeat".into(),
            Box::new(move || heartbeat(&b, &ns2, &name2, &record, &st)),
        )?);
        Ok(StreamServer {
            stop,
            threads,
            broker,
            namespace: ns.to_string(),
            name: name.to_string(),
            keys: function,
        })
    }

    /// Entries of the function's stream delivered to a consumer and not yet
    /// answered (`XPENDING` of the `cwasi` group): the backlog an autoscaler
    /// reads. One bounded round trip on a blocking connection.
    pub fn pending(&self) -> Result<u64, CallError> {
        let mut conn = self.broker.sync_conn(BROKER_OP_TIMEOUT)?;
        let reply: Value = redis::cmd("XPENDING")
            .arg(self.keys.stream())
            .arg(GROUP)
            .query(&mut conn)
            .map_err(|e| self.broker.down(e))?;
        self.broker.give_back(conn);
        match reply {
            Value::Array(items) => match items.first() {
                Some(Value::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
                _ => Err(self.broker.down("XPENDING answered without a count")),
            },
            _ => Err(self.broker.down("XPENDING answered without a summary")),
        }
    }
}

impl Drop for StreamServer {
    /// Withdraws the announcement first, so that callers on other nodes
    /// move while the consumers finish their entries (a consumer may be
    /// blocked reading the stream for a while), and once more after the
    /// threads ended, in case a heartbeat under way announced it again.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let unannounce = |b: &Broker| {
            let _ = b.block_on(async {
                tokio::time::timeout(BROKER_OP_TIMEOUT, b.unannounce(&self.namespace, &self.name))
                    .await
            });
        };
        unannounce(&self.broker);
        tracing::info!(name = %self.name, namespace = %self.namespace, "unannounced");
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        unannounce(&self.broker);
    }
}
