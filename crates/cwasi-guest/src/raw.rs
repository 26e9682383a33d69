//! The raw host imports of module `cwasi`, exactly as docs/abi.md declares
//! them, for code that needs to bypass the safe API (tests that pass bad
//! pointers on purpose, or other language bindings written on top of Rust).
//!
//! Pointers and lengths are `i32` offsets into linear memory. On wasm32 these
//! are the real imports; on every other target they are stubs that return
//! [`TRANSPORT`](crate::ErrorCode::Transport) (`-5`) without touching memory,
//! so code using them still compiles and can be checked on the host.

#[cfg(target_arch = "wasm32")]
mod imports {
    // `cwasi_abi::CWASI_MODULE`; the attribute only takes a literal.
    #[link(wasm_import_module = "cwasi")]
    unsafe extern "C" {
        /// Calls `target` with the request and blocks for the answer; writes
        /// `(resp_ptr, resp_len)` as two little-endian `u32` at `out_ptr`.
        pub fn call(
            target_ptr: i32,
            target_len: i32,
            req_ptr: i32,
            req_len: i32,
            out_ptr: i32,
        ) -> i32;

        /// Starts a call and returns a handle (`>= 1`) or a negative code.
        pub fn call_start(target_ptr: i32, target_len: i32, req_ptr: i32, req_len: i32) -> i64;

        /// Waits for a started call; same results as `call`.
        pub fn call_wait(handle: i64, out_ptr: i32) -> i32;

        /// Copies the last error message into `buf`, returns its full length.
        pub fn last_error(buf_ptr: i32, buf_len: i32) -> i32;
    }
}

#[cfg(target_arch = "wasm32")]
pub use imports::{call, call_start, call_wait, last_error};

/// The code the host stubs return: there is no CWASI host off wasm32.
#[cfg(not(target_arch = "wasm32"))]
const NO_HOST: i32 = crate::ErrorCode::Transport.as_raw();

/// Host stub of `cwasi.call`: always fails with `TRANSPORT`.
///
/// # Safety
/// On wasm32 the pointer arguments must satisfy docs/abi.md; the stub itself
/// reads nothing.
#[cfg(not(target_arch = "wasm32"))]
pub unsafe fn call(
    _target_ptr: i32,
    _target_len: i32,
    _req_ptr: i32,
    _req_len: i32,
    _out_ptr: i32,
) -> i32 {
    NO_HOST
}

/// Host stub of `cwasi.call_start`: always fails with `TRANSPORT`.
///
/// # Safety
/// See [`call`].
#[cfg(not(target_arch = "wasm32"))]
pub unsafe fn call_start(_target_ptr: i32, _target_len: i32, _req_ptr: i32, _req_len: i32) -> i64 {
    NO_HOST as i64
}

/// Host stub of `cwasi.call_wait`: always fails with `TRANSPORT`.
///
/// # Safety
/// See [`call`].
#[cfg(not(target_arch = "wasm32"))]
pub unsafe fn call_wait(_handle: i64, _out_ptr: i32) -> i32 {
    NO_HOST
}

/// Host stub of `cwasi.last_error`: there is never a message (returns `0`).
///
/// # Safety
/// See [`call`].
#[cfg(not(target_arch = "wasm32"))]
pub unsafe fn last_error(_buf_ptr: i32, _buf_len: i32) -> i32 {
    0
}
