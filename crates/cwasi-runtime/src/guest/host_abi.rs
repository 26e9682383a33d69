//! The host side of guest ABI v1 (`docs/abi.md`): the `cwasi` import module,
//! and the prototype's `cwasi_export.func_connect`. Each host function is a
//! thin adapter: it checks every pointer and length the guest passed, finds
//! the route through the instance's [`HostState`], and lets the route make
//! the call. Every failure becomes an ABI code.

use std::sync::Arc;

use wasmtime::{Caller, Engine, Linker};

use super::state::{CallerExports, HostState};
use crate::call::route::Route;
use crate::call::CallerIo;
use crate::error::{CallError, ErrorCode, RuntimeError};
use cwasi_abi::{
    encode_result_slot, CWASI_MODULE, EXPORT_ALLOC, EXPORT_MEMORY, IMPORT_CALL, IMPORT_CALL_START,
    IMPORT_CALL_WAIT, IMPORT_LAST_ERROR, MAX_NAME_LEN, RESULT_SLOT_LEN, SEED_IMPORT_FUNC_CONNECT,
    SEED_MODULE,
};

/// How many started calls one invocation may have in flight.
pub const MAX_PENDING_CALLS: usize = 256;

/// Builds the linker every function is instantiated with: WASI preview 1,
/// `cwasi.*` and `cwasi_export.func_connect`.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    let fail = |e: wasmtime::Error| RuntimeError::Engine {
        what: "cannot build the linker",
        source: e,
    };
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)
        .map_err(fail)?;
    linker
        .func_wrap(CWASI_MODULE, IMPORT_CALL, host_call)
        .map_err(fail)?;
    linker
        .func_wrap(CWASI_MODULE, IMPORT_CALL_START, host_call_start)
        .map_err(fail)?;
    linker
        .func_wrap(CWASI_MODULE, IMPORT_CALL_WAIT, host_call_wait)
        .map_err(fail)?;
    linker
        .func_wrap(CWASI_MODULE, IMPORT_LAST_ERROR, host_last_error)
        .map_err(fail)?;
    linker
        .func_wrap(SEED_MODULE, SEED_IMPORT_FUNC_CONNECT, host_func_connect)
        .map_err(fail)?;
    Ok(linker)
}

fn invalid(msg: impl Into<String>) -> CallError {
    CallError::new(ErrorCode::InvalidArgument, msg)
}

/// Checks that `[ptr, ptr + len)` lies inside a memory of `size` bytes.
fn check_range(ptr: i32, len: i32, size: usize, what: &str) -> Result<(usize, usize), CallError> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    match p.checked_add(l) {
        Some(end) if end <= size => Ok((p, l)),
        _ => Err(invalid(format!(
            "{what} is out of bounds (ptr {p:#x}, len {l}, memory {size} bytes)"
        ))),
    }
}

/// The caller's exports, taken out of its state for the duration of a host
/// function (no per-call clone) and put back by [`GuestIo::finish`]. An
/// instance whose exports are already out (a host function re-entered
/// through its own `cwasi_alloc`) looks them up again.
fn take_exports(caller: &mut Caller<'_, HostState>) -> Result<CallerExports, CallError> {
    if let Some(e) = caller.data_mut().exports.take() {
        return Ok(e);
    }
    let memory = caller
        .get_export(EXPORT_MEMORY)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| invalid("the caller does not export its memory as \"memory\""))?;
    let alloc = caller
        .get_export(EXPORT_ALLOC)
        .and_then(|e| e.into_func())
        .and_then(|f| f.typed::<i32, i32>(&*caller).ok());
    Ok(CallerExports { memory, alloc })
}

/// Where a response goes in the caller's memory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResponseTo {
    /// A buffer from the caller's `cwasi_alloc` (ABI v1).
    Alloc,
    /// Over the request, truncated to its length (the prototype).
    RequestBuffer,
}

/// A guest caller's memory as a [`CallerIo`].
struct GuestIo<'a, 'b> {
    caller: &'a mut Caller<'b, HostState>,
    ex: CallerExports,
    req: (usize, usize),
    /// Where the response was placed, once it was.
    resp: (u32, u32),
    to: ResponseTo,
}

impl<'a, 'b> GuestIo<'a, 'b> {
    /// Checks the request range and takes the caller's exports.
    fn new(
        caller: &'a mut Caller<'b, HostState>,
        (ptr, len): (i32, i32),
        to: ResponseTo,
    ) -> Result<Self, CallError> {
        let ex = take_exports(caller)?;
        let size = ex.memory.data_size(&*caller);
        match check_range(ptr, len, size, "the request") {
            Ok(req) => Ok(GuestIo {
                caller,
                ex,
                req,
                resp: (0, 0),
                to,
            }),
            Err(e) => {
                caller.data_mut().exports.get_or_insert(ex);
                Err(e)
            }
        }
    }

    /// Checks an 8-byte result slot at `out`.
    fn result_slot(&self, out: i32) -> Result<usize, CallError> {
        let size = self.ex.memory.data_size(&*self.caller);
        check_range(out, RESULT_SLOT_LEN as i32, size, "the result slot out_ptr").map(|(p, _)| p)
    }

    /// The route to the target named at `(ptr, len)`, checked; the name is
    /// read in place (a warm call copies nothing and takes no lock).
    fn route(&mut self, ptr: i32, len: i32) -> Result<Arc<Route>, CallError> {
        let (data, state) = self.ex.memory.data_and_store_mut(&mut *self.caller);
        let (p, l) = check_range(ptr, len, data.len(), "the target name")?;
        if l == 0 || l > MAX_NAME_LEN {
            return Err(invalid(format!(
                "the target name must be 1 to {MAX_NAME_LEN} bytes, got {l}"
            )));
        }
        let name = std::str::from_utf8(&data[p..p + l])
            .map_err(|_| invalid("the target name is not valid UTF-8"))?;
        state.route(name)
    }

    /// Writes the response's `(ptr, len)` into the result slot at `out`.
    fn write_result(&mut self, out: usize) {
        let bytes = encode_result_slot(self.resp.0, self.resp.1);
        // The slot was checked before the call, and memory never shrinks.
        self.ex.memory.data_mut(&mut *self.caller)[out..out + RESULT_SLOT_LEN]
            .copy_from_slice(&bytes);
    }

    /// Puts the exports back into the caller's state.
    fn finish(self) -> (u32, u32) {
        self.caller.data_mut().exports.get_or_insert(self.ex);
        self.resp
    }
}

impl CallerIo for GuestIo<'_, '_> {
    fn request(&self) -> &[u8] {
        let (p, l) = self.req;
        &self.ex.memory.data(&*self.caller)[p..p + l]
    }

    fn response_buffer(&mut self, len: usize) -> Result<&mut [u8], CallError> {
        if self.to == ResponseTo::RequestBuffer {
            let n = len.min(self.req.1);
            self.resp = (self.req.0 as u32, n as u32);
            let p = self.req.0;
            return Ok(&mut self.ex.memory.data_mut(&mut *self.caller)[p..p + n]);
        }
        if len == 0 {
            self.resp = (0, 0);
            return Ok(&mut []);
        }
        let Some(alloc) = &self.ex.alloc else {
            return Err(CallError::new(
                ErrorCode::AllocFailed,
                "the caller does not export cwasi_alloc(i32) -> i32, so it cannot receive a response",
            ));
        };
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

/// Runs `op` with the guest's memory as a [`CallerIo`] and puts the caller's
/// exports back whatever happens.
fn with_io<T>(
    caller: &mut Caller<'_, HostState>,
    request: (i32, i32),
    to: ResponseTo,
    op: impl FnOnce(&mut GuestIo<'_, '_>) -> Result<T, CallError>,
) -> Result<(T, (u32, u32)), CallError> {
    let mut io = GuestIo::new(caller, request, to)?;
    let result = op(&mut io);
    let resp = io.finish();
    result.map(|t| (t, resp))
}

/// `cwasi.call(target_ptr, target_len, req_ptr, req_len, out_ptr) -> i32`.
fn host_call(
    mut caller: Caller<'_, HostState>,
    tp: i32,
    tl: i32,
    rp: i32,
    rl: i32,
    out: i32,
) -> i32 {
    let result = with_io(&mut caller, (rp, rl), ResponseTo::Alloc, |io| {
        let out = io.result_slot(out)?;
        let route = io.route(tp, tl)?;
        let from = io.caller.data().call;
        route.call(io, &from)?;
        io.write_result(out);
        Ok(())
    });
    match result {
        Ok(_) => 0,
        Err(e) => caller.data_mut().fail(e),
    }
}

/// `cwasi.call_start(target_ptr, target_len, req_ptr, req_len) -> i64`.
fn host_call_start(mut caller: Caller<'_, HostState>, tp: i32, tl: i32, rp: i32, rl: i32) -> i64 {
    let result = with_io(&mut caller, (rp, rl), ResponseTo::Alloc, |io| {
        let route = io.route(tp, tl)?;
        if io.caller.data().pending.len() >= MAX_PENDING_CALLS {
            return Err(CallError::new(
                ErrorCode::ResourceLimit,
                format!("more than {MAX_PENDING_CALLS} started calls are waiting"),
            ));
        }
        let from = io.caller.data().call;
        let started = route.start(io, &from)?;
        Ok(i64::from(io.caller.data_mut().park(started)))
    });
    match result {
        Ok((handle, _)) => handle,
        Err(e) => caller.data_mut().fail(e) as i64,
    }
}

/// `cwasi.call_wait(handle, out_ptr) -> i32`.
fn host_call_wait(mut caller: Caller<'_, HostState>, handle: i64, out: i32) -> i32 {
    let result = with_io(&mut caller, (0, 0), ResponseTo::Alloc, |io| {
        let out = io.result_slot(out)?;
        let started = io
            .caller
            .data_mut()
            .pending
            .remove(&handle)
            .ok_or_else(|| {
                CallError::new(
                    ErrorCode::UnknownHandle,
                    format!("call handle {handle} is unknown or was already waited"),
                )
            })?;
        started.wait(io)?;
        io.write_result(out);
        Ok(())
    });
    match result {
        Ok(_) => 0,
        Err(e) => caller.data_mut().fail(e),
    }
}

/// `cwasi.last_error(buf_ptr, buf_len) -> i32`: copies the last message.
fn host_last_error(mut caller: Caller<'_, HostState>, bp: i32, bl: i32) -> i32 {
    let memory = match take_exports(&mut caller) {
        Ok(ex) => {
            let memory = ex.memory;
            caller.data_mut().exports.get_or_insert(ex);
            memory
        }
        Err(e) => return e.code.as_raw(),
    };
    let size = memory.data_size(&caller);
    let (p, l) = match check_range(bp, bl, size, "the message buffer") {
        Ok(r) => r,
        Err(e) => return e.code.as_raw(),
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let msg = state.last_error.as_bytes();
    let n = msg.len().min(l);
    data[p..p + n].copy_from_slice(&msg[..n]);
    msg.len().min(i32::MAX as usize) as i32
}

/// The prototype's `func_connect(ptr, len) -> i32`: sends `len` bytes to the
/// configured target and writes the response back over the same buffer,
/// truncated to `len`. Returns the bytes written or an error code.
fn host_func_connect(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> i32 {
    let result = with_io(&mut caller, (ptr, len), ResponseTo::RequestBuffer, |io| {
        // The caller's id is shared: holding it costs a count, not a copy
        // of the target's name.
        let me = io.caller.data().caller.clone();
        let target = me.connect_to.as_deref().ok_or_else(|| {
            CallError::new(
                ErrorCode::UnknownFunction,
                format!(
                    "function '{}' calls func_connect but has no connect_to target configured",
                    me.name
                ),
            )
        })?;
        let route = io.caller.data_mut().route(target)?;
        let from = io.caller.data().call;
        route.call(io, &from)
    });
    match result {
        Ok((_, (_, written))) => written as i32,
        Err(e) => caller.data_mut().fail(e),
    }
}
