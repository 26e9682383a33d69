//! The mode policy of `docs/architecture.md`: where a callee lives and whom it
//! trusts decide the data path. The guest never names a mode.

use std::fmt;
use std::sync::Arc;

use crate::broker::RemoteEndpoint;
use crate::config::{Mode, ModeOverride};
use crate::error::{CallError, ErrorCode};
use crate::registry::EndpointRecord;
use crate::runtime::FunctionEntry;
use std::path::Path;

/// The mode chosen for a call, and why; shown by `--explain` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The data path.
    pub mode: Mode,
    /// Why this path, in words.
    pub reason: String,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.mode, self.reason)
    }
}

/// Where a chosen callee can be reached.
pub(crate) enum Endpoint {
    /// Loaded in this process.
    Embedded(Arc<FunctionEntry>),
    /// Served by another process on this node.
    Local(EndpointRecord),
    /// Served on another node, reached through the broker.
    Remote(RemoteEndpoint),
}

/// What the selector knows about where functions are.
pub(crate) struct Candidates<'a> {
    /// A function of that name loaded in this process, if any.
    pub loaded: Option<&'a Arc<FunctionEntry>>,
    /// The node-directory record `loaded` was embedded from, when it is a
    /// function another process of this node serves.
    pub adopted_from: Option<&'a EndpointRecord>,
    /// Names of everything loaded, for the not-found message.
    pub loaded_names: Vec<&'a str>,
    /// Live endpoints of that name on this node, the caller's namespace first.
    pub local: Vec<EndpointRecord>,
    /// The node directory searched, if any.
    pub node_dir: Option<&'a Path>,
    /// Live announcements on other nodes, the caller's namespace first.
    pub remote: Vec<RemoteEndpoint>,
    /// The broker asked, and this node's name, if there is a broker.
    pub broker: Option<(&'a str, &'a str)>,
}

/// Applies the policy:
/// 1. embedded, if the callee's module is loaded here and shares the caller's
///    namespace;
/// 2. local, if a live endpoint is on this node;
/// 3. remote, if the callee is registered on another node;
/// 4. otherwise "function X not found (looked in: ...)".
///
/// A forced mode is honoured only where it is possible.
pub(crate) fn select(
    caller_namespace: &str,
    target: &str,
    candidates: Candidates<'_>,
    mode: ModeOverride,
) -> Result<(Selection, Endpoint), CallError> {
    let looked_in = || {
        let mut places = vec![format!(
            "this process [{}]",
            candidates.loaded_names.join(", ")
        )];
        match candidates.node_dir {
            Some(d) => places.push(format!("node directory {}", d.display())),
            None => places.push("no node directory".to_string()),
        }
        match candidates.broker {
            Some((url, node)) => {
                places.push(format!("cluster registry at {url} (this node: {node})"))
            }
            None => places.push("no broker (CWASI_REDIS_URL unset)".to_string()),
        }
        format!("looked in: {}", places.join(", "))
    };
    let embeddable = candidates
        .loaded
        .filter(|f| f.spec.namespace == caller_namespace);
    let wants = |m: Mode| mode == ModeOverride::Auto || mode == ModeOverride::Force(m);

    if let (Some(f), true) = (embeddable, wants(Mode::Embedded)) {
        let ns = &f.spec.namespace;
        let mut reason = match candidates.adopted_from {
            Some(r) => format!(
                "'{target}' is served on this node (pid {}) in the caller's namespace '{ns}'; \
                 its module ({}) was loaded from the node directory and runs in this process",
                r.pid, r.digest
            ),
            None => format!("'{target}' is loaded in this process and shares namespace '{ns}'"),
        };
        if mode != ModeOverride::Auto {
            reason = format!("forced; {reason}");
        }
        return Ok((
            Selection {
                mode: Mode::Embedded,
                reason,
            },
            Endpoint::Embedded(f.clone()),
        ));
    }
    if mode == ModeOverride::Force(Mode::Embedded) {
        let elsewhere = candidates
            .loaded
            .map(|f| f.spec.namespace.as_str())
            .or_else(|| candidates.local.first().map(|r| r.namespace.as_str()))
            .filter(|ns| *ns != caller_namespace);
        let why = match elsewhere {
            Some(ns) => format!(
                "'{target}' is in namespace '{ns}' and the caller in '{caller_namespace}'; \
                 functions of different namespaces never share a VM"
            ),
            None => format!(
                "the module of '{target}' is not loaded here ({})",
                looked_in()
            ),
        };
        return Err(CallError::new(
            ErrorCode::Denied,
            format!("mode 'embedded' is impossible: {why}"),
        ));
    }
    if let (Some(r), true) = (candidates.local.first(), wants(Mode::Local)) {
        let mut reason = format!(
            "'{target}' is served on this node (namespace '{}', pid {}, {})",
            r.namespace,
            r.pid,
            r.socket.display()
        );
        if mode != ModeOverride::Auto {
            reason = format!("forced; {reason}");
        } else if let Some(f) = candidates.loaded {
            reason.push_str(&format!(
                "; not embedded: it is in namespace '{}', the caller in '{caller_namespace}'",
                f.spec.namespace
            ));
        } else {
            reason.push_str("; its module is not loaded in this process");
        }
        return Ok((
            Selection {
                mode: Mode::Local,
                reason,
            },
            Endpoint::Local(r.clone()),
        ));
    }
    if let (Some(r), true) = (candidates.remote.first(), wants(Mode::Remote)) {
        let mut reason = format!(
            "'{target}' is served on node '{}' (namespace '{}'), through the broker",
            r.node, r.namespace
        );
        if mode != ModeOverride::Auto {
            reason = format!("forced; {reason}");
        } else {
            reason.push_str("; it is neither loaded in this process nor served on this node");
        }
        return Ok((
            Selection {
                mode: Mode::Remote,
                reason,
            },
            Endpoint::Remote(r.clone()),
        ));
    }
    if let ModeOverride::Force(m) = mode {
        return Err(CallError::new(
            ErrorCode::Denied,
            format!(
                "mode '{m}' is impossible: no {m} endpoint serves '{target}' ({})",
                looked_in()
            ),
        ));
    }
    let detail = match candidates.loaded {
        Some(f) => format!(
            ": it is loaded here in namespace '{}', but the caller is in '{caller_namespace}', \
             so it cannot be embedded, and no process on this node serves it",
            f.spec.namespace
        ),
        None => String::new(),
    };
    Err(CallError::new(
        ErrorCode::UnknownFunction,
        format!("function '{target}' not found{detail} ({})", looked_in()),
    ))
}
