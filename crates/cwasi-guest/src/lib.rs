//! Guest SDK for CWASI functions.
//!
//! A CWASI function is a `wasm32-wasip1` module that other functions call by
//! name through the host (docs/abi.md). This crate wraps that ABI:
//!
//! - [`call`], [`call_start`] / [`PendingCall::wait`] and [`call_all`] call
//!   other functions, blocking or fanned out concurrently;
//! - [`export_handler!`] turns a plain `fn(&[u8]) -> Result<Vec<u8>, E>` into
//!   the `cwasi_handle` / `cwasi_error` exports;
//! - the `cwasi_alloc` export, through which the host hands buffers to the
//!   guest, is defined in this crate and needs no macro (see [`export`]).
//!
//! The ABI's error codes, names, limits and packing helpers come from the
//! dependency-free `cwasi-abi` crate, which the host shares; it is
//! re-exported as [`abi`], and its [`ErrorCode`] at the top level.
//!
//! On targets other than wasm32 the API still compiles, but every call fails
//! with [`ErrorCode::Transport`]: there is no host to talk to.

mod error;

pub mod export;
pub mod raw;

/// The ABI vocabulary shared with the host: the `cwasi-abi` crate.
pub use cwasi_abi as abi;
pub use cwasi_abi::ErrorCode;
pub use error::CallError;

/// Text of the error every call returns off wasm32.
#[cfg(not(target_arch = "wasm32"))]
const NO_HOST_MESSAGE: &str = "cwasi host imports are only available on wasm32 targets";

/// Calls the function named `target` with `payload` and blocks until it
/// answers; the everyday way for one function to use another.
///
/// The response buffer is allocated in this module by the host (through
/// `cwasi_alloc`) and returned as an owned `Vec`.
pub fn call(target: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
    let (target_ptr, target_len) = bytes_arg(target.as_bytes());
    let (req_ptr, req_len) = bytes_arg(payload);
    let mut out = [0u8; abi::RESULT_SLOT_LEN];
    // SAFETY: all ranges point at live buffers of the given lengths; `out` is
    // the 8 writable bytes of the result slot.
    let rc = unsafe {
        raw::call(
            target_ptr,
            target_len,
            req_ptr,
            req_len,
            ptr_arg(out.as_mut_ptr()),
        )
    };
    finish(rc, out)
}

/// Starts a call to `target` and returns at once, so that several calls can
/// run concurrently; the payload is copied before this returns.
pub fn call_start(target: &str, payload: &[u8]) -> Result<PendingCall, CallError> {
    let (target_ptr, target_len) = bytes_arg(target.as_bytes());
    let (req_ptr, req_len) = bytes_arg(payload);
    // SAFETY: both ranges point at live buffers of the given lengths.
    let handle = unsafe { raw::call_start(target_ptr, target_len, req_ptr, req_len) };
    if handle >= 1 {
        Ok(PendingCall { handle })
    } else {
        let raw = i32::try_from(handle).unwrap_or(i32::MIN);
        Err(error_from_raw(raw))
    }
}

/// Calls every `(target, payload)` concurrently: all calls are started first,
/// then all are waited, so the total time is about that of the slowest one.
///
/// The results are in the order of `calls`. A call that could not be started
/// yields its error and does not stop the others.
pub fn call_all<'a, I>(calls: I) -> Vec<Result<Vec<u8>, CallError>>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let started: Vec<Result<PendingCall, CallError>> = calls
        .into_iter()
        .map(|(target, payload)| call_start(target, payload))
        .collect();
    started
        .into_iter()
        .map(|pending| pending.and_then(PendingCall::wait))
        .collect()
}

/// A call started by [`call_start`] whose response has not been collected.
///
/// Dropping it without [`wait`](PendingCall::wait) is allowed: the host
/// cancels and reclaims the call when the current invocation ends.
#[derive(Debug)]
#[must_use = "a started call should be waited to get its response"]
pub struct PendingCall {
    handle: i64,
}

impl PendingCall {
    /// Blocks until the call answers and returns its response.
    pub fn wait(self) -> Result<Vec<u8>, CallError> {
        let mut out = [0u8; abi::RESULT_SLOT_LEN];
        // SAFETY: `out` is the 8 writable bytes of the result slot.
        let rc = unsafe { raw::call_wait(self.handle, ptr_arg(out.as_mut_ptr())) };
        finish(rc, out)
    }

    /// The host's handle for this call, for logging and raw-ABI tests.
    pub fn handle(&self) -> i64 {
        self.handle
    }
}

/// Reads the host's message for the caller's last failed call (via
/// `cwasi.last_error`), growing the buffer if the message is longer than the
/// first guess. Useful after calling a [`raw`] import directly.
pub fn last_error_message() -> String {
    #[cfg(target_arch = "wasm32")]
    {
        let mut buf = vec![0u8; 256];
        // The message does not change between two reads, so one retry with
        // the reported length suffices; the bound only guards a broken host.
        for _ in 0..4 {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
            let n = unsafe { raw::last_error(ptr_arg(buf.as_mut_ptr()), buf.len() as i32) };
            if n < 0 {
                return format!("(cwasi.last_error failed: {})", error::RawCode(n));
            }
            let n = n as u32 as usize;
            if n <= buf.len() {
                buf.truncate(n);
                return String::from_utf8_lossy(&buf).into_owned();
            }
            buf.resize(n, 0);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        NO_HOST_MESSAGE.to_string()
    }
}

/// Turns the result of `call` / `call_wait` and the result slot the host
/// wrote into an owned response or an error.
fn finish(rc: i32, out: [u8; abi::RESULT_SLOT_LEN]) -> Result<Vec<u8>, CallError> {
    if rc < 0 {
        return Err(error_from_raw(rc));
    }
    let (resp_ptr, resp_len) = abi::decode_result_slot(out);
    if resp_len == 0 {
        return Ok(Vec::new());
    }
    if resp_ptr == 0 {
        // Never produced by a correct host: our `cwasi_alloc` returns 0 only
        // on failure, which the host must report as ALLOC_FAILED.
        return Err(CallError::new(
            ErrorCode::BadResponse,
            format!("host reported a {resp_len}-byte response at address 0"),
        ));
    }
    // SAFETY: per the ABI, a non-empty response was written into a buffer the
    // host got from our `cwasi_alloc(resp_len)`, which is a leaked Vec<u8>
    // of exactly that capacity; ownership passes to us here.
    Ok(unsafe { export::take_buffer(resp_ptr, resp_len) })
}

/// Builds a [`CallError`] for a raw negative code, with the host's message.
fn error_from_raw(raw: i32) -> CallError {
    CallError::from_raw(raw, last_error_message())
}

/// A byte slice as an ABI `(ptr, len)` pair; empty slices are passed as
/// `(0, 0)` so the host never sees a dangling pointer.
fn bytes_arg(bytes: &[u8]) -> (i32, i32) {
    if bytes.is_empty() {
        (0, 0)
    } else {
        (ptr_arg(bytes.as_ptr()), bytes.len() as i32)
    }
}

/// A pointer as the `i32` offset the ABI passes (meaningful on wasm32 only).
fn ptr_arg<T>(ptr: *const T) -> i32 {
    ptr as usize as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_stubs_fail_cleanly() {
        let e = call("echo", b"hi").unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Transport));
        assert!(!e.message.is_empty());
        let e = call_start("echo", b"").unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Transport));
        let all = call_all([("a", &b"1"[..]), ("b", &b"2"[..])]);
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|r| r.is_err()));
    }

    #[test]
    fn empty_response_needs_no_buffer() {
        let slot = abi::encode_result_slot;
        assert_eq!(finish(0, slot(0, 0)), Ok(Vec::new()));
        assert_eq!(
            finish(0, slot(0, 5)).unwrap_err().code(),
            Some(ErrorCode::BadResponse)
        );
        assert_eq!(
            finish(-11, slot(0, 0)).unwrap_err().code(),
            Some(ErrorCode::UnknownHandle)
        );
        // A code from a newer host keeps its raw value.
        assert_eq!(finish(-99, slot(0, 0)).unwrap_err().raw, -99);
    }
}
