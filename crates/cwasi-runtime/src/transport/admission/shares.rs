//! Places that peers share fairly: at most a number in all, and at most a
//! smaller number per peer, so that one peer cannot take them all while
//! others wait. A server gives them to requests whose payload is still
//! arriving (a slow sender holds a call slot while it sends) and, on the
//! direct data plane, to TLS handshakes in progress (a peer that never
//! sends its ClientHello holds a thread).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Places for peers keyed by `K` (a uid, an IP address).
pub(crate) struct Shares<K: Copy + Eq + Hash>(Arc<Inner<K>>);

struct Inner<K> {
    state: Mutex<State<K>>,
    freed: Condvar,
    cap: usize,
    per_peer: usize,
}

struct State<K> {
    taken: usize,
    by_peer: HashMap<K, usize>,
    waiting: usize,
}

/// One place taken by a peer; given back when dropped.
pub(crate) struct Share<K: Copy + Eq + Hash> {
    inner: Arc<Inner<K>>,
    peer: K,
}

impl<K: Copy + Eq + Hash> Shares<K> {
    /// At most `cap` places in all (at least one), and at most `per_peer`
    /// (at least one, at most `cap`) for one peer.
    pub fn new(cap: usize, per_peer: usize) -> Shares<K> {
        let cap = cap.max(1);
        Shares(Arc::new(Inner {
            state: Mutex::new(State {
                taken: 0,
                by_peer: HashMap::new(),
                waiting: 0,
            }),
            freed: Condvar::new(),
            cap,
            per_peer: per_peer.clamp(1, cap),
        }))
    }

    /// The places for peers of a server with `slots` call slots: half of
    /// them in all, and half of those for one peer.
    pub fn half_of(slots: usize) -> Shares<K> {
        let cap = (slots / 2).max(1);
        Shares::new(cap, (cap / 2).max(1))
    }

    /// The most places in all.
    pub fn cap(&self) -> usize {
        self.0.cap
    }

    /// The most places one peer may hold.
    pub fn per_peer(&self) -> usize {
        self.0.per_peer
    }

    /// A place for `peer` if one is free now.
    pub fn try_take(&self, peer: K) -> Option<Share<K>> {
        self.take(peer, Duration::ZERO)
    }

    /// A place for `peer`, waiting at most `wait` for one to free.
    pub fn take(&self, peer: K, wait: Duration) -> Option<Share<K>> {
        let inner = &self.0;
        let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + wait;
        loop {
            let mine = s.by_peer.get(&peer).copied().unwrap_or(0);
            if s.taken < inner.cap && mine < inner.per_peer {
                s.taken += 1;
                *s.by_peer.entry(peer).or_insert(0) += 1;
                return Some(Share {
                    inner: inner.clone(),
                    peer,
                });
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s.waiting += 1;
            s = inner
                .freed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            s.waiting -= 1;
        }
    }
}

impl<K: Copy + Eq + Hash> Drop for Share<K> {
    fn drop(&mut self) {
        let mut s = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        s.taken -= 1;
        if let Some(n) = s.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.by_peer.remove(&self.peer);
            }
        }
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            // Waiters may be of different peers: each checks its own.
            self.inner.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_gets_its_share_and_others_the_rest() {
        let shares: Shares<u32> = Shares::new(4, 2);
        let a1 = shares.try_take(1).unwrap();
        let _a2 = shares.try_take(1).unwrap();
        assert!(shares.try_take(1).is_none(), "over the per-peer share");
        let _b1 = shares.try_take(2).unwrap();
        let _b2 = shares.try_take(2).unwrap();
        assert!(shares.try_take(3).is_none(), "over the cap");
        drop(a1);
        assert!(shares.try_take(3).is_some(), "a freed place");
    }

    #[test]
    fn a_waiter_gets_a_place_when_one_frees() {
        let shares: Shares<u32> = Shares::new(1, 1);
        let held = shares.try_take(7).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| shares.take(8, Duration::from_secs(10)).is_some());
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
            assert!(waiter.join().unwrap());
        });
        let started = Instant::now();
        let _held = shares.try_take(9);
        assert!(shares.take(10, Duration::from_millis(30)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn the_places_of_a_server_are_half_its_slots_and_a_quarter_per_peer() {
        let table = [(1usize, 1usize, 1usize), (2, 1, 1), (16, 8, 4), (5, 2, 1)];
        for (slots, cap, per_peer) in table {
            let s: Shares<u32> = Shares::half_of(slots);
            assert_eq!((s.cap(), s.per_peer()), (cap, per_peer), "{slots} slots");
        }
    }
}
