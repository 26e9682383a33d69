//! What a callee's run gives back, whatever its kind: where its response
//! lies, and how an error out of the guest becomes the ABI code its caller
//! gets.

use wasmtime::{Store, Trap};
use wasmtime_wasi::I32Exit;

use super::state::HostState;
use crate::error::{CallError, ErrorCode};

/// Where a response lies in a callee's memory after its handler ran.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseRange {
    /// Offset in the callee's memory.
    pub ptr: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Maps an error out of the guest in `store` to the ABI code the caller
/// gets: a refused memory growth is `RESOURCE_LIMIT`, whatever trap
/// followed it.
pub(crate) fn trap_error(
    store: &mut Store<HostState>,
    err: wasmtime::Error,
    during: &str,
) -> CallError {
    let state = store.data_mut();
    if let Some(wanted) = state.limiter.exceeded.take() {
        let max = state.limiter.max_bytes();
        return CallError::new(
            ErrorCode::ResourceLimit,
            format!(
                "callee '{}' exceeded its memory limit in {during}: it asked for {wanted} bytes, the limit is {max} bytes",
                state.caller.name
            ),
        );
    }
    trap_to_call_error(&state.caller.name, during, &err)
}

/// Maps a wasmtime error from running `name` to a call error.
pub(crate) fn trap_to_call_error(name: &str, during: &str, err: &wasmtime::Error) -> CallError {
    if let Some(trap) = err.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            return CallError::new(
                ErrorCode::Timeout,
                format!("callee '{name}' did not finish {during} within its deadline"),
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
    let text = format!("{err:#}");
    CallError::new(
        ErrorCode::CalleeTrapped,
        format!(
            "callee '{name}' failed in {during}: {}",
            text.lines().next().unwrap_or_default()
        ),
    )
}
