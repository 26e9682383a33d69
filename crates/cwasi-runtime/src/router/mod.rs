//! The routing state of one runtime: the functions it runs, where other
//! functions are found (node directory, cluster registry), and the route
//! chosen for every edge. It is the [`Router`] every guest's host functions
//! reach through their store, and the one table the host API and `--explain`
//! read. It chooses a path for an edge ([`choose`]) when the edge is first
//! used, and again when the callee's placement changes ([`watch`]) or a
//! call finds nothing at the chosen path ([`Reselect`]).

mod choose;
mod facts;
mod watch;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use wasmtime::Engine;

use crate::call::route::{Edge, Reselect, Route};
use crate::config::{Limits, Mode, ModeOverride};
use crate::deadline::{Deadline, TickClock};
use crate::discovery::{ClusterRegistry, Discovery};
use crate::engine::EpochTicker;
use crate::error::CallError;
use crate::guest::function::{Function, LinkedModule};
use crate::guest::linkers::Linkers;
use crate::guest::state::{CallerId, Router};
use crate::node_dir::{EndpointRecord, NodeDirectory};
use crate::selector::Selection;
use crate::transport::direct::DirectTls;
use crate::transport::remote::{Broker, RemoteEndpoint};
use choose::Chosen;
use facts::Facts;

/// Name under which calls made by the host itself (CLI, tests) are recorded.
pub const HOST_CALLER: &str = "<host>";

/// A function adopted from a served record: its name, namespace, digest
/// and call policy (the rules of its record).
type AdoptedKey = (String, String, String, Option<Vec<String>>);

/// The selector's decision for one edge, for `--explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The calling function.
    pub caller: String,
    /// The called function.
    pub target: String,
    /// The chosen mode and reason, or the error.
    pub outcome: Result<Selection, CallError>,
}

impl std::fmt::Display for Decision {
    /// `caller -> target: mode (reason)`, or `refused: error`: one line of
    /// `--explain` and of the shim's explain output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(s) => write!(
                f,
                "{} -> {}: {} ({})",
                self.caller, self.target, s.mode, s.reason
            ),
            Err(e) => write!(f, "{} -> {}: refused: {e}", self.caller, self.target),
        }
    }
}

/// Where each router's id comes from, for [`LAST_HOST_ROUTE`].
static NEXT_ROUTER_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's last host route, for back-to-back host calls on one
    /// edge: a comparison of two names, with no lock and no hash lookup. It
    /// holds the route weakly, so it never keeps a route (and its
    /// connections) alive past its runtime.
    static LAST_HOST_ROUTE: RefCell<Option<LastHostRoute>> = const { RefCell::new(None) };
}

/// One thread's memo of its last host route.
struct LastHostRoute {
    router: u64,
    namespace: Box<str>,
    target: Box<str>,
    route: Weak<Route>,
}

/// Routes by caller name, then caller namespace, then target.
type RouteTable = HashMap<String, HashMap<String, HashMap<String, Arc<Route>>>>;

/// What a runtime is made of, before it routes anything.
pub(crate) struct RouterParts {
    pub engine: Engine,
    pub ticker: EpochTicker,
    pub linkers: Linkers,
    pub limits: Arc<Limits>,
    pub mode: ModeOverride,
    pub functions: Vec<LinkedModule>,
    pub unloadable: HashMap<String, String>,
    pub node_dir: Option<NodeDirectory>,
    pub embed_served: bool,
    pub node: String,
    pub broker: Option<Arc<Broker>>,
    pub direct: DirectParts,
}

/// The two discovery sources of a runtime, each optional.
pub(crate) struct Sources {
    /// This node's live records (the node directory).
    pub here: Option<Arc<dyn Discovery<Found = EndpointRecord>>>,
    /// Other nodes' announcements (the cluster registry).
    pub elsewhere: Option<Arc<dyn Discovery<Found = RemoteEndpoint>>>,
}

/// This node's side of the direct data plane.
pub(crate) struct DirectParts {
    /// Mutual TLS, if configured.
    pub tls: Option<DirectTls>,
    /// Whether plain TCP may be used.
    pub allow_plain: bool,
}

/// The routing state of one runtime. It owns the epoch ticker, so that
/// functions keep their deadlines for as long as anything can run them.
pub(crate) struct RuntimeRouter {
    pub engine: Engine,
    ticker: EpochTicker,
    linkers: Linkers,
    pub limits: Arc<Limits>,
    mode: ModeOverride,
    functions: HashMap<String, Arc<Function>>,
    /// Functions whose module failed to load, with the reason.
    unloadable: HashMap<String, String>,
    node_dir: Option<NodeDirectory>,
    /// Where functions are served: this node (the node directory) and
    /// other nodes (the cluster registry).
    sources: Sources,
    embed_served: bool,
    /// This node's name, as records and announcements give it.
    pub node: String,
    pub broker: Option<Arc<Broker>>,
    /// The direct data plane's settings.
    pub direct: DirectParts,
    /// Functions served elsewhere on this node and embedded here, by name,
    /// namespace and digest.
    adopted: Mutex<HashMap<AdoptedKey, Arc<Function>>>,
    /// Routes by caller name, caller namespace and target: looked up with
    /// borrowed names, so a host call allocates nothing.
    routes: Mutex<RouteTable>,
    /// This router's id in the threads' [`LAST_HOST_ROUTE`] memos.
    id: u64,
    decisions: Arc<Mutex<Vec<Decision>>>,
    /// Itself, weakly, for the functions it creates later (adopted ones)
    /// and the routes that ask it for a new path.
    me: Weak<RuntimeRouter>,
    /// Set once the placement watcher runs (started with the first route
    /// that can change).
    watching: OnceLock<()>,
}

impl RuntimeRouter {
    /// Builds the router and ties every function to it.
    pub fn new(parts: RouterParts) -> Arc<RuntimeRouter> {
        Arc::new_cyclic(|me: &Weak<RuntimeRouter>| {
            let router: Weak<dyn Router> = me.clone();
            let functions = parts
                .functions
                .into_iter()
                .map(|linked| {
                    let name = linked.name().to_string();
                    let f = Function::new(linked, parts.limits.clone(), router.clone());
                    (name, Arc::new(f))
                })
                .collect();
            RuntimeRouter {
                engine: parts.engine,
                ticker: parts.ticker,
                linkers: parts.linkers,
                limits: parts.limits,
                mode: parts.mode,
                functions,
                unloadable: parts.unloadable,
                sources: Sources {
                    here: parts
                        .node_dir
                        .clone()
                        .map(|d| Arc::new(d) as Arc<dyn Discovery<Found = EndpointRecord>>),
                    elsewhere: parts.broker.clone().map(|b| {
                        Arc::new(ClusterRegistry::new(b))
                            as Arc<dyn Discovery<Found = RemoteEndpoint>>
                    }),
                },
                node_dir: parts.node_dir,
                embed_served: parts.embed_served,
                node: parts.node,
                broker: parts.broker,
                direct: parts.direct,
                adopted: Mutex::new(HashMap::new()),
                routes: Mutex::new(HashMap::new()),
                id: NEXT_ROUTER_ID.fetch_add(1, Ordering::Relaxed),
                decisions: Arc::new(Mutex::new(Vec::new())),
                me: me.clone(),
                watching: OnceLock::new(),
            }
        })
    }

    /// The clock untimed calls read their deadlines from.
    pub fn clock(&self) -> &TickClock {
        self.ticker.clock()
    }

    /// A function loaded in this process.
    pub fn function(&self, name: &str) -> Option<&Arc<Function>> {
        self.functions.get(name)
    }

    /// The route from the caller `caller` of `caller_namespace` to `target`,
    /// chosen when the edge is first used (then kept up to date by the
    /// placement watcher) and logged for `--explain`; a caller due by
    /// `deadline` waits for the cluster registry no longer.
    pub fn route_by_name(
        &self,
        caller: &str,
        caller_namespace: &str,
        target: &str,
        deadline: Deadline,
    ) -> Result<Arc<Route>, CallError> {
        let cached = |routes: &RouteTable| {
            routes
                .get(caller)
                .and_then(|t| t.get(caller_namespace))
                .and_then(|t| t.get(target))
                .cloned()
        };
        if let Some(r) = cached(&self.routes.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(r);
        }
        // Chosen without the table's lock: a registry lookup that waits for
        // the broker holds up no other edge. The lookup is part of the call
        // to `target`: it ends by the callee's deadline.
        let lookup_by = deadline.nested(self.limits.call_timeout);
        let outcome = self.choose(Some(caller), caller_namespace, target, lookup_by);
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = cached(&routes) {
            // Another call on this edge chose first; its route is the one.
            return Ok(r);
        }
        self.record_decision(Decision {
            caller: caller.to_string(),
            target: target.to_string(),
            outcome: outcome
                .as_ref()
                .map(|c| c.selection.clone())
                .map_err(Clone::clone),
        });
        let chosen = outcome?;
        let s = &chosen.selection;
        tracing::info!(caller, target, mode = %s.mode, reason = %s.reason, "route chosen");
        let can_change = s.mode != Mode::Embedded;
        let route = Arc::new(self.new_route(caller, caller_namespace, target, chosen));
        routes
            .entry(caller.to_string())
            .or_default()
            .entry(caller_namespace.to_string())
            .or_default()
            .insert(target.to_string(), route.clone());
        drop(routes);
        if can_change {
            self.watch_placement();
        }
        Ok(route)
    }

    /// A route for an edge, on the path `chosen`, that asks this router for
    /// a new path when a call finds none there.
    fn new_route(&self, caller: &str, namespace: &str, target: &str, chosen: Chosen) -> Route {
        let reselect: Weak<dyn Reselect> = self.me.clone();
        let edge = Edge {
            caller: caller.to_string(),
            namespace: namespace.to_string(),
            target: target.to_string(),
        };
        Route::new(
            edge,
            chosen.path,
            chosen.spill,
            self.limits.clone(),
            self.clock().clone(),
            Some((reselect, chosen.placement)),
        )
    }

    /// Starts the placement watcher, once, if there is a node directory or
    /// a registry to watch.
    fn watch_placement(&self) {
        if self.sources.here.is_none() && self.sources.elsewhere.is_none() {
            return;
        }
        self.watching.get_or_init(|| {
            if let Err(e) = watch::spawn(self.me.clone(), &self.sources) {
                tracing::warn!("cannot start the placement watcher: {e}; routes change only when a call finds nothing at their path");
            }
        });
    }

    /// Chooses `route`'s path again: when `failed` (its key, and the error
    /// of a call that found nothing there) is given, whatever the facts;
    /// otherwise only if the callee's placement changed since the route's
    /// path was chosen. A route on an embedded path keeps it. True if the
    /// route has a new path (or another call gave it one meanwhile).
    /// `look` finds the callee's placement (the node directory and the
    /// registry, or what a look at them for another route found).
    fn reselect(
        &self,
        route: &Route,
        failed: Option<(&str, &CallError)>,
        deadline: Deadline,
        look: &mut dyn FnMut(&str, &str) -> Result<Facts, CallError>,
    ) -> bool {
        // Another re-selection of this route may be under way (a look at
        // the registry): wait for it no longer than this one may take.
        let Some(mut placement) = route.placement_by(deadline) else {
            return false;
        };
        let current = route.path();
        let spill = route.spill_path();
        let spill_key = spill.as_ref().map(|p| p.key.as_str());
        match failed {
            Some((key, _)) if current.key != key && spill_key != Some(key) => return true,
            None if current.mode == Mode::Embedded => return false,
            _ => {}
        }
        let edge = route.edge();
        let facts = match look(&edge.namespace, &edge.target) {
            Ok(facts) => facts,
            Err(e) => {
                tracing::debug!(caller = %edge.caller, target = %edge.target, "cannot look at the callee's placement: {e}");
                return false;
            }
        };
        let fingerprint = facts.fingerprint();
        if failed.is_none() && fingerprint == *placement {
            return false;
        }
        *placement = fingerprint;
        let caller = Some(edge.caller.as_str());
        let chosen = match self.decide(caller, &edge.namespace, &edge.target, facts, deadline) {
            Ok(chosen) => chosen,
            Err(e) => {
                tracing::info!(caller = %edge.caller, target = %edge.target, path = %current.key, "no other path: {e}");
                return false;
            }
        };
        let new_spill = chosen.spill.as_ref().map(|p| p.key.as_str());
        let moved = chosen.path.key != current.key;
        if !moved && new_spill == spill_key {
            return false;
        }
        let why = match failed {
            Some((_, e)) => format!("a call found nothing there: {}", e.message),
            None => "the callee's placement changed".to_string(),
        };
        let from = match spill_key {
            Some(s) => format!("{} (spilling to {s})", current.key),
            None => current.key.clone(),
        };
        tracing::info!(caller = %edge.caller, target = %edge.target, from = %from, to = %chosen.path.key, spill = ?new_spill, why = %why, "route switched");
        self.record_decision(Decision {
            caller: edge.caller.clone(),
            target: edge.target.clone(),
            outcome: Ok(Selection {
                mode: chosen.selection.mode,
                reason: format!("switched from {from} ({why}): {}", chosen.selection.reason),
            }),
        });
        if moved {
            route.switch_to(chosen.path);
        }
        route.set_spill(chosen.spill);
        true
    }

    /// Looks again at the placement of every callee with a route that can
    /// change, and switches those whose best path is another now.
    /// One look per callee and caller namespace serves all its routes.
    fn reconcile(&self) {
        let mut seen: HashMap<(String, String), Result<Facts, CallError>> = HashMap::new();
        for route in self.routes() {
            let deadline = Deadline::after(self.limits.call_timeout.min(watch::LOOKUP_TIMEOUT));
            let mut look = |ns: &str, target: &str| {
                seen.entry((ns.to_string(), target.to_string()))
                    .or_insert_with(|| self.gather(ns, target, deadline))
                    .clone()
            };
            self.reselect(&route, None, deadline, &mut look);
        }
    }

    /// The route of a call the host makes as a function of `namespace`,
    /// due by `deadline`.
    pub fn host_route(
        &self,
        namespace: &str,
        target: &str,
        deadline: Deadline,
    ) -> Result<Arc<Route>, CallError> {
        let memo = LAST_HOST_ROUTE.try_with(|last| {
            let last = last.borrow();
            let l = last.as_ref()?;
            let same = l.router == self.id && &*l.namespace == namespace && &*l.target == target;
            if same {
                l.route.upgrade()
            } else {
                None
            }
        });
        if let Ok(Some(route)) = memo {
            return Ok(route);
        }
        let route = self.route_by_name(HOST_CALLER, namespace, target, deadline)?;
        let _ = LAST_HOST_ROUTE.try_with(|last| {
            *last.borrow_mut() = Some(LastHostRoute {
                router: self.id,
                namespace: namespace.into(),
                target: target.into(),
                route: Arc::downgrade(&route),
            });
        });
        Ok(route)
    }

    /// Which mode a call from `caller_namespace` to `target` takes, and why.
    pub fn explain(&self, caller_namespace: &str, target: &str) -> Result<Selection, CallError> {
        let lookup_by = Deadline::after(self.limits.call_timeout);
        self.choose(None, caller_namespace, target, lookup_by)
            .map(|c| c.selection)
    }

    /// Keeps `decision` for `--explain`, unless the same one was made
    /// before: a refused edge is chosen again on every call (its callee may
    /// appear), and a caller that retries would otherwise add one line, and
    /// one entry, per call.
    fn record_decision(&self, decision: Decision) {
        keep_decision(&self.decisions, decision);
    }

    /// Every distinct routing decision made so far, in order.
    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every function loaded here: its own, then the adopted ones.
    pub fn functions(&self) -> Vec<Arc<Function>> {
        let adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
        self.functions
            .values()
            .chain(adopted.values())
            .cloned()
            .collect()
    }

    /// Every route chosen so far.
    pub fn routes(&self) -> Vec<Arc<Route>> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .values()
            .flat_map(|by_ns| by_ns.values())
            .flat_map(|by_target| by_target.values().cloned())
            .collect()
    }
}

/// How many decisions a runtime keeps for `--explain`: a long-lived process
/// whose callees restart keeps making new ones (each names a pid), and the
/// oldest go first.
const MAX_DECISIONS: usize = 1024;

/// Adds `decision` to `decisions` unless it is there already, dropping the
/// oldest beyond [`MAX_DECISIONS`].
fn keep_decision(decisions: &Mutex<Vec<Decision>>, decision: Decision) {
    let mut decisions = decisions.lock().unwrap_or_else(|p| p.into_inner());
    if decisions.contains(&decision) {
        return;
    }
    if decisions.len() >= MAX_DECISIONS {
        decisions.remove(0);
    }
    decisions.push(decision);
}

impl Router for RuntimeRouter {
    fn route(
        &self,
        caller: &CallerId,
        target: &str,
        deadline: Deadline,
    ) -> Result<Arc<Route>, CallError> {
        self.route_by_name(&caller.name, &caller.namespace, target, deadline)
    }
}

impl Reselect for RuntimeRouter {
    fn reselect_after_failure(
        &self,
        route: &Route,
        failed_key: &str,
        why: &CallError,
        deadline: Deadline,
    ) -> bool {
        // A call found nothing there: look afresh, not at a reused answer.
        if let Some(elsewhere) = &self.sources.elsewhere {
            elsewhere.forget(&route.edge().target);
        }
        let mut look = |ns: &str, target: &str| self.gather(ns, target, deadline);
        self.reselect(route, Some((failed_key, why)), deadline, &mut look)
    }

    fn denied(&self, route: &Route, why: &CallError) {
        let edge = route.edge();
        keep_decision(
            &self.decisions,
            Decision {
                caller: edge.caller.clone(),
                target: edge.target.clone(),
                outcome: Err(why.clone()),
            },
        );
    }
}
