//! The server's memory of requests it answered recently, by caller address
//! and request id, so that a caller's retry (it lost the connection before
//! the answer arrived) is answered from memory instead of running the
//! function again, and a retry that arrives while the first attempt still
//! runs waits for that attempt. Bounded in time ([`ANSWERED_TTL`]), in
//! entries and in bytes; responses over [`KEEP_MAX`] are not kept, so a
//! retry of such a call runs again (delivery is at least once).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::error::{CallError, ErrorCode};

/// How long an answer is remembered.
pub(crate) const ANSWERED_TTL: Duration = Duration::from_secs(60);
/// The largest response kept for a retry: keeping one costs a copy, which
/// is noise up to this size and not above it.
pub(crate) const KEEP_MAX: usize = 64 << 10;
/// Most requests remembered at once.
const MAX_ENTRIES: usize = 16 * 1024;
/// Most bytes of responses remembered at once.
const MAX_BYTES: usize = 64 << 20;

/// Which request: the caller's address and its request id.
pub(crate) type RequestKey = (IpAddr, u64);

/// What a finished request answered.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// This response.
    Response(Vec<u8>),
    /// This error.
    Failed(CallError),
    /// A response too large to keep: a retry runs the call again.
    NotKept,
}

impl Answer {
    fn bytes(&self) -> usize {
        match self {
            Answer::Response(r) => r.len(),
            Answer::Failed(e) => e.message.len(),
            Answer::NotKept => 0,
        }
    }
}

/// What to do with an incoming request.
pub(crate) enum Claim {
    /// Run it, then report with [`Answered::finish`].
    Run,
    /// It was answered before: send this again.
    Again(Answer),
}

enum Entry {
    Running,
    Done(Answer),
}

#[derive(Default)]
struct Memory {
    entries: HashMap<RequestKey, Entry>,
    order: VecDeque<(Instant, RequestKey)>,
    bytes: usize,
    /// Retries waiting for a first attempt to finish (a finish wakes them
    /// only when there are some).
    waiting: usize,
}

/// Recent requests of one server.
#[derive(Default)]
pub(crate) struct Answered {
    memory: Mutex<Memory>,
    finished: Condvar,
}

impl Answered {
    /// Claims request `key`: run it, or take its earlier answer. A request
    /// whose first attempt still runs waits for it until `deadline`.
    pub fn claim(&self, key: RequestKey, deadline: Deadline) -> Claim {
        let now = Instant::now();
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        m.expire(now);
        loop {
            match m.entries.get(&key) {
                None | Some(Entry::Done(Answer::NotKept)) => {
                    if m.entries.insert(key, Entry::Running).is_none() {
                        m.order.push_back((now, key));
                    }
                    m.evict_over_caps();
                    return Claim::Run;
                }
                Some(Entry::Done(a)) => return Claim::Again(a.clone()),
                Some(Entry::Running) => {
                    let left = deadline.remaining();
                    if left.is_zero() {
                        return Claim::Again(Answer::Failed(CallError::new(
                            ErrorCode::Timeout,
                            "an earlier attempt of this request is still running",
                        )));
                    }
                    m.waiting += 1;
                    m = self
                        .finished
                        .wait_timeout(m, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    m.waiting -= 1;
                }
            }
        }
    }

    /// Records the answer of a request claimed with [`Claim::Run`].
    pub fn finish(&self, key: RequestKey, answer: Answer) {
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        m.bytes += answer.bytes();
        if let Some(Entry::Done(old)) = m.entries.insert(key, Entry::Done(answer)) {
            m.bytes -= old.bytes();
        }
        m.evict_over_caps();
        let wake = m.waiting > 0;
        drop(m);
        if wake {
            self.finished.notify_all();
        }
    }

    /// Requests remembered now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.memory.lock().unwrap().entries.len()
    }
}

impl Memory {
    /// Forgets finished requests older than [`ANSWERED_TTL`].
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < ANSWERED_TTL {
                break;
            }
            self.order.pop_front();
            self.forget(key, at, now);
        }
    }

    /// Forgets the oldest finished requests while over a cap.
    fn evict_over_caps(&mut self) {
        if self.entries.len() <= MAX_ENTRIES && self.bytes <= MAX_BYTES {
            return;
        }
        let now = Instant::now();
        let mut spared = 0;
        while (self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES)
            && spared < self.order.len()
        {
            let Some((at, key)) = self.order.pop_front() else {
                break;
            };
            if matches!(self.entries.get(&key), Some(Entry::Running)) {
                // A running request is never forgotten; look further.
                self.order.push_back((at, key));
                spared += 1;
                continue;
            }
            self.forget(key, at, now);
        }
    }

    fn forget(&mut self, key: RequestKey, at: Instant, now: Instant) {
        match self.entries.get(&key) {
            Some(Entry::Running) => self.order.push_back((now.max(at), key)),
            Some(Entry::Done(a)) => {
                self.bytes -= a.bytes();
                self.entries.remove(&key);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn a_retry_gets_the_first_answer_and_does_not_run_again() {
        let a = Answered::default();
        let soon = || Deadline::after(Duration::from_secs(1));
        assert!(matches!(a.claim((PEER, 1), soon()), Claim::Run));
        a.finish((PEER, 1), Answer::Response(b"r".to_vec()));
        match a.claim((PEER, 1), soon()) {
            Claim::Again(Answer::Response(r)) => assert_eq!(r, b"r"),
            _ => panic!("the retry ran again"),
        }
        // Another caller's request of the same id is another request.
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert!(matches!(a.claim((other, 1), soon()), Claim::Run));
        // An answer not kept runs again.
        a.finish((other, 1), Answer::NotKept);
        assert!(matches!(a.claim((other, 1), soon()), Claim::Run));
    }

    #[test]
    fn a_retry_waits_for_the_first_attempt_or_its_deadline() {
        let a = Arc::new(Answered::default());
        assert!(matches!(
            a.claim((PEER, 7), Deadline::after(Duration::from_secs(1))),
            Claim::Run
        ));
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.claim((PEER, 7), Deadline::after(Duration::from_secs(10))))
        };
        std::thread::sleep(Duration::from_millis(50));
        a.finish((PEER, 7), Answer::Response(b"once".to_vec()));
        assert!(matches!(
            waiter.join().unwrap(),
            Claim::Again(Answer::Response(_))
        ));

        assert!(matches!(
            a.claim((PEER, 8), Deadline::after(Duration::from_secs(1))),
            Claim::Run
        ));
        match a.claim((PEER, 8), Deadline::after(Duration::from_millis(20))) {
            Claim::Again(Answer::Failed(e)) => assert!(e.is_timeout(), "{e}"),
            _ => panic!("a retry waited past its deadline or ran twice"),
        }
    }

    #[test]
    fn memory_is_bounded_by_entries_and_bytes() {
        let a = Answered::default();
        let soon = || Deadline::after(Duration::from_secs(1));
        for id in 0..(MAX_ENTRIES as u64 + 100) {
            assert!(matches!(a.claim((PEER, id), soon()), Claim::Run));
            a.finish((PEER, id), Answer::Response(vec![0; 8]));
        }
        assert!(a.len() <= MAX_ENTRIES, "{}", a.len());
        for id in 0..100u64 {
            let key = (PEER, 1 << 40 | id);
            assert!(matches!(a.claim(key, soon()), Claim::Run));
            a.finish(key, Answer::Response(vec![0; KEEP_MAX]));
        }
        assert!(a.memory.lock().unwrap().bytes <= MAX_BYTES);
    }
}
