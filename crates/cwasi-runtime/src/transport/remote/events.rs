//! Placement events of the cluster registry. A server that announces a
//! function anew, changes its record (a data address that appears or
//! goes), or withdraws it, publishes `<ns>/<name>` on
//! [`PLACEMENT_CHANNEL`]; a heartbeat that only renews publishes nothing.
//! A caller's runtime subscribes ([`Broker::follow_placement`]) and looks
//! at its routes again at once, rather than at its next periodic look.
//!
//! Events are a hint, never the truth: the registry's keys are. Publishing
//! is best effort (an ACL that allows no channels, a broker that is down),
//! and a subscriber that cannot subscribe keeps trying with backoff while
//! the periodic look covers what it misses.

use std::time::Duration;

use redis::Client;

use super::conn::Broker;
use super::registry::sleep_unless_stopped;
use crate::deadline::{BROKER_CONNECT_TIMEOUT, BROKER_OP_TIMEOUT};

/// The channel placement events go to. Classic `PUBLISH`: a Redis Cluster
/// forwards it to every node, so a subscriber needs one node only.
pub const PLACEMENT_CHANNEL: &str = "cwasi:placement";

/// How long a subscriber waits for a message before it checks whether it
/// should end.
const LISTEN_POLL: Duration = Duration::from_millis(100);
/// The first wait after a failed subscription, doubled up to
/// [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between two attempts to subscribe.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a subscriber does with events, and when it ends.
pub struct PlacementFollower {
    /// Called for every event, and once after each (re)subscription, since
    /// events may have been missed meanwhile.
    pub wake: Box<dyn Fn() + Send>,
    /// Told `true` once subscribed (before that first wake-up), `false`
    /// when the subscription failed: whether events reach this node now.
    pub following: Box<dyn Fn(bool) + Send>,
    /// True once the subscriber should end.
    pub closed: Box<dyn Fn() -> bool + Send>,
}

impl Broker {
    /// Publishes that `name` in `ns` may be served elsewhere now. Best
    /// effort: a failure is logged at debug level and changes nothing.
    pub(super) async fn publish_placement(&self, ns: &str, name: &str) {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(PLACEMENT_CHANNEL).arg(format!("{ns}/{name}"));
        if let Err(e) = self.query(&publish).await {
            tracing::debug!(name, ns, "cannot publish a placement event: {e}");
        }
    }

    /// Follows the placement events on a thread of its own, with
    /// `follower`, until `follower.closed()`.
    pub fn follow_placement(&self, follower: PlacementFollower) -> std::io::Result<()> {
        let clients = self.node_clients();
        let display = self.display().to_string();
        if clients.is_empty() {
            return Err(std::io::Error::other(format!(
                "no node of the broker {display} to subscribe to"
            )));
        }
        std::thread::Builder::new()
            .name("cwasi-registry-events".into())
            .spawn(move || follow(&clients, &display, &follower))?;
        Ok(())
    }
}

/// The subscriber's loop: subscribe to one node after the other, with
/// backoff, until closed.
fn follow(clients: &[Client], at: &str, f: &PlacementFollower) {
    let mut failing = false;
    let mut backoff = BACKOFF_MIN;
    for client in clients.iter().cycle() {
        if (f.closed)() {
            return;
        }
        let mut subscribed = || {
            if failing {
                tracing::info!("following the cluster registry's placement events again");
            }
            failing = false;
            backoff = BACKOFF_MIN;
            (f.following)(true);
            (f.wake)();
        };
        match listen(client, f, &mut subscribed) {
            Ok(()) => return,
            Err(e) => {
                (f.following)(false);
                if !failing {
                    tracing::warn!(
                        "cannot follow the placement events of the cluster registry at {at}: \
                         {e}; its changes are seen by the periodic look instead"
                    );
                }
                failing = true;
            }
        }
        sleep_unless_stopped(backoff, || (f.closed)());
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Subscribes on `client`'s node, calls `subscribed`, then wakes for each
/// message until closed (`Ok`) or the connection fails (`Err`).
fn listen(
    client: &Client,
    f: &PlacementFollower,
    subscribed: &mut dyn FnMut(),
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(BROKER_CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(BROKER_OP_TIMEOUT))?;
    conn.set_write_timeout(Some(BROKER_OP_TIMEOUT))?;
    // As an ordinary command, so that a refusal (an ACL that allows no
    // channels: `NOPERM`) is an error here; redis-rs's `PubSub::subscribe`
    // does not read its reply.
    let reply: redis::Value = redis::cmd("SUBSCRIBE")
        .arg(PLACEMENT_CHANNEL)
        .query(&mut conn)?;
    reply.extract_error()?;
    let mut pubsub = conn.as_pubsub();
    pubsub.set_read_timeout(Some(LISTEN_POLL))?;
    subscribed();
    while !(f.closed)() {
        match pubsub.get_message() {
            Ok(_) => (f.wake)(),
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
