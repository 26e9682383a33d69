//! A component's instance as a callee (`wit/function.wit`): its `handler`
//! export, called through the canonical ABI, and its `wasi:cli/run` when it
//! is an entry.
//!
//! Copies: the canonical ABI lowers the request from wherever it lies (the
//! caller's memory, for an embedded call) straight into the callee, one
//! copy. The response is lifted into a host buffer: wasmtime runs the
//! callee's post-return (which frees the list) before the host can read it
//! in place, so it cannot stay in the callee's memory as a core module's
//! does. That buffer is then handed on whole where the caller allows it.

use wasmtime::component::{Func, Instance, InstancePre, TypedFunc};
use wasmtime::Store;

use super::outcome::{trap_error, ResponseRange};
use super::state::HostState;
use crate::error::{CallError, ErrorCode};
use crate::inspect::ModuleInfo;

/// Longest handler error message passed on to the caller.
const MAX_ERROR_MESSAGE: usize = 4096;

/// `handle: func(request: list<u8>) -> result<list<u8>, string>`.
type HandleFunc<'a> = TypedFunc<(&'a [u8],), (Result<Vec<u8>, String>,)>;

/// `wasi:cli/run`'s `run: func() -> result`.
type RunFunc = TypedFunc<(), (Result<(), ()>,)>;

/// The exports of a component's instance that the host calls, and the
/// buffers of the call it serves.
pub(crate) struct ComponentExports {
    /// `handle` of its `cwasi:function/handler` export, type-checked.
    handle: Option<Func>,
    /// Its `wasi:cli/run` export's `run`.
    run: Option<RunFunc>,
    /// A request from another process, placed here for the handler.
    request: Vec<u8>,
    /// The handler's last response.
    response: Vec<u8>,
}

impl ComponentExports {
    /// Instantiates `pre` in `store` and looks up the exports `info` names.
    pub fn new(
        pre: &InstancePre<HostState>,
        info: &ModuleInfo,
        store: &mut Store<HostState>,
    ) -> Result<ComponentExports, String> {
        let surface = info.component.as_ref().ok_or("not a component")?;
        let instance = pre.instantiate(&mut *store).map_err(|e| format!("{e:#}"))?;
        let handle = match &surface.handler {
            Some(name) => Some(handle_export(&instance, store, name)?),
            None => None,
        };
        let run = match &surface.run {
            Some(name) => {
                let func = export_func(&instance, store, name, "run")?;
                Some(
                    func.typed::<(), (Result<(), ()>,)>(&*store)
                        .map_err(|e| format!("{name}: run has the wrong type: {e:#}"))?,
                )
            }
            None => None,
        };
        Ok(ComponentExports {
            handle,
            run,
            request: Vec::new(),
            response: Vec::new(),
        })
    }

    /// A buffer of `len` bytes for a request from another process.
    pub fn request_buffer(&mut self, len: usize) -> Result<(usize, &mut [u8]), CallError> {
        if self.handle.is_none() {
            return Err(not_callable());
        }
        self.request.clear();
        self.request.resize(len, 0);
        Ok((0, &mut self.request[..]))
    }

    /// Runs the handler on the `len` bytes placed by [`Self::request_buffer`].
    pub fn handle_placed(
        &mut self,
        store: &mut Store<HostState>,
        len: usize,
    ) -> Result<ResponseRange, CallError> {
        let request = std::mem::take(&mut self.request);
        let result = self.handle(store, &request[..len.min(request.len())]);
        self.request = request;
        result
    }

    /// Runs the handler on `request`; the response stays in this instance
    /// until read or taken.
    pub fn handle(
        &mut self,
        store: &mut Store<HostState>,
        request: &[u8],
    ) -> Result<ResponseRange, CallError> {
        let func = self.handle.ok_or_else(not_callable)?;
        // SAFETY: `func`'s type was checked against exactly these parameter
        // and result types when the instance was made (`handle_export`).
        let typed = unsafe { HandleFunc::new_unchecked(func) };
        match typed.call(&mut *store, (request,)) {
            Ok((Ok(response),)) => {
                self.response = response;
                Ok(ResponseRange {
                    ptr: 0,
                    len: self.response.len(),
                })
            }
            Ok((Err(mut message),)) => {
                if message.len() > MAX_ERROR_MESSAGE {
                    let mut end = MAX_ERROR_MESSAGE;
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.truncate(end);
                }
                Err(CallError::new(
                    ErrorCode::CalleeError,
                    format!("callee '{}' failed: {message}", store.data().caller.name),
                ))
            }
            Err(e) => Err(trap_error(store, e, "handle")),
        }
    }

    /// The response the handler returned.
    pub fn response(&self, range: ResponseRange) -> &[u8] {
        let end = range.ptr.saturating_add(range.len).min(self.response.len());
        &self.response[range.ptr.min(end)..end]
    }

    /// The response, handed over whole.
    pub fn take_response(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.response)
    }

    /// Runs `wasi:cli/run`; a run that returns an error exits with code 1,
    /// as a WASI command does.
    pub fn run(&self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        let run = self
            .run
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("the component does not export wasi:cli/run"))?;
        match run.call(&mut *store, ())? {
            (Ok(()),) => Ok(()),
            (Err(()),) => Err(wasmtime_wasi::I32Exit(1).into()),
        }
    }
}

fn not_callable() -> CallError {
    CallError::new(
        ErrorCode::NotCallable,
        "the component does not export cwasi:function/handler",
    )
}

/// The function `func` of the exported interface `interface`.
fn export_func(
    instance: &Instance,
    store: &mut Store<HostState>,
    interface: &str,
    func: &str,
) -> Result<Func, String> {
    let iface = instance
        .get_export_index(&mut *store, None, interface)
        .ok_or_else(|| format!("the component has no export {interface}"))?;
    let index = instance
        .get_export_index(&mut *store, Some(&iface), func)
        .ok_or_else(|| format!("{interface} has no function {func}"))?;
    instance
        .get_func(&mut *store, index)
        .ok_or_else(|| format!("{interface}#{func} is not a function"))
}

/// The handler's `handle`, checked to have the type of `wit/function.wit`.
fn handle_export(
    instance: &Instance,
    store: &mut Store<HostState>,
    interface: &str,
) -> Result<Func, String> {
    let func = export_func(instance, store, interface, "handle")?;
    func.typed::<(&[u8],), (Result<Vec<u8>, String>,)>(&*store)
        .map_err(|e| {
            format!(
                "{interface}#handle must be func(request: list<u8>) -> result<list<u8>, string>: {e:#}"
            )
        })?;
    Ok(func)
}
