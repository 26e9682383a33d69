//! The host side of the component ABI (`wit/function.wit`): WASI 0.2, and
//! `cwasi:function/invoke` as thin adapters over the same [`Route`] as the
//! core ABI's `cwasi.call` (`host_abi.rs`), so a component's calls get the
//! same selection, limits, deadlines, spans and error codes. A failed call
//! is a `call-error` with the core ABI's code and message.
//!
//! Copies: the caller's request list is read where it lies (lifted as a
//! `WasmList`, not into a host buffer), so the transport copies it once.
//! The response is returned as a host buffer that the canonical ABI lowers
//! into the caller; a component callee's lifted response is handed on as
//! that buffer, without a copy between.

use std::sync::Arc;

use wasmtime::component::{
    ComponentType, Linker, Lower, Resource, ResourceType, WasmList, WasmStr,
};
use wasmtime::{Engine, StoreContextMut};

use super::host_abi::MAX_PENDING_CALLS;
use super::state::HostState;
use crate::call::route::Route;
use crate::call::CallerIo;
use crate::error::{CallError, ErrorCode, RuntimeError};
use cwasi_abi::MAX_NAME_LEN;

/// The interface a component imports to call others, as the host defines it.
pub const INVOKE_INTERFACE: &str = "cwasi:function/invoke@0.1.0";
/// The interface of the shared types.
pub const TYPES_INTERFACE: &str = "cwasi:function/types@0.1.0";

/// `enum error-code` of `wit/function.wit`: the core ABI's codes in order.
#[derive(ComponentType, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
enum WitErrorCode {
    #[component(name = "unknown-function")]
    UnknownFunction,
    #[component(name = "callee-trapped")]
    CalleeTrapped,
    #[component(name = "timeout")]
    Timeout,
    #[component(name = "too-large")]
    TooLarge,
    #[component(name = "transport")]
    Transport,
    #[component(name = "denied")]
    Denied,
    #[component(name = "invalid-argument")]
    InvalidArgument,
    #[component(name = "callee-error")]
    CalleeError,
    #[component(name = "bad-response")]
    BadResponse,
    #[component(name = "alloc-failed")]
    AllocFailed,
    #[component(name = "unknown-handle")]
    UnknownHandle,
    #[component(name = "resource-limit")]
    ResourceLimit,
    #[component(name = "not-callable")]
    NotCallable,
}

impl From<ErrorCode> for WitErrorCode {
    fn from(code: ErrorCode) -> WitErrorCode {
        match code {
            ErrorCode::UnknownFunction => WitErrorCode::UnknownFunction,
            ErrorCode::CalleeTrapped => WitErrorCode::CalleeTrapped,
            ErrorCode::Timeout => WitErrorCode::Timeout,
            ErrorCode::TooLarge => WitErrorCode::TooLarge,
            ErrorCode::Transport => WitErrorCode::Transport,
            ErrorCode::Denied => WitErrorCode::Denied,
            ErrorCode::InvalidArgument => WitErrorCode::InvalidArgument,
            ErrorCode::CalleeError => WitErrorCode::CalleeError,
            ErrorCode::BadResponse => WitErrorCode::BadResponse,
            ErrorCode::AllocFailed => WitErrorCode::AllocFailed,
            ErrorCode::UnknownHandle => WitErrorCode::UnknownHandle,
            ErrorCode::ResourceLimit => WitErrorCode::ResourceLimit,
            ErrorCode::NotCallable => WitErrorCode::NotCallable,
        }
    }
}

/// `record call-error` of `wit/function.wit`.
#[derive(ComponentType, Lower, Debug)]
#[component(record)]
struct WitCallError {
    code: WitErrorCode,
    message: String,
}

/// What a call returns to a component.
type WitResult<T> = wasmtime::Result<(Result<T, WitCallError>,)>;

/// The host's side of a `pending-call` resource; its representation is the
/// handle of the started call in the instance's [`HostState::pending`].
pub(crate) struct PendingCallResource;

/// Builds the linker every component is instantiated with: WASI 0.2 and
/// `cwasi:function/invoke`.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>, RuntimeError> {
    let fail = |e: wasmtime::Error| RuntimeError::Engine {
        what: "cannot build the component linker",
        source: e,
    };
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(fail)?;
    linker.instance(TYPES_INTERFACE).map_err(fail)?;
    let mut invoke = linker.instance(INVOKE_INTERFACE).map_err(fail)?;
    invoke
        .resource(
            "pending-call",
            ResourceType::host::<PendingCallResource>(),
            |mut store, rep| {
                // Dropped unwaited: the call is cancelled with it.
                store.data_mut().pending.remove(&i64::from(rep));
                Ok(())
            },
        )
        .map_err(fail)?;
    invoke.func_wrap("call", wit_call).map_err(fail)?;
    invoke.func_wrap("start", wit_start).map_err(fail)?;
    invoke
        .func_wrap("[method]pending-call.wait", wit_wait)
        .map_err(fail)?;
    Ok(linker)
}

/// `call: func(target: string, request: list<u8>) -> result<list<u8>, call-error>`.
fn wit_call(
    mut store: StoreContextMut<'_, HostState>,
    (target, request): (WasmStr, WasmList<u8>),
) -> WitResult<Vec<u8>> {
    let result = route_to(&mut store, &target).and_then(|route| {
        let from = store.data().call;
        let mut io = ComponentIo::new(&mut store, Some(request));
        route.call(&mut io, &from)?;
        Ok(io.response)
    });
    Ok((result.map_err(|e| call_error(&mut store, e)),))
}

/// `start: func(target: string, request: list<u8>) -> result<pending-call, call-error>`.
fn wit_start(
    mut store: StoreContextMut<'_, HostState>,
    (target, request): (WasmStr, WasmList<u8>),
) -> WitResult<Resource<PendingCallResource>> {
    let result = route_to(&mut store, &target).and_then(|route| {
        if store.data().pending.len() >= MAX_PENDING_CALLS {
            return Err(CallError::new(
                ErrorCode::ResourceLimit,
                format!("more than {MAX_PENDING_CALLS} started calls are waiting"),
            ));
        }
        let from = store.data().call;
        let mut io = ComponentIo::new(&mut store, Some(request));
        let started = route.start(&mut io, &from)?;
        let handle = store.data_mut().park(started);
        Ok(Resource::new_own(handle))
    });
    Ok((result.map_err(|e| call_error(&mut store, e)),))
}

/// `[method]pending-call.wait: func() -> result<list<u8>, call-error>`.
fn wit_wait(
    mut store: StoreContextMut<'_, HostState>,
    (call,): (Resource<PendingCallResource>,),
) -> WitResult<Vec<u8>> {
    let handle = call.rep();
    let result = match store.data_mut().pending.remove(&i64::from(handle)) {
        Some(started) => {
            let mut io = ComponentIo::new(&mut store, None);
            started.wait(&mut io).map(|()| io.response)
        }
        None => Err(CallError::new(
            ErrorCode::UnknownHandle,
            format!("call {handle} was already waited"),
        )),
    };
    Ok((result.map_err(|e| call_error(&mut store, e)),))
}

/// The route to the target named `target`, checked as the core ABI checks
/// a target name.
fn route_to(
    store: &mut StoreContextMut<'_, HostState>,
    target: &WasmStr,
) -> Result<Arc<Route>, CallError> {
    let name = target
        .to_str(&*store)
        .map_err(|e| invalid(format!("the target name: {e:#}")))?;
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "the target name must be 1 to {MAX_NAME_LEN} bytes, got {}",
            name.len()
        )));
    }
    // The name borrows the caller's memory, which the route lookup needs
    // the store for: one short copy (at most MAX_NAME_LEN bytes).
    let name = name.into_owned();
    store.data_mut().route(&name)
}

fn invalid(message: String) -> CallError {
    CallError::new(ErrorCode::InvalidArgument, message)
}

/// A failed call as the component's `call-error`, logged as the core ABI
/// logs it.
fn call_error(store: &mut StoreContextMut<'_, HostState>, e: CallError) -> WitCallError {
    let code = WitErrorCode::from(e.code);
    let message = e.message.clone();
    store.data_mut().fail(e);
    WitCallError { code, message }
}

/// A component caller as a [`CallerIo`]: the request is its list, read in
/// place; the response a host buffer the canonical ABI lowers into it.
struct ComponentIo<'a, 'b> {
    store: &'a mut StoreContextMut<'b, HostState>,
    request: Option<WasmList<u8>>,
    response: Vec<u8>,
}

impl<'a, 'b> ComponentIo<'a, 'b> {
    fn new(store: &'a mut StoreContextMut<'b, HostState>, request: Option<WasmList<u8>>) -> Self {
        ComponentIo {
            store,
            request,
            response: Vec::new(),
        }
    }
}

impl CallerIo for ComponentIo<'_, '_> {
    fn request(&self) -> &[u8] {
        match &self.request {
            Some(list) => list.as_le_slice(&*self.store),
            None => &[],
        }
    }

    fn response_buffer(&mut self, len: usize) -> Result<&mut [u8], CallError> {
        self.response.clear();
        self.response.resize(len, 0);
        Ok(&mut self.response)
    }

    fn take_response(&mut self, response: Vec<u8>) -> Result<(), CallError> {
        self.response = response;
        Ok(())
    }
}
