//! One instantiated function with its store: the typed entry points the host
//! calls as a callee, the checks on every range a callee hands back, and the
//! mapping from traps to ABI error codes. A core module's request and
//! response live in its own memory; a component's pass through the
//! canonical ABI (`component.rs`).

use wasmtime::{Instance, InstancePre, Memory, Store, TypedFunc};

use cwasi_abi::{
    is_handle_error, unpack, EXPORT_ALLOC, EXPORT_ERROR, EXPORT_HANDLE, EXPORT_INITIALIZE,
    EXPORT_MEMORY, EXPORT_START, SEED_EXPORT_ALLOCATE,
};

use super::component::ComponentExports;
use super::outcome::trap_error;
pub(crate) use super::outcome::ResponseRange;
use super::state::{CallerExports, HostState};
use crate::call::CallMeta;
use crate::engine::{ticks_for, GuestRunning};
use crate::error::{CallError, ErrorCode};
use crate::inspect::ModuleInfo;

/// Whether `len` bytes at `ptr` lie within a memory of `size` bytes.
fn fits(ptr: usize, len: usize, size: usize) -> bool {
    ptr.checked_add(len).is_some_and(|end| end <= size)
}

/// `BAD_RESPONSE`: callee `name` handed back a range outside its memory.
fn out_of_bounds(name: &str, ptr: usize, len: usize, size: usize, what: &str) -> CallError {
    CallError::new(
        ErrorCode::BadResponse,
        format!(
            "callee '{name}': {what} out of bounds (ptr {ptr:#x}, len {len}, memory {size} bytes)"
        ),
    )
}

/// Longest message read from a callee's `cwasi_error`.
const MAX_ERROR_MESSAGE: usize = 4096;

/// How the host hands a request to a callee.
enum Entrypoints {
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
    /// Not callable, for this reason.
    None(String),
}

/// A module or component linked against the host functions.
pub(crate) enum LinkedPre {
    /// A core module, linked with WASI preview 1 and `cwasi`.
    Module(InstancePre<HostState>),
    /// A component, linked with WASI 0.2 and `cwasi:function/invoke`.
    Component(wasmtime::component::InstancePre<HostState>),
}

impl LinkedPre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            LinkedPre::Module(pre) => pre.module().engine(),
            LinkedPre::Component(pre) => pre.engine(),
        }
    }
}

/// How to build an instance: the linked module and its ABI surface.
pub(crate) struct InstanceRecipe<'a> {
    /// The pre-linked module or component.
    pub pre: &'a LinkedPre,
    /// Its ABI surface.
    pub info: &'a ModuleInfo,
    /// The seed handler export, when one is configured and present.
    pub seed_handler: Option<&'a str>,
    /// Why it cannot be called, in case it has no handler.
    pub not_callable: &'a dyn Fn() -> String,
}

/// One instantiated function with its store, ready to serve a call.
pub(crate) struct WarmInstance {
    /// The store, with the host state.
    pub store: Store<HostState>,
    body: Body,
}

/// What the host calls in an instance, by kind.
enum Body {
    Module(CoreExports),
    Component(ComponentExports),
}

/// A core module's instance, memory and entry points.
struct CoreExports {
    instance: Instance,
    memory: Memory,
    entry: Entrypoints,
}

impl WarmInstance {
    /// Instantiates `recipe` with `state`; the error says what failed.
    pub fn new(recipe: &InstanceRecipe<'_>, state: HostState) -> Result<WarmInstance, String> {
        let _running = GuestRunning::enter();
        let deadline = state.call.deadline;
        let mut store = Store::new(recipe.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks_for(deadline.remaining()));
        store.epoch_deadline_trap();
        let pre = match recipe.pre {
            LinkedPre::Module(pre) => pre,
            LinkedPre::Component(pre) => {
                let exports = ComponentExports::new(pre, recipe.info, &mut store)?;
                return Ok(WarmInstance {
                    store,
                    body: Body::Component(exports),
                });
            }
        };
        let instance = pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
        if recipe.info.initialize {
            let init = instance
                .get_typed_func::<(), ()>(&mut store, EXPORT_INITIALIZE)
                .map_err(|e| format!("{e:#}"))?;
            init.call(&mut store, ())
                .map_err(|e| format!("_initialize failed: {e:#}"))?;
        }
        let memory = instance
            .get_memory(&mut store, EXPORT_MEMORY)
            .ok_or("the module does not export its memory as \"memory\"")?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, EXPORT_ALLOC)
            .ok();
        let entry = if recipe.info.is_callable() {
            let handle = instance
                .get_typed_func::<(i32, i32), i64>(&mut store, EXPORT_HANDLE)
                .map_err(|e| format!("{e:#}"))?;
            let error = instance
                .get_typed_func::<(), i64>(&mut store, EXPORT_ERROR)
                .ok();
            Entrypoints::Abi {
                alloc: alloc.clone().ok_or("cwasi_alloc has the wrong type")?,
                handle,
                error,
            }
        } else if let Some(h) = recipe.seed_handler {
            let alloc = instance
                .get_typed_func::<i32, i32>(&mut store, SEED_EXPORT_ALLOCATE)
                .map_err(|e| format!("seed callee: {e:#}"))?;
            let handler = instance
                .get_typed_func::<(i32, i32), ()>(&mut store, h)
                .map_err(|e| format!("seed handler '{h}': {e:#}"))?;
            Entrypoints::Seed { alloc, handler }
        } else {
            Entrypoints::None((recipe.not_callable)())
        };
        store.data_mut().exports = Some(CallerExports { memory, alloc });
        Ok(WarmInstance {
            store,
            body: Body::Module(CoreExports {
                instance,
                memory,
                entry,
            }),
        })
    }

    /// Runs `_start`, or a component's `wasi:cli/run` (for an entry).
    pub fn run_start(&mut self) -> wasmtime::Result<()> {
        let _running = GuestRunning::enter();
        match &self.body {
            Body::Module(core) => {
                let start = core
                    .instance
                    .get_typed_func::<(), ()>(&mut self.store, EXPORT_START)?;
                start.call(&mut self.store, ())
            }
            Body::Component(c) => c.run(&mut self.store),
        }
    }

    /// Prepares the instance for a call: its depth and deadline.
    pub fn arm(&mut self, call: CallMeta) {
        let state = self.store.data_mut();
        state.call = call;
        state.limiter.exceeded = None;
        self.store.set_epoch_deadline(ticks_for(call.budget()));
    }

    /// Allocates `len` bytes for a request in the callee, through its
    /// allocation export, and returns the checked offset with the buffer
    /// there (one look at the memory, not one to check and one to copy).
    /// A zero length allocates nothing.
    pub fn request_buffer(&mut self, len: usize) -> Result<(usize, &mut [u8]), CallError> {
        let core = match &mut self.body {
            Body::Module(core) => core,
            Body::Component(c) => return c.request_buffer(len),
        };
        if len == 0 {
            return Ok((0, &mut []));
        }
        let alloc = match &core.entry {
            Entrypoints::Abi { alloc, .. } | Entrypoints::Seed { alloc, .. } => alloc,
            Entrypoints::None(reason) => {
                return Err(CallError::new(ErrorCode::NotCallable, reason.clone()))
            }
        };
        let ptr = match alloc.call(&mut self.store, len as i32) {
            Ok(p) => p as u32 as usize,
            Err(e) => return Err(trap_error(&mut self.store, e, "cwasi_alloc")),
        };
        if ptr == 0 {
            return Err(CallError::new(
                ErrorCode::ResourceLimit,
                format!(
                    "callee '{}' could not allocate {len} bytes for the request",
                    self.store.data().caller.name
                ),
            ));
        }
        let (memory, state) = core.memory.data_and_store_mut(&mut self.store);
        if !fits(ptr, len, memory.len()) {
            let what = "cwasi_alloc returned a buffer";
            return Err(out_of_bounds(
                &state.caller.name,
                ptr,
                len,
                memory.len(),
                what,
            ));
        }
        Ok((ptr, &mut memory[ptr..ptr + len]))
    }

    /// The response a handler left at `range`, checked against the memory
    /// (or a component's, which the host holds).
    pub fn response(&self, range: ResponseRange) -> Result<&[u8], CallError> {
        let core = match &self.body {
            Body::Module(core) => core,
            Body::Component(c) => return Ok(c.response(range)),
        };
        let memory = core.memory.data(&self.store);
        if !fits(range.ptr, range.len, memory.len()) {
            return Err(out_of_bounds(
                self.name(),
                range.ptr,
                range.len,
                memory.len(),
                "cwasi_handle returned a response",
            ));
        }
        Ok(&memory[range.ptr..range.ptr + range.len])
    }

    /// Whether this is a component's instance.
    pub fn is_component(&self) -> bool {
        matches!(self.body, Body::Component(_))
    }

    /// Runs a component's handler on `request`, read where it lies (the
    /// caller's memory, for an embedded call): the canonical ABI copies it
    /// into the callee once. A core module's request must be placed with
    /// [`Self::request_buffer`] instead.
    pub fn handle_request(&mut self, request: &[u8]) -> Result<ResponseRange, CallError> {
        match &mut self.body {
            Body::Component(c) => c.handle(&mut self.store, request),
            Body::Module(_) => Err(CallError::new(
                ErrorCode::BadResponse,
                "a core module's request must be placed in its memory",
            )),
        }
    }

    /// A component's response, handed over whole (no copy); `None` for a
    /// core module, whose response stays in its memory.
    pub fn take_response(&mut self) -> Option<Vec<u8>> {
        match &mut self.body {
            Body::Component(c) => Some(c.take_response()),
            Body::Module(_) => None,
        }
    }

    /// Runs the handler on a request already placed at `ptr`.
    pub fn handle(&mut self, ptr: usize, len: usize) -> Result<ResponseRange, CallError> {
        let core = match &mut self.body {
            Body::Module(core) => core,
            Body::Component(c) => return c.handle_placed(&mut self.store, len),
        };
        let args = (ptr as i32, len as i32);
        match &core.entry {
            Entrypoints::Abi { handle, error, .. } => {
                let packed = match handle.call(&mut self.store, args) {
                    Ok(p) => p,
                    Err(e) => return Err(trap_error(&mut self.store, e, "cwasi_handle")),
                };
                if is_handle_error(packed) {
                    let detail = error
                        .as_ref()
                        .and_then(|f| f.call(&mut self.store, ()).ok())
                        .and_then(|p| read_packed_str(core.memory.data(&self.store), p))
                        .unwrap_or_else(|| format!("error {packed}"));
                    return Err(CallError::new(
                        ErrorCode::CalleeError,
                        format!(
                            "callee '{}' failed: {detail}",
                            self.store.data().caller.name
                        ),
                    ));
                }
                // Checked against the memory when read, by `response`.
                let (ptr, len) = unpack(packed);
                Ok(ResponseRange {
                    ptr: ptr as usize,
                    len: len as usize,
                })
            }
            Entrypoints::Seed { handler, .. } => match handler.call(&mut self.store, args) {
                Ok(()) => Ok(ResponseRange { ptr: 0, len: 0 }),
                Err(e) => Err(trap_error(&mut self.store, e, "the seed handler")),
            },
            Entrypoints::None(reason) => {
                Err(CallError::new(ErrorCode::NotCallable, reason.clone()))
            }
        }
    }

    fn name(&self) -> &str {
        &self.store.data().caller.name
    }

    /// Maps an error out of the guest to the ABI code the caller gets.
    pub fn trap_error(&mut self, err: wasmtime::Error, during: &str) -> CallError {
        trap_error(&mut self.store, err, during)
    }
}

/// The message a core callee's `cwasi_error` left at `packed`, if in bounds.
fn read_packed_str(data: &[u8], packed: i64) -> Option<String> {
    let (ptr, len) = unpack(packed);
    let (ptr, len) = (ptr as usize, (len as usize).min(MAX_ERROR_MESSAGE));
    let bytes = data.get(ptr..ptr.checked_add(len)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}
