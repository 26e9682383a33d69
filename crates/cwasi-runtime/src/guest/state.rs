//! What the host keeps in every guest's store, and the narrow handle through
//! which a guest's host functions reach the runtime: a [`Router`] that turns
//! a target name into a route. Like wasmtime-wasi's `add_to_linker_sync(..,
//! |state| &mut state.wasi)`, the host functions see this state only, never
//! the runtime; the router is held weakly, so no instance keeps the runtime
//! alive and nothing needs breaking by hand when it is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use wasmtime::{Memory, ResourceLimiter, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::call::route::{Route, RouteCache, StartedCall};
use crate::call::CallMeta;
use crate::config::Limits;
use crate::deadline::Deadline;
use crate::error::{CallError, ErrorCode};

/// Turns a caller's target name into a route: the selector, the route table
/// and the transports, seen from a guest.
pub(crate) trait Router: Send + Sync {
    /// The route from `caller` to `target`, chosen once per edge; a caller
    /// due by `deadline` waits for the cluster registry no longer.
    fn route(
        &self,
        caller: &CallerId,
        target: &str,
        deadline: Deadline,
    ) -> Result<Arc<Route>, CallError>;
}

/// Who a caller is, as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CallerId {
    /// The function's name (or the host's, for host calls).
    pub name: String,
    /// Its trust domain.
    pub namespace: String,
    /// The prototype's `func_connect` target, if configured.
    pub connect_to: Option<String>,
}

/// Caps linear memory growth and remembers that the cap was hit, so that the
/// trap that follows is reported as `RESOURCE_LIMIT` rather than a plain trap.
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    /// The size a guest asked for and was refused.
    pub exceeded: Option<usize>,
    /// Bytes of linear memory granted since [`MemoryLimiter::settle`]: what
    /// the instance's calls added, which the pool trims when idle.
    grown: usize,
}

impl MemoryLimiter {
    /// A limiter allowing `max_bytes` of linear memory.
    pub fn new(max_bytes: usize) -> MemoryLimiter {
        MemoryLimiter {
            max_bytes,
            exceeded: None,
            grown: 0,
        }
    }

    /// Starts counting growth from here (an instance that was just made).
    pub fn settle(&mut self) {
        self.grown = 0;
    }

    /// Bytes of linear memory granted since [`MemoryLimiter::settle`].
    pub fn grown(&self) -> usize {
        self.grown
    }

    /// The memory limit.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = Some(desired);
            return Ok(false);
        }
        self.grown = self.grown.saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The exports of an instance the host uses when it is a caller.
pub(crate) struct CallerExports {
    /// Its linear memory.
    pub memory: Memory,
    /// Its `cwasi_alloc`, which receives responses.
    pub alloc: Option<TypedFunc<i32, i32>>,
}

/// Everything the host keeps per store.
pub(crate) struct HostState {
    /// WASI preview 1.
    pub wasi: WasiP1Ctx,
    /// The memory cap.
    pub limiter: MemoryLimiter,
    /// Who this instance is when it calls.
    pub caller: Arc<CallerId>,
    /// How its calls find their routes.
    router: Weak<dyn Router>,
    /// The call this instance serves (its depth and deadline); nested calls
    /// derive theirs from it.
    pub call: CallMeta,
    /// Set once instantiated; taken out while a host function uses it.
    pub exports: Option<CallerExports>,
    /// The message of the last failed call, for `cwasi.last_error`.
    pub last_error: String,
    /// Routes by target name.
    pub routes: RouteCache,
    /// Calls started and not yet waited, by handle.
    pub pending: HashMap<i64, StartedCall>,
    /// The next handle `call_start` gives out.
    next_handle: u32,
}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

impl HostState {
    /// Fresh state for an instance of `caller`.
    pub fn new(
        wasi: WasiP1Ctx,
        limits: &Limits,
        caller: Arc<CallerId>,
        router: Weak<dyn Router>,
        call: CallMeta,
    ) -> HostState {
        HostState {
            wasi,
            limiter: MemoryLimiter::new(limits.max_memory_bytes),
            caller,
            router,
            call,
            exports: None,
            last_error: String::new(),
            routes: RouteCache::default(),
            pending: HashMap::new(),
            next_handle: 1,
        }
    }

    /// The route to `target`, from this instance's cache or the router.
    pub fn route(&mut self, target: &str) -> Result<Arc<Route>, CallError> {
        let (router, caller, deadline) = (&self.router, &self.caller, self.call.deadline);
        self.routes.get_or_resolve(target, || {
            let router = router.upgrade().ok_or_else(|| {
                CallError::new(
                    ErrorCode::Transport,
                    "the runtime that ran this function has shut down",
                )
            })?;
            router.route(caller, target, deadline)
        })
    }

    /// Keeps a started call until it is waited; returns its handle, which
    /// is positive and unique among the calls waiting (a core guest gets it
    /// as an `i64`, a component as its `pending-call`'s representation).
    pub fn park(&mut self, started: StartedCall) -> u32 {
        let mut handle = self.next_handle;
        while handle == 0 || self.pending.contains_key(&i64::from(handle)) {
            handle = handle.wrapping_add(1);
        }
        self.next_handle = handle.wrapping_add(1);
        self.pending.insert(i64::from(handle), started);
        handle
    }

    /// Records a failed call for `cwasi.last_error` and returns its code.
    pub fn fail(&mut self, err: CallError) -> i32 {
        tracing::debug!(function = %self.caller.name, "call failed: {err}");
        self.last_error = err.message;
        err.code.as_raw()
    }
}
