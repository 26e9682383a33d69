//! The host side of guest ABI v1 (`docs/abi.md`): the `cwasi` import module,
//! and the prototype's `cwasi_export.func_connect`. Every pointer and length a
//! guest passes is checked before use; every failure becomes an ABI code.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Caller, Engine, Linker, Memory};

use crate::error::{CallError, ErrorCode, RuntimeError};
use crate::inspect::{CWASI_MODULE, SEED_MODULE};
use crate::instance::{CallerExports, HostState};
use crate::runtime::Route;
use crate::transport::{CallContext, CallerIo};

/// How many started calls one invocation may have in flight.
pub const MAX_PENDING_CALLS: usize = 256;

/// Builds the linker every function is instantiated with: WASI preview 1,
/// `cwasi.*` and `cwasi_export.func_connect`.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    let cfg = |e: wasmtime::Error| RuntimeError::Config(format!("cannot build the linker: {e}"));
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)
        .map_err(cfg)?;
    linker
        .func_wrap(CWASI_MODULE, "call", host_call)
        .map_err(cfg)?;
    linker
        .func_wrap(CWASI_MODULE, "call_start", host_call_start)
        .map_err(cfg)?;
    linker
        .func_wrap(CWASI_MODULE, "call_wait", host_call_wait)
        .map_err(cfg)?;
    linker
        .func_wrap(CWASI_MODULE, "last_error", host_last_error)
        .map_err(cfg)?;
    linker
        .func_wrap(SEED_MODULE, "func_connect", host_func_connect)
        .map_err(cfg)?;
    Ok(linker)
}

fn invalid(msg: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::InvalidArgument, msg)
}

/// Checks that `[ptr, ptr + len)` lies inside a memory of `size` bytes.
pub(crate) fn check_range(
    ptr: i32,
    len: i32,
    size: usize,
    what: &str,
) -> Result<(usize, usize), CallError> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    match p.checked_add(l) {
        Some(end) if end <= size => Ok((p, l)),
        _ => Err(invalid(format!(
            "{what} is out of bounds (ptr {p:#x}, len {l}, memory {size} bytes)"
        ))),
    }
}

fn exports(caller: &mut Caller<'_, HostState>) -> Result<CallerExports, CallError> {
    if let Some(e) = &caller.data().exports {
        return Ok(e.clone());
    }
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| invalid("the caller does not export its memory as \"memory\""))?;
    let alloc = caller
        .get_export("cwasi_alloc")
        .and_then(|e| e.into_func())
        .and_then(|f| f.typed::<i32, i32>(&*caller).ok());
    Ok(CallerExports { memory, alloc })
}

/// Reads the target name and finds its route (cached per instance).
fn resolve(
    caller: &mut Caller<'_, HostState>,
    ex: &CallerExports,
    tp: i32,
    tl: i32,
) -> Result<Arc<Route>, CallError> {
    let data = ex.memory.data(&*caller);
    let (p, l) = check_range(tp, tl, data.len(), "the target name")?;
    if l == 0 || l > 255 {
        return Err(invalid(format!(
            "the target name must be 1 to 255 bytes, got {l}"
        )));
    }
    let name = std::str::from_utf8(&data[p..p + l])
        .map_err(|_| invalid("the target name is not valid UTF-8"))?;
    if let Some(r) = caller.data().routes.get(name) {
        return Ok(r.clone());
    }
    let name = name.to_owned();
    let state = caller.data();
    let route = state.runtime.route(&state.function, &name)?;
    caller
        .data_mut()
        .routes
        .insert(name.into_boxed_str(), route.clone());
    Ok(route)
}

fn callee_depth(caller: &Caller<'_, HostState>) -> Result<u32, CallError> {
    let s = caller.data();
    let depth = s.depth + 1;
    if depth > s.runtime.limits.max_call_depth {
        return Err(CallError::new(
            ErrorCode::ResourceLimit,
            format!(
                "call depth {depth} is over the limit of {}",
                s.runtime.limits.max_call_depth
            ),
        ));
    }
    Ok(depth)
}

/// A guest caller's memory as a [`CallerIo`].
struct GuestIo<'a, 'b> {
    caller: &'a mut Caller<'b, HostState>,
    ex: CallerExports,
    req: (usize, usize),
    /// Where the response was placed, once it was.
    resp: (u32, u32),
    /// For `func_connect`: the response overwrites the request buffer.
    seed: bool,
}

impl CallerIo for GuestIo<'_, '_> {
    fn request(&self) -> &[u8] {
        let (p, l) = self.req;
        &self.ex.memory.data(&*self.caller)[p..p + l]
    }

    fn response_buffer(&mut self, len: usize) -> Result<&mut [u8], CallError> {
        if self.seed {
            let n = len.min(self.req.1);
            self.resp = (self.req.0 as u32, n as u32);
            let p = self.req.0;
            return Ok(&mut self.ex.memory.data_mut(&mut *self.caller)[p..p + n]);
        }
        if len == 0 {
            self.resp = (0, 0);
            return Ok(&mut []);
        }
        let alloc = self.ex.alloc.clone().ok_or_else(|| {
            CallError::new(
                ErrorCode::AllocFailed,
                "the caller does not export cwasi_alloc(i32) -> i32, so it cannot receive a response",
            )
        })?;
        let ptr = alloc.call(&mut *self.caller, len as i32).map_err(|e| {
            CallError::new(
                ErrorCode::AllocFailed,
                format!("the caller's cwasi_alloc({len}) failed: {e}"),
            )
        })?;
        if ptr == 0 {
            return Err(CallError::new(
                ErrorCode::AllocFailed,
                format!("the caller's cwasi_alloc({len}) returned 0"),
            ));
        }
        let size = self.ex.memory.data_size(&*self.caller);
        let (p, l) = check_range(ptr, len as i32, size, "the buffer from cwasi_alloc")
            .map_err(|e| CallError::new(ErrorCode::AllocFailed, e.message))?;
        self.resp = (p as u32, l as u32);
        Ok(&mut self.ex.memory.data_mut(&mut *self.caller)[p..p + l])
    }
}

fn check_payload(caller: &Caller<'_, HostState>, len: usize) -> Result<(), CallError> {
    let max = caller.data().runtime.limits.max_payload_bytes;
    if len > max {
        return Err(CallError::too_large("request", len, max));
    }
    Ok(())
}

fn write_out(caller: &mut Caller<'_, HostState>, memory: Memory, out: usize, resp: (u32, u32)) {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&resp.0.to_le_bytes());
    bytes[4..].copy_from_slice(&resp.1.to_le_bytes());
    // The range was checked before the call, and memory never shrinks.
    memory.data_mut(&mut *caller)[out..out + 8].copy_from_slice(&bytes);
}

fn host_call(
    mut caller: Caller<'_, HostState>,
    tp: i32,
    tl: i32,
    rp: i32,
    rl: i32,
    out: i32,
) -> i32 {
    match do_call(&mut caller, tp, tl, rp, rl, out) {
        Ok(()) => 0,
        Err(e) => caller.data_mut().fail(e),
    }
}

fn do_call(
    caller: &mut Caller<'_, HostState>,
    tp: i32,
    tl: i32,
    rp: i32,
    rl: i32,
    out: i32,
) -> Result<(), CallError> {
    let ex = exports(caller)?;
    let memory = ex.memory;
    let size = ex.memory.data_size(&*caller);
    let req = check_range(rp, rl, size, "the request")?;
    let (out, _) = check_range(out, 8, size, "the result slot out_ptr")?;
    let route = resolve(caller, &ex, tp, tl)?;
    check_payload(caller, req.1)?;
    let depth = callee_depth(caller)?;
    let runtime = caller.data().runtime.clone();
    let started = Instant::now();
    let mut io = GuestIo {
        caller,
        ex,
        req,
        resp: (0, 0),
        seed: false,
    };
    let ctx = CallContext {
        runtime: &runtime,
        depth,
    };
    let result = route.transport.call(&ctx, &mut io);
    let resp = io.resp;
    route
        .stats
        .record(started, req.1, resp.1 as usize, result.is_ok());
    result?;
    write_out(caller, memory, out, resp);
    Ok(())
}

fn host_call_start(mut caller: Caller<'_, HostState>, tp: i32, tl: i32, rp: i32, rl: i32) -> i64 {
    match do_call_start(&mut caller, tp, tl, rp, rl) {
        Ok(h) => h,
        Err(e) => caller.data_mut().fail(e) as i64,
    }
}

fn do_call_start(
    caller: &mut Caller<'_, HostState>,
    tp: i32,
    tl: i32,
    rp: i32,
    rl: i32,
) -> Result<i64, CallError> {
    let ex = exports(caller)?;
    let size = ex.memory.data_size(&*caller);
    let req = check_range(rp, rl, size, "the request")?;
    let route = resolve(caller, &ex, tp, tl)?;
    check_payload(caller, req.1)?;
    let depth = callee_depth(caller)?;
    if caller.data().pending.len() >= MAX_PENDING_CALLS {
        return Err(CallError::new(
            ErrorCode::ResourceLimit,
            format!("more than {MAX_PENDING_CALLS} started calls are waiting"),
        ));
    }
    let runtime = caller.data().runtime.clone();
    let started = Instant::now();
    let mut io = GuestIo {
        caller,
        ex,
        req,
        resp: (0, 0),
        seed: false,
    };
    let ctx = CallContext {
        runtime: &runtime,
        depth,
    };
    let pending = match route.transport.start(&ctx, &mut io) {
        Ok(p) => p,
        Err(e) => {
            route.stats.record(started, req.1, 0, false);
            return Err(e);
        }
    };
    let state = caller.data_mut();
    let handle = state.next_handle;
    state.next_handle += 1;
    state.pending.insert(
        handle,
        Box::new(crate::runtime::StartedCall {
            inner: pending,
            route,
            started,
            request_len: req.1,
        }),
    );
    Ok(handle)
}

fn host_call_wait(mut caller: Caller<'_, HostState>, handle: i64, out: i32) -> i32 {
    match do_call_wait(&mut caller, handle, out) {
        Ok(()) => 0,
        Err(e) => caller.data_mut().fail(e),
    }
}

fn do_call_wait(
    caller: &mut Caller<'_, HostState>,
    handle: i64,
    out: i32,
) -> Result<(), CallError> {
    let ex = exports(caller)?;
    let memory = ex.memory;
    let size = ex.memory.data_size(&*caller);
    let (out, _) = check_range(out, 8, size, "the result slot out_ptr")?;
    let started = caller.data_mut().pending.remove(&handle).ok_or_else(|| {
        CallError::new(
            ErrorCode::UnknownHandle,
            format!("call handle {handle} is unknown or was already waited"),
        )
    })?;
    let mut io = GuestIo {
        caller,
        ex,
        req: (0, 0),
        resp: (0, 0),
        seed: false,
    };
    let result = started.wait(&mut io);
    let resp = io.resp;
    result?;
    write_out(caller, memory, out, resp);
    Ok(())
}

fn host_last_error(mut caller: Caller<'_, HostState>, bp: i32, bl: i32) -> i32 {
    let ex = match exports(&mut caller) {
        Ok(ex) => ex,
        Err(e) => return e.code.as_raw(),
    };
    let size = ex.memory.data_size(&caller);
    let (p, l) = match check_range(bp, bl, size, "the message buffer") {
        Ok(r) => r,
        Err(e) => return e.code.as_raw(),
    };
    let (data, state) = ex.memory.data_and_store_mut(&mut caller);
    let msg = state.last_error.as_bytes();
    let n = msg.len().min(l);
    data[p..p + n].copy_from_slice(&msg[..n]);
    msg.len().min(i32::MAX as usize) as i32
}

/// The prototype's `func_connect(ptr, len) -> i32`: sends `len` bytes to the
/// configured target and writes the response back over the same buffer,
/// truncated to `len`. Returns the bytes written or an error code.
fn host_func_connect(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> i32 {
    match do_func_connect(&mut caller, ptr, len) {
        Ok(n) => n,
        Err(e) => caller.data_mut().fail(e),
    }
}

fn do_func_connect(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<i32, CallError> {
    let ex = exports(caller)?;
    let size = ex.memory.data_size(&*caller);
    let req = check_range(ptr, len, size, "the func_connect buffer")?;
    let target = caller
        .data()
        .function
        .spec
        .seed
        .connect_to
        .clone()
        .ok_or_else(|| {
            CallError::new(
                ErrorCode::UnknownFunction,
                format!(
                    "function '{}' calls func_connect but has no connect_to target configured",
                    caller.data().function.spec.name
                ),
            )
        })?;
    let route = match caller.data().routes.get(target.as_str()) {
        Some(r) => r.clone(),
        None => {
            let state = caller.data();
            let r = state.runtime.route(&state.function, &target)?;
            caller
                .data_mut()
                .routes
                .insert(target.into_boxed_str(), r.clone());
            r
        }
    };
    check_payload(caller, req.1)?;
    let depth = callee_depth(caller)?;
    let runtime = caller.data().runtime.clone();
    let started = Instant::now();
    let mut io = GuestIo {
        caller,
        ex,
        req,
        resp: (0, 0),
        seed: true,
    };
    let ctx = CallContext {
        runtime: &runtime,
        depth,
    };
    let result = route.transport.call(&ctx, &mut io);
    let written = io.resp.1;
    route
        .stats
        .record(started, req.1, written as usize, result.is_ok());
    result?;
    Ok(written as i32)
}
