//! The routing state of one runtime: the functions it runs, where other
//! functions are found (node directory, cluster registry), and the route
//! chosen for every edge. It is the [`Router`] every guest's host functions
//! reach through their store, and the one table the host API and `--explain`
//! read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use wasmtime::Engine;

use crate::call::route::Route;
use crate::config::{FunctionSpec, Limits, Mode, ModeOverride};
use crate::deadline::{Deadline, TickClock};
use crate::engine::{load_module_bytes, EpochTicker};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::{Function, LinkedModule};
use crate::guest::linkers::Linkers;
use crate::guest::state::{CallerId, Router};
use crate::node_dir::{EndpointRecord, NodeDirectory};
use crate::selector::{select, Choice, DirectProbe, Loaded, Placement, Selection};
use crate::transport::direct::client::{DirectClient, PathReport};
use crate::transport::direct::peer::{ClientSetup, Failure, Peer, CONNECT_TIMEOUT};
use crate::transport::direct::DirectTls;
use crate::transport::embedded::EmbeddedClient;
use crate::transport::local::client::LocalClient;
use crate::transport::remote::RemoteClient;
use crate::transport::remote::{Broker, RemoteEndpoint};
use crate::transport::Transport;

/// Name under which calls made by the host itself (CLI, tests) are recorded.
pub const HOST_CALLER: &str = "<host>";

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
    embed_served: bool,
    /// This node's name, as records and announcements give it.
    pub node: String,
    pub broker: Option<Arc<Broker>>,
    /// The direct data plane's settings.
    pub direct: DirectParts,
    /// Functions served elsewhere on this node and embedded here, by name,
    /// namespace and digest.
    adopted: Mutex<HashMap<(String, String, String), Arc<Function>>>,
    /// Routes by caller name, caller namespace and target: looked up with
    /// borrowed names, so a host call allocates nothing.
    routes: Mutex<RouteTable>,
    /// This router's id in the threads' [`LAST_HOST_ROUTE`] memos.
    id: u64,
    decisions: Arc<Mutex<Vec<Decision>>>,
    /// Itself, weakly, for the functions it creates later (adopted ones).
    me: Weak<RuntimeRouter>,
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
    /// chosen once per edge and logged for `--explain`; a caller due by
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
                .map(|(s, _)| s.clone())
                .map_err(Clone::clone),
        });
        let (selection, transport) = outcome?;
        tracing::info!(caller, target, mode = %selection.mode, reason = %selection.reason, "route chosen");
        let route = Arc::new(Route::new(
            caller,
            target,
            selection.mode,
            transport,
            self.limits.clone(),
            self.clock().clone(),
        ));
        routes
            .entry(caller.to_string())
            .or_default()
            .entry(caller_namespace.to_string())
            .or_default()
            .insert(target.to_string(), route.clone());
        Ok(route)
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
            .map(|(s, _)| s)
    }

    /// Keeps `decision` for `--explain`, unless the same one was made
    /// before: a refused edge is chosen again on every call (its callee may
    /// appear), and a caller that retries would otherwise add one line, and
    /// one entry, per call.
    fn record_decision(&self, decision: Decision) {
        let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        if !decisions.contains(&decision) {
            decisions.push(decision);
        }
    }

    /// Every distinct routing decision made so far, in order.
    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every route chosen so far.
    /// Every function loaded here: its own, then the adopted ones.
    pub fn functions(&self) -> Vec<Arc<Function>> {
        let adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
        self.functions
            .values()
            .chain(adopted.values())
            .cloned()
            .collect()
    }

    pub fn routes(&self) -> Vec<Arc<Route>> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .values()
            .flat_map(|by_ns| by_ns.values())
            .flat_map(|by_target| by_target.values().cloned())
            .collect()
    }

    /// Gathers where `target` is, asks the selector, and builds the client
    /// of the chosen transport.
    fn choose(
        &self,
        caller: Option<&str>,
        caller_namespace: &str,
        target: &str,
        lookup_by: Deadline,
    ) -> Result<(Selection, Box<dyn Transport>), CallError> {
        if let Some(reason) = self.unloadable.get(target) {
            return Err(CallError::new(
                ErrorCode::NotCallable,
                format!("function '{target}' cannot be called: {reason}"),
            ));
        }
        let mut loaded_names: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        loaded_names.sort_unstable();
        let mut local = match &self.node_dir {
            Some(d) => d.lookup_any(target),
            None => Vec::new(),
        };
        // The caller's own namespace first.
        local.sort_by_key(|r| r.namespace != caller_namespace);
        let here = self.functions.get(target);
        let embeddable_here = here.is_some_and(|f| f.spec.namespace == caller_namespace);
        let (remote, registry_error) = if local.is_empty() && !embeddable_here {
            match self.announced_elsewhere(caller_namespace, target, lookup_by) {
                Ok(remote) => (remote, None),
                Err(e) => (Vec::new(), Some(e)),
            }
        } else {
            (Vec::new(), None)
        };
        let (probe, peers) = match remote.first() {
            Some(r) if self.mode.allows(Mode::RemoteDirect) => {
                let (probe, peers) = self.probe_direct(&remote, &r.namespace, lookup_by);
                (Some(probe), peers)
            }
            _ => (None, Vec::new()),
        };
        let adopted = self.adopt_served(caller_namespace, target, here, &local);
        let function = adopted.as_ref().map(|(f, _)| f).or(here);
        let placement = Placement {
            caller_namespace,
            target,
            loaded: function.map(|f| Loaded {
                namespace: &f.spec.namespace,
                adopted_from: adopted.as_ref().map(|(_, r)| r),
            }),
            loaded_names: &loaded_names,
            local: &local,
            node_dir: self.node_dir.as_ref().map(|d| d.root()),
            remote: &remote,
            registry_error: registry_error.as_ref(),
            broker: self.broker.as_ref().map(|b| (b.display(), b.node())),
            direct: probe.as_ref(),
            mode: self.mode,
        };
        let (selection, choice) = select(&placement)?;
        let max = self.limits.max_payload_bytes;
        let from_host = caller == Some(HOST_CALLER);
        let transport: Box<dyn Transport> = match (choice, function, &self.broker) {
            (Choice::Embedded, Some(f), _) if from_host => Box::new(EmbeddedClient::held(f)),
            (Choice::Embedded, Some(f), _) => Box::new(EmbeddedClient::new(f)),
            (Choice::Local(r), ..) => Box::new(LocalClient::new(
                target.to_string(),
                r.socket.clone(),
                max,
                self.limits.spin_budget,
            )),
            (Choice::RemoteDirect(r), _, Some(broker)) => Box::new(DirectClient::new(
                target.to_string(),
                r.namespace.clone(),
                max,
                self.client_setup(),
                broker.clone(),
                peers,
                self.path_report(caller.unwrap_or(HOST_CALLER), target),
            )),
            (Choice::RemoteBroker(r), _, Some(broker)) => Box::new(RemoteClient::new(
                broker.clone(),
                r.namespace.clone(),
                target.to_string(),
                max,
            )),
            _ => unreachable!("the selector chooses only among the candidates it was given"),
        };
        Ok((selection, transport))
    }

    /// How this node connects to others directly.
    fn client_setup(&self) -> ClientSetup {
        ClientSetup {
            tls: self.direct.tls.as_ref().map(|t| t.client.clone()),
            allow_plain: self.direct.allow_plain,
        }
    }

    /// Where a route's transport says that it changed paths: the log, and
    /// the decisions `--explain` prints.
    fn path_report(&self, caller: &str, target: &str) -> PathReport {
        let decisions = Arc::downgrade(&self.decisions);
        let (caller, target) = (caller.to_string(), target.to_string());
        Arc::new(move |what: String| {
            tracing::warn!(caller = %caller, target = %target, "{what}");
            let Some(decisions) = decisions.upgrade() else {
                return;
            };
            let mode = if what.starts_with("remote-direct") {
                Mode::RemoteDirect
            } else {
                Mode::RemoteBroker
            };
            decisions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Decision {
                    caller: caller.clone(),
                    target: target.clone(),
                    outcome: Ok(Selection { mode, reason: what }),
                });
        })
    }

    /// Tries the direct data plane to every node of `namespace` in
    /// `remote`, by `deadline`: the reachable ones, with a pooled
    /// connection each, and why the others are not.
    fn probe_direct(
        &self,
        remote: &[RemoteEndpoint],
        namespace: &str,
        deadline: Deadline,
    ) -> (DirectProbe, Vec<Arc<Peer>>) {
        let setup = self.client_setup();
        let mut probe = DirectProbe::default();
        let mut peers = Vec::new();
        for r in remote.iter().filter(|r| r.namespace == namespace) {
            let peer = match Peer::new(&r.node, r.data_addr.as_deref(), &setup) {
                Ok(p) => p,
                Err(why) => {
                    probe.unreachable.push(why);
                    continue;
                }
            };
            match peer.warm_up(deadline.nested(CONNECT_TIMEOUT * 3)) {
                Ok(()) => {
                    probe
                        .reachable
                        .push(format!("node '{}' at {}", peer.node, peer.addr));
                    peers.push(Arc::new(peer));
                }
                Err(Failure::Final(e)) if e.code == ErrorCode::Denied => {
                    probe.denied.get_or_insert(e);
                }
                Err(f) => probe.unreachable.push(f.into_error().message),
            }
        }
        (probe, peers)
    }

    /// Announcements of `target` on other nodes, the caller's namespace
    /// first (none without a broker), as the registry says by `deadline`.
    fn announced_elsewhere(
        &self,
        caller_namespace: &str,
        target: &str,
        deadline: Deadline,
    ) -> Result<Vec<RemoteEndpoint>, CallError> {
        let Some(b) = &self.broker else {
            return Ok(Vec::new());
        };
        let mut remote = b.find(target, deadline).inspect_err(|e| {
            tracing::warn!("cannot ask the cluster registry: {e}");
        })?;
        remote.retain(|r| r.node != b.node());
        remote.sort_by_key(|r| r.namespace != caller_namespace);
        Ok(remote)
    }

    /// A same-namespace function another process of this node serves and
    /// published, loaded here to be embedded (when allowed and possible).
    fn adopt_served(
        &self,
        caller_namespace: &str,
        target: &str,
        here: Option<&Arc<Function>>,
        local: &[EndpointRecord],
    ) -> Option<(Arc<Function>, EndpointRecord)> {
        let wants_embedded = matches!(
            self.mode,
            ModeOverride::Auto | ModeOverride::Force(Mode::Embedded)
        );
        if !self.embed_served
            || !wants_embedded
            || here.is_some_and(|f| f.spec.namespace == caller_namespace)
        {
            return None;
        }
        let record = local
            .iter()
            .find(|r| r.namespace == caller_namespace && r.embed.is_some())?;
        match self.adopt(record) {
            Ok(f) => Some((f, record.clone())),
            Err(e) => {
                tracing::warn!(
                    target,
                    "cannot embed the served function, calling it locally: {e}"
                );
                None
            }
        }
    }

    /// Loads the module a same-namespace server of this node published, and
    /// links it here, once per name, namespace and digest.
    fn adopt(&self, record: &EndpointRecord) -> Result<Arc<Function>, RuntimeError> {
        let key = (
            record.name.clone(),
            record.namespace.clone(),
            record.digest.clone(),
        );
        let mut adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = adopted.get(&key) {
            return Ok(f.clone());
        }
        let (Some(dir), Some(embed)) = (&self.node_dir, &record.embed) else {
            return Err(RuntimeError::Config("nothing to embed".into()));
        };
        let bytes = dir.read_module(embed, &record.digest, self.limits.max_module_bytes)?;
        let label = dir.root().join(&embed.module_file);
        let module = load_module_bytes(&self.engine, bytes.into(), &label)?;
        let mut spec = FunctionSpec::new(&record.name, &record.namespace, label);
        spec.args = embed.args.clone();
        spec.env = embed.env.clone();
        spec.seed.handler = embed.seed_handler.clone();
        let linked = LinkedModule::link(&self.linkers, spec, module)?;
        let router: Weak<dyn Router> = self.me.clone();
        let f = Arc::new(Function::new(linked, self.limits.clone(), router));
        tracing::info!(name = %record.name, namespace = %record.namespace, digest = %record.digest, "embedding a function served on this node");
        adopted.insert(key, f.clone());
        Ok(f)
    }
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
