//! `bad_response`: breaks the ABI on purpose. Its raw `cwasi_handle` (no SDK
//! macro, no SDK at all) answers with a response range far outside linear
//! memory, `ptr = 0xFFFF_0000, len = 0x10000`; the host must not read it and
//! must report `BAD_RESPONSE` to the caller.

fn main() {}

#[cfg(target_arch = "wasm32")]
mod exports {
    /// Response pointer that lies beyond any memory this module has.
    const BAD_PTR: u64 = 0xFFFF_0000;
    /// Response length, so that the range ends exactly at 4 GiB.
    const BAD_LEN: u64 = 0x1_0000;

    /// Hands the host a buffer of `len` bytes (a leaked `Vec<u8>`).
    #[unsafe(no_mangle)]
    pub extern "C" fn cwasi_alloc(len: i32) -> i32 {
        let mut buf = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len as u32 as usize));
        buf.as_mut_ptr() as usize as i32
    }

    /// Frees the request, then returns the out-of-bounds range.
    #[unsafe(no_mangle)]
    pub extern "C" fn cwasi_handle(req_ptr: i32, req_len: i32) -> i64 {
        let len = req_len as u32 as usize;
        if req_ptr != 0 && len != 0 {
            // SAFETY: the host got this buffer from `cwasi_alloc(len)`.
            drop(unsafe { Vec::from_raw_parts(req_ptr as u32 as usize as *mut u8, len, len) });
        }
        ((BAD_PTR << 32) | BAD_LEN) as i64
    }
}
