//! The threads of A that run fan-out and fan-in: one per B, started once,
//! so that a measured fan-out pays a wake-up per B and no thread creation.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Contender, OP_TIMEOUT};
use crate::BenchError;

/// What one worker does.
#[derive(Clone)]
pub enum Job {
    /// `Contender::send` of this payload.
    Send(Arc<[u8]>),
    /// `Contender::fetch` of this many bytes.
    Fetch(usize),
}

type Task = (Arc<dyn Contender>, Job);

/// A fixed set of worker threads, worker `i` always serving B number `i`.
pub struct Pool {
    workers: Vec<Sender<Task>>,
    done: Receiver<Result<(), BenchError>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `n` workers.
    pub fn new(n: usize) -> Result<Pool, BenchError> {
        let (done_tx, done) = channel();
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let (tx, rx) = channel::<Task>();
            let done_tx = done_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("bench-a-{i}"))
                .spawn(move || {
                    // Ends when the pool drops its sender.
                    while let Ok((c, job)) = rx.recv() {
                        let r = match job {
                            Job::Send(p) => c.send(i, &p),
                            Job::Fetch(size) => c.fetch(i, size),
                        };
                        // Let go of the contender before reporting, so that
                        // the run's last reference (and the contender's
                        // shutdown) stays with the main thread.
                        drop(c);
                        if done_tx.send(r).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| BenchError::setup("fan-out workers", e))?;
            workers.push(tx);
            threads.push(t);
        }
        Ok(Pool {
            workers,
            done,
            threads,
        })
    }

    /// Runs `job` on workers `0..n` at once and waits for all of them (at
    /// most [`OP_TIMEOUT`] each).
    pub fn run(&self, c: &Arc<dyn Contender>, job: &Job, n: usize) -> Result<(), BenchError> {
        if n > self.workers.len() {
            return Err(BenchError::BadInput(format!(
                "fan-out of {n} is over the {} workers started",
                self.workers.len()
            )));
        }
        for w in &self.workers[..n] {
            w.send((c.clone(), job.clone()))
                .map_err(|_| BenchError::op(c.kind().name(), "a fan-out worker has stopped"))?;
        }
        let mut first_err = None;
        for _ in 0..n {
            match self.done.recv_timeout(OP_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    return Err(BenchError::op(
                        c.kind().name(),
                        format!("a fan-out call did not finish within {OP_TIMEOUT:?}"),
                    ))
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.workers.clear();
        // Workers stop at their next receive. One stuck in a call (bounded by
        // the contender's own timeouts) is left to finish on its own after
        // a grace period, so that dropping never hangs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for t in self.threads.drain(..) {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
