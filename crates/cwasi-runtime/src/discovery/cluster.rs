//! The cluster registry as a discovery source: other nodes' announcements
//! of a function, and the registry's placement events.

use std::sync::Arc;

use super::{Discovery, Events};
use crate::deadline::Deadline;
use crate::error::CallError;
use crate::transport::remote::{Broker, PlacementFollower, RemoteEndpoint};

/// The announcements of the nodes other than this one, through `broker`.
pub(crate) struct ClusterRegistry {
    broker: Arc<Broker>,
}

impl ClusterRegistry {
    /// The registry `broker` keeps, seen from this node (`broker.node()`).
    pub fn new(broker: Arc<Broker>) -> ClusterRegistry {
        ClusterRegistry { broker }
    }
}

impl Discovery for ClusterRegistry {
    type Found = RemoteEndpoint;

    /// The live announcements of `name` by other nodes, in every
    /// namespace; a registry that cannot be asked by `deadline` is an
    /// error (`TRANSPORT` or `TIMEOUT`).
    fn find(&self, name: &str, deadline: Deadline) -> Result<Vec<RemoteEndpoint>, CallError> {
        let mut found = self.broker.find(name, deadline)?;
        found.retain(|r| r.node != self.broker.node());
        Ok(found)
    }

    fn watch(&self, events: &Events) -> std::io::Result<()> {
        let (wake, closed) = (events.clone(), events.clone());
        self.broker.follow_placement(PlacementFollower {
            wake: Box::new(move || wake.wake()),
            closed: Box::new(move || closed.is_closed()),
        })
    }

    fn describe(&self) -> String {
        format!("the cluster registry at {}", self.broker.display())
    }
}
