//! Baseline `redis-storage`: how functions exchange data through remote
//! storage today, and the paper's baseline. For `send`, A `SET`s the payload
//! under B's key and `LPUSH`es a notification on B's list; B, blocked in
//! `BLPOP` on that list, `GET`s the key into its memory and `LPUSH`es an
//! acknowledgement that A waits for with `BLPOP`. For `fetch`, A notifies B,
//! B `SET`s its payload and acknowledges, and A `GET`s it.
//!
//! Each B is a thread of this process with its own connection (its CPU time
//! is counted apart from A's); each A worker has its own connection too.
//! With `--netns`, Redis and the B threads are in node B: A's commands cross
//! the link, B's stay local to its node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redis::Connection;
use redis_launcher::RedisServer;

use super::{lock, Contender, Kind, Parties, Placement, MAX_FAN, OP_TIMEOUT};
use crate::procfs;
use crate::BenchError;

const NAME: &str = "redis-storage";
/// How often a waiting B checks whether the run is over.
const POLL: Duration = Duration::from_secs(1);

fn data_key(i: usize) -> String {
    format!("cwasi-bench:{i}:data")
}
fn notify_key(i: usize) -> String {
    format!("cwasi-bench:{i}:notify")
}
fn done_key(i: usize) -> String {
    format!("cwasi-bench:{i}:done")
}

fn connect(url: &str, read_timeout: Duration) -> redis::RedisResult<Connection> {
    let c = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    c.set_read_timeout(Some(read_timeout))?;
    c.set_write_timeout(Some(OP_TIMEOUT))?;
    Ok(c)
}

/// A's connections, one per worker; B's threads.
pub struct RedisStorage {
    senders: Vec<Mutex<Connection>>,
    stop: Arc<AtomicBool>,
    receivers: Vec<JoinHandle<()>>,
    tids: Vec<u32>,
    redis_pid: Option<u32>,
}

impl RedisStorage {
    /// Connects A and starts the B threads (where `place` puts B).
    pub fn start(redis: &RedisServer, place: &Placement) -> Result<RedisStorage, BenchError> {
        let url = redis.url();
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        for i in 0..MAX_FAN {
            // A BLPOP with timeout t needs a read timeout above t.
            let a = connect(&url, OP_TIMEOUT + POLL).map_err(|e| BenchError::setup(NAME, e))?;
            senders.push(Mutex::new(a));
            let stop = stop.clone();
            let tid_tx = tid_tx.clone();
            let url = &url;
            let t = place.in_b(move || {
                let b = connect(url, POLL * 3).map_err(|e| BenchError::setup(NAME, e))?;
                std::thread::Builder::new()
                    .name(format!("redis-b-{i}"))
                    .spawn(move || {
                        let _ = tid_tx.send(procfs::current_tid());
                        drop(tid_tx);
                        receiver(i, b, &stop)
                    })
                    .map_err(|e| BenchError::setup(NAME, e))
            })?;
            receivers.push(t);
        }
        drop(tid_tx);
        let tids = (0..MAX_FAN)
            .map_while(|_| tid_rx.recv_timeout(Duration::from_secs(5)).ok())
            .flatten()
            .collect();
        Ok(RedisStorage {
            senders,
            stop,
            receivers,
            tids,
            redis_pid: redis.pid(),
        })
    }

    /// Waits for B's acknowledgement on A's connection.
    fn wait_ack(&self, conn: &mut Connection, i: usize) -> Result<(), BenchError> {
        let ack: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(done_key(i))
            .arg(OP_TIMEOUT.as_secs())
            .query(conn)
            .map_err(|e| BenchError::op(NAME, format!("BLPOP: {e}")))?;
        match ack {
            Some((_, a)) if a == "ok" => Ok(()),
            Some((_, a)) => Err(BenchError::op(NAME, format!("B failed: {a}"))),
            None => Err(BenchError::op(
                NAME,
                format!("B did not answer within {OP_TIMEOUT:?}"),
            )),
        }
    }
}

/// B number `i`: waits for notifications until `stop`.
fn receiver(i: usize, mut conn: Connection, stop: &AtomicBool) {
    let mut mine: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let msg: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
            .arg(notify_key(i))
            .arg(POLL.as_secs())
            .query(&mut conn);
        let reply = match msg {
            Ok(None) => continue,
            Err(_) => {
                // The server is gone or the connection broke: stop.
                return;
            }
            Ok(Some((_, m))) => handle(i, &mut conn, &m, &mut mine),
        };
        let reply = reply.unwrap_or_else(|e| format!("error: {e}"));
        if redis::cmd("LPUSH")
            .arg(done_key(i))
            .arg(reply)
            .exec(&mut conn)
            .is_err()
        {
            return;
        }
    }
}

/// B's side of one notification: `send` (GET the payload) or
/// `fetch <size>` (SET a payload of that size).
fn handle(
    i: usize,
    conn: &mut Connection,
    msg: &str,
    mine: &mut Vec<u8>,
) -> redis::RedisResult<String> {
    if msg == "send" {
        let data: Vec<u8> = redis::cmd("GET").arg(data_key(i)).query(conn)?;
        std::hint::black_box(data);
    } else if let Some(size) = msg
        .strip_prefix("fetch ")
        .and_then(|s| s.parse::<usize>().ok())
    {
        if mine.len() != size {
            *mine = vec![7u8; size];
        }
        redis::cmd("SET")
            .arg(data_key(i))
            .arg(&mine[..])
            .exec(conn)?;
    } else {
        return Ok(format!("unknown message {msg:?}"));
    }
    Ok("ok".into())
}

impl Contender for RedisStorage {
    fn kind(&self) -> Kind {
        Kind::RedisStorage
    }

    fn prepare(&self, _size: usize) -> Result<(), BenchError> {
        Ok(())
    }

    fn send(&self, worker: usize, payload: &Arc<[u8]>) -> Result<(), BenchError> {
        let mut conn = lock(&self.senders[worker]);
        redis::pipe()
            .cmd("SET")
            .arg(data_key(worker))
            .arg(&payload[..])
            .ignore()
            .cmd("LPUSH")
            .arg(notify_key(worker))
            .arg("send")
            .ignore()
            .exec(&mut *conn)
            .map_err(|e| BenchError::op(NAME, format!("SET + LPUSH: {e}")))?;
        self.wait_ack(&mut conn, worker)
    }

    fn fetch(&self, worker: usize, size: usize) -> Result<(), BenchError> {
        let mut conn = lock(&self.senders[worker]);
        redis::cmd("LPUSH")
            .arg(notify_key(worker))
            .arg(format!("fetch {size}"))
            .exec(&mut *conn)
            .map_err(|e| BenchError::op(NAME, format!("LPUSH: {e}")))?;
        self.wait_ack(&mut conn, worker)?;
        let data: Vec<u8> = redis::cmd("GET")
            .arg(data_key(worker))
            .query(&mut *conn)
            .map_err(|e| BenchError::op(NAME, format!("GET: {e}")))?;
        if data.len() != size {
            return Err(BenchError::op(
                NAME,
                format!("GET returned {} bytes instead of {size}", data.len()),
            ));
        }
        Ok(())
    }

    fn parties(&self) -> Parties {
        Parties {
            b_processes: Vec::new(),
            b_threads: self.tids.clone(),
            redis: self.redis_pid,
        }
    }
}

impl Drop for RedisStorage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Each B wakes within POLL (or when its connection breaks).
        for t in self.receivers.drain(..) {
            let _ = t.join();
        }
    }
}
