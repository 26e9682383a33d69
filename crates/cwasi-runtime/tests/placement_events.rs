//! The cluster registry's placement events (docs/protocol.md, "Placement
//! events") against a real redis-server: what a server publishes, what it
//! does not, and a subscriber that keeps following through a restart of
//! Redis and degrades (with the periodic look) where an ACL allows no
//! channels; on a Redis Cluster, an event published on any node reaches a
//! follower of one seed node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cwasi_runtime::broker::{
    Broker, BrokerConfig, PlacementFollower, StreamServer, HEARTBEAT, PLACEMENT_CHANNEL,
};
use cwasi_runtime::Deadline;
use test_support::{RedisCluster, RedisServer};

mod common;
use common::echo_stream_server;

/// Serves an echo handler as `ns/echo` through `config`'s broker.
fn echo_server(config: BrokerConfig) -> StreamServer {
    echo_stream_server(config, Arc::default(), Arc::default())
}

/// The next message on the placement channel, read with the `redis` crate
/// as another implementation would, within `within`, if any.
fn next_message(pubsub: &mut redis::PubSub<'_>, within: Duration) -> Option<String> {
    pubsub.set_read_timeout(Some(within)).unwrap();
    match pubsub.get_message() {
        Ok(m) => Some(m.get_payload::<String>().unwrap()),
        Err(e) if e.is_timeout() => None,
        Err(e) => panic!("reading the placement channel: {e}"),
    }
}

#[test]
fn a_server_publishes_its_announcement_and_withdrawal_and_not_its_heartbeats() {
    let redis = RedisServer::start();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut events = conn.as_pubsub();
    events.subscribe(PLACEMENT_CHANNEL).unwrap();
    let server = echo_server(BrokerConfig::new(redis.url(), "node2"));
    assert_eq!(
        next_message(&mut events, Duration::from_secs(10)).as_deref(),
        Some("ns/echo"),
        "no event for the announcement"
    );
    // Past a heartbeat, which only renews: no event.
    assert_eq!(
        next_message(&mut events, HEARTBEAT + Duration::from_secs(1)),
        None,
        "a renewal published an event"
    );
    drop(server);
    assert_eq!(
        next_message(&mut events, Duration::from_secs(10)).as_deref(),
        Some("ns/echo"),
        "no event for the withdrawal"
    );
}

/// A follower's state as a test sees it.
struct Followed {
    /// How often it woke.
    woken: Arc<AtomicU64>,
    /// What it last said of the subscription.
    following: Arc<AtomicBool>,
    /// Set to end it.
    closed: Arc<AtomicBool>,
}

/// Follows the placement events of `config`'s broker.
fn follow(config: BrokerConfig) -> Followed {
    let f = Followed {
        woken: Arc::default(),
        following: Arc::default(),
        closed: Arc::default(),
    };
    let broker = Broker::new(config).unwrap();
    let (w, s, c) = (f.woken.clone(), f.following.clone(), f.closed.clone());
    broker
        .follow_placement(PlacementFollower {
            wake: Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
            following: Box::new(move |now| s.store(now, Ordering::SeqCst)),
            closed: Box::new(move || c.load(Ordering::SeqCst)),
        })
        .unwrap();
    f
}

/// Publishes an event by hand until the follower wakes more than `before`
/// times; false if it did not within `within`.
fn wakes(redis: &RedisServer, woken: &AtomicU64, within: Duration) -> bool {
    let before = woken.load(Ordering::SeqCst);
    let until = Instant::now() + within;
    while Instant::now() < until {
        let _ = redis.command(&["PUBLISH", PLACEMENT_CHANNEL, "ns/f"]);
        std::thread::sleep(Duration::from_millis(50));
        if woken.load(Ordering::SeqCst) > before + 1 {
            return true;
        }
    }
    false
}

#[test]
fn a_follower_wakes_on_events_and_follows_again_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let Followed {
        woken,
        following,
        closed,
    } = follow(BrokerConfig::new(redis.url(), "node1"));
    assert!(wakes(&redis, &woken, Duration::from_secs(10)), "no wake-up");
    assert!(following.load(Ordering::SeqCst));
    redis.kill();
    std::thread::sleep(Duration::from_millis(300));
    redis.restart();
    assert!(
        wakes(&redis, &woken, Duration::from_secs(20)),
        "the follower did not subscribe again after Redis restarted"
    );
    closed.store(true, Ordering::SeqCst);
}

#[test]
fn without_channel_rights_servers_still_announce_and_callers_still_find() {
    let redis = RedisServer::start();
    // A user who may run every command on every key, but use no channel:
    // what Redis 7 gives a new ACL user by default (acl-pubsub-default).
    for cmd in [
        &[
            "ACL",
            "SETUSER",
            "cwasi",
            "on",
            ">pw",
            "~*",
            "resetchannels",
            "+@all",
        ][..],
        &["ACL", "SETUSER", "default", "off"][..],
    ] {
        assert_eq!(redis.command(cmd).as_deref(), Some("+OK"), "{cmd:?}");
    }
    let config = |node: &str| {
        BrokerConfig::new(format!("redis://cwasi:pw@127.0.0.1:{}", redis.port()), node)
    };
    let Followed {
        woken,
        following,
        closed,
    } = follow(config("node1"));
    let _server = echo_server(config("node2"));
    let caller = Broker::new(config("node1")).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let found = caller
            .find("echo", Deadline::after(Duration::from_secs(2)))
            .unwrap();
        if found.iter().any(|r| r.node == "node2") {
            break;
        }
        assert!(Instant::now() < until, "the announcement was not found");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(woken.load(Ordering::SeqCst), 0, "woken without a channel");
    assert!(
        !following.load(Ordering::SeqCst),
        "following without a channel"
    );
    closed.store(true, Ordering::SeqCst);
}

#[test]
fn on_a_cluster_a_follower_of_one_node_hears_an_announcement_made_on_another() {
    let cluster = RedisCluster::start(3, 0);
    let Followed { woken, closed, .. } = follow(BrokerConfig::new(cluster.url(), "node1"));
    let subscribed = Instant::now() + Duration::from_secs(10);
    while woken.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < subscribed, "the follower never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = woken.load(Ordering::SeqCst);
    let _server = echo_server(BrokerConfig::new(cluster.url(), "node2"));
    let heard = Instant::now() + Duration::from_secs(10);
    while woken.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < heard,
            "the announcement's event did not reach the follower"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    closed.store(true, Ordering::SeqCst);
}
