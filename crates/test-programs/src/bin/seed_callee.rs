//! `seed_callee`: a callee written like the original CWASI prototype, without
//! the SDK. It exports `allocate(len) -> ptr` and the handler
//! `hello_greet(ptr, len)` (no result), which prints
//! `seed_callee received len=<n> checksum=<hex> text=<first 64 bytes>`.

fn main() {}

#[cfg(target_arch = "wasm32")]
mod exports {
    /// Gives the host a buffer of `len` bytes to copy the input into.
    #[unsafe(no_mangle)]
    pub extern "C" fn allocate(len: i32) -> i32 {
        let mut buf = Vec::<u8>::with_capacity(len as u32 as usize);
        let ptr = buf.as_mut_ptr();
        std::mem::forget(buf);
        ptr as usize as i32
    }

    /// The prototype handler: consumes the input and prints what it got.
    #[unsafe(no_mangle)]
    pub extern "C" fn hello_greet(ptr: i32, len: i32) {
        let len = len as u32 as usize;
        let data = if ptr == 0 || len == 0 {
            Vec::new()
        } else {
            // SAFETY: the host got this buffer from `allocate(len)`.
            unsafe { Vec::from_raw_parts(ptr as u32 as usize as *mut u8, len, len) }
        };
        let head = &data[..data.len().min(64)];
        println!(
            "seed_callee received len={} checksum={:016x} text={}",
            data.len(),
            test_programs::checksum(&data),
            String::from_utf8_lossy(head)
        );
    }
}
