//! The cluster registry as a discovery source: other nodes' announcements
//! of a function, and the registry's placement events.
//!
//! While the events reach this node, an answer of the registry is reused
//! for up to [`REUSE_FOR`], until the next event: a change of placement
//! publishes one, so the answer cannot be out of date by more than an
//! event's way through Redis. That spares the registry a lookup per callee
//! at every periodic look (every 500 ms, per runtime). Without the events
//! (not subscribed yet, an ACL without channels, Redis unreachable), every
//! lookup asks the registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Discovery, Events};
use crate::deadline::Deadline;
use crate::error::CallError;
use crate::transport::remote::{Broker, PlacementFollower, RemoteEndpoint};

/// How long an answer is reused while the events reach this node: the
/// bound on how late an announcement that expired without a withdrawal
/// (its node died) is seen, on top of its own time to live.
pub const REUSE_FOR: Duration = Duration::from_secs(5);

/// Most answers kept; beyond, all are dropped and asked again.
const MAX_ANSWERS: usize = 4096;

/// The announcements of the nodes other than this one, through `broker`.
pub(crate) struct ClusterRegistry {
    broker: Arc<Broker>,
    answers: Arc<Answers>,
}

/// The registry's recent answers, and whether they may be reused.
#[derive(Default)]
struct Answers {
    /// Whether the placement events reach this node now.
    following: AtomicBool,
    /// Bumped by every placement event and every change of `following`:
    /// an answer looked up before the last one is not reused.
    generation: AtomicU64,
    by_name: Mutex<HashMap<String, Answer>>,
}

/// One answer of the registry.
struct Answer {
    generation: u64,
    at: Instant,
    found: Vec<RemoteEndpoint>,
}

impl ClusterRegistry {
    /// The registry `broker` keeps, seen from this node (`broker.node()`).
    pub fn new(broker: Arc<Broker>) -> ClusterRegistry {
        ClusterRegistry {
            broker,
            answers: Arc::default(),
        }
    }

    /// A recent answer about `name` that is still good at `generation`.
    fn reusable(&self, name: &str, generation: u64) -> Option<Vec<RemoteEndpoint>> {
        if !self.answers.following.load(Ordering::SeqCst) {
            return None;
        }
        let by_name = self
            .answers
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        by_name
            .get(name)
            .filter(|a| a.generation == generation && a.at.elapsed() < REUSE_FOR)
            .map(|a| a.found.clone())
    }
}

impl Discovery for ClusterRegistry {
    type Found = RemoteEndpoint;

    /// The live announcements of `name` by other nodes, in every
    /// namespace; a registry that cannot be asked by `deadline` is an
    /// error (`TRANSPORT` or `TIMEOUT`).
    fn find(&self, name: &str, deadline: Deadline) -> Result<Vec<RemoteEndpoint>, CallError> {
        // Read before the lookup: an event during it makes its answer old.
        let generation = self.answers.generation.load(Ordering::SeqCst);
        if let Some(found) = self.reusable(name, generation) {
            return Ok(found);
        }
        let mut found = self.broker.find(name, deadline)?;
        found.retain(|r| r.node != self.broker.node());
        let mut by_name = self
            .answers
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if by_name.len() >= MAX_ANSWERS {
            by_name.clear();
        }
        by_name.insert(
            name.to_string(),
            Answer {
                generation,
                at: Instant::now(),
                found: found.clone(),
            },
        );
        Ok(found)
    }

    fn forget(&self, name: &str) {
        let mut by_name = self
            .answers
            .by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        by_name.remove(name);
    }

    fn watch(&self, events: &Events) -> std::io::Result<()> {
        let (events, closed) = (events.clone(), events.clone());
        let (woken, following) = (self.answers.clone(), self.answers.clone());
        self.broker.follow_placement(PlacementFollower {
            wake: Box::new(move || {
                woken.generation.fetch_add(1, Ordering::SeqCst);
                events.wake();
            }),
            following: Box::new(move |now| {
                following.following.store(now, Ordering::SeqCst);
                following.generation.fetch_add(1, Ordering::SeqCst);
            }),
            closed: Box::new(move || closed.is_closed()),
        })
    }

    fn describe(&self) -> String {
        format!("the cluster registry at {}", self.broker.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::remote::{BrokerConfig, PLACEMENT_CHANNEL};
    use test_support::RedisServer;

    /// How many lookups the registry has answered: each lookup of a
    /// function served nowhere makes two `SMEMBERS` (its namespaces, and
    /// those of the version-3 keys).
    fn lookups(redis: &RedisServer) -> u64 {
        let stats = redis
            .command_text(&["INFO", "commandstats"])
            .unwrap_or_default();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_smembers:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            / 2
    }

    #[test]
    fn answers_are_reused_only_while_events_arrive_and_until_the_next_one() {
        let redis = RedisServer::start();
        let broker = Broker::new(BrokerConfig::new(redis.url(), "n1")).unwrap();
        let registry = ClusterRegistry::new(broker);
        let find = || {
            registry
                .find("f", Deadline::after(Duration::from_secs(5)))
                .unwrap()
        };
        // Not following the events yet: every lookup asks.
        find();
        find();
        assert_eq!(lookups(&redis), 2);

        let events = Events::new();
        registry.watch(&events).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !registry.answers.following.load(Ordering::SeqCst) {
            assert!(Instant::now() < until, "never subscribed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The first lookup after the subscription's wake-up asks; the
        // next ones reuse its answer.
        let settled = Instant::now() + Duration::from_secs(10);
        while registry.answers.generation.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < settled, "no wake-up after subscribing");
            std::thread::sleep(Duration::from_millis(5));
        }
        find();
        find();
        find();
        assert_eq!(lookups(&redis), 3, "a second lookup asked again");

        // An event: the next lookup asks again. (The wake-up that follows
        // the subscription may still be under way: wait for this event's.)
        let generation = || registry.answers.generation.load(Ordering::SeqCst);
        let before = generation();
        redis.command(&["PUBLISH", PLACEMENT_CHANNEL, "a/f"]);
        let until = Instant::now() + Duration::from_secs(10);
        while generation() == before {
            assert!(Instant::now() < until, "no event");
            std::thread::sleep(Duration::from_millis(5));
        }
        find();
        assert_eq!(lookups(&redis), 4, "an event did not make it ask again");
        find();
        assert_eq!(lookups(&redis), 4);

        // A failed call forgets the answer.
        registry.forget("f");
        find();
        assert_eq!(lookups(&redis), 5);
        events.close();
    }
}
