//! The vocabulary of the CWASI guest ABI (`docs/abi.md`), written once so the
//! host runtime and the guest SDK (`cwasi-guest`) cannot drift apart: the
//! import and export names, the error codes and their names, the name limit,
//! the `(ptr << 32) | len` packing and the 8-byte result slot.
//!
//! The crate has no dependencies and is `#![no_std]` (it does not even need
//! `alloc`), so it builds for `wasm32-wasip1` guests and for the host alike.
//! A test (`tests/docs_table.rs`) checks `docs/abi.md` against it.
//!
//! ```
//! use cwasi_abi::{decode_result_slot, encode_result_slot, pack, unpack, validate_name, ErrorCode};
//!
//! // What `cwasi_handle` returns for a 42-byte response at 0x1000.
//! let packed = pack(0x1000, 42);
//! assert_eq!(unpack(packed), (0x1000, 42));
//! assert!(!cwasi_abi::is_handle_error(packed));
//!
//! // What `cwasi.call` writes at `out_ptr`.
//! assert_eq!(decode_result_slot(encode_result_slot(0x1000, 42)), (0x1000, 42));
//!
//! // A raw code a guest got back from the host.
//! let code = ErrorCode::from_raw(-3).unwrap();
//! assert_eq!(code, ErrorCode::Timeout);
//! assert_eq!(code.to_string(), "TIMEOUT (-3)");
//! assert_eq!(ErrorCode::from_raw(-99), None); // not in this version's table
//!
//! assert!(validate_name("hello-v1.2").is_ok());
//! assert!(validate_name("no spaces").is_err());
//! ```

#![no_std]
#![warn(missing_docs)]

mod error_code;
mod name;
mod packing;

pub use error_code::ErrorCode;
pub use name::{validate_name, NameError, NameProblem, MAX_NAME_LEN};
pub use packing::{
    decode_result_slot, encode_result_slot, is_handle_error, pack, unpack, HANDLE_ERROR_MAX,
    HANDLE_ERROR_MIN, RESULT_SLOT_LEN,
};

/// The version of the guest ABI these definitions describe (the title of
/// docs/abi.md), so a host or SDK can say which contract it implements.
pub const ABI_VERSION: u32 = 1;

/// The import module of the host functions (`cwasi.call`, ...); the host
/// registers them under it and guests import from it.
///
/// Rust guests must still spell it as a literal in
/// `#[link(wasm_import_module = "cwasi")]`, which takes no constants.
pub const CWASI_MODULE: &str = "cwasi";

/// The import module of the original prototype (`cwasi_export.func_connect`),
/// which the host still provides so prototype functions run unchanged.
pub const SEED_MODULE: &str = "cwasi_export";

/// `cwasi.call`: a blocking call to another function.
pub const IMPORT_CALL: &str = "call";

/// `cwasi.call_start`: starts a call and returns a handle, for fan-out.
pub const IMPORT_CALL_START: &str = "call_start";

/// `cwasi.call_wait`: collects the response of a started call.
pub const IMPORT_CALL_WAIT: &str = "call_wait";

/// `cwasi.last_error`: the message of the caller's last failed call.
pub const IMPORT_LAST_ERROR: &str = "last_error";

/// `cwasi_export.func_connect`: the prototype's call to its configured target.
pub const SEED_IMPORT_FUNC_CONNECT: &str = "func_connect";

/// The exported linear memory the host copies requests and responses into and
/// out of.
pub const EXPORT_MEMORY: &str = "memory";

/// `cwasi_alloc(len) -> ptr`: the guest's allocator, through which the host
/// hands it requests and responses.
pub const EXPORT_ALLOC: &str = "cwasi_alloc";

/// `cwasi_handle(req_ptr, req_len) -> i64`: the export that makes a module
/// callable.
pub const EXPORT_HANDLE: &str = "cwasi_handle";

/// `cwasi_error() -> i64`: the optional export the host reads a handler's
/// error message from after `cwasi_handle` failed.
pub const EXPORT_ERROR: &str = "cwasi_error";

/// `_start`: the WASI command entry point, run only when the module is the
/// composition's entry.
pub const EXPORT_START: &str = "_start";

/// `_initialize`: the WASI reactor initialiser, run once after instantiation.
pub const EXPORT_INITIALIZE: &str = "_initialize";

/// `allocate(len) -> ptr`: the prototype's allocator export, used for
/// functions written against the original CWASI (seed compatibility).
pub const SEED_EXPORT_ALLOCATE: &str = "allocate";
