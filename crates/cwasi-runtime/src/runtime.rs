//! The host-facing API: build a runtime from functions, run an entry, call a
//! function from the host, serve one to other processes, and read the
//! routing decisions and per-hop counters.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::call::route::{Edge, PathSpec, Route};
use crate::call::stats::HopReport;
use crate::call::{CallMeta, VecIo};
use crate::composition::Composition;
use crate::config::{FunctionSpec, Limits, Mode, ModeOverride, DEFAULT_NAMESPACE};
use crate::engine::{load_module, load_module_bytes, new_engine};
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::guest::function::FunctionReport;
use crate::guest::function::LinkedModule;
use crate::identity::CallerIdentity;
use crate::inspect::ModuleInfo;
use crate::load_report::{LoadObserver, ModuleLoad};
use crate::node_dir::NodeDirectory;
use crate::router::DirectParts;
use crate::router::{Decision, RouterParts, RuntimeRouter, HOST_CALLER};
use crate::selector::Selection;
use crate::serve::{Host, ServeHandle, ServeOptions};
use crate::trace::{CallSpan, TraceContext};
use crate::transport::direct::{DirectConfig, DirectTls};
use crate::transport::local::client::{LocalClient, LocalSettings};
use crate::transport::remote::Broker;

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
    direct: DirectConfig,
    on_load: Option<LoadObserver>,
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
            direct: DirectConfig::default(),
            on_load: None,
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

    /// How this node uses the direct data plane to other nodes, and how
    /// its servers take direct calls: mutual TLS files, or plain TCP.
    /// Without TLS and without plain TCP allowed, remote calls go through
    /// the broker.
    pub fn direct(mut self, config: DirectConfig) -> Self {
        self.direct = config;
        self
    }

    /// Tells `observe` how each function's module is loaded by `build`:
    /// when compiling starts, how long it took, or that the compile cache
    /// had it. The runtime prints nothing; a host that wants its user to
    /// know why a start takes seconds renders these.
    pub fn on_load(mut self, observe: impl Fn(&ModuleLoad) + Send + Sync + 'static) -> Self {
        self.on_load = Some(LoadObserver(Arc::new(observe)));
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
        let bound = crate::native_stack::MAX_CALL_DEPTH_BOUND;
        if self.limits.max_call_depth > bound {
            let per_level =
                crate::native_stack::WASM_STACK_PER_CALL + crate::native_stack::HOST_STACK_PER_CALL;
            return Err(RuntimeError::Config(format!(
                "max_call_depth {} is over the bound of {bound}: every level of a chain of \
                 nested calls may need up to {} KiB of native stack",
                self.limits.max_call_depth,
                per_level >> 10
            )));
        }
        let direct_tls = match &self.direct.tls {
            Some(files) => Some(DirectTls::load(files)?),
            None => None,
        };
        let (engine, ticker) = new_engine()?;
        let linkers = crate::guest::linkers::Linkers::new(&engine)?;
        let mut functions: Vec<LinkedModule> = Vec::new();
        let mut unloadable = HashMap::new();
        for spec in self.functions {
            crate::composition::validate_name(&spec.name).map_err(RuntimeError::Config)?;
            crate::composition::validate_namespace(&spec.namespace)
                .map_err(RuntimeError::Config)?;
            let name = spec.name.clone();
            if functions.iter().any(|f| f.name() == name) || unloadable.contains_key(&name) {
                return Err(RuntimeError::DuplicateFunction(name));
            }
            let observe = |stage, component| {
                if let Some(LoadObserver(observe)) = &self.on_load {
                    observe(&ModuleLoad {
                        function: name.clone(),
                        path: spec.module.clone(),
                        component,
                        stage,
                    });
                }
            };
            let module = match &spec.module_bytes {
                Some(bytes) => load_module_bytes(&engine, bytes.clone(), &spec.module, &observe),
                None => load_module(
                    &engine,
                    &spec.module,
                    self.limits.max_module_bytes,
                    &observe,
                ),
            };
            match module.and_then(|m| LinkedModule::link(&linkers, spec, m)) {
                Ok(linked) => {
                    tracing::debug!(function = %name, "loaded");
                    functions.push(linked);
                }
                Err(e) if self.keep_unloadable => {
                    tracing::warn!(function = %name, "cannot be loaded: {e}");
                    unloadable.insert(name, e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let node = self
            .node
            .or_else(|| self.broker.as_ref().map(|b| b.node().to_string()))
            .unwrap_or_else(crate::node_dir::node_name);
        // Every call carries this node's name in its caller's identity.
        cwasi_abi::validate_name(&node).map_err(|e| {
            RuntimeError::Config(format!(
                "invalid node name '{node}' (CWASI_NODE, else the hostname): {}",
                e.rule()
            ))
        })?;
        if let (Some(broker), Some(tls)) = (&self.broker, &direct_tls) {
            sign_broker_requests(broker, tls, &node);
        }
        Ok(Runtime {
            host_call: CallMeta::after(0, std::time::Duration::MAX),
            router: RuntimeRouter::new(RouterParts {
                engine,
                ticker,
                linkers,
                limits: Arc::new(self.limits),
                mode: self.mode,
                functions,
                unloadable,
                node_dir: self.node_dir,
                embed_served: self.embed_served,
                node,
                broker: self.broker,
                direct: DirectParts {
                    tls: direct_tls,
                    allow_plain: self.direct.allow_plain,
                },
            }),
        })
    }
}

/// Makes `broker` sign the requests it sends and check the ones it serves
/// with this node's identity, if its certificate names the node (a node
/// certificate, `DNS:<node>`): one that does not (a Redis client
/// certificate the direct plane fell back to, say) could not prove this
/// node to others, so requests stay unsigned, and the log says why.
fn sign_broker_requests(broker: &Broker, tls: &DirectTls, node: &str) {
    let identity = &tls.identity;
    match identity.names_node(identity.certificate(), node) {
        Ok(()) => broker.authenticate_as(identity.clone()),
        Err(why) => tracing::warn!(
            node,
            "broker requests are not signed, and unsigned ones are served: this node's \
             certificate cannot prove its name ({why})"
        ),
    }
}

/// A set of functions loaded in this process, ready to run and to call each
/// other. Dropping it stops its epoch thread and frees its instances (once
/// no server it started still runs).
pub struct Runtime {
    router: Arc<RuntimeRouter>,
    /// What the host's own calls run under: depth 0 and no deadline of
    /// their own, so that each call gets the call timeout.
    host_call: CallMeta,
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

    /// The ABI surface of a loaded function.
    pub fn module_info(&self, name: &str) -> Option<&ModuleInfo> {
        self.router.function(name).map(|f| &f.module.info)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.router.limits
    }

    /// Runs a function's `_start` in a fresh instance and returns its exit
    /// code. Calls it makes are resolved through the selector, and share the
    /// entry's deadline.
    pub fn run_entry(&self, name: &str) -> Result<i32, RuntimeError> {
        let f = self
            .router
            .function(name)
            .ok_or_else(|| RuntimeError::UnknownFunction(name.to_string()))?;
        if !f.module.info.is_entry() {
            return Err(RuntimeError::NotAnEntry(name.to_string()));
        }
        let timeout = self.router.limits.entry_timeout;
        let span = CallSpan::entry(name);
        let trace = span.as_ref().map_or(TraceContext::NONE, CallSpan::context);
        let mut inst = f.instantiate(CallMeta::after(0, timeout).traced(trace))?;
        let result = inst.run_start();
        inst.store.data_mut().pending.clear();
        let outcome = match result {
            Ok(()) => Ok(0),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => Err(inst.trap_error(e, "_start")),
            },
        };
        if let Some(span) = span {
            span.end_with(outcome.as_ref().map(|_| ()));
        }
        outcome.map_err(|err| {
            let message = if err.code == ErrorCode::Timeout {
                format!("it did not finish within the entry timeout of {timeout:?}")
            } else {
                err.message
            };
            RuntimeError::Trap {
                function: name.to_string(),
                message,
            }
        })
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

    /// Like [`Runtime::call`], with a deadline of its own: the call gets
    /// the earlier of `timeout` and the call timeout, as a function's call
    /// made with that much time left would.
    pub fn call_within(
        &self,
        namespace: &str,
        target: &str,
        request: &[u8],
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, CallError> {
        let meta = CallMeta::after(0, timeout);
        let route = self.router.host_route(namespace, target, meta.deadline)?;
        let mut io = VecIo {
            request,
            response: Vec::new(),
        };
        route.call(&mut io, &meta)?;
        Ok(io.response)
    }

    /// Like [`Runtime::call`], but reuses `response`'s allocation.
    pub fn call_into(
        &self,
        namespace: &str,
        target: &str,
        request: &[u8],
        response: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        let route = self
            .router
            .host_route(namespace, target, self.host_call.deadline)?;
        let mut io = VecIo {
            request,
            response: std::mem::take(response),
        };
        let result = route.call(&mut io, &self.host_call);
        *response = io.response;
        result
    }

    /// Serves a loaded function to other processes of this node: binds its
    /// socket in `dir`, publishes its record, and answers calls until the
    /// handle is dropped. The handle keeps this runtime's state alive.
    pub fn serve(
        &self,
        name: &str,
        dir: &NodeDirectory,
        opts: ServeOptions,
    ) -> Result<ServeHandle, RuntimeError> {
        let f = self
            .router
            .function(name)
            .ok_or_else(|| RuntimeError::UnknownFunction(name.to_string()))?;
        let host = Host {
            node: &self.router.node,
            broker: self.router.broker.as_ref(),
            direct_tls: self.router.direct.tls.as_ref().map(|t| t.server.clone()),
            node_identity: self.router.direct.tls.as_ref().map(|t| t.identity.clone()),
            allow_plain: self.router.direct.allow_plain,
            runtime: self.router.clone(),
        };
        crate::serve::serve(f, dir, opts, host)
    }

    /// Calls `target` served at `socket` directly, bypassing the selector
    /// (`cwasi call --socket`, protocol tests).
    pub fn call_socket(
        &self,
        socket: &Path,
        target: &str,
        request: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let limits = self.router.limits.clone();
        let caller = CallerIdentity::new(DEFAULT_NAMESPACE, None, &self.router.node)
            .map_err(|e| CallError::new(ErrorCode::Denied, e.to_string()))?;
        let client = LocalClient::new(
            target.to_string(),
            &caller,
            socket.to_path_buf(),
            LocalSettings {
                max_payload: limits.max_payload_bytes,
                spin: limits.spin_budget,
                spill_queue: None,
            },
        );
        let edge = Edge {
            caller: HOST_CALLER.to_string(),
            namespace: String::new(),
            target: target.to_string(),
        };
        let path = PathSpec {
            mode: Mode::Local,
            key: format!("local {}", socket.display()),
            transport: Box::new(client),
            capacity: None,
        };
        let route = Route::new(edge, path, None, limits, self.router.clock().clone(), None);
        let mut io = VecIo {
            request,
            response: Vec::new(),
        };
        route.call(&mut io, &self.host_call)?;
        Ok(io.response)
    }

    /// Which mode a call from `caller_namespace` to `target` would take, and
    /// why, without making it.
    pub fn explain(&self, caller_namespace: &str, target: &str) -> Result<Selection, CallError> {
        self.router.explain(caller_namespace, target)
    }

    /// Every distinct routing decision made so far, in order (a refused edge
    /// is listed once, however often it was tried).
    pub fn decisions(&self) -> Vec<Decision> {
        self.router.decisions()
    }

    /// Every function loaded in this runtime (its own and those it embeds
    /// from others): its warm pool and the calls it serves.
    pub fn functions(&self) -> Vec<FunctionReport> {
        let mut out: Vec<FunctionReport> =
            self.router.functions().iter().map(|f| f.report()).collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Per-edge call counters and timings: one report per edge and mode it
    /// used (an edge whose callee moved has several; `current` marks the
    /// path it takes now).
    pub fn hops(&self) -> Vec<HopReport> {
        let mut out: Vec<HopReport> = self
            .router
            .routes()
            .iter()
            .flat_map(|r| r.reports())
            .collect();
        out.sort_by(|a, b| (&a.caller, &a.target).cmp(&(&b.caller, &b.target)));
        out
    }
}
