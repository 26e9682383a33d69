//! Embedded mode: the callee runs in this process, on the same engine, in its
//! own store. The payload moves from the caller's linear memory straight into
//! the callee's, and the response straight back: one copy each way.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{CallError, ErrorCode};
use crate::instance::WarmInstance;
use crate::runtime::FunctionEntry;
use crate::transport::{CallContext, CallerIo, PendingCall, Transport};

/// Extra time a waiter gives a worker past the call timeout, for the epoch
/// interrupt to land and the worker to hand back its instance.
const WAIT_GRACE: Duration = Duration::from_secs(2);

/// Calls a function loaded in this process.
pub(crate) struct EmbeddedTransport {
    pub function: Arc<FunctionEntry>,
}

impl Transport for EmbeddedTransport {
    fn call(&self, ctx: &CallContext<'_>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let f = &self.function;
        let mut inst = f
            .pool
            .acquire(ctx.runtime, f, ctx.depth, &ctx.runtime.limits)?;
        let result = place_request(&mut inst, io)
            .and_then(|(ptr, len)| inst.handle(ptr, len))
            .and_then(|resp| deliver(&mut inst, resp, io, ctx.runtime.limits.max_payload_bytes));
        finish(f, inst, &result, ctx);
        result
    }

    fn start(
        &self,
        ctx: &CallContext<'_>,
        io: &mut dyn CallerIo,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        let f = &self.function;
        let mut inst = f
            .pool
            .acquire(ctx.runtime, f, ctx.depth, &ctx.runtime.limits)?;
        let (ptr, len) = place_request(&mut inst, io)?;
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("cwasi-call-{}", f.spec.name))
            .spawn(move || {
                let result = inst.handle(ptr, len);
                let _ = tx.send((inst, result));
            })
            .map_err(|e| {
                CallError::new(
                    ErrorCode::ResourceLimit,
                    format!("cannot start a worker thread: {e}"),
                )
            })?;
        Ok(Box::new(EmbeddedPending {
            function: f.clone(),
            runtime: ctx.runtime.clone(),
            rx,
        }))
    }
}

type WorkerResult = (
    WarmInstance,
    Result<crate::instance::ResponseRange, CallError>,
);

struct EmbeddedPending {
    function: Arc<FunctionEntry>,
    runtime: Arc<crate::runtime::RuntimeInner>,
    rx: mpsc::Receiver<WorkerResult>,
}

impl PendingCall for EmbeddedPending {
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let limits = &self.runtime.limits;
        let (mut inst, result) = self
            .rx
            .recv_timeout(limits.call_timeout + WAIT_GRACE)
            .map_err(|_| {
                CallError::new(
                    ErrorCode::Timeout,
                    format!(
                        "callee '{}' did not answer within {:?}",
                        self.function.spec.name, limits.call_timeout
                    ),
                )
            })?;
        let result = result.and_then(|resp| deliver(&mut inst, resp, io, limits.max_payload_bytes));
        let ctx = CallContext {
            runtime: &self.runtime,
            depth: 0,
        };
        finish(&self.function, inst, &result, &ctx);
        result
    }
}

/// Copies the request from the caller into memory the callee allocated.
fn place_request(
    inst: &mut WarmInstance,
    io: &mut dyn CallerIo,
) -> Result<(usize, usize), CallError> {
    let len = io.request().len();
    let ptr = inst.alloc_request(len)?;
    if len > 0 {
        inst.memory_mut()[ptr..ptr + len].copy_from_slice(io.request());
    }
    Ok((ptr, len))
}

/// Copies the response from the callee's memory into the caller's.
fn deliver(
    inst: &mut WarmInstance,
    resp: crate::instance::ResponseRange,
    io: &mut dyn CallerIo,
    max_payload: usize,
) -> Result<(), CallError> {
    if resp.len > max_payload {
        return Err(CallError::too_large("response", resp.len, max_payload));
    }
    let dst = io.response_buffer(resp.len)?;
    let n = dst.len().min(resp.len);
    dst[..n].copy_from_slice(&inst.memory_mut()[resp.ptr..resp.ptr + n]);
    Ok(())
}

/// Pools the instance again if the call left it in a known state.
pub(crate) fn finish(
    f: &FunctionEntry,
    mut inst: WarmInstance,
    result: &Result<(), CallError>,
    ctx: &CallContext<'_>,
) {
    inst.store.data_mut().pending.clear();
    let healthy = match result {
        Ok(()) => true,
        Err(e) => matches!(
            e.code,
            ErrorCode::CalleeError | ErrorCode::TooLarge | ErrorCode::AllocFailed
        ),
    };
    if healthy {
        f.pool.release(inst, ctx.runtime);
    }
}
