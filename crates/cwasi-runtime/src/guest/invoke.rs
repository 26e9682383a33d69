//! The one callee-side path, shared by the embedded transport and by every
//! server: take a warm instance armed with the call's depth and deadline,
//! copy the request straight into its memory, run the handler, copy the
//! response straight out, and pool the instance again or drop it.

use std::sync::Arc;

use super::function::Function;
use super::instance::{ResponseRange, WarmInstance};
use crate::call::{deliver, CallMeta, CallerIo};
use crate::error::CallError;

/// Where a callee's request comes from and its response goes: the caller's
/// memory (embedded), a socket and shared region (local server), or the
/// broker's buffers (remote server).
pub(crate) trait Exchange {
    /// The request's length.
    fn request_len(&self) -> usize;
    /// Copies the request into `dst`, which is exactly that long.
    fn read_request(&mut self, dst: &mut [u8]) -> Result<(), CallError>;
    /// Hands the response over.
    fn write_response(&mut self, response: &[u8]) -> Result<(), CallError>;
}

/// A caller in this process as an [`Exchange`].
pub(crate) struct CallerExchange<'a>(pub &'a mut dyn CallerIo);

impl Exchange for CallerExchange<'_> {
    fn request_len(&self) -> usize {
        self.0.request().len()
    }

    fn read_request(&mut self, dst: &mut [u8]) -> Result<(), CallError> {
        dst.copy_from_slice(self.0.request());
        Ok(())
    }

    fn write_response(&mut self, response: &[u8]) -> Result<(), CallError> {
        deliver(self.0, response)
    }
}

/// Runs one call of `function`: the whole callee-side path.
pub(crate) fn invoke(
    function: &Arc<Function>,
    call: CallMeta,
    exchange: &mut dyn Exchange,
) -> Result<(), CallError> {
    let mut invocation = Invocation::begin(function, call, exchange)?;
    let result = invocation
        .run()
        .and_then(|range| invocation.deliver(range, exchange));
    invocation.finish(result.as_ref().map(|_| ()));
    result
}

/// One call in progress in one instance, step by step (a started call runs
/// its handler on another thread than the one that placed its request).
pub(crate) struct Invocation {
    function: Arc<Function>,
    instance: Box<WarmInstance>,
    request: (usize, usize),
}

impl Invocation {
    /// Takes an instance armed for `call` and copies the request into it.
    pub fn begin(
        function: &Arc<Function>,
        call: CallMeta,
        exchange: &mut dyn Exchange,
    ) -> Result<Invocation, CallError> {
        let mut instance = function.acquire(call)?;
        let len = exchange.request_len();
        let placed = instance.alloc_request(len).and_then(|ptr| {
            exchange.read_request(&mut instance.memory_mut()[ptr..ptr + len])?;
            Ok(ptr)
        });
        match placed {
            Ok(ptr) => Ok(Invocation {
                function: function.clone(),
                instance,
                request: (ptr, len),
            }),
            Err(e) => {
                function.release(instance, Err(&e));
                Err(e)
            }
        }
    }

    /// Runs the handler on the request; the response stays in the callee's
    /// memory until delivered.
    pub fn run(&mut self) -> Result<ResponseRange, CallError> {
        let (ptr, len) = self.request;
        let range = self.instance.handle(ptr, len)?;
        let max = self.function.limits().max_payload_bytes;
        if range.len > max {
            return Err(CallError::too_large("response", range.len, max));
        }
        Ok(range)
    }

    /// Copies the response out of the callee's memory.
    pub fn deliver(
        &mut self,
        range: ResponseRange,
        exchange: &mut dyn Exchange,
    ) -> Result<(), CallError> {
        let memory = self.instance.memory_mut();
        exchange.write_response(&memory[range.ptr..range.ptr + range.len])
    }

    /// Ends the call: pools the instance again if `outcome` leaves it in a
    /// known state.
    pub fn finish(self, outcome: Result<(), &CallError>) {
        self.function.release(self.instance, outcome);
    }
}
