//! Instances of a function: the per-store host state, the typed entry points
//! the host calls, and the pool of warm instances each function keeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Instance, Memory, ResourceLimiter, Store, Trap, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::config::Limits;
use crate::engine::ticks_for;
use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::runtime::{FunctionEntry, Route, RuntimeInner};
use crate::transport::PendingCall;

/// Caps linear memory growth and remembers that the cap was hit, so that the
/// trap that follows is reported as `RESOURCE_LIMIT` rather than a plain trap.
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    /// The size a guest asked for and was refused.
    pub exceeded: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = Some(desired);
            return Ok(false);
        }
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
#[derive(Clone)]
pub(crate) struct CallerExports {
    pub memory: Memory,
    pub alloc: Option<TypedFunc<i32, i32>>,
}

/// Everything the host keeps per store.
pub(crate) struct HostState {
    pub wasi: WasiP1Ctx,
    pub limiter: MemoryLimiter,
    pub runtime: Arc<RuntimeInner>,
    pub function: Arc<FunctionEntry>,
    /// Nesting depth of the call this instance serves (0 for an entry).
    pub depth: u32,
    pub exports: Option<CallerExports>,
    pub last_error: String,
    pub routes: HashMap<Box<str>, Arc<Route>>,
    pub pending: HashMap<i64, Box<dyn PendingCall>>,
    pub next_handle: i64,
}

impl HostState {
    pub fn fail(&mut self, err: CallError) -> i32 {
        tracing::debug!(function = %self.function.spec.name, "call failed: {err}");
        self.last_error = err.message;
        err.code.as_raw()
    }
}

/// How the host hands a request to a callee.
pub(crate) enum Entrypoints {
    /// ABI v1: `cwasi_alloc` + `cwasi_handle` (+ optional `cwasi_error`).
    Abi {
        alloc: TypedFunc<i32, i32>,
        handle: TypedFunc<(i32, i32), i64>,
        error: Option<TypedFunc<(), i64>>,
    },
    /// The prototype: `allocate` + a configured `(ptr, len)` handler.
    Seed {
        alloc: TypedFunc<i32, i32>,
        handler: TypedFunc<(i32, i32), ()>,
    },
    /// Not callable; the reason is in the function entry.
    None,
}

/// One instantiated function with its store, ready to serve a call.
pub(crate) struct WarmInstance {
    pub store: Store<HostState>,
    pub instance: Instance,
    pub memory: Memory,
    pub entry: Entrypoints,
}

/// Where a response lies in a callee's memory after `cwasi_handle`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseRange {
    pub ptr: usize,
    pub len: usize,
}

impl WarmInstance {
    /// Creates a fresh instance of `function`.
    pub fn new(
        runtime: &Arc<RuntimeInner>,
        function: &Arc<FunctionEntry>,
        depth: u32,
        deadline: Duration,
    ) -> Result<WarmInstance, RuntimeError> {
        let inst_err = |message: String| RuntimeError::Instantiate {
            function: function.spec.name.clone(),
            message,
        };
        let wasi = build_wasi(function).map_err(inst_err)?;
        let state = HostState {
            wasi,
            limiter: MemoryLimiter {
                max_bytes: runtime.limits.max_memory_bytes,
                exceeded: None,
            },
            runtime: runtime.clone(),
            function: function.clone(),
            depth,
            exports: None,
            last_error: String::new(),
            routes: HashMap::new(),
            pending: HashMap::new(),
            next_handle: 1,
        };
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks_for(deadline));
        store.epoch_deadline_trap();
        let instance = function
            .pre
            .instantiate(&mut store)
            .map_err(|e| inst_err(format!("{e:#}")))?;
        if function.module.info.initialize {
            let init = instance
                .get_typed_func::<(), ()>(&mut store, "_initialize")
                .map_err(|e| inst_err(format!("{e:#}")))?;
            init.call(&mut store, ())
                .map_err(|e| inst_err(format!("_initialize failed: {e:#}")))?;
        }
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| {
            inst_err("the module does not export its memory as \"memory\"".into())
        })?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "cwasi_alloc")
            .ok();
        store.data_mut().exports = Some(CallerExports {
            memory,
            alloc: alloc.clone(),
        });
        let info = &function.module.info;
        let entry = if info.is_callable() {
            let handle = instance
                .get_typed_func::<(i32, i32), i64>(&mut store, "cwasi_handle")
                .map_err(|e| inst_err(format!("{e:#}")))?;
            let error = instance
                .get_typed_func::<(), i64>(&mut store, "cwasi_error")
                .ok();
            Entrypoints::Abi {
                alloc: alloc.ok_or_else(|| inst_err("cwasi_alloc has the wrong type".into()))?,
                handle,
                error,
            }
        } else if let Some(h) = function.seed_handler() {
            let alloc = instance
                .get_typed_func::<i32, i32>(&mut store, "allocate")
                .map_err(|e| inst_err(format!("seed callee: {e:#}")))?;
            let handler = instance
                .get_typed_func::<(i32, i32), ()>(&mut store, h)
                .map_err(|e| inst_err(format!("seed handler '{h}': {e:#}")))?;
            Entrypoints::Seed { alloc, handler }
        } else {
            Entrypoints::None
        };
        Ok(WarmInstance {
            store,
            instance,
            memory,
            entry,
        })
    }

    /// Runs `_start` (for an entry).
    pub fn run_start(&mut self) -> wasmtime::Result<()> {
        let start = self
            .instance
            .get_typed_func::<(), ()>(&mut self.store, "_start")?;
        start.call(&mut self.store, ())
    }

    /// Prepares the instance for a call at `depth` with a fresh deadline.
    pub fn arm(&mut self, depth: u32, timeout: Duration) {
        self.store.data_mut().depth = depth;
        self.store.data_mut().limiter.exceeded = None;
        self.store.set_epoch_deadline(ticks_for(timeout));
    }

    /// Allocates `len` bytes for a request in the callee, through its
    /// allocation export, and returns the checked range. A zero length
    /// allocates nothing.
    pub fn alloc_request(&mut self, len: usize) -> Result<usize, CallError> {
        if len == 0 {
            return Ok(0);
        }
        let alloc = match &self.entry {
            Entrypoints::Abi { alloc, .. } | Entrypoints::Seed { alloc, .. } => alloc.clone(),
            Entrypoints::None => return Err(self.not_callable()),
        };
        let ptr = alloc
            .call(&mut self.store, len as i32)
            .map_err(|e| self.trap_error(e, "cwasi_alloc"))? as u32 as usize;
        if ptr == 0 {
            return Err(CallError::new(
                ErrorCode::ResourceLimit,
                format!(
                    "callee '{}' could not allocate {len} bytes for the request",
                    self.name()
                ),
            ));
        }
        self.check_range(ptr, len, "cwasi_alloc returned a buffer")?;
        Ok(ptr)
    }

    /// The callee's memory, for copying in and out.
    pub fn memory_mut(&mut self) -> &mut [u8] {
        self.memory.data_mut(&mut self.store)
    }

    /// Runs the handler on a request already placed at `ptr`.
    pub fn handle(&mut self, ptr: usize, len: usize) -> Result<ResponseRange, CallError> {
        match &self.entry {
            Entrypoints::Abi { handle, error, .. } => {
                let (handle, error) = (handle.clone(), error.clone());
                let packed = handle
                    .call(&mut self.store, (ptr as i32, len as i32))
                    .map_err(|e| self.trap_error(e, "cwasi_handle"))?;
                if (-4095..=-1).contains(&packed) {
                    let detail = error
                        .and_then(|f| f.call(&mut self.store, ()).ok())
                        .and_then(|p| self.read_packed_str(p))
                        .unwrap_or_else(|| format!("error {packed}"));
                    return Err(CallError::new(
                        ErrorCode::CalleeError,
                        format!("callee '{}' failed: {detail}", self.name()),
                    ));
                }
                let ptr = (packed as u64 >> 32) as usize;
                let len = (packed as u64 & 0xffff_ffff) as usize;
                self.check_range(ptr, len, "cwasi_handle returned a response")?;
                Ok(ResponseRange { ptr, len })
            }
            Entrypoints::Seed { handler, .. } => {
                let handler = handler.clone();
                handler
                    .call(&mut self.store, (ptr as i32, len as i32))
                    .map_err(|e| self.trap_error(e, "the seed handler"))?;
                Ok(ResponseRange { ptr: 0, len: 0 })
            }
            Entrypoints::None => Err(self.not_callable()),
        }
    }

    fn read_packed_str(&mut self, packed: i64) -> Option<String> {
        let ptr = (packed as u64 >> 32) as usize;
        let len = ((packed as u64 & 0xffff_ffff) as usize).min(4096);
        let data = self.memory.data(&self.store);
        let bytes = data.get(ptr..ptr.checked_add(len)?)?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    fn check_range(&self, ptr: usize, len: usize, what: &str) -> Result<(), CallError> {
        let size = self.memory.data_size(&self.store);
        match ptr.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(CallError::new(
                ErrorCode::BadResponse,
                format!(
                    "callee '{}': {what} out of bounds (ptr {ptr:#x}, len {len}, memory {size} bytes)",
                    self.name()
                ),
            )),
        }
    }

    fn name(&self) -> &str {
        &self.store.data().function.spec.name
    }

    fn not_callable(&self) -> CallError {
        CallError::new(
            ErrorCode::NotCallable,
            self.store.data().function.not_callable_reason(),
        )
    }

    /// Maps an error out of the guest to the ABI code the caller gets.
    pub fn trap_error(&mut self, err: wasmtime::Error, during: &str) -> CallError {
        let name = self.name().to_string();
        if let Some(wanted) = self.store.data_mut().limiter.exceeded.take() {
            let max = self.store.data().runtime.limits.max_memory_bytes;
            return CallError::new(
                ErrorCode::ResourceLimit,
                format!(
                    "callee '{name}' exceeded its memory limit in {during}: it asked for {wanted} bytes, the limit is {max} bytes"
                ),
            );
        }
        trap_to_call_error(&name, during, &err)
    }
}

/// Maps a wasmtime error from running `name` to a call error.
pub(crate) fn trap_to_call_error(name: &str, during: &str, err: &wasmtime::Error) -> CallError {
    if let Some(trap) = err.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            return CallError::new(
                ErrorCode::Timeout,
                format!("callee '{name}' did not finish {during} within the call timeout"),
            );
        }
        return CallError::new(
            ErrorCode::CalleeTrapped,
            format!("callee '{name}' trapped in {during}: {trap}"),
        );
    }
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return CallError::new(
            ErrorCode::CalleeTrapped,
            format!("callee '{name}' exited with code {} in {during}", exit.0),
        );
    }
    CallError::new(
        ErrorCode::CalleeTrapped,
        format!("callee '{name}' failed in {during}: {}", first_line(err)),
    )
}

fn first_line(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    text.lines().next().unwrap_or_default().to_string()
}

fn build_wasi(function: &FunctionEntry) -> Result<WasiP1Ctx, String> {
    let spec = &function.spec;
    let mut b = WasiCtxBuilder::new();
    let mut args = Vec::with_capacity(spec.args.len() + 1);
    args.push(spec.name.clone());
    args.extend(spec.args.iter().cloned());
    b.args(&args)
        .envs(&spec.env)
        .inherit_stdout()
        .inherit_stderr();
    for p in &spec.preopens {
        let perms = if p.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        b.preopened_dir(&p.host, &p.guest, perms)
            .map_err(|e| format!("cannot preopen {}: {e}", p.host.display()))?;
    }
    Ok(b.build_p1())
}

/// Warm instances of one function, reused across calls.
pub(crate) struct InstancePool {
    idle: std::sync::Mutex<Vec<WarmInstance>>,
}

impl InstancePool {
    pub fn new() -> Self {
        InstancePool {
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Takes a warm instance, or creates one.
    pub fn acquire(
        &self,
        runtime: &Arc<RuntimeInner>,
        function: &Arc<FunctionEntry>,
        depth: u32,
        limits: &Limits,
    ) -> Result<WarmInstance, CallError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut inst = match idle {
            Some(i) => i,
            None => {
                tracing::debug!(function = %function.spec.name, "instantiating");
                WarmInstance::new(runtime, function, depth, limits.call_timeout)
                    .map_err(|e| CallError::new(ErrorCode::CalleeTrapped, e.to_string()))?
            }
        };
        inst.arm(depth, limits.call_timeout);
        Ok(inst)
    }

    /// Returns an instance after a successful call; instances that failed are
    /// dropped instead, since their state is unknown.
    pub fn release(&self, inst: WarmInstance, runtime: &RuntimeInner) {
        if runtime.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < runtime.limits.max_idle_instances {
            idle.push(inst);
        }
    }

    /// Drops every idle instance (on shutdown).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
