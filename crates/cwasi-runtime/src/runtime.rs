//! The runtime: the functions loaded in this process, their instance pools,
//! the routes between them, and the host-facing API (`run_entry`, `call`,
//! `explain`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Engine, InstancePre, Linker};

use crate::broker::Broker;
use crate::composition::Composition;
use crate::config::{FunctionSpec, Limits, Mode, ModeOverride};
use crate::engine::{load_module, load_module_bytes, new_engine, EpochTicker, LoadedModule};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::inspect::ModuleInfo;
use crate::instance::{HostState, InstancePool, WarmInstance};
use crate::registry::{EndpointRecord, NodeDirectory};
use crate::selector::{select, Candidates, Endpoint, Selection};
use crate::serve::{ServeHandle, ServeOptions};
use crate::transport::embedded::EmbeddedTransport;
use crate::transport::local::LocalTransport;
use crate::transport::remote::RemoteTransport;
use crate::transport::{CallContext, CallerIo, PendingCall, Transport, VecIo};

/// Name under which calls made by the host itself (CLI, tests) are recorded.
pub const HOST_CALLER: &str = "<host>";

/// One function loaded in this process.
pub(crate) struct FunctionEntry {
    pub spec: FunctionSpec,
    pub module: LoadedModule,
    pub pre: InstancePre<HostState>,
    pub pool: InstancePool,
}

impl FunctionEntry {
    /// The seed handler export, if one is configured and present.
    pub fn seed_handler(&self) -> Option<&str> {
        self.spec
            .seed
            .handler
            .as_deref()
            .filter(|h| self.module.info.is_seed_callee(h))
    }

    pub fn not_callable_reason(&self) -> String {
        format!(
            "function '{}' ({}) cannot be called: it exports neither cwasi_alloc + cwasi_handle \
             nor a configured seed handler",
            self.spec.name,
            self.module.path.display()
        )
    }
}

/// Counters of the calls along one edge (caller → callee).
pub(crate) struct HopStats {
    pub caller: String,
    pub target: String,
    pub mode: Mode,
    calls: AtomicU64,
    failures: AtomicU64,
    nanos: AtomicU64,
    max_nanos: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl HopStats {
    pub fn record(&self, started: Instant, request: usize, response: usize, ok: bool) {
        let ns = started.elapsed().as_nanos() as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.nanos.fetch_add(ns, Ordering::Relaxed);
        self.max_nanos.fetch_max(ns, Ordering::Relaxed);
        self.bytes_in.fetch_add(request as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(response as u64, Ordering::Relaxed);
    }
}

/// A snapshot of one edge's counters, for per-hop timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopReport {
    /// The calling function.
    pub caller: String,
    /// The called function.
    pub target: String,
    /// The data path used.
    pub mode: Mode,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Total time inside calls, as the caller saw it.
    pub total: Duration,
    /// The slowest call.
    pub max: Duration,
    /// Request bytes sent.
    pub bytes_in: u64,
    /// Response bytes received.
    pub bytes_out: u64,
}

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

/// How one caller reaches one callee: chosen once, then reused.
pub(crate) struct Route {
    pub transport: Box<dyn Transport>,
    pub stats: Arc<HopStats>,
}

/// A call started with `call_start`, with what is needed to record it.
pub(crate) struct StartedCall {
    pub inner: Box<dyn PendingCall>,
    pub route: Arc<Route>,
    pub started: Instant,
    pub request_len: usize,
}

impl PendingCall for StartedCall {
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let StartedCall {
            inner,
            route,
            started,
            request_len,
        } = *self;
        let mut counting = CountingIo { io, len: 0 };
        let result = inner.wait(&mut counting);
        route
            .stats
            .record(started, request_len, counting.len, result.is_ok());
        result
    }
}

struct CountingIo<'a> {
    io: &'a mut dyn CallerIo,
    len: usize,
}

impl CallerIo for CountingIo<'_> {
    fn request(&self) -> &[u8] {
        self.io.request()
    }
    fn response_buffer(&mut self, len: usize) -> Result<&mut [u8], CallError> {
        self.len = len;
        self.io.response_buffer(len)
    }
}

/// State shared by everything running in this runtime.
pub(crate) struct RuntimeInner {
    pub engine: Engine,
    pub limits: Limits,
    pub mode: ModeOverride,
    functions: HashMap<String, Arc<FunctionEntry>>,
    /// Functions whose module failed to load, with the reason.
    unloadable: HashMap<String, String>,
    /// Where served functions of this node are found.
    node_dir: Option<NodeDirectory>,
    /// Whether same-namespace functions served on this node are embedded.
    embed_served: bool,
    /// This node's name, as records and announcements give it.
    pub node: String,
    /// Links modules adopted from the node directory.
    linker: Linker<HostState>,
    /// Functions served elsewhere on this node and embedded here, by name,
    /// namespace and digest.
    adopted: Mutex<HashMap<(String, String, String), Arc<FunctionEntry>>>,
    /// The broker of remote mode and the cluster registry, if configured.
    pub broker: Option<Arc<Broker>>,
    routes: Mutex<HashMap<(String, String), Arc<Route>>>,
    decisions: Mutex<Vec<Decision>>,
    closed: AtomicBool,
}

impl RuntimeInner {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The route from `caller` (a function, or the host in a namespace) to
    /// `target`, chosen once per edge and logged for `--explain`.
    pub fn route_from(
        &self,
        caller: &str,
        caller_namespace: &str,
        target: &str,
    ) -> Result<Arc<Route>, CallError> {
        let key = (caller.to_string(), target.to_string());
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = routes.get(&key) {
            return Ok(r.clone());
        }
        let outcome = self.select(caller_namespace, target);
        self.decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Decision {
                caller: caller.to_string(),
                target: target.to_string(),
                outcome: outcome
                    .as_ref()
                    .map(|(s, _)| s.clone())
                    .map_err(Clone::clone),
            });
        let (selection, endpoint) = outcome?;
        tracing::info!(caller, target, mode = %selection.mode, reason = %selection.reason, "route chosen");
        let transport: Box<dyn Transport> = match endpoint {
            Endpoint::Embedded(function) => Box::new(EmbeddedTransport { function }),
            Endpoint::Local(record) => {
                Box::new(LocalTransport::new(target.to_string(), record.socket))
            }
            Endpoint::Remote(r) => match &self.broker {
                Some(broker) => Box::new(RemoteTransport {
                    broker: broker.clone(),
                    namespace: r.namespace,
                    name: target.to_string(),
                }),
                None => unreachable!("remote endpoints come from the broker"),
            },
        };
        let route = Arc::new(Route {
            transport,
            stats: Arc::new(HopStats {
                caller: caller.to_string(),
                target: target.to_string(),
                mode: selection.mode,
                calls: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                nanos: AtomicU64::new(0),
                max_nanos: AtomicU64::new(0),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
            }),
        });
        routes.insert(key, route.clone());
        Ok(route)
    }

    /// The route from a loaded function to `target`.
    pub fn route(&self, caller: &FunctionEntry, target: &str) -> Result<Arc<Route>, CallError> {
        self.route_from(&caller.spec.name, &caller.spec.namespace, target)
    }

    /// Loads the module a same-namespace server of this node published, and
    /// links it here, once per name, namespace and digest.
    fn adopt(&self, record: &EndpointRecord) -> Result<Arc<FunctionEntry>, RuntimeError> {
        let key = (
            record.name.clone(),
            record.namespace.clone(),
            record.digest.clone(),
        );
        if let Some(f) = self
            .adopted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        let (Some(dir), Some(embed)) = (&self.node_dir, &record.embed) else {
            return Err(RuntimeError::Config("nothing to embed".into()));
        };
        let bytes = dir.read_module(embed, &record.digest)?;
        let label = dir.root().join(&embed.module_file);
        let module = load_module_bytes(&self.engine, bytes.into(), &label)?;
        let mut spec = FunctionSpec::new(&record.name, &record.namespace, label);
        spec.args = embed.args.clone();
        spec.env = embed.env.clone();
        spec.seed.handler = embed.seed_handler.clone();
        let entry = Arc::new(prepare(&self.linker, spec, module)?);
        tracing::info!(name = %record.name, namespace = %record.namespace, digest = %record.digest, "embedding a function served on this node");
        self.adopted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, entry.clone());
        Ok(entry)
    }

    fn select(
        &self,
        caller_namespace: &str,
        target: &str,
    ) -> Result<(Selection, Endpoint), CallError> {
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
        let mut remote = Vec::new();
        if let Some(b) = &self.broker {
            if local.is_empty()
                && self
                    .functions
                    .get(target)
                    .is_none_or(|f| f.spec.namespace != caller_namespace)
            {
                match b.find(target) {
                    Ok(found) => remote = found,
                    Err(e) => tracing::warn!("cannot ask the cluster registry: {e}"),
                }
                remote.retain(|r| r.node != b.node());
                remote.sort_by_key(|r| r.namespace != caller_namespace);
            }
        }
        let loaded = self.functions.get(target);
        let mut adopted = None;
        let wants_embedded = matches!(
            self.mode,
            ModeOverride::Auto | ModeOverride::Force(Mode::Embedded)
        );
        if self.embed_served
            && wants_embedded
            && loaded.is_none_or(|f| f.spec.namespace != caller_namespace)
        {
            if let Some(record) = local
                .iter()
                .find(|r| r.namespace == caller_namespace && r.embed.is_some())
            {
                match self.adopt(record) {
                    Ok(f) => adopted = Some((f, record.clone())),
                    Err(e) => tracing::warn!(
                        target,
                        "cannot embed the served function, calling it locally: {e}"
                    ),
                }
            }
        }
        select(
            caller_namespace,
            target,
            Candidates {
                loaded: adopted.as_ref().map(|(f, _)| f).or(loaded),
                adopted_from: adopted.as_ref().map(|(_, r)| r),
                loaded_names,
                local,
                node_dir: self.node_dir.as_ref().map(|d| d.root()),
                remote,
                broker: self.broker.as_ref().map(|b| (b.display(), b.node())),
            },
            self.mode,
        )
    }
}

/// Builds a [`Runtime`]: limits, mode override and the functions to load.
#[derive(Debug)]
pub struct RuntimeBuilder {
    limits: Limits,
    mode: ModeOverride,
    functions: Vec<FunctionSpec>,
    keep_unloadable: bool,
    node_dir: Option<NodeDirectory>,
    embed_served: bool,
    node: Option<String>,
    broker: Option<Arc<Broker>>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            limits: Limits::default(),
            mode: ModeOverride::default(),
            functions: Vec::new(),
            keep_unloadable: false,
            node_dir: None,
            embed_served: true,
            node: None,
            broker: None,
        }
    }
}

impl RuntimeBuilder {
    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Forces a mode for every call (for experiments).
    pub fn mode(mut self, mode: ModeOverride) -> Self {
        self.mode = mode;
        self
    }

    /// Keeps going when a module cannot be loaded: the runtime starts, and
    /// calls to that function fail with `NOT_CALLABLE` and the load error.
    /// By default the first unloadable module fails `build`.
    pub fn keep_unloadable(mut self, keep: bool) -> Self {
        self.keep_unloadable = keep;
        self
    }

    /// This node's name in records (default: `CWASI_NODE`, else the
    /// hostname); the shim takes it from the container's environment.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// Whether a callee of the caller's namespace that another process of
    /// this node serves is embedded here, its module loaded from the node
    /// directory (default: yes). Without it such a call goes through the
    /// local mode.
    pub fn embed_served(mut self, embed: bool) -> Self {
        self.embed_served = embed;
        self
    }

    /// Finds functions served by other processes of this node in `dir`
    /// (local mode). Without it, only embedded calls are possible.
    pub fn node_directory(mut self, dir: NodeDirectory) -> Self {
        self.node_dir = Some(dir);
        self
    }

    /// Reaches functions on other nodes through `broker` (remote mode), and
    /// announces served functions in its cluster registry.
    pub fn broker(mut self, broker: Arc<Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Adds a function.
    pub fn function(mut self, spec: FunctionSpec) -> Self {
        self.functions.push(spec);
        self
    }

    /// Compiles every module once and links it. Fails on the first module
    /// that cannot be loaded, naming it.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let (engine, ticker) = new_engine()?;
        let linker: Linker<HostState> = crate::abi::linker(&engine)?;
        let mut functions = HashMap::new();
        let mut unloadable = HashMap::new();
        for spec in self.functions {
            crate::composition::validate_name(&spec.name).map_err(RuntimeError::Config)?;
            if functions.contains_key(&spec.name) {
                return Err(RuntimeError::Config(format!(
                    "function '{}' is defined twice",
                    spec.name
                )));
            }
            if unloadable.contains_key(&spec.name) {
                return Err(RuntimeError::Config(format!(
                    "function '{}' is defined twice",
                    spec.name
                )));
            }
            let module = match &spec.module_bytes {
                Some(bytes) => load_module_bytes(&engine, bytes.clone(), &spec.module),
                None => load_module(&engine, &spec.module),
            };
            match module.and_then(|m| prepare(&linker, spec.clone(), m)) {
                Ok(entry) => {
                    tracing::debug!(function = %entry.spec.name, namespace = %entry.spec.namespace, digest = %entry.module.digest, "loaded");
                    functions.insert(spec.name, Arc::new(entry));
                }
                Err(e) if self.keep_unloadable => {
                    tracing::warn!(function = %spec.name, "cannot be loaded: {e}");
                    unloadable.insert(spec.name, e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                limits: self.limits,
                mode: self.mode,
                functions,
                unloadable,
                node_dir: self.node_dir,
                embed_served: self.embed_served,
                node: self
                    .node
                    .or_else(|| self.broker.as_ref().map(|b| b.node().to_string()))
                    .unwrap_or_else(crate::registry::node_name),
                linker,
                adopted: Mutex::new(HashMap::new()),
                broker: self.broker,
                routes: Mutex::new(HashMap::new()),
                decisions: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
            _ticker: ticker,
        })
    }
}

/// Links a loaded module into a function entry ready to instantiate.
fn prepare(
    linker: &Linker<HostState>,
    spec: FunctionSpec,
    module: LoadedModule,
) -> Result<FunctionEntry, RuntimeError> {
    check_seed_config(&spec, &module.info)?;
    let pre = linker
        .instantiate_pre(&module.module)
        .map_err(|e| RuntimeError::Instantiate {
            function: spec.name.clone(),
            message: format!(
                "{e:#} (CWASI provides WASI preview 1, `cwasi` and `cwasi_export` imports only)"
            ),
        })?;
    Ok(FunctionEntry {
        spec,
        module,
        pre,
        pool: InstancePool::new(),
    })
}

fn check_seed_config(spec: &FunctionSpec, info: &ModuleInfo) -> Result<(), RuntimeError> {
    if let Some(h) = &spec.seed.handler {
        if !info.is_seed_callee(h) {
            return Err(RuntimeError::Config(format!(
                "function '{}': handler '{h}' must be an export of type (i32, i32) -> () next to \
                 allocate(i32) -> i32 in {}",
                spec.name,
                spec.module.display()
            )));
        }
    }
    if info.is_seed_caller() && spec.seed.connect_to.is_none() {
        tracing::warn!(function = %spec.name, "imports cwasi_export.func_connect but has no connect_to target");
    }
    Ok(())
}

/// A set of functions loaded in this process, ready to run and to call each
/// other. Dropping it stops its epoch thread and frees its instances.
pub struct Runtime {
    inner: Arc<RuntimeInner>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Starts building a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Loads every function of a composition with its limits and mode; `mode`
    /// overrides the file's mode unless it is `Auto`. See
    /// [`RuntimeBuilder::keep_unloadable`] for `keep_unloadable`.
    pub fn from_composition(
        comp: &Composition,
        mode: ModeOverride,
        keep_unloadable: bool,
    ) -> Result<Runtime, RuntimeError> {
        let mode = if mode == ModeOverride::Auto {
            comp.mode
        } else {
            mode
        };
        comp.functions
            .iter()
            .cloned()
            .fold(
                Runtime::builder()
                    .limits(comp.limits.clone())
                    .mode(mode)
                    .keep_unloadable(keep_unloadable),
                RuntimeBuilder::function,
            )
            .build()
    }

    fn function(&self, name: &str) -> Result<&Arc<FunctionEntry>, RuntimeError> {
        self.inner
            .functions
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownFunction(name.to_string()))
    }

    /// The ABI surface of a loaded function.
    pub fn module_info(&self, name: &str) -> Option<&ModuleInfo> {
        self.inner.functions.get(name).map(|f| &f.module.info)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Runs a function's `_start` in a fresh instance and returns its exit
    /// code. Calls it makes are resolved through the selector.
    pub fn run_entry(&self, name: &str) -> Result<i32, RuntimeError> {
        let f = self.function(name)?;
        if !f.module.info.is_entry() {
            return Err(RuntimeError::NotAnEntry(name.to_string()));
        }
        let mut inst = WarmInstance::new(&self.inner, f, 0, self.inner.limits.entry_timeout)?;
        let result = inst.run_start();
        inst.store.data_mut().pending.clear();
        match result {
            Ok(()) => Ok(0),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    return Ok(exit.0);
                }
                let err = inst.trap_error(e, "_start");
                let message = if err.code == ErrorCode::Timeout {
                    format!(
                        "it did not finish within the entry timeout of {:?}",
                        self.inner.limits.entry_timeout
                    )
                } else {
                    err.message
                };
                Err(RuntimeError::Trap {
                    function: name.to_string(),
                    message,
                })
            }
        }
    }

    /// Calls `target` from the host as if from a function of `namespace`, and
    /// returns the response. Used by `cwasi call`, tests and benchmarks.
    pub fn call(
        &self,
        namespace: &str,
        target: &str,
        request: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let mut response = Vec::new();
        self.call_into(namespace, target, request, &mut response)?;
        Ok(response)
    }

    /// Like [`Runtime::call`], but reuses `response`'s allocation.
    pub fn call_into(
        &self,
        namespace: &str,
        target: &str,
        request: &[u8],
        response: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        let max = self.inner.limits.max_payload_bytes;
        if request.len() > max {
            return Err(CallError::too_large("request", request.len(), max));
        }
        let route = self.inner.route_from(HOST_CALLER, namespace, target)?;
        let started = Instant::now();
        let mut io = VecIo {
            request,
            response: std::mem::take(response),
        };
        let ctx = CallContext {
            runtime: &self.inner,
            depth: 1,
        };
        let result = route.transport.call(&ctx, &mut io);
        route
            .stats
            .record(started, request.len(), io.response.len(), result.is_ok());
        *response = io.response;
        result
    }

    /// Serves a loaded function to other processes of this node: binds its
    /// socket in `dir`, publishes its record, and answers calls until the
    /// handle is dropped.
    pub fn serve(
        &self,
        name: &str,
        dir: &NodeDirectory,
        opts: ServeOptions,
    ) -> Result<ServeHandle, RuntimeError> {
        let f = self.function(name)?;
        if !(f.module.info.is_callable() || f.seed_handler().is_some()) {
            return Err(RuntimeError::Config(f.not_callable_reason()));
        }
        crate::serve::serve(&self.inner, f, dir, opts)
    }

    /// Calls `target` served at `socket` directly, bypassing the selector
    /// (`cwasi call --socket`, protocol tests).
    pub fn call_socket(
        &self,
        socket: &std::path::Path,
        target: &str,
        request: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let transport = LocalTransport::new(target.to_string(), socket.to_path_buf());
        let mut io = VecIo {
            request,
            response: Vec::new(),
        };
        let ctx = CallContext {
            runtime: &self.inner,
            depth: 1,
        };
        transport.call(&ctx, &mut io)?;
        Ok(io.response)
    }

    /// Which mode a call from `caller_namespace` to `target` would take, and
    /// why, without making it.
    pub fn explain(&self, caller_namespace: &str, target: &str) -> Result<Selection, CallError> {
        self.inner
            .select(caller_namespace, target)
            .map(|(selection, _)| selection)
    }

    /// Every routing decision made so far, in order.
    pub fn decisions(&self) -> Vec<Decision> {
        self.inner
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Per-edge call counters and timings.
    pub fn hops(&self) -> Vec<HopReport> {
        let routes = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<HopReport> = routes
            .values()
            .map(|r| {
                let s = &r.stats;
                HopReport {
                    caller: s.caller.clone(),
                    target: s.target.clone(),
                    mode: s.mode,
                    calls: s.calls.load(Ordering::Relaxed),
                    failures: s.failures.load(Ordering::Relaxed),
                    total: Duration::from_nanos(s.nanos.load(Ordering::Relaxed)),
                    max: Duration::from_nanos(s.max_nanos.load(Ordering::Relaxed)),
                    bytes_in: s.bytes_in.load(Ordering::Relaxed),
                    bytes_out: s.bytes_out.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.caller, &a.target).cmp(&(&b.caller, &b.target)));
        out
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Pooled instances hold the runtime; dropping them breaks the cycle.
        self.inner.closed.store(true, Ordering::Relaxed);
        for f in self.inner.functions.values() {
            f.pool.clear();
        }
        self.inner
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
